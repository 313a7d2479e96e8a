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
import os
import shutil
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from camrec.errors import DiskFullError, StorageError

SCHEMA_VERSION = 1
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

_SCHEMA = """
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


class ClipIndex:
    """Thread-safe access to the index (one connection, one lock: writes are few and small)."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        try:
            if readonly:
                if not path.exists():
                    raise StorageError(f"no clip index at {path}", hint="has `camrec run` recorded anything yet?")
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            else:
                _create_with_mode(path)
                self._db = sqlite3.connect(path, check_same_thread=False)
                # WAL: a crash never corrupts the index, readers (`camrec list`) don't block the
                # recorder; synchronous=FULL because a row may only exist after its data is durable.
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._migrate()
        except sqlite3.Error as exc:
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self._db.close()
            raise _index_error(f"cannot open the clip index {path}", path, exc) from None
        self._lock = threading.Lock()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(f"{self.path} was written by a newer camrec (schema {version})",
                               hint="upgrade camrec")
        with self._db:
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with self._db:
                    yield self._db
            except sqlite3.Error as exc:
                raise _index_error(f"clip index {self.path}", self.path, exc) from None

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


def _index_error(what: str, path: Path, exc: sqlite3.Error) -> StorageError:
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
