"""Retention: which clips to delete, and why. The planning is pure; `Store.apply_retention` acts.

It plans from the signed manifest, never from the index (which anyone with file access can edit:
a review set a row's `end` to 2020 and retention deleted the clip). Three limits, in order: age
(`retention_days`, measured on camrec's own clock, camrec/store/camtime.py), the clip-bytes budget
(`max_size`) and the free-space floor (`min_free`); budget deletions go oldest first by the order
the clips entered the manifest. A clip being written is never chosen (it has no entry yet). Each
deletion carries its reason with the numbers, so `camrec verify` can check it could have been made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DAY = 86400.0


@dataclass(frozen=True)
class LiveClip:
    """A clip the manifest holds (not deleted), as retention sees it: all from signed entries."""

    path: str
    camera: str
    seq: int  # sequence number of its first entry: the manifest's order is the clips' age order
    end_ct: float  # camrec time when it was first recorded (its close)
    size: int  # bytes of its files, as last recorded


@dataclass(frozen=True)
class Doomed:
    clip: LiveClip
    why: dict[str, Any]  # the `delete` entry's reason fields


def plan_retention(clips: Iterable[LiveClip], *, now_ct: float, retention_days: float, max_size: int | None,
                   in_progress: int = 0, free_bytes: int | None, min_free: int) -> list[Doomed]:
    """The clips to delete, oldest first. `in_progress`: bytes of clips being written."""
    candidates = sorted(clips, key=lambda c: c.seq)
    cutoff = retention_days * DAY
    doomed = [Doomed(c, {"reason": "age", "retention_days": retention_days, "age_s": round(now_ct - c.end_ct, 3)})
              for c in candidates if now_ct - c.end_ct > cutoff]
    gone = {d.clip.path for d in doomed}
    keep = [c for c in candidates if c.path not in gone]
    total = sum(c.size for c in keep) + in_progress
    freed = sum(d.clip.size for d in doomed)
    for clip in keep:
        if max_size is not None and total > max_size:
            why: dict[str, Any] = {"reason": "budget", "max_size": max_size, "total": total}
        elif free_bytes is not None and free_bytes + freed < min_free:
            why = {"reason": "low-space", "free": free_bytes + freed, "min_free": min_free}
        else:
            break
        doomed.append(Doomed(clip, why))
        total -= clip.size
        freed += clip.size
    return doomed
