"""The SQLite clip index: what listing, export and retention need, nothing more.

Plaintext by design (documented in README "What is not encrypted"): camera name, start/end time,
duration, size, file names and state. Motion details and images live only in encrypted files.

States:
  recording  the file is being written (or was, when the daemon died: see reconcile)
  complete   closed cleanly with a final age chunk
  partial    cut by a crash: no final chunk; `camrec decrypt --salvage` / export recover its prefix
  missing    the index had a row but the file is gone
  garbage    retention decided to delete it; the file may or may not be unlinked yet
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
import stat
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from camrec.errors import DiskFullError, StorageError, permission_error

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# A new index is written under this name (+ pid) and renamed into place (camrec/store/rebuild.py).
INDEX_TMP_PREFIX = ".index.sqlite3.new-"
# The index holds camera names and clip times: readable by the service's group (the owner's
# tools), never by everyone, whatever the umask. SQLite gives its -wal and -shm files the mode of
# the database file, so setting it on the database covers all three.
INDEX_MODE = 0o640
_SQLITE_FULL = 13
_SQLITE_IOERR = 10
# Below this much free space an SQLite I/O error (e.g. SQLITE_IOERR_SHMSIZE when the -shm file
# can't be created) is a full disk, not a broken one.
_NEARLY_FULL = 256 * 1024
STATES = ("recording", "complete", "partial", "missing", "garbage")

SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (
    id        INTEGER PRIMARY KEY,
    camera    TEXT NOT NULL,
    start     REAL NOT NULL,            -- UTC epoch seconds of the first frame
    end       REAL NOT NULL,            -- UTC epoch seconds after the last frame
    size      INTEGER NOT NULL,         -- bytes on disk (video + thumbnail + details), fsynced
    path      TEXT NOT NULL UNIQUE,     -- video file, relative to the storage root
    thumb     TEXT,                     -- thumbnail file, if one was written
    meta      TEXT,                     -- event details file, if one was written
    state     TEXT NOT NULL CHECK (state IN ('recording','complete','partial','missing','garbage'))
);
CREATE INDEX IF NOT EXISTS clips_by_time ON clips (start);
CREATE INDEX IF NOT EXISTS clips_by_camera ON clips (camera, start);
"""


@dataclass(frozen=True)
class ClipRow:
    id: int
    camera: str
    start: float
    end: float
    size: int
    path: str
    thumb: str | None
    meta: str | None
    state: str

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)


# SQLite result codes meaning "this file is not (or no longer) a sound database". Anything else
# (locked, full disk, I/O error, permissions) is a storage problem, not damage to rebuild from.
_DAMAGE_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
REBUILD_HINT = ("run `camrec index rebuild -c CONFIG` where the recorder runs (the recorder also rebuilds "
                "it by itself when it starts); the index is only a cache of the clip files and the manifest")


class IndexDamaged(StorageError):
    """The index file is unreadable as a database (or is not a regular file): rebuild it."""


def _damaged(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _DAMAGE_CODES
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def _index_error(path: Path, exc: sqlite3.Error, what: str = "clip index") -> StorageError:
    if _damaged(exc):
        return IndexDamaged(f"the {what} {path} is damaged ({exc})", hint=REBUILD_HINT)
    return _sqlite_storage_error(f"{what} {path}", path, exc)


def file_problem(path: Path) -> str | None:
    """Why the index path can't be the index (a link, FIFO, device…), or None (regular or absent)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot reach the clip index {path}: {exc.strerror or exc}") from None
    if stat.S_ISREG(st.st_mode):
        return None
    from camrec.store.layout import describe_kind

    return f"{path} is {describe_kind(st.st_mode)}, not the clip index"


class ClipIndex:
    """Thread-safe access to the index (one connection, one lock: writes are few and small).

    The index is a cache: the clip files and the signed manifest are the truth. So the writer side
    (the daemon, `camrec index rebuild`) never stops on a damaged index: with `rebuild` (default),
    an index that is unreadable, not a regular file, or missing while clip files exist is kept aside
    and built anew from the files and the manifest (camrec/store/rebuild.py). While open, the path is
    checked before every transaction: if the file was deleted or replaced, the rows of the open
    database are copied into a new file at the path instead of going on in an unlinked inode."""

    def __init__(self, path: Path, readonly: bool = False, rebuild: bool = True, *,
                 shown_path: Path | None = None, shared_memory_readonly: bool = False) -> None:
        """readonly: `mode=ro`; the owner's tools open through camrec/store/index_copy.py, which
        passes `shown_path` (the store's index, named in messages instead of a private copy) and
        `shared_memory_readonly` (never write a live recorder's -shm)."""
        self.path = path
        self.shown_path = shown_path or path
        self.readonly = readonly
        self._shm_readonly = shared_memory_readonly
        self.rebuilt: object | None = None  # the RebuildResult, when opening had to rebuild
        self._lock = threading.Lock()
        self._ident: tuple[int, int] | None = None
        if readonly:
            self._open_readonly()
            return
        reason = self._rebuild_reason()
        if reason is None:
            try:
                self._connect()
            except IndexDamaged as exc:
                reason = exc.message
        if reason is not None:
            if not rebuild:
                raise IndexDamaged(reason, hint=REBUILD_HINT)
            from camrec.store.rebuild import rebuild_index

            log.warning("%s; rebuilding it from the clip files and the manifest", reason)
            try:
                self.rebuilt = rebuild_index(path.parent, reason=reason, tag="damaged")
            except (OSError, sqlite3.Error) as exc:
                raise StorageError(f"{reason}, and it cannot be rebuilt: {getattr(exc, 'strerror', None) or exc}",
                                   hint="free space on the storage disk, or check its owner and permissions; "
                                        "then restart camrec") from None
            self._connect()

    def _open_readonly(self) -> None:
        path, shown = self.path, self.shown_path
        problem = file_problem(path)
        if problem is not None:
            raise IndexDamaged(problem, hint=REBUILD_HINT)
        if not path.exists():
            raise StorageError(f"no clip index at {shown}", hint="has `camrec run` recorded anything yet?")
        if not os.access(path, os.R_OK):
            raise permission_error("the clip index", shown)
        uri = f"file:{urllib.parse.quote(str(path))}?mode=ro" + ("&readonly_shm=1" if self._shm_readonly else "")
        try:
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _index_error(shown, exc) from None

    def _rebuild_reason(self) -> str | None:
        problem = file_problem(self.path)
        if problem is not None:
            return problem
        try:
            size = self.path.stat().st_size
            wal = self.path.with_name(self.path.name + "-wal")
            wal_size = wal.stat().st_size if wal.exists() else 0
        except FileNotFoundError:
            size = wal_size = 0
        except OSError as exc:
            raise StorageError(f"cannot reach the clip index {self.path}: {exc.strerror or exc}") from None
        if size or wal_size:
            return None
        from camrec.store.layout import scan_clip_tree

        if scan_clip_tree(self.path.parent).videos:
            return f"the clip index {self.path} is missing (or empty) but the storage holds clips"
        return None

    def _connect(self) -> None:
        path = self.path
        _create_with_mode(path)
        try:
            self._db = sqlite3.connect(path, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _index_error(path, exc) from None
        try:
            # WAL: a crash never corrupts the index, readers (`camrec list`) don't block the
            # recorder; synchronous=FULL because a row may only exist after its data is durable.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # Garbage or a truncated file may open fine and fail only on some page later: check
            # every page now (milliseconds for a year of clips) rather than mid-recording.
            check = self._db.execute("PRAGMA quick_check").fetchall()
            if [tuple(r) for r in check] != [("ok",)]:
                raise sqlite3.DatabaseError(f"quick_check: {check[0][0]}")
            self._migrate()
            st = os.lstat(path)
        except sqlite3.Error as exc:
            self._db.close()
            err = _index_error(path, exc)
            if isinstance(exc, sqlite3.DatabaseError) and str(exc).startswith("quick_check"):
                err = IndexDamaged(f"the clip index {path} is damaged ({exc})", hint=REBUILD_HINT)
            raise err from None
        except StorageError:
            self._db.close()
            raise
        except OSError as exc:
            self._db.close()
            raise StorageError(f"cannot reach the clip index {path}: {exc.strerror or exc}") from None
        self._ident = (st.st_dev, st.st_ino)

    def _follow_file(self) -> None:
        """Notices an index deleted or replaced under the running daemon (like ChainWriter._same_file)
        and puts the open database's rows back at the path, so nothing is written into an unlinked
        inode that nobody will ever read."""
        try:
            st = os.lstat(self.path)
            ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            ident = None
        except OSError as exc:
            raise StorageError(f"cannot reach the clip index {self.path}: {exc.strerror or exc}") from None
        if ident == self._ident or self._ident is None:
            return
        try:
            moved = os.stat(self.path.parent).st_dev != self._ident[0]
        except OSError:
            moved = True
        if moved:
            # The storage disk was unmounted: the path now leads into another filesystem (the root
            # one), which must not get a new index (Store.check_mount stops the clips, invariant I7).
            return
        log.warning("the clip index %s was %s outside camrec; writing its rows to a new file there",
                    self.path, "removed" if ident is None else "replaced")
        from camrec.store.rebuild import move_aside, new_index_file

        try:
            tmp = new_index_file(self.path.parent)
            try:
                target = sqlite3.connect(tmp)
                try:
                    self._db.backup(target)
                finally:
                    target.close()
                self._db.close()  # checkpoints our WAL into the old inode; its -wal goes away
                if ident is not None:
                    kept = move_aside(self.path, "replaced")
                    log.warning("kept the file found in its place as %s", kept)
                else:  # our own closed connection's -wal/-shm: replayed into the new file, they'd damage it
                    for suffix in ("-wal", "-shm"):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(f"{self.path}{suffix}")
                os.replace(tmp, self.path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            from camrec.store.layout import fsync_dir

            fsync_dir(self.path.parent)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot restore the clip index {self.path}: {exc}") from None
        self._connect()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(f"{self.path} was written by a newer camrec (schema {version})",
                               hint="upgrade camrec")
        with self._db:
            self._db.executescript(SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if not self.readonly:
                self._follow_file()
            try:
                with self._db:
                    yield self._db
            except sqlite3.Error as exc:
                raise _index_error(self.shown_path, exc) from None

    def _write(self, sql: str, args: tuple[object, ...]) -> sqlite3.Cursor:
        """One write statement. On a full disk it is retried once after a checkpoint that restarts
        the WAL: the retry then overwrites WAL space already allocated instead of growing the file,
        so that e.g. marking a clip cut by ENOSPC `partial` still succeeds on a full disk."""
        try:
            with self._tx() as db:
                return db.execute(sql, args)
        except DiskFullError:
            with self._lock, contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(RESTART)")
            with self._tx() as db:
                return db.execute(sql, args)

    def checkpoint(self) -> None:
        """Copies the WAL into the database file now (best effort). Done when a clip opens, so that
        the pages its updates rewrite already exist in the database file: on a full disk, the
        checkpoint-and-retry in `_write` then needs no new space at all."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def insert(self, camera: str, start: float, path: str, size: int, state: str = "recording",
               end: float | None = None) -> int:
        cur = self._write("INSERT INTO clips (camera, start, end, size, path, state) VALUES (?, ?, ?, ?, ?, ?)",
                          (camera, start, start if end is None else end, size, path, state))
        return int(cur.lastrowid or 0)

    def update(self, clip_id: int, **fields: object) -> None:
        allowed = {"end", "size", "state", "thumb", "meta"}
        if not fields or not set(fields) <= allowed:
            raise ValueError(f"cannot update {sorted(fields)}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._write(f"UPDATE clips SET {cols} WHERE id = ?", (*fields.values(), clip_id))

    def delete(self, clip_id: int) -> None:
        self._write("DELETE FROM clips WHERE id = ?", (clip_id,))

    def query(self, camera: str | None = None, since: float | None = None, until: float | None = None,
              states: tuple[str, ...] | None = None) -> list[ClipRow]:
        """Clips overlapping [since, until], oldest first."""
        where: list[str] = []
        args: list[object] = []
        if camera is not None:
            where.append("camera = ?")
            args.append(camera)
        if since is not None:
            where.append("end >= ?")
            args.append(since)
        if until is not None:
            where.append("start <= ?")
            args.append(until)
        if states is not None:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args.extend(states)
        sql = "SELECT id, camera, start, end, size, path, thumb, meta, state FROM clips"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._tx() as db:
            rows = db.execute(sql + " ORDER BY start, id", args).fetchall()
        return [ClipRow(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _create_with_mode(path: Path) -> None:
    """Creates the database file with INDEX_MODE before SQLite does (SQLite would use 0644 minus the
    umask), and takes world access away from an existing one (an index made by an older camrec)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, INDEX_MODE)
    except FileExistsError:
        for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(OSError):  # absent, a link, or not ours to change: leave it
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    st = os.fstat(fd)
                    if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_mode & 0o007:
                        os.fchmod(fd, st.st_mode & 0o770 & INDEX_MODE)
                finally:
                    os.close(fd)
        return
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"cannot create the clip index {path}: {exc.strerror}") from None
        raise StorageError(f"cannot create the clip index {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, INDEX_MODE)  # exactly, whatever the umask
    finally:
        os.close(fd)


def _sqlite_storage_error(what: str, path: Path, exc: sqlite3.Error) -> StorageError:
    """A StorageError for an SQLite error; DiskFullError when the disk is full."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    full = code == _SQLITE_FULL
    if code == _SQLITE_IOERR:
        with contextlib.suppress(OSError):
            full = shutil.disk_usage(path.parent).free < _NEARLY_FULL
    if full:
        return DiskFullError(f"{what}: the disk is full ({exc})",
                             hint="retention frees space by deleting the oldest clips; or free space on the disk")
    return StorageError(f"{what}: {exc}")
