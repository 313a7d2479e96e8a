"""Reading a store's clip index on the owner's side without writing anything into the store.

SQLite writes even through a read-only connection: opening a WAL-mode database with `mode=ro`
creates `index.sqlite3-wal` and `-shm` beside it when they are absent (a store whose recorder
stopped cleanly, a pulled disk), and rewrites the `-shm` of an `rsync -a` copy (the first
connection to a database re-initialises its shared memory). `immutable=1` avoids the writes but
ignores the `-wal`, so the rows a live recorder had not checkpointed yet (every recent clip of a
copy made while it ran) would be missing. Hence (tests/test_owner_readonly_store.py shows each case):

* no live recorder holds the store (camrec/store/lock.py): the index and its `-wal`, each opened
  without following a link, checked to be a regular file and bounded in size, are copied into a
  private temporary directory (0700) and opened there; SQLite's `-shm` is made in that directory.
  The store's `-shm` is never read: it is derived data, rebuilt from the `-wal`.
* a live recorder holds it and its `-wal` and `-shm` exist: the index is opened in place with
  `mode=ro&readonly_shm=1`. The recorder keeps the `-shm` up to date; a reader that cannot write
  it takes SQLite's path for read-only shared memory (the one an owner in the service's group
  takes anyway, the files being 0640), so even as the service user nothing is written.
  `readonly_shm` is the parameter of SQLite's own tests (walro2.test); an SQLite that does not know
  it ignores it and merely updates its read marks in the live `-shm`.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

from camrec.errors import StorageError, permission_error
from camrec.store import layout
from camrec.store.index import REBUILD_HINT, ClipIndex, IndexDamaged, file_problem
from camrec.store.lock import recorder_running

__all__ = ["MAX_INDEX_BYTES", "IndexCopies", "live_index", "open_owner_index"]

WAL_SUFFIX, SHM_SUFFIX = "-wal", "-shm"
_COPIED = (layout.INDEX_NAME, layout.INDEX_NAME + WAL_SUFFIX)
# Far above any index camrec writes (a year of clips of ten cameras is tens of MB): a larger file
# in a copied store is not camrec's, and must not fill the owner's temporary directory.
MAX_INDEX_BYTES = 1 << 30


def live_index(root: Path) -> bool:
    """Whether the index is a live recorder's, with its -wal and -shm in place (open it in place)."""
    if not recorder_running(root):
        return False
    for suffix in (WAL_SUFFIX, SHM_SUFFIX):
        try:
            if not stat.S_ISREG(os.lstat(root / (layout.INDEX_NAME + suffix)).st_mode):
                return False
        except OSError:
            return False
    return True


class IndexCopies:
    """Private copies of a store's index, refreshed when the store's files changed (the web app
    keeps one for many requests; `open_owner_index` makes one for one command). Thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._dir: Path | None = None
        self._key: tuple[tuple[int, int, int], ...] | None = None
        self._current: Path | None = None
        self._generation = 0

    def current(self) -> Path | None:
        """The index path of an up-to-date copy (None if the store has no index). StorageError when
        a file can't be read; IndexDamaged when it is not a regular file or is too large."""
        with self._lock:
            fds: dict[str, int] = {}
            try:
                for name in _COPIED:
                    try:
                        fds[name] = _open_regular(self.root / name)
                    except FileNotFoundError:
                        continue
                if layout.INDEX_NAME not in fds:
                    return None
                stats = [os.fstat(fd) for fd in fds.values()]
                if sum(st.st_size for st in stats) > MAX_INDEX_BYTES:
                    raise _too_large(self.root)
                key = tuple((st.st_ino, st.st_size, st.st_mtime_ns) for st in stats)
                if self._dir is None:
                    self._dir = Path(tempfile.mkdtemp(prefix="camrec-index-"))
                if key != self._key or self._current is None:
                    # A new generation each time: a reader still using the previous copy (in another
                    # thread) keeps its files; generations before that one are removed.
                    self._generation += 1
                    current = self._dir / str(self._generation)
                    current.mkdir(mode=0o700)
                    budget = MAX_INDEX_BYTES
                    for name, fd in fds.items():
                        budget -= _copy_bounded(fd, current / name, budget, self.root)
                    shutil.rmtree(self._dir / str(self._generation - 2), ignore_errors=True)
                    self._key, self._current = key, current
                return self._current / layout.INDEX_NAME
            except PermissionError:
                raise permission_error("the clip index", self.root / layout.INDEX_NAME) from None
            except OSError as exc:
                raise StorageError(f"cannot read the clip index {self.root / layout.INDEX_NAME}: "
                                   f"{exc.strerror or exc}") from None
            finally:
                for fd in fds.values():
                    os.close(fd)

    def close(self) -> None:
        with self._lock:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = self._current = self._key = None


class _CopiedIndex(ClipIndex):
    """A read-only ClipIndex over a private copy; closing it removes the copy."""

    def __init__(self, copies: IndexCopies, path: Path, shown: Path) -> None:
        self._copies = copies
        super().__init__(path, readonly=True, shown_path=shown)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._copies.close()


def open_owner_index(root: Path) -> ClipIndex:
    """The store's index, read-only, writing nothing into the store (see the module's docstring).
    Raises what ClipIndex(readonly=True) raises: IndexDamaged for a file that is not a regular one
    (or not a database, which shows at the first query), StorageError when there is none."""
    path = root / layout.INDEX_NAME
    problem = file_problem(path)
    if problem is not None:
        raise IndexDamaged(problem, hint=REBUILD_HINT)
    if live_index(root):
        return ClipIndex(path, readonly=True, shared_memory_readonly=True)
    copies = IndexCopies(root)
    try:
        copy = copies.current()
        if copy is None:
            raise StorageError(f"no clip index at {path}", hint="has `camrec run` recorded anything yet?")
        return _CopiedIndex(copies, copy, path)
    except BaseException:
        copies.close()
        raise


def _open_regular(path: Path) -> int:
    """A descriptor on `path`, never through a link, never blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise
        if os.path.islink(path):
            raise IndexDamaged(f"{path} is a symbolic link, not the clip index", hint=REBUILD_HINT) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise IndexDamaged(f"{path} is {layout.describe_kind(st.st_mode)}, not the clip index", hint=REBUILD_HINT)
    return fd


def _copy_bounded(fd: int, dest: Path, budget: int, root: Path) -> int:
    """Copies the open file into `dest` (created new, 0600); at most `budget` bytes, whatever its
    size said a moment ago (a file growing meanwhile is cut off with an error, not copied whole)."""
    copied = 0
    out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        while chunk := os.pread(fd, 1 << 20, copied):
            copied += len(chunk)
            if copied > budget:
                raise _too_large(root)
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view):]
    finally:
        os.close(out)
    return copied


def _too_large(root: Path) -> IndexDamaged:
    return IndexDamaged(f"the clip index {root / layout.INDEX_NAME} (with its -wal) is larger than "
                        f"{MAX_INDEX_BYTES >> 20} MiB, far more than camrec writes: not read", hint=REBUILD_HINT)
