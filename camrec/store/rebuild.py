"""Rebuilding the clip index from what is true: the clip files and the signed manifest.

The index (`index.sqlite3`) is a cache rewritten every second, so it is the file an SD card most
likely damages. Everything in it can be recovered:

  * the clip files, found by name with a walk that follows no link (camrec/store/layout.py);
  * for each clip, the newest manifest entry signed by the device key: start and end times (so
    durations survive), the state (`clip` → complete, `partial` → partial; a `rekey` keeps the
    state of the entry before it) and the sidecar files (thumbnail, details);
  * a clip whose newest entry is a `delete` but whose files are still there (a crash between the
    entry and the unlink) becomes `garbage`, so the daemon finishes the deletion it signed;
  * a clip recorded in the manifest whose files are all gone becomes `missing`;
  * a clip file with no entry (a crash before its entry) is `partial`, its times from its name
    (duration 0), its sidecars found by name.

Only entries whose signature checks against the device key are used: the private key's public
half when it is readable (the daemon, or `camrec index rebuild` as the service user), else
`device-signing.pub`; with neither, the files alone. Paths in entries are accepted only when they
are exactly clip paths (`<camera>/<YYYY-MM-DD>/<stem>.mp4.age`).

The damaged file is never deleted: it is renamed `index.sqlite3.damaged-<UTC time>` (with its
`-wal`/`-shm`), and the new index is built under a temporary name and renamed into place, so a
crash leaves either the old situation or the complete new index.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from camrec.errors import CamrecError
from camrec.store import layout
from camrec.store.camtime import parse_utc
from camrec.store.index import SCHEMA, SCHEMA_VERSION, ClipRow
from camrec.store.layout import fsync_dir

log = logging.getLogger(__name__)

_KEY_LIMIT = 64 << 10
_FILE_MODE = 0o640


@dataclass
class RebuildResult:
    rows: list[ClipRow]
    from_manifest: int  # clips whose times and state came from a signed manifest entry
    kept: Path | None  # where the previous index file was put aside
    refused: list[tuple[str, str]] = field(default_factory=list)
    manifest_used: bool = True

    @property
    def states(self) -> Counter[str]:
        return Counter(r.state for r in self.rows)

    def summary(self) -> str:
        by_state = ", ".join(f"{n} {s}" for s, n in sorted(self.states.items()))
        return (f"{len(self.rows)} clip(s) ({by_state or 'none'}), {self.from_manifest} with times and "
                "sidecars from the manifest")


# --- reading the truth ------------------------------------------------------------------------


def _read_small(root: Path, name: str) -> bytes | None:
    """A small top-level file of the store, read without following links; None if unusable."""
    try:
        fd = layout.open_regular(root, name)
    except OSError:
        return None
    try:
        return os.read(fd, _KEY_LIMIT)
    except OSError:
        return None
    finally:
        os.close(fd)


def device_public_key(root: Path) -> Ed25519PublicKey | None:
    """The key manifest entries must be signed with: from the private key when readable (what the
    daemon signs with), else the public key file next to it."""
    from camrec.store.manifest import KEY_NAME, PUB_NAME

    data = _read_small(root, KEY_NAME)
    if data is not None:
        with contextlib.suppress(ValueError, TypeError):
            key = serialization.load_pem_private_key(data, password=None)
            if isinstance(key, Ed25519PrivateKey):
                return key.public_key()
    data = _read_small(root, PUB_NAME)
    if data is not None:
        with contextlib.suppress(ValueError):
            pub = serialization.load_pem_public_key(data)
            if isinstance(pub, Ed25519PublicKey):
                return pub
    return None


@dataclass
class _ClipRecord:
    kind: str  # newest entry kind: clip, partial, rekey or delete
    state: str = "partial"  # from the newest clip/partial entry
    start: float | None = None
    end: float | None = None
    files: list[str] = field(default_factory=list)


def manifest_records(root: Path, public_key: Ed25519PublicKey | None) -> dict[str, _ClipRecord] | None:
    """Per clip, what its signed manifest entries say; None when the manifest can't be used."""
    from camrec.store.entries import clip_entry_problem
    from camrec.store.manifest import CLIP_KINDS, MANIFEST_NAME, read_chain

    path = root / MANIFEST_NAME
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {}
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or public_key is None:
        return None  # a link or FIFO is never opened; without a key nothing in it can be trusted
    records: dict[str, _ClipRecord] = {}

    def take(line: Any) -> None:
        entry = line.entry
        if not line.trusted or entry is None or not isinstance(entry.get("clip"), str):
            return  # `repair` and `clock` entries name no clip
        clip = entry["clip"]
        parsed = layout.parse_relpath(clip)
        if parsed is None or not clip.endswith(layout.VIDEO_SUFFIX) or entry.get("camera") != parsed[0]:
            return
        kind = entry["kind"]
        old = records.get(clip)
        if kind == "delete":
            records[clip] = _ClipRecord("delete", state=old.state if old else "partial")
            return
        if kind not in CLIP_KINDS:
            return
        rec = _ClipRecord(kind, state=old.state if old and old.kind != "delete" else "partial")
        if kind != "rekey":
            rec.state = "complete" if kind == "clip" else "partial"
        rec.start, rec.end = parse_utc(entry.get("start")), parse_utc(entry.get("end"))
        rec.files = [f["path"] for f in entry["files"] if layout.sibling_of(f["path"], clip)]
        records[clip] = rec

    try:
        read_chain(path, public_key=public_key, entry_problem=clip_entry_problem, on_line=take, keep=False)
    except CamrecError as exc:  # an unreadable manifest must not stop a rebuild
        log.warning("cannot read %s for the rebuild (%s); using the clip files alone", path, exc.message)
        return None
    return records


def clip_rows(root: Path, public_key: Ed25519PublicKey | None = None, *,
              tree: layout.ClipTree | None = None) -> tuple[list[ClipRow], int, bool]:
    """The rows an index of this store should hold, oldest first (ids from 1). Reads only.

    Returns (rows, how many came from manifest entries, whether the manifest was usable)."""
    tree = tree if tree is not None else layout.scan_clip_tree(root)
    records = manifest_records(root, public_key)
    manifest_used = records is not None
    records = records or {}
    rows: list[tuple[float, str, str, float, int, str | None, str | None, str, str]] = []
    from_manifest = 0
    for video in tree.videos:
        parsed = layout.parse_relpath(video)
        if parsed is None:
            continue
        camera, start = parsed
        rec = records.get(video)
        thumb = layout.sibling(video, layout.THUMB_SUFFIX)
        meta = layout.sibling(video, layout.META_SUFFIX)
        size = sum(tree.files.get(layout.sibling(video, s), 0) for s in layout.CLIP_SUFFIXES)
        end = start
        state = "partial"
        if rec is not None and rec.kind == "delete":
            state = "garbage"  # signed by the device: the daemon finishes this deletion
        elif rec is not None:
            from_manifest += 1
            start = rec.start if rec.start is not None else start
            end = rec.end if rec.end is not None and rec.end >= start else start
            state = rec.state
        rows.append((start, camera, video, end, size, thumb if thumb in tree.files else None,
                     meta if meta in tree.files else None, state, video))
    present = set(tree.videos)
    for clip, rec in records.items():
        if clip in present or rec.kind == "delete" or rec.start is None:
            continue
        camera = clip.split("/", 1)[0]
        end = rec.end if rec.end is not None and rec.end >= rec.start else rec.start
        from_manifest += 1
        rows.append((rec.start, camera, clip, end, 0, None, None, "missing", clip))
    rows.sort()
    out = [ClipRow(i, camera, start, end, size, path, thumb, meta, state)
           for i, (start, camera, path, end, size, thumb, meta, state, _) in enumerate(rows, 1)]
    return out, from_manifest, manifest_used


# --- writing a new index ----------------------------------------------------------------------


def _aside_name(path: Path, tag: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = path.with_name(f"{path.name}.{tag}-{stamp}")
    n = 1
    while os.path.lexists(base) or os.path.lexists(f"{base}-wal"):
        base = path.with_name(f"{path.name}.{tag}-{stamp}-{n}")
        n += 1
    return base


def move_aside(path: Path, tag: str) -> Path | None:
    """Renames the index (and its -wal/-shm, so a new index never replays a stale log) to
    `<name>.<tag>-<UTC time>`; never deletes or follows anything. Returns the new name, if moved."""
    aside = _aside_name(path, tag)
    moved = None
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if os.path.lexists(src):
            os.rename(src, f"{aside}{suffix}")
            moved = moved or aside
    return moved


def new_index_file(root: Path) -> Path:
    """An empty, private file for a new index (O_EXCL, no link followed), owned like the store."""
    from camrec.store.index import INDEX_TMP_PREFIX

    tmp = root / f"{INDEX_TMP_PREFIX}{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover of a crashed rebuild (a link is removed, not followed)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
    try:
        os.fchmod(fd, _FILE_MODE)
        st = os.stat(root)
        with contextlib.suppress(PermissionError):  # run as root: the service user must still own it
            os.fchown(fd, st.st_uid, st.st_gid)
    finally:
        os.close(fd)
    return tmp


def _write(tmp: Path, rows: Iterable[ClipRow]) -> None:
    db = sqlite3.connect(tmp)
    try:
        with db:
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.executemany("INSERT INTO clips (id, camera, start, end, size, path, thumb, meta, state) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [(r.id, r.camera, r.start, r.end, r.size, r.path, r.thumb, r.meta, r.state) for r in rows])
    finally:
        db.close()
    fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rebuild_index(root: Path, *, reason: str, tag: str = "damaged") -> RebuildResult:
    """Builds a new index from the files and the manifest and puts it in place, keeping the old one
    aside. Refused entries (links, FIFOs…) are logged and left out."""
    tree = layout.scan_clip_tree(root)
    layout.warn_refused(tree, log)
    rows, from_manifest, used = clip_rows(root, device_public_key(root), tree=tree)
    if not used:
        log.warning("the manifest can't be used (missing device key, or not a regular file): the rebuilt "
                    "index has the clip files only (state partial, no durations)")
    path = root / layout.INDEX_NAME
    tmp = new_index_file(root)
    try:
        _write(tmp, rows)
        kept = move_aside(path, tag)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(root)
    result = RebuildResult(rows, from_manifest, kept, tree.refused, used)
    log.warning("rebuilt the clip index %s (%s): %s%s", path, reason, result.summary(),
                f"; the previous file is kept as {kept.name}" if kept else "")
    return result


class RowsView:
    """Read-only stand-in for a ClipIndex, over rows computed by `clip_rows` (owner-side fallback)."""

    def __init__(self, rows: list[ClipRow]) -> None:
        self.rows = rows

    def query(self, camera: str | None = None, since: float | None = None, until: float | None = None,
              states: tuple[str, ...] | None = None) -> list[ClipRow]:
        return [r for r in self.rows
                if (camera is None or r.camera == camera) and (since is None or r.end >= since)
                and (until is None or r.start <= until) and (states is None or r.state in states)]

    def close(self) -> None:
        pass
