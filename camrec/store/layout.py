"""Where clip files live: <storage>/<camera>/<YYYY-MM-DD>/<camera>-<YYYYmmddTHHMMSS.fffZ>.mp4.age

Names use UTC so that daylight-saving changes can neither reorder nor collide clips. Each clip has
up to three age files sharing one stem: the video, a JPEG thumbnail, and the event details (JSON).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from camrec.errors import StorageError
from camrec.printable import escape_controls

VIDEO_SUFFIX = ".mp4.age"
THUMB_SUFFIX = ".jpg.age"
META_SUFFIX = ".json.age"
CLIP_SUFFIXES = (VIDEO_SUFFIX, THUMB_SUFFIX, META_SUFFIX)
INDEX_NAME = "index.sqlite3"

_STEM_RE = re.compile(r"^(?P<camera>[A-Za-z0-9_-]{1,32})-(?P<ts>\d{8}T\d{6}\.\d{3}Z)(?:-(?P<n>\d+))?$")


def fsync_dir(path: Path) -> None:
    """Makes a directory's entries (new, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clip_stem(camera: str, start: float) -> str:
    dt = datetime.fromtimestamp(start, UTC)
    return f"{camera}-{dt:%Y%m%dT%H%M%S}.{dt.microsecond // 1000:03d}Z"


def clip_relpath(camera: str, start: float, suffix: str = VIDEO_SUFFIX, attempt: int = 0) -> str:
    """Path relative to the storage root, always with '/' separators (it is stored in the index)."""
    dt = datetime.fromtimestamp(start, UTC)
    stem = clip_stem(camera, start) + (f"-{attempt}" if attempt else "")
    return f"{camera}/{dt:%Y-%m-%d}/{stem}{suffix}"


def sibling(relpath: str, suffix: str) -> str:
    """The thumbnail/details path that belongs to a video path."""
    assert relpath.endswith(VIDEO_SUFFIX)
    return relpath[: -len(VIDEO_SUFFIX)] + suffix


def sibling_of(rel: str, video: str) -> bool:
    """True if `rel` is one of the files of the clip whose video is `video`."""
    return any(rel == sibling(video, suffix) for suffix in CLIP_SUFFIXES)


def parse_video_name(name: str) -> tuple[str, float] | None:
    """(camera, start epoch seconds) from a video file name, or None if it isn't one of ours."""
    if not name.endswith(VIDEO_SUFFIX):
        return None
    m = _STEM_RE.match(name[: -len(VIDEO_SUFFIX)])
    if not m:
        return None
    dt = datetime.strptime(m["ts"], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
    return m["camera"], dt.timestamp()


# --- walking and opening without following links ----------------------------------------------
#
# Anything with write access to the storage directory (a compromised recorder, a local user in the
# service group, a hostile `rsync -a` copy) can plant symbolic links, FIFOs, sockets or devices in
# it. camrec never follows, opens or writes through them: a FIFO named like a clip would block
# open() forever, a symlinked camera directory would send clips (or deletions) outside the root.
# Every walk below uses lstat semantics, every directory on a path is opened with O_NOFOLLOW, and
# every file is opened with O_NOFOLLOW|O_NONBLOCK and checked to be a regular file.

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_REL_RE = re.compile(r"^(?P<camera>[A-Za-z0-9_-]{1,32})/(?P<day>\d{4}-\d{2}-\d{2})/(?P<name>[^/]+)$")


class UnsafePath(OSError):
    """A path in the store leads through a symlink, or ends at something that isn't a regular file."""


def describe_kind(mode: int) -> str:
    """A file type in words, for messages about what a store entry turned out to be."""
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "an unknown kind of file"


def escaped(text: str) -> str:
    """A store path made safe to print or log (camrec/printable.py: control characters escaped)."""
    return escape_controls(text)


def parse_relpath(rel: str) -> tuple[str, float] | None:
    """(camera, start) of `<camera>/<YYYY-MM-DD>/<stem><suffix>` when it is exactly a clip file path of
    ours, else None. Paths read from a store (index rows, manifest entries) are checked with this
    before anything is opened: no `..`, no absolute path, no other layout."""
    m = _REL_RE.match(rel)
    if not m:
        return None
    name = m["name"]
    for suffix in CLIP_SUFFIXES:
        if name.endswith(suffix):
            parsed = parse_video_name(name[: -len(suffix)] + VIDEO_SUFFIX)
            if parsed is None or parsed[0] != m["camera"]:
                return None
            if datetime.fromtimestamp(parsed[1], UTC).strftime("%Y-%m-%d") != m["day"]:
                return None
            return parsed
    return None


def open_dirs(root: Path, parts: Sequence[str], *, create: bool = False, mode: int = 0o750) -> int:
    """A file descriptor of root/parts[0]/parts[1]/…, each component opened with O_NOFOLLOW (so a
    symlinked directory raises UnsafePath rather than leading elsewhere). With create, missing
    components are made (mode) and their parent fsynced. The caller closes the descriptor."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            so_far = "/".join(parts[: i + 1])
            if part in ("", ".", "..") or "/" in part:
                raise UnsafePath(errno.EINVAL, "not a plain directory name", so_far)
            if create:
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                    os.fsync(fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    kind = describe_kind(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
                    raise UnsafePath(exc.errno, f"{kind}, not a directory", so_far) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def lstat_file(root: Path, rel: str) -> os.stat_result | None:
    """lstat of a file under root, reached without following any link; None if it is absent.
    Raises UnsafePath if a directory on the way is a link (or not a directory)."""
    *dirs, name = rel.split("/")
    try:
        fd = open_dirs(root, dirs)
    except FileNotFoundError:
        return None
    try:
        return os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(fd)


def regular_size(root: Path, rel: str) -> int | None:
    """Size of a regular file under root (no links followed anywhere); None if absent or anything else."""
    try:
        st = lstat_file(root, rel)
    except OSError:
        return None
    return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None


def open_regular(root: Path, rel: str, flags: int = os.O_RDONLY) -> int:
    """Opens a regular file under root without following links and without blocking on a FIFO.

    Raises FileNotFoundError, UnsafePath (a link on the way, or not a regular file) or OSError."""
    *dirs, name = rel.split("/")
    dfd = open_dirs(root, dirs)
    try:
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(exc.errno, "a symbolic link", rel) from None
            raise
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafePath(errno.EINVAL, describe_kind(st.st_mode), rel)
    os.set_blocking(fd, True)
    return fd


@dataclass
class ClipTree:
    """What a walk of the store found: clip videos (regular files) and everything refused."""

    videos: list[str] = field(default_factory=list)
    files: dict[str, int] = field(default_factory=dict)  # every regular clip file (any suffix) → size
    refused: list[tuple[str, str]] = field(default_factory=list)  # (relpath, what it is)


def scan_clip_tree(root: Path) -> ClipTree:
    """Walks <root>/<camera>/<day>/ with os.scandir, never following a link.

    Clip-named regular files are collected; symlinks, FIFOs, sockets and devices met on the way
    (as camera directories, day directories or clip names) are listed in `refused` and never entered
    or opened. Other regular files (the index, the manifest, `.rekey.tmp` leftovers) are ignored."""
    tree = ClipTree()

    def walk(path: Path, rel: str, depth: int) -> None:
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        for entry in sorted(entries, key=lambda e: e.name):
            child = f"{rel}/{entry.name}" if rel else entry.name
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                if depth < 2:
                    walk(Path(entry.path), child, depth + 1)
            elif stat.S_ISREG(mode):
                if depth == 2 and parse_relpath(child) is not None:
                    tree.files[child] = entry.stat(follow_symlinks=False).st_size
                    if child.endswith(VIDEO_SUFFIX):
                        tree.videos.append(child)
            else:  # a link, FIFO, socket or device, at any level
                tree.refused.append((child, describe_kind(mode)))

    walk(root, "", 0)
    tree.videos.sort()
    return tree


_warned: set[str] = set()


def warn_refused(tree: ClipTree, log: logging.Logger) -> None:
    """Logs each refused entry once per process (the walk repeats at every start-up and rebuild)."""
    for rel, kind in tree.refused:
        if rel not in _warned:
            _warned.add(rel)
            log.warning("storage: %s is %s; camrec ignores it (never opens, follows or deletes it): "
                        "remove it if you did not put it there", escaped(rel), kind)


def iter_video_files(root: Path) -> list[str]:
    """Relative paths of every clip video file under the storage root (regular files only)."""
    return scan_clip_tree(root).videos


# The store's copy of the owner's audit log (camrec.owner.audit writes it; the daemon only creates it).
AUDIT_NAME = "audit.jsonl"
STORE_LOG_MODE = 0o660  # group members who may export can append (see prepare_store_log)


def prepare_store_log(root: Path) -> None:
    """Creates `<storage>/audit.jsonl` group-writable if absent, so that owners in the store's
    group (who can read clips but not create files in the 0750 storage directory) can be audited."""
    path = root / AUDIT_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, STORE_LOG_MODE)
    except FileExistsError:
        return
    except OSError as exc:
        raise StorageError(f"cannot create the audit log {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, STORE_LOG_MODE)
        os.fsync(fd)
    finally:
        os.close(fd)
