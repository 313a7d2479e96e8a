"""Web users: names and argon2id password hashes in `<state_dir>/users.json` (0600).

There is no default user and no default password: `camrec user add` makes the first one. Each user
has an `epoch`, a random token that changes with the password; a session remembers the epoch it was
opened under, so changing a password or removing a user ends that user's sessions, even when the
change is made by `camrec user` in another process while the recorder runs (the server re-reads the
file when its modification time or size changes).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from camrec.errors import StorageError, UsageError
from camrec.web.files import ensure_private_dir, read_private, write_private

USERS_NAME = "users.json"
USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
USER_NAME_HELP = "1-64 characters from A-Z a-z 0-9 _ . @ -, starting with a letter or digit"
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 would take more, but a longer "password" is a pasted file by mistake
MAX_USERS_BYTES = 1024 * 1024
VERSION = 1


@dataclass(frozen=True)
class User:
    name: str
    hash: str
    epoch: str
    created: float
    changed: float


def check_name(name: str) -> str:
    if not USER_NAME.fullmatch(name):
        raise UsageError(f"invalid user name {name!r}", hint=f"use {USER_NAME_HELP}")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"the password is too short ({len(password)} characters; at least {MIN_PASSWORD})",
                         hint="a few random words make a long password that is easy to type on a phone")
    if len(password) > MAX_PASSWORD:
        raise UsageError(f"the password is too long (more than {MAX_PASSWORD} characters)")
    return password


class Accounts:
    """The users file. Thread-safe; every change is written at once (atomically, 0600)."""

    def __init__(self, state_dir: Path, hasher: PasswordHasher | None = None) -> None:
        self.state_dir = state_dir
        self.path = state_dir / USERS_NAME
        # argon2-cffi's defaults are RFC 9106's low-memory profile (argon2id, t=3, 64 MiB, p=4).
        self.hasher = hasher or PasswordHasher()
        self._lock = threading.Lock()
        self._users: dict[str, User] = {}
        self._seen: tuple[int, int, int] | None = None  # (mtime_ns, size, inode) of the file last read
        # Verified against when the name is unknown, so that a wrong name costs the same time as a
        # wrong password and the timing does not tell which names exist.
        self._dummy_hash: str | None = None
        self.reload()

    # --- reading ------------------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self) -> None:
        """Reads the file again if it changed since the last read (cheap: one lstat otherwise)."""
        with self._lock:
            self._reload_locked()

    def _reload_locked(self) -> None:
        stamp = self._stamp()
        if stamp == self._seen and (stamp is not None or not self._users):
            return
        data = read_private(self.path, MAX_USERS_BYTES)
        self._users = self._parse(data) if data is not None else {}
        self._seen = stamp

    def _parse(self, data: bytes) -> dict[str, User]:
        try:
            doc = json.loads(data)
            users = doc["users"]
            if doc.get("version") != VERSION or not isinstance(users, dict):
                raise ValueError("unknown version")
            out = {}
            for name, u in users.items():
                if not isinstance(name, str) or not USER_NAME.fullmatch(name) or not isinstance(u, dict):
                    raise ValueError("bad user entry")
                if not (isinstance(u.get("hash"), str) and isinstance(u.get("epoch"), str)):
                    raise ValueError("bad user entry")
                out[name] = User(name, u["hash"], u["epoch"], float(u.get("created", 0)), float(u.get("changed", 0)))
            return out
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"{self.path} is not a camrec users file ({exc})",
                               hint="fix or remove it, then add the users again with camrec user add") from None

    def _save_locked(self) -> None:
        ensure_private_dir(self.state_dir)
        doc: dict[str, Any] = {"version": VERSION, "users": {
            u.name: {"hash": u.hash, "epoch": u.epoch, "created": u.created, "changed": u.changed}
            for u in sorted(self._users.values(), key=lambda u: u.name)}}
        write_private(self.path, (json.dumps(doc, indent=1) + "\n").encode())
        self._seen = self._stamp()

    # --- queries ------------------------------------------------------------------------------

    def names(self) -> list[str]:
        with self._lock:
            self._reload_locked()
            return sorted(self._users)

    def users(self) -> list[User]:
        with self._lock:
            self._reload_locked()
            return [self._users[n] for n in sorted(self._users)]

    def has_users(self) -> bool:
        return bool(self.names())

    def epoch(self, name: str) -> str | None:
        """The user's current epoch (None: no such user). Sessions compare theirs against it."""
        with self._lock:
            self._reload_locked()
            user = self._users.get(name)
            return user.epoch if user else None

    def verify(self, name: str, password: str) -> str | None:
        """The user's epoch when the password is right, else None. Slow on purpose (argon2id):
        call it off the event loop."""
        with self._lock:
            self._reload_locked()
            user = self._users.get(name)
        if len(password) > MAX_PASSWORD:
            return None
        if user is None and self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_hex(16))
        try:
            self.hasher.verify(user.hash if user else self._dummy_hash or "", password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if user is None:
            return None
        if self.hasher.check_needs_rehash(user.hash):
            self._rehash(name, password)
        return user.epoch

    def _rehash(self, name: str, password: str) -> None:
        # Stronger parameters after an upgrade: the epoch stays (the password did not change).
        with self._lock:
            user = self._users.get(name)
            if user is not None:
                self._users[name] = User(name, self.hasher.hash(password), user.epoch, user.created, user.changed)
                with contextlib.suppress(StorageError):  # the old hash still works; retried next login
                    self._save_locked()

    # --- changes (the `camrec user` commands) --------------------------------------------------

    def add(self, name: str, password: str) -> None:
        check_name(name)
        check_password(password)
        with self._lock:
            self._reload_locked()
            if name in self._users:
                raise UsageError(f"user {name!r} already exists", hint="change the password with camrec user passwd")
            now = time.time()
            self._users[name] = User(name, self.hasher.hash(password), secrets.token_hex(16), now, now)
            self._save_locked()

    def set_password(self, name: str, password: str) -> None:
        """New hash and new epoch: every session of this user ends."""
        check_password(password)
        with self._lock:
            self._reload_locked()
            user = self._users.get(name)
            if user is None:
                raise UsageError(f"no such user {name!r}", hint="camrec user list shows the users")
            self._users[name] = User(name, self.hasher.hash(password), secrets.token_hex(16), user.created,
                                     time.time())
            self._save_locked()

    def remove(self, name: str) -> None:
        with self._lock:
            self._reload_locked()
            if name not in self._users:
                raise UsageError(f"no such user {name!r}", hint="camrec user list shows the users")
            del self._users[name]
            self._save_locked()
