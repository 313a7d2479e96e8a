"""The audit log: who decrypted or exported which clips, when, with which key — hash-chained.

Every command that turns clips into plaintext calls `record()` *before* releasing the first byte
(audit-before-release): if the entry can't be written and fsynced, the command fails with a
StorageError and nothing is decrypted. An entry therefore means "plaintext of these files may
have been released", even if the command later failed.

Where: `<storage>/audit.jsonl` when the files are inside a camrec store (given, or found by
walking up from the first file to `index.sqlite3`); otherwise `$CAMREC_AUDIT_LOG`, else
`$XDG_STATE_HOME/camrec/audit.jsonl` (default `~/.local/state/camrec/audit.jsonl`).

What an entry holds: time, user, host, pid, the command line, the event, the files (relative to
the store) and the *recipients* (public keys) of the identities used — never an identity. The
chain uses the manifest's format and ChainWriter (crash-safe appends, torn-tail repair) without
a signature: the people who export hold no device key. So anyone who can write the file can
rewrite it whole; the chain shows edits and removals in the middle, and a head saved earlier
(`camrec audit --expect-head`) shows a rewrite. See docs/tamper-evidence.md.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camrec.errors import StorageError
from camrec.redact import redact
from camrec.store import layout
from camrec.store.manifest import ChainCheck, ChainWriter, read_chain

AUDIT_NAME = "audit.jsonl"
ENV_LOG = "CAMREC_AUDIT_LOG"
EVENTS = ("decrypt", "export", "verify", "rekey")
STORE_LOG_MODE = 0o660  # group members who may export can append (see prepare_store_log)
USER_LOG_MODE = 0o600


def state_log_path() -> Path:
    """The per-user log for files that are not inside a store."""
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


def record(event: str, *, files: Sequence[str | os.PathLike[str]], recipients: Sequence[str],
           storage_root: Path | None = None, log_path: Path | None = None, command: str | None = None,
           now: float | None = None) -> dict[str, Any]:
    """Appends one fsynced entry; raises StorageError (nothing may be decrypted then).

    With `storage_root`, relative `files` are relative to it (index paths); without it, they are
    ordinary paths and the store is found from the first one; outside a store the per-user log
    is used.
    """
    store_relative = storage_root is not None
    if storage_root is None and files:
        storage_root = find_store_root(Path(files[0]))
    if log_path is None:
        log_path = storage_root / AUDIT_NAME if storage_root is not None else state_log_path()
    mode = STORE_LOG_MODE if storage_root is not None and log_path.parent == storage_root else USER_LOG_MODE
    if command is None:
        command = shlex.join(["camrec", *sys.argv[1:]])
    body = {"event": event, "user": _user(), "host": socket.gethostname(), "pid": os.getpid(),
            "command": redact(command), "files": _relative(files, storage_root, store_relative),
            "recipients": list(recipients)}
    if storage_root is not None:
        body["store"] = str(storage_root.resolve())
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise _fail(log_path, exc) from None
    writer = ChainWriter(log_path, mode=mode)
    try:
        entries = writer.append(lambda: [body], time.time() if now is None else now)
    except StorageError as exc:
        raise StorageError(f"{exc.message}: refusing to decrypt without an audit entry",
                           hint=_hint(log_path)) from None
    finally:
        writer.close()
    return entries[-1]


def _fail(path: Path, exc: OSError) -> StorageError:
    return StorageError(f"cannot write the audit log {path}: {exc.strerror or exc}: "
                        "refusing to decrypt without an audit entry", hint=_hint(path))


def _hint(path: Path) -> str:
    return (f"the user running camrec must be able to append to {path} "
            "(e.g. be in the storage group; `camrec run` creates it group-writable)")


def read(path: Path, heads: Sequence[tuple[int, str]] = ()) -> ChainCheck:
    """The whole log, with its chain (and any pinned heads) checked; no signatures (see above)."""
    return read_chain(path, signed=False, entry_problem=_entry_problem, heads=heads)


def _entry_problem(entry: dict[str, Any]) -> str | None:
    if entry.get("kind") == "repair":
        return None
    if not isinstance(entry.get("event"), str) or not isinstance(entry.get("files"), list):
        return "malformed audit entry"
    return None
