"""The daemon's health and its files: a recorder whose every clip fails is reported and stops
`camrec run` (issue 8, finding 5); SIGHUP closes the open clip like SIGTERM; the index and the status
file have explicit modes whatever the umask; the status file is never written through a link
(finding 10)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from camrec.commands.common import load_config
from camrec.crypto.hybrid import HybridIdentity
from camrec.crypto.keys import X25519Identity
from camrec.errors import StorageError
from camrec.record import recorder as recorder_mod
from camrec.service import daemon as daemon_mod
from tests.support.daemon import Daemon

SYNTHETIC = "synthetic:?motion=0-6&period=6&bitrate=1000"  # an object crossing every 6 s, forever


def clip_fds(storage: Path) -> list[str]:
    """This process's descriptors open on files under `storage`."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(storage)) and target.endswith(".age"):
            found.append(target)
    return found


class NotifyListener(threading.Thread):
    """systemd's side of the notify protocol: collects (monotonic time, message) datagrams."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                continue

    def close(self) -> None:
        self.done.set()
        self.join(5)
        self.sock.close()


def test_recorder_failing_every_clip_is_unhealthy(tmp_path, monkeypatch, caplog):
    """Finding 5: mixed classic and post-quantum recipients (which the config now refuses) made the
    age writer raise for every clip, after the clip file was created. The daemon then recorded
    nothing, left 0-byte files and open descriptors, fed the watchdog and exited 0."""
    monkeypatch.setattr(recorder_mod, "CLIP_FAILURE_SECONDS", 3.0)
    monkeypatch.setattr(daemon_mod, "FAILING_EXIT_SECONDS", 3.0)
    monkeypatch.setattr(recorder_mod, "STORAGE_RETRY_SECONDS", 1.0)  # the three failed clips sooner (was 5 s apart)
    owner = X25519Identity.generate()
    storage = tmp_path / "storage"
    cfg = tmp_path / "camrec.yaml"
    cfg.write_text(f"recipients: [{owner.recipient()}]\nstorage:\n  path: {storage}\ncameras:\n  front:\n"
                   f"    source: \"{SYNTHETIC}\"\n    pre_roll: 1s\n    post_roll: 1s\n")
    listener = NotifyListener(tmp_path / "notify.sock")
    listener.start()
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    d = daemon_mod.Daemon(load_config(str(cfg)))
    # The fault, as the recorder met it: a post-quantum recipient next to the classic one.
    d.recipients.append(HybridIdentity.generate().recipient())
    statuses: list[dict] = []
    stop_polling = threading.Event()

    def poll_status() -> None:
        while not stop_polling.is_set():
            with contextlib.suppress(OSError, ValueError):
                statuses.append(json.loads((storage / "status.json").read_text()))
            stop_polling.wait(0.2)

    poller = threading.Thread(target=poll_status, daemon=True)
    poller.start()
    started = time.monotonic()
    caplog.set_level(logging.INFO)
    try:
        with pytest.raises(StorageError) as caught:
            d.run(duration=60)
    finally:
        stop_polling.set()
        poller.join(5)
        listener.close()
    elapsed = time.monotonic() - started
    # A non-zero exit (9, storage error) after a bounded time of nothing but failures.
    assert caught.value.exit_code == 9
    assert "every clip failed for" in caught.value.message and "post-quantum" in caught.value.message
    assert elapsed < 30, elapsed
    # `camrec status` said so while it ran, per camera.
    failing = [s["cameras"]["front"]["failing"] for s in statuses
               if s.get("state") == "running" and s.get("cameras", {}).get("front", {}).get("failing")]
    assert failing and failing[0].startswith("every clip failed for"), statuses[-3:]
    # The watchdog was fed while healthy, and not once after the camera was reported failing.
    messages = listener.messages
    first_failing = next(t for t, m in messages if "STATUS=" in m and "FAILING" in m)
    pings = [t for t, m in messages if "WATCHDOG=1" in m]
    assert pings and pings[0] < first_failing
    assert not [t for t in pings if t > first_failing], messages
    # Every failed clip was cleaned up: no empty file left behind, no descriptor left open.
    attempts = [r for r in caplog.records if "incompatible recipients" in r.getMessage()]
    assert len(attempts) >= recorder_mod.CLIP_FAILURES_UNHEALTHY, caplog.text[-3000:]
    assert sum("unexpected error in the recorder" in r.getMessage() for r in caplog.records) == 1
    assert list(storage.rglob("*.age")) == []
    assert clip_fds(storage) == []


def test_failing_recorder_exits_nonzero_from_the_cli(tmp_path):
    """The same through `camrec run` as a process: a clip directory the recorder can never create
    (a file sits where the day directory goes) fails every clip; the run ends with exit 9 and one
    clear error line, well before its --duration, instead of exiting 0."""
    d = Daemon(tmp_path, SYNTHETIC, pre_roll=1.0, post_roll=1.0)
    d.storage.mkdir(exist_ok=True)
    (d.storage / "front").write_text("not a directory\n")  # every clip's directory is refused
    # The product's 60 s + 10 s shortened in the child, as the in-process test above does, and the
    # 5 s between clip attempts to 1 s (three failed clips are needed before it counts as failing).
    limits = {"camrec.record.recorder.CLIP_FAILURE_SECONDS": 3.0, "camrec.service.daemon.FAILING_EXIT_SECONDS": 3.0}
    pacing = {"camrec.record.recorder.STORAGE_RETRY_SECONDS": 1.0}
    started = time.monotonic()
    proc = d.cli("run", "-c", str(d.config), "--duration", "100s", constants=limits | pacing)
    elapsed = time.monotonic() - started
    assert proc.returncode == 9, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-2:]
    assert any(line.startswith("camrec: error: recording failed: front: every clip failed for")
               for line in last), last
    assert "Traceback" not in proc.stderr
    assert elapsed < sum(limits.values()) + 20, elapsed  # well before the 100 s --duration
    status = d.cli("status", "-c", str(d.config))  # the owner asks what happened
    assert status.returncode == 9, status.stdout + status.stderr
    assert "front: failing" in status.stdout and "UNHEALTHY: every clip failed for" in status.stdout, status.stdout


def test_sighup_closes_the_open_clip_cleanly(tmp_path):
    d = Daemon(tmp_path, SYNTHETIC, pre_roll=1.0, post_roll=1.0, extra="    max_clip: 60s\n")
    d.start()
    try:
        d.wait_for(lambda rows: any(r["state"] == "recording" for r in rows), 30, "a clip being recorded")
        assert d.stop(signal.SIGHUP) == 0
    finally:
        d.close()
    rows = d.rows()
    assert rows and all(r["state"] == "complete" for r in rows), rows
    assert "received SIGHUP: closing clips and stopping" in d.log.read_text()


def test_index_and_status_are_not_world_readable_under_umask_022(tmp_path):
    d = Daemon(tmp_path, SYNTHETIC, pre_roll=1.0, post_roll=1.0)
    old = os.umask(0o022)  # a daemon started by hand from a login shell
    try:
        d.start()
    finally:
        os.umask(old)
    try:
        d.wait_for(lambda rows: bool(rows), 30, "a clip")
        deadline = time.monotonic() + 10
        while not d.status() and time.monotonic() < deadline:
            time.sleep(0.2)
        names = ["index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm", "status.json"]
        modes = {n: stat.S_IMODE((d.storage / n).stat().st_mode) for n in names}
        assert modes == dict.fromkeys(names, 0o640), {n: oct(m) for n, m in modes.items()}
    finally:
        d.stop()
        d.close()


def test_an_older_world_readable_index_is_tightened(tmp_path):
    from camrec.store.index import ClipIndex

    path = tmp_path / "index.sqlite3"
    old = os.umask(0o022)
    try:
        import sqlite3

        sqlite3.connect(path).close()  # as SQLite creates it: 0644
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    ClipIndex(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_status_is_never_written_through_a_link(tmp_path):
    """A local user plants links at the old predictable temporary name and at status.json itself;
    the daemon's status write must touch neither target."""
    d = Daemon(tmp_path, SYNTHETIC, pre_roll=1.0, post_roll=1.0)
    d.storage.mkdir(exist_ok=True)
    victims = {}
    for name in (".status.json.tmp", "status.json"):
        victim = tmp_path / f"victim-{name.strip('.')}"
        victim.write_text("precious\n")
        victim.chmod(0o600)
        (d.storage / name).symlink_to(victim)
        victims[name] = victim
    d.start()
    try:
        deadline = time.monotonic() + 30
        while d.status().get("state") != "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert d.status().get("state") == "running"
    finally:
        d.stop()
        d.close()
    for victim in victims.values():
        assert victim.read_text() == "precious\n"
        assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    status = d.storage / "status.json"
    assert not status.is_symlink() and stat.S_IMODE(status.stat().st_mode) == 0o640
    assert json.loads(status.read_text())["state"] == "stopped"
    # The old fixed temporary name is removed (the link itself), and no temporary file is left.
    assert [p.name for p in d.storage.iterdir() if p.name.startswith(".status.json")] == []
