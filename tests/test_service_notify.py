"""`camrec run` under a (simulated) systemd: READY after recovery, STATUS, WATCHDOG while healthy."""

from __future__ import annotations

import itertools
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time

from camrec.crypto.keys import X25519Identity
from camrec.sources import MediaPacket, StreamInfo
from camrec.sources.capture import Capture
from camrec.sources.hub import PacketHub
from camrec.store.writer import Store


def test_ready_after_recovery_then_watchdog_and_status(tmp_path):
    owner = X25519Identity.generate()
    storage = tmp_path / "storage"
    # A clip left `recording` by a crash: recovery must turn it partial before READY.
    store = Store(storage, [owner.recipient()])
    clip = store.open_clip("front", time.time() - 100)
    clip.write(b"x" * 100_000, time.time() - 99)
    clip.sync()
    store.close()
    cfg = tmp_path / "camrec.yaml"
    cfg.write_text(f"recipients: [{owner.recipient()}]\nstorage:\n  path: {storage}\ncameras:\n  front:\n"
                   "    source: \"synthetic:?motion=1-4&period=600\"\n")
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(15)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}
    proc = subprocess.Popen([sys.executable, "-m", "camrec", "run", "-c", str(cfg), "--duration", "4s"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    messages: list[tuple[float, str]] = []
    state_at_ready = None
    try:
        while True:
            try:
                data = sock.recv(4096).decode()
            except TimeoutError:
                break
            messages.append((time.monotonic(), data))
            if "READY=1" in data and state_at_ready is None:
                with sqlite3.connect(storage / "index.sqlite3") as db:
                    state_at_ready = db.execute("SELECT state FROM clips").fetchone()[0]
            if "STOPPING=1" in data:
                break
        assert proc.wait(timeout=20) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
    kinds = [m for _, m in messages]
    assert any("READY=1" in m for m in kinds), kinds
    assert state_at_ready == "partial"
    assert any(m.startswith("STATUS=") and "front:" in m for m in kinds), kinds
    pings = [t for t, m in messages if "WATCHDOG=1" in m]
    assert len(pings) >= 4, kinds  # every ~0.5 s for 1 s WatchdogSec over 4 s
    assert max(b - a for a, b in itertools.pairwise(pings)) < 1.0
    assert "STOPPING=1" in kinds[-1]
    ready_index = next(i for i, m in enumerate(kinds) if "READY=1" in m)
    assert not any("WATCHDOG=1" in m for m in kinds[:ready_index])


class _HangingSource:
    """A camera connection stuck inside FFmpeg: read() never returns (the fault PyAV timeouts miss)."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def open(self) -> StreamInfo:
        from fractions import Fraction

        return StreamInfo("h264", 64, 64, Fraction(1, 15), 15.0)

    def read(self) -> MediaPacket | None:
        self.release.wait()
        return None

    def close(self) -> None:
        pass


def test_a_hung_capture_is_reported_as_stuck():
    release, stop = threading.Event(), threading.Event()
    cap = Capture("cam", "main", lambda gen: _HangingSource(release), PacketHub("cam/main"), stop,
                  stall_limit=0.5)
    cap.start()
    try:
        time.sleep(0.2)
        assert not cap.stuck(time.monotonic())
        time.sleep(0.6)
        assert cap.stuck(time.monotonic())
    finally:
        stop.set()
        release.set()
        cap.join(5)
    assert not cap.is_alive()
