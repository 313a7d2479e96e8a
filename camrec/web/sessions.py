"""Login sessions: random ids kept server-side, stored hashed, with idle and absolute lifetimes.

The browser holds the only copy of a session id (the cookie); the server keeps SHA-256(id), so a
copy of `sessions.json` opens no session. Each session has its own CSRF token, which the page sends
in `X-CSRF-Token` on every non-GET request.

Sessions survive a restart of the recorder: they are written (0600, atomically) to
`<state_dir>/sessions.json` whenever one is opened or ended. The last-use time is written at most
once a minute per session (a write per request would wear an SD card), so after a restart a
session may expire up to a minute early; never late.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from camrec.errors import StorageError
from camrec.web.files import ensure_private_dir, read_private, write_private

log = logging.getLogger(__name__)

SESSIONS_NAME = "sessions.json"
TOUCH_PERSIST_SECONDS = 60.0
MAX_SESSIONS_PER_USER = 50  # the oldest are dropped: a script logging in in a loop can't fill the disk
MAX_SESSIONS_BYTES = 4 * 1024 * 1024


def hash_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass
class Session:
    user: str
    epoch: str  # the user's epoch at login (camrec.web.accounts): a new password ends the session
    csrf: str
    created: float
    last_seen: float
    persisted_seen: float = 0.0

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class SessionStore:
    """Open sessions by hashed id. `path` None keeps them in memory only. Thread-safe."""

    def __init__(self, path: Path | None, *, idle: float, lifetime: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.idle = idle
        self.lifetime = lifetime
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        if path is not None:
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        try:
            data = read_private(self.path, MAX_SESSIONS_BYTES)
        except StorageError as exc:
            log.error("web: %s; everyone logs in again", exc.message)
            return
        if data is None:
            return
        try:
            doc = json.loads(data)
            now = self.clock()
            for key, s in doc["sessions"].items():
                session = Session(str(s["user"]), str(s["epoch"]), str(s["csrf"]), float(s["created"]),
                                  float(s["last_seen"]))
                session.persisted_seen = session.last_seen
                if len(key) == 64 and not self._expired(session, now):
                    self._sessions[key] = session
        except (ValueError, KeyError, TypeError, AttributeError):
            log.error("web: %s is not a sessions file; everyone logs in again", self.path)
            self._sessions = {}

    def _save_locked(self) -> None:
        if self.path is None:
            return
        doc = {"version": 1, "sessions": {k: {f: v for f, v in asdict(s).items() if f != "persisted_seen"}
                                          for k, s in self._sessions.items()}}
        try:
            ensure_private_dir(self.path.parent)
            write_private(self.path, json.dumps(doc).encode())
        except StorageError as exc:
            # Sessions still work in memory; only a restart would log people out.
            log.error("web: %s", exc.message)
            return
        for s in self._sessions.values():
            s.persisted_seen = s.last_seen

    def _expired(self, s: Session, now: float) -> bool:
        return now - s.last_seen > self.idle or now - s.created > self.lifetime or now < s.created - 300

    def _sweep_locked(self, now: float) -> bool:
        doomed = [k for k, s in self._sessions.items() if self._expired(s, now)]
        for k in doomed:
            del self._sessions[k]
        return bool(doomed)

    def create(self, user: str, epoch: str) -> tuple[str, Session]:
        """A new session: (the id for the cookie, the session). Only the id's hash is kept."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(user, epoch, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._sweep_locked(now)
            mine = sorted((s.created, k) for k, s in self._sessions.items() if s.user == user)
            for _, k in mine[: max(0, len(mine) - MAX_SESSIONS_PER_USER + 1)]:
                del self._sessions[k]
            self._sessions[hash_id(session_id)] = session
            self._save_locked()
        return session_id, session

    def lookup(self, session_id: str | None, current_epoch: Callable[[str], str | None]) -> Session | None:
        """The live session for this id, its last use updated; None if unknown or expired, or if
        its user was removed or changed password since (`current_epoch(user)`)."""
        if not session_id or len(session_id) > 256:
            return None
        key = hash_id(session_id)
        now = self.clock()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if self._expired(session, now) or current_epoch(session.user) != session.epoch:
                del self._sessions[key]
                self._save_locked()
                return None
            session.last_seen = now
            if now - session.persisted_seen >= TOUCH_PERSIST_SECONDS:
                self._sweep_locked(now)
                self._save_locked()
            return session

    def alive(self, session_id: str | None, current_epoch: Callable[[str], str | None]) -> bool:
        """Whether `lookup` would accept this id, without counting as a use: a live view that runs
        for hours must not keep an otherwise idle session open."""
        if not session_id or len(session_id) > 256:
            return False
        with self._lock:
            session = self._sessions.get(hash_id(session_id))
            return (session is not None and not self._expired(session, self.clock())
                    and current_epoch(session.user) == session.epoch)

    def end(self, session_id: str | None) -> bool:
        if not session_id:
            return False
        with self._lock:
            if self._sessions.pop(hash_id(session_id), None) is None:
                return False
            self._save_locked()
            return True

    def end_user(self, user: str) -> int:
        with self._lock:
            doomed = [k for k, s in self._sessions.items() if s.user == user]
            for k in doomed:
                del self._sessions[k]
            if doomed:
                self._save_locked()
            return len(doomed)

    def count(self) -> int:
        with self._lock:
            return len(self._sessions)
