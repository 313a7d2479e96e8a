"""Reading the clip index for the web app, as hostile input and without ever writing to the store.

Inside `camrec run` the live index is opened read-only (the recorder keeps its -wal/-shm files).
In `camrec web serve --store` even a read-only SQLite connection would write: opening a WAL-mode
database creates `index.sqlite3-wal` and `-shm` beside it. So in read-only mode the index (and its
-wal, if any) is copied, each file opened without following links and checked to be a regular
file, into a private temporary directory, and read there; the copy is refreshed when the store's
files change. When the index is damaged or absent while clips exist, the rows are computed from
the clip files and the signed manifest instead, as `camrec list` does (camrec/store/rebuild.py).
Rows whose paths are not clip paths are skipped with a log line (camrec/store/untrusted.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

from camrec.errors import StorageError
from camrec.store import layout, untrusted
from camrec.store.index import ClipIndex, ClipRow, IndexDamaged
from camrec.store.listing import rows_as_cut_without_recorder
from camrec.store.lock import recorder_running
from camrec.store.rebuild import RowsView, clip_rows, device_public_key

log = logging.getLogger("camrec.web")

__all__ = ["IndexReader", "query", "recorder_running", "usable"]

VISIBLE_STATES = ("recording", "complete", "partial", "missing")
_COPY_NAMES = (layout.INDEX_NAME, f"{layout.INDEX_NAME}-wal")


class IndexReader:
    """Opens the store's rows for one request (blocking: call it from a worker thread)."""

    def __init__(self, root: Path, read_only_store: bool) -> None:
        self.root = root
        self.read_only_store = read_only_store
        self._lock = threading.Lock()
        self._snapshot_dir: Path | None = None
        self._snapshot_key: tuple[tuple[int, int, int], ...] | None = None
        self._current: Path | None = None
        self._generation = 0

    def close(self) -> None:
        with self._lock:
            if self._snapshot_dir is not None:
                shutil.rmtree(self._snapshot_dir, ignore_errors=True)
                self._snapshot_dir = self._current = None

    def open(self) -> Any:
        """A ClipIndex (read-only) or a RowsView; the caller closes it. StorageError if unreadable."""
        untrusted.check_metadata(self.root)  # a FIFO or link in place of the index: refused
        path = self._snapshot() if self.read_only_store else self.root / layout.INDEX_NAME
        if path is not None:
            try:
                index = ClipIndex(path, readonly=True)
            except IndexDamaged as exc:
                return self._from_files(exc.message)
            except StorageError:
                if path.exists():
                    raise
            else:
                try:
                    index.query(states=("garbage",))  # reads the schema and a page: damage shows here
                    return index
                except IndexDamaged as exc:
                    index.close()
                    return self._from_files(exc.message)
        if not layout.iter_video_files(self.root):
            return RowsView([])
        return self._from_files("the clip index is missing")

    def _from_files(self, why: str) -> RowsView:
        rows, _, used = clip_rows(self.root, device_public_key(self.root))
        log.warning("web: %s; listing from the clip files%s", why,
                    " and the signed manifest" if used else " (no usable manifest: no durations)")
        return RowsView(rows)

    def _snapshot(self) -> Path | None:
        """A private copy of the index (None if the store has none), refreshed when it changed."""
        with self._lock:
            fds: dict[str, int] = {}
            try:
                for name in _COPY_NAMES:
                    try:
                        fds[name] = _open_regular_top(self.root, name)
                    except FileNotFoundError:
                        continue
                if layout.INDEX_NAME not in fds:
                    return None
                key = tuple((os.fstat(fd).st_ino, os.fstat(fd).st_size, os.fstat(fd).st_mtime_ns)
                            for fd in fds.values())
                if self._snapshot_dir is None:
                    self._snapshot_dir = Path(tempfile.mkdtemp(prefix="camrec-web-index-"))
                if key != self._snapshot_key or self._current is None:
                    # A new generation each time: a request still reading the previous copy (in
                    # another thread) keeps its files; generations before that one are removed.
                    self._generation += 1
                    current = self._snapshot_dir / str(self._generation)
                    current.mkdir(mode=0o700)
                    for name, fd in fds.items():
                        with open(current / name, "xb") as out, os.fdopen(fd, "rb", closefd=False) as src:
                            shutil.copyfileobj(src, out, 1 << 20)
                    shutil.rmtree(self._snapshot_dir / str(self._generation - 2), ignore_errors=True)
                    self._snapshot_key, self._current = key, current
                return self._current / layout.INDEX_NAME
            except OSError as exc:
                raise StorageError(f"cannot read the clip index: {exc.strerror or exc}") from None
            finally:
                for fd in fds.values():
                    os.close(fd)


def _open_regular_top(root: Path, name: str) -> int:
    fd = os.open(root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StorageError(f"{name} in the store is not a regular file: not read")
    return fd


def usable(rows: list[ClipRow], root: Path) -> list[ClipRow]:
    """The rows whose paths are a clip's (others logged), `recording` shown as `partial` when no
    recorder holds the store."""
    good, _ = untrusted.checked_rows(rows, _warn_once)
    return rows_as_cut_without_recorder(root, good)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A skipped row is logged once per process, not at every page load that lists it."""
    if message not in _warned and len(_warned) < 10000:
        _warned.add(message)
        log.warning("web: %s", message.removeprefix("camrec: warning: "))


def query(reader: IndexReader, **kwargs: Any) -> list[ClipRow]:
    index = reader.open()
    try:
        rows = index.query(states=VISIBLE_STATES, **kwargs)
    finally:
        index.close()
    return usable(rows, reader.root)
