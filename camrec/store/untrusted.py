"""Reading a store on the owner's side, where everything in it is hostile input.

The owner's tools (`list`, `export`, `verify`, `rekey`) often run on an `rsync -a` copy of a store
that a compromised recorder may have prepared: index rows can name any path, and clip files can
be symlinks out of the store, FIFOs that hang a reader, or devices. So:

- an index row is used only if its `path` is exactly a clip name of ours
  (`<camera>/<YYYY-MM-DD>/<camera>-<YYYYmmddTHHMMSS.fffZ>[-N].mp4.age`, the date matching the
  name's timestamp, see camrec/store/layout.py) and its `thumb`/`meta`, when set, are exactly
  that clip's siblings; other rows are skipped with a warning;
- a clip file is opened one path component at a time from a descriptor of the store root, with
  O_NOFOLLOW on every component (and O_NONBLOCK on the last one, so a FIFO can't block the open),
  then must be a regular file (fstat). A link anywhere in the path is refused, never followed.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from camrec.errors import IntegrityError, permission_error
from camrec.printable import escape_controls
from camrec.store import layout

# Only the characters a clip name can hold: this also keeps out newlines, which `$` in a Python
# regex would let through at the end of a name.
_CLIP_CHARS = re.compile(r"[A-Za-z0-9_./-]+")


class UnsafeFileError(IntegrityError):
    """A store entry that is not what a clip file must be (a link, FIFO, device, bad name)."""


def clip_path_problem(path: object) -> str | None:
    """Why `path` is not the relative path of a clip video of ours, or None if it is one."""
    if not isinstance(path, str) or not _CLIP_CHARS.fullmatch(path):
        return "not a clip path (unexpected characters)"
    parts = path.split("/")
    if len(parts) != 3:
        return "not a clip path (<camera>/<YYYY-MM-DD>/<clip>.mp4.age)"
    camera_dir, day, name = parts
    try:
        parsed = layout.parse_video_name(name)
    except ValueError:  # digits in the right places, but no real date (month 13)
        parsed = None
    if parsed is None:
        return "not a clip path (the file name is not a clip name)"
    camera, start = parsed
    if camera_dir != camera:
        return "not a clip path (directory and file name name different cameras)"
    if day != f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d}":
        return "not a clip path (the date directory does not match the clip's time)"
    return None


def row_problem(row: Any) -> str | None:
    """Why an index row must not be used (None: its paths are a clip's and its siblings')."""
    if problem := clip_path_problem(row.path):
        return problem
    for value, suffix, what in ((row.thumb, layout.THUMB_SUFFIX, "thumbnail"),
                                (row.meta, layout.META_SUFFIX, "details")):
        if value is not None and value != layout.sibling(row.path, suffix):
            return f"its {what} path is not the clip's own"
    return None


def checked_rows(rows: Iterable[Any], warn: Callable[[str], None]) -> tuple[list[Any], int]:
    """The rows safe to use, and how many were skipped (each one reported through `warn`)."""
    good, skipped = [], 0
    for row in rows:
        problem = row_problem(row)
        if problem is None:
            good.append(row)
            continue
        skipped += 1
        warn(f"camrec: warning: index row {row.id} skipped: {escape_controls(repr(row.path))}: {problem} "
             "(the index was altered)")
    return good, skipped


def _components(rel: str) -> list[str]:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise UnsafeFileError("not a path inside the store")
    return parts


def open_file(root: Path, rel: str) -> int:
    """A read-only descriptor of the regular file `rel` inside the store `root`, reached without
    following any link. Raises UnsafeFileError (a link, FIFO, device or directory on the way; its
    message does not repeat `rel`), FileNotFoundError (absent) or another OSError (unreadable)."""
    _components(rel)
    try:
        # The root itself is the owner's own choice (their config); what lies below it is not.
        return layout.open_regular(root, rel)
    except layout.UnsafePath as exc:
        # ELOOP: a symlink (O_NOFOLLOW); ENOTDIR: a non-directory where a directory must be.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeFileError("a symbolic link or non-directory in its path: not followed out of the store") \
                from None
        raise UnsafeFileError(f"{exc.strerror}, not a regular file: not read") from None


def check_file(root: Path, rel: str) -> os.stat_result:
    """open_file's checks without keeping the file open: its stat, or the same exceptions."""
    fd = open_file(root, rel)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


kind_of = layout.describe_kind


# The store's own files that the owner's tools read by name (SQLite opens the index's -wal/-shm too).
METADATA_NAMES = (layout.INDEX_NAME, f"{layout.INDEX_NAME}-wal", f"{layout.INDEX_NAME}-shm", "manifest.jsonl",
                  "device-signing.pub")


def check_metadata(root: Path) -> None:
    """Refuses (UnsafeFileError) a store whose index, manifest or public key is a link, FIFO or
    device: SQLite and the chain reader open them by name, so a FIFO would hang them and a link
    would have them read a file outside the store. Absent files are fine (each reader says so)."""
    for name in METADATA_NAMES:
        try:
            mode = os.lstat(root / name).st_mode
        except FileNotFoundError:
            continue
        except PermissionError:
            raise permission_error("the store", root) from None
        except OSError as exc:
            raise UnsafeFileError(f"cannot check {root / name}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(mode):
            raise UnsafeFileError(f"{root / name} is {kind_of(mode)}, not a regular file: not read",
                                  hint="the store was tampered with; `camrec verify` lists what else is wrong")
