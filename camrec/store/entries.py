"""The schema of manifest entries beyond the chain fields, shared by `verify` and `index rebuild`.

Both read a manifest that a compromised recorder may have written, so a validly signed entry is
still checked here before any of its paths is used.
"""

from __future__ import annotations

import re
from typing import Any

from camrec.store import layout
from camrec.store.manifest import KINDS

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def clip_entry_problem(entry: dict[str, Any]) -> str | None:
    """Schema of manifest entries beyond the chain fields (None when fine). Paths are checked too:
    even a validly signed entry must not make verify read outside the store."""
    kind = entry.get("kind")
    if kind not in KINDS:
        return f"unknown entry kind {kind!r}"
    ct = entry.get("ct")
    if "ct" in entry and (not isinstance(ct, int) or isinstance(ct, bool) or ct < 0):
        return "malformed camrec time"
    if kind in ("repair", "clock"):
        return None
    clip = entry.get("clip")
    if not isinstance(clip, str) or not _safe_relpath(clip) or not clip.endswith(layout.VIDEO_SUFFIX):
        return "malformed clip path"
    if kind == "delete":
        return None
    files = entry.get("files")
    if not isinstance(files, list) or not files:
        return "malformed file list"
    for f in files:
        if not (isinstance(f, dict) and isinstance(f.get("path"), str) and _safe_relpath(f["path"])
                and isinstance(f.get("size"), int) and isinstance(f.get("sha256"), str)
                and _HEX64.match(f["sha256"])
                and ("payload" not in f or (isinstance(f["payload"], str) and _HEX64.match(f["payload"])))):
            return "malformed file entry"
    return None


def _safe_relpath(p: str) -> bool:
    return bool(p) and not p.startswith("/") and ".." not in p.split("/") and "\\" not in p
