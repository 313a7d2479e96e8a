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

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from camrec.errors import StorageError

SCHEMA_VERSION = 1
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
                self._db = sqlite3.connect(path, check_same_thread=False)
                # WAL: a crash never corrupts the index, readers (`camrec list`) don't block the
                # recorder; synchronous=FULL because a row may only exist after its data is durable.
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._migrate()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the clip index {path}: {exc}") from None
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
                raise StorageError(f"clip index {self.path}: {exc}") from None

    def insert(self, camera: str, start: float, path: str, size: int, state: str = "recording",
               end: float | None = None) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO clips (camera, start, end, size, path, state) VALUES (?, ?, ?, ?, ?, ?)",
                (camera, start, start if end is None else end, size, path, state),
            )
            return int(cur.lastrowid or 0)

    def update(self, clip_id: int, **fields: object) -> None:
        allowed = {"end", "size", "state", "thumb", "meta"}
        if not fields or not set(fields) <= allowed:
            raise ValueError(f"cannot update {sorted(fields)}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE clips SET {cols} WHERE id = ?", (*fields.values(), clip_id))

    def delete(self, clip_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM clips WHERE id = ?", (clip_id,))

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
