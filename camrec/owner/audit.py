"""The audit log: who decrypted or exported which clips, when, with which key — hash-chained.

Every command that turns clips into plaintext (or unwraps their file keys: `verify -i`, `rekey`)
calls `record()` *before* releasing the first byte (audit-before-release): if the entry can't be
written and fsynced, the command fails with a StorageError and nothing is decrypted. An entry
therefore means "plaintext of these files may have been released", even if the command failed.

Where (docs/tamper-evidence.md, "The audit log"):
- always the per-user log, `$CAMREC_AUDIT_LOG`, else `$XDG_STATE_HOME/camrec/audit.jsonl`
  (default `~/.local/state/camrec/audit.jsonl`): created by the user 0600, and written only if it is
  a regular file of the user's own with a single link, opened without following a link;
- also the store's `<storage>/audit.jsonl`, but only when the store is the live one: its root
  directory belongs to another user (the service user) and its `audit.jsonl` is a regular file of
  that same user with a single link. A copy (`rsync -a` makes the owner its owner), a symlink, a
  FIFO or a hard link is never written; a one-line notice says where the entry went instead. A
  store is hostile input to the owner's tools: writing its log on a copy would let whoever
  prepared the copy choose which of the owner's files gets appended to.

What an entry holds: time, user, host, pid, the command line, the event, the files (relative to
the store), the store, and the *recipients* (public keys) of the identities used — never an
identity. The chain uses the manifest's format and ChainWriter (crash-safe appends, torn-tail
repair) without a signature: the people who export hold no device key. So anyone who can write
the file can rewrite it whole; the chain shows edits and removals in the middle, and a head saved
earlier (`camrec audit --expect-head`) shows a rewrite.
"""

from __future__ import annotations

import errno
import getpass
import os
import shlex
import socket
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camrec.errors import StorageError
from camrec.printable import escape_controls
from camrec.redact import redact
from camrec.store import layout
from camrec.store.layout import AUDIT_NAME, STORE_LOG_MODE
from camrec.store.manifest import ChainCheck, ChainFileRefused, ChainWriter, read_chain

ENV_LOG = "CAMREC_AUDIT_LOG"
EVENTS = ("decrypt", "export", "verify", "rekey", "web-fetch")
USER_LOG_MODE = 0o600


def state_log_path() -> Path:
    """The per-user log, which gets every entry (a live store's log gets a copy)."""
    if env := os.environ.get(ENV_LOG):
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "camrec" / AUDIT_NAME


def find_store_root(path: Path) -> Path | None:
    """The camrec store a file lies in: the nearest parent directory holding the clip index."""
    try:
        path = path.resolve()
    except OSError:
        return None
    for d in path.parents:
        if (d / layout.INDEX_NAME).is_file():
            return d
    return None


def recipients_of(identities: Sequence[Any]) -> list[str]:
    """The public halves of identities, for the log; a passphrase identity has none."""
    out = []
    for ident in identities:
        recipient = getattr(ident, "recipient", None)
        if callable(recipient):
            out.append(str(recipient()))
        else:  # a passphrase has no public half; name only its kind, never anything derived from it
            out.append("(passphrase)" if "scrypt" in type(ident).__name__.lower() else f"({type(ident).__name__})")
    return out


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): the uid still identifies
        return f"uid {os.getuid()}"


def _relative(files: Sequence[str | os.PathLike[str]], root: Path | None, store_relative: bool) -> list[str]:
    """Paths as the log shows them: relative to the store when inside it, else absolute."""
    resolved_root = root.resolve() if root is not None else None
    out = []
    for f in files:
        p = Path(f)
        if store_relative and resolved_root is not None and not p.is_absolute():
            p = resolved_root / p
        p = p.resolve()
        out.append(p.relative_to(resolved_root).as_posix() if resolved_root is not None
                   and p.is_relative_to(resolved_root) else str(p))
    return out


class _UserLog(ChainWriter):
    """The per-user log: the user's own regular file, one link (not a hard link to another file)."""

    def _refusal(self, st: os.stat_result) -> str | None:
        if (reason := super()._refusal(st)) is not None:
            return reason
        if st.st_uid != os.geteuid():
            return f"owned by uid {st.st_uid}, not by you"
        return "has several hard links" if st.st_nlink != 1 else None


class _LiveStoreLog(ChainWriter):
    """A live store's log: exists already (the daemon made it), belongs to the service user."""

    create_missing = False

    def __init__(self, path: Path, service_uid: int) -> None:
        super().__init__(path, mode=STORE_LOG_MODE)
        self.service_uid = service_uid

    def _refusal(self, st: os.stat_result) -> str | None:
        if (reason := super()._refusal(st)) is not None:
            return reason
        if st.st_uid != self.service_uid:
            return f"owned by uid {st.st_uid}, not by the store's owner (uid {self.service_uid})"
        return "has several hard links" if st.st_nlink != 1 else None


def record(event: str, *, files: Sequence[str | os.PathLike[str]], recipients: Sequence[str],
           storage_root: Path | None = None, log_path: Path | None = None, command: str | None = None,
           now: float | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Appends one fsynced entry; raises StorageError (nothing may be decrypted then).

    With `storage_root`, relative `files` are relative to it (index paths); without it, they are
    ordinary paths and the store is found from the first one. The entry goes to `log_path` if
    given (tests, tools), else to the per-user log and, for a live store, to the store's log too.
    `extra` adds fields of the event's own (a web fetch: the client address, the byte range); it
    cannot replace the fields above.
    """
    store_relative = storage_root is not None
    if storage_root is None and files:
        storage_root = find_store_root(Path(files[0]))
    if command is None:
        command = shlex.join(["camrec", *sys.argv[1:]])
    body = {"event": event, "user": _user(), "host": socket.gethostname(), "pid": os.getpid(),
            "command": redact(command), "files": _relative(files, storage_root, store_relative),
            "recipients": list(recipients)}
    body = {**(extra or {}), **body}
    if storage_root is not None:
        body["store"] = str(storage_root.resolve())
    t = time.time() if now is None else now
    user_log = log_path if log_path is not None else state_log_path()
    try:
        user_log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise _fail(user_log, exc) from None
    entry = _append(_UserLog(user_log, mode=USER_LOG_MODE), body, t)
    if storage_root is not None and log_path is None:
        store_log = storage_root / AUDIT_NAME
        reason = _not_live(storage_root)
        if reason is None:
            try:
                _append(_LiveStoreLog(store_log, os.stat(storage_root).st_uid), body, t)
            except ChainFileRefused as exc:
                reason = exc.message
        if reason is not None:
            print(f"camrec: note: audit entry written to {escape_controls(user_log)} only, not to "
                  f"{escape_controls(store_log)}: {escape_controls(reason)}", file=sys.stderr)
    return entry


def _not_live(root: Path) -> str | None:
    """Why `root` is not the live store whose log the owner's tools also write (None: it is)."""
    try:
        st = os.stat(root)
    except OSError as exc:
        return f"cannot stat the store ({exc.strerror or exc})"
    if st.st_uid == os.geteuid():
        return "the store belongs to you, so it is a copy, not the recorder's live store"
    return None


def _append(writer: ChainWriter, body: dict[str, Any], now: float) -> dict[str, Any]:
    try:
        entries = writer.append(lambda: [body], now)
    except ChainFileRefused:
        if isinstance(writer, _LiveStoreLog):
            raise  # not the live store's log after all: the caller says where the entry went
        raise StorageError(f"the audit log {escape_controls(writer.path)} is not a file camrec may write "
                           "(a link, not a regular file, or not yours): refusing to decrypt without an audit entry",
                           hint=_hint(writer.path)) from None
    except StorageError as exc:
        raise StorageError(f"{exc.message}: refusing to decrypt without an audit entry",
                           hint=_hint(writer.path)) from None
    finally:
        writer.close()
    return entries[-1]


def _fail(path: Path, exc: OSError) -> StorageError:
    return StorageError(f"cannot write the audit log {path}: {exc.strerror or exc}: "
                        "refusing to decrypt without an audit entry", hint=_hint(path))


def _hint(path: Path) -> str:
    if path.name == AUDIT_NAME and (path.parent / layout.INDEX_NAME).exists():  # a live store's log
        return (f"the user running camrec must be able to append to {escape_controls(path)} "
                "(e.g. be in the storage group; `camrec run` creates it group-writable)")
    return (f"the user running camrec must be able to append to {escape_controls(path)}, a regular file of "
            f"their own (set ${ENV_LOG} to choose another)")


def read(path: Path, heads: Sequence[tuple[int, str]] = ()) -> ChainCheck:
    """The whole log, with its chain (and any pinned heads) checked; no signatures (see above).

    Read-only and as hostile input: never through a link, never a FIFO or device (a missing file
    is an empty log)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return read_chain(path, signed=False, entry_problem=_entry_problem, heads=heads)
    except OSError as exc:
        what = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror or exc})"
        raise StorageError(f"the audit log {escape_controls(path)} {what}: not read") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise StorageError(f"the audit log {escape_controls(path)} is not a regular file: not read")
        # Read through the descriptor just checked (its /proc link names that very file, whatever
        # the name points at by now), so the file can't be swapped between the check and the read.
        return read_chain(Path(f"/proc/self/fd/{fd}"), signed=False, entry_problem=_entry_problem, heads=heads)
    finally:
        os.close(fd)


def _entry_problem(entry: dict[str, Any]) -> str | None:
    if entry.get("kind") == "repair":
        return None
    if not isinstance(entry.get("event"), str) or not isinstance(entry.get("files"), list):
        return "malformed audit entry"
    return None
