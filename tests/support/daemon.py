"""`camrec run` as a child process, the way systemd runs it, for integration tests."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from camrec.crypto.keys import X25519Identity

# `camrec <args>` with some module constants set first (argv[1]: JSON {"module.NAME": value}), for
# tests that need a product timing shortened in a child process, where monkeypatch cannot reach.
_PATCHED_MAIN = """\
import importlib, json, sys
for name, value in json.loads(sys.argv[1]).items():
    module, _, attr = name.rpartition(".")
    mod = importlib.import_module(module)
    if not hasattr(mod, attr):
        raise SystemExit(f"no constant {name} to patch")
    setattr(mod, attr, value)
from camrec.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


class Daemon:
    """`camrec run` as a child process, the way systemd runs it."""

    def __init__(self, tmp: Path, url: str, detect_url: str | None = None, *, pre_roll: float = 3.0,
                 post_roll: float = 2.0, extra: str = "") -> None:
        self.owner = X25519Identity.generate()
        self.key = tmp / "owner.key"
        self.key.write_text(str(self.owner) + "\n")
        self.storage = tmp / "storage"
        self.storage.mkdir(exist_ok=True)  # `camrec run` creates no storage but /var/lib/camrec
        self.config = tmp / "camrec.yaml"
        detect = f"    detect_source: {detect_url}\n" if detect_url else ""
        self.config.write_text(
            f"recipients: [{self.owner.recipient()}]\nstorage:\n  path: {self.storage}\n"
            f"cameras:\n  front:\n    source: {url}\n{detect}"
            f"    pre_roll: {pre_roll}s\n    post_roll: {post_roll}s\n    read_timeout: 2s\n{extra}")
        self.log = tmp / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, constants: Mapping[str, float] | None = None) -> None:
        """`camrec run`; `constants` ({"camrec.module.NAME": value}) are set in the child first."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self._command("run", "-c", str(self.config), constants=constants),
                                         stdout=log, stderr=subprocess.STDOUT)

    @staticmethod
    def _command(*args: str, constants: Mapping[str, float] | None = None) -> list[str]:
        if constants:
            return [sys.executable, "-c", _PATCHED_MAIN, json.dumps(dict(constants)), *args]
        return [sys.executable, "-m", "camrec", *args]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def rows(self) -> list[dict]:
        db = self.storage / "index.sqlite3"
        if not db.exists():
            return []
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                con.row_factory = sqlite3.Row
                return [dict(r) for r in con.execute("SELECT * FROM clips ORDER BY start")]
        except sqlite3.OperationalError:  # the daemon is creating the index right now
            return []

    def wait_for(self, predicate, timeout: float, what: str) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.rows()
            if predicate(rows):
                return rows
            assert self.proc is None or self.proc.poll() is None, self.log.read_text()
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; rows={self.rows()}\n{self.log.read_text()}")

    def cli(self, *args: str, constants: Mapping[str, float] | None = None) -> subprocess.CompletedProcess:
        """`camrec <args>`; `constants` ({"camrec.module.NAME": value}) are set in the child first."""
        return subprocess.run(self._command(*args, constants=constants), capture_output=True, text=True, timeout=120)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def status(self) -> dict[str, Any]:
        """The daemon's status document (status.json in the storage directory outside systemd)."""
        try:
            return json.loads((self.storage / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
