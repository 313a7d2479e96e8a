"""Retention: which clips to delete, oldest first. The planning is pure; `Store.apply_retention` acts.

Three limits, checked in order: age (`retention_days`), the clip-bytes budget (`max_size`), and the
free-space floor of the filesystem (`min_free`). A clip being written is never chosen.
"""

from __future__ import annotations

from collections.abc import Iterable

from camrec.store.index import ClipRow


def plan_retention(
    clips: Iterable[ClipRow],
    *,
    now: float,
    retention_days: float,
    max_size: int | None,
    free_bytes: int | None,
    min_free: int,
) -> list[ClipRow]:
    """The clips to delete. `clips` may be in any order; deletions are oldest first."""
    clips = list(clips)
    candidates = sorted((c for c in clips if c.state != "recording"), key=lambda c: (c.start, c.id))
    in_progress = sum(c.size for c in clips if c.state == "recording")
    cutoff = now - retention_days * 86400
    doomed = [c for c in candidates if c.end < cutoff]
    keep = [c for c in candidates if c.end >= cutoff]
    total = sum(c.size for c in keep) + in_progress
    freed = sum(c.size for c in doomed)
    for clip in keep:
        over_budget = max_size is not None and total > max_size
        low_space = free_bytes is not None and free_bytes + freed < min_free
        if not (over_budget or low_space):
            break
        doomed.append(clip)
        total -= clip.size
        freed += clip.size
    return doomed
