"""`camrec verify`, the history part: was every deletion one retention could have made, did every
re-key keep the recorded video, and does camrec's clock (`ct`) behave like one?

Fed the trusted manifest entries in chain order (streamed, memory follows the live clips). What it
can and cannot know, precisely, is in docs/tamper-evidence.md §5 "Deletions and re-keys"; in short:
  * age: a clip may be deleted for age once `retention_days` (the owner's, from `-c CONFIG` or
    `--retention-days`) have passed on camrec's clock since its first entry. camrec time never
    runs ahead of the real time (it starts at the wall clock and then counts only running time),
    so an entry whose `ct` is ahead of the verifier's own clock is flagged, and a key holder can't
    age a clip by writing a large `ct`;
  * budget/low-space: oldest first, so no clip that entered the manifest earlier may still be live
    when one is deleted for space. Whether space really was short is not recorded anywhere signed
    beyond the entry's own numbers: a device key holder can delete the *oldest* clips that way;
  * re-key: same files, same payload digests (age payload: unchanged by a re-key).
Entries from before camrec time existed (no `ct`) are accepted as they are; once an entry with
`ct` appears, every later entry must carry it, and clip entries their payload digests.
"""

from __future__ import annotations

import heapq
from typing import Any

from camrec.store.camtime import TOLERANCE, entry_ct, parse_utc
from camrec.store.manifest import CLIP_KINDS

DAY = 86400.0
SLACK = 1.0  # seconds: rounding of `ct` to milliseconds, and planning just before writing
HISTORY_PROBLEMS = ("bad-delete", "replaced", "bad-time")


class History:
    def __init__(self, *, retention_days: float | None, max_size: int | None, now: float) -> None:
        self.retention_days = retention_days
        self.max_size = max_size
        self.now = now
        self.findings: list[tuple[str, str | None, str]] = []  # (kind, path, detail)
        self._timed = False  # an entry with `ct` was seen: all later ones must have it
        self._last_ct: float | None = None
        self._born: dict[str, tuple[int, float | None]] = {}  # live clip -> (seq, camrec time of its close)
        self._files: dict[str, list[dict[str, Any]]] = {}  # live clip -> files of its newest entry
        self._order: list[tuple[int, str]] = []  # heap of (first seq, clip): the oldest live clip on top

    def _flag(self, kind: str, path: str | None, detail: str) -> None:
        self.findings.append((kind, path, detail))

    def take(self, entry: dict[str, Any]) -> None:
        seq, kind, clip = entry.get("seq"), entry.get("kind"), entry.get("clip")
        ct = entry_ct(entry)
        if ct is None and self._timed and kind != "repair":  # (repair entries come from the chain writer)
            self._flag("bad-time", clip, f"manifest entry {seq} ({kind}) has no camrec time, unlike the entries "
                       "before it (written by an older or a forged writer)")
        if ct is not None:
            self._timed = True
            if self._last_ct is not None and ct < self._last_ct:
                self._flag("bad-time", clip, f"manifest entry {seq}: camrec time goes back by "
                           f"{self._last_ct - ct:.3f} s (it only ever advances)")
            if ct > self.now + TOLERANCE:
                self._flag("bad-time", clip, f"manifest entry {seq}: camrec time is {(ct - self.now) / DAY:.2f} "
                           "days ahead of this computer's clock (camrec time never runs ahead of real time)")
            self._last_ct = max(ct, self._last_ct or ct)
        if not isinstance(clip, str):
            return
        if kind in CLIP_KINDS:
            self._clip_entry(clip, entry, ct)
        elif kind == "delete" and clip in self._born:
            self._delete(clip, entry, ct)

    def _clip_entry(self, clip: str, entry: dict[str, Any], ct: float | None) -> None:
        seq, kind, files = entry.get("seq"), entry.get("kind"), entry["files"]
        if ct is not None and any("payload" not in f for f in files):
            self._flag("replaced", clip, f"manifest entry {seq} ({kind}) has no payload digest for some files")
        before = self._files.get(clip)
        if before is None:
            if kind == "rekey":
                self._flag("replaced", clip, f"manifest entry {seq} re-keys a clip that was never recorded")
        else:
            old = {f["path"]: f.get("payload") for f in before}
            new = {f["path"]: f.get("payload") for f in files}
            if set(old) != set(new):  # (a sidecar dropped from the record, or one added later)
                self._flag("replaced", clip, f"manifest entry {seq} ({kind}) lists other files than the clip's "
                           "earlier entry")
            changed = sorted(p for p, digest in old.items() if digest is not None and p in new and new[p] != digest)
            if changed:
                self._flag("replaced", clip, f"manifest entry {seq} ({kind}) records another video than the clip's "
                           f"earlier entry: payload digest of {', '.join(changed)} differs (a re-key keeps it)")
        self._files[clip] = files
        if clip not in self._born:
            end = ct if ct is not None else parse_utc(entry.get("end"))
            self._born[clip] = (int(seq) if isinstance(seq, int) else 0, end)
            heapq.heappush(self._order, (self._born[clip][0], clip))

    def _delete(self, clip: str, entry: dict[str, Any], ct: float | None) -> None:
        seq, reason = entry.get("seq"), entry.get("reason")
        born_seq, born_ct = self._born.pop(clip)
        self._files.pop(clip, None)
        where = f"manifest entry {seq} deleted it"
        if ct is None and not self._timed:
            return  # written before deletions carried their reason: nothing to check
        if reason == "age":
            claimed = entry.get("retention_days")
            days = claimed if isinstance(claimed, (int, float)) and not isinstance(claimed, bool) else None
            if days is None:
                self._flag("bad-delete", clip, f"{where} for age without saying the retention in force")
                return
            if self.retention_days is not None and days < self.retention_days - 1e-9:
                self._flag("bad-delete", clip, f"{where} for age with a retention of {days:g} days, shorter than "
                           f"the {self.retention_days:g} days configured")
            need = max(days, self.retention_days or 0.0) * DAY
            if ct is None or born_ct is None:
                self._flag("bad-delete", clip, f"{where} for age, but its age can't be known (no camrec time)")
            elif ct - born_ct + SLACK < need:
                self._flag("bad-delete", clip, f"{where} for age at {(ct - born_ct) / DAY:.2f} days old on camrec's "
                           f"clock; retention keeps clips {need / DAY:g} days")
        elif reason in ("budget", "low-space"):
            while self._order and self._born.get(self._order[0][1], (None,))[0] != self._order[0][0]:
                heapq.heappop(self._order)  # deleted (or re-recorded) since it was pushed
            if self._order and self._order[0][0] < born_seq:
                older = self._order[0][1]
                self._flag("bad-delete", clip, f"{where} for {reason} while an older clip ({older}, manifest entry "
                           f"{self._order[0][0]}) was kept: retention deletes the oldest first")
            claimed = entry.get("max_size")
            if reason == "budget" and self.max_size is not None and (
                    not isinstance(claimed, int) or claimed < self.max_size):
                self._flag("bad-delete", clip, f"{where} for a budget of {claimed!r} bytes, below the "
                           f"{self.max_size} configured")
        else:
            self._flag("bad-delete", clip, f"{where} with reason {reason!r}, which retention never gives")
