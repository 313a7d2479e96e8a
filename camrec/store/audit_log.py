"""The recorder's own entries in the store's audit log, `<storage>/audit.jsonl`.

The owner's tools (camrec.owner.audit) append there who decrypted or exported what; the recorder
appends what its web app did: logins (`web-login`, `web-login-failed`, `web-logout`) and every
ciphertext it handed out (`web-fetch`). Same file, same hash chain, same ChainWriter (file lock,
catch-up with other writers, torn-tail repair, never through a link), so `camrec audit` shows them
all in one sequence. Entries need "event" (str) and "files" (list), like the owner's.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from camrec.store.layout import AUDIT_NAME, STORE_LOG_MODE
from camrec.store.manifest import ChainWriter


class StoreAuditLog:
    """Appends entries to the store's audit log; thread-safe (ChainWriter locks). Each append is
    fsynced and raises StorageError when it fails, so a caller can refuse what it was about to do."""

    def __init__(self, root: Path) -> None:
        self.path = root / AUDIT_NAME
        self._writer = ChainWriter(self.path, mode=STORE_LOG_MODE)
        self._host = socket.gethostname()

    def append(self, body: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
        entry = {"host": self._host, "pid": os.getpid(), "files": [], **body}
        return self._writer.append(lambda: [entry], time.time() if now is None else now)[-1]

    def close(self) -> None:
        self._writer.close()
