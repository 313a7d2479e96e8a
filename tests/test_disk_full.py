"""A full disk (issue 8, finding 4): at start-up the daemon frees space by retention before it opens
the index, or waits for space without exiting; a clip cut by ENOSPC and then a clean stop ends
`partial`; a status write that fails leaves no empty temporary file and no stale status.

Each test mounts a small tmpfs (root only, see tests/test_disk.py) and fills it for real."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camrec.crypto.keys import X25519Identity
from camrec.service.daemon import publish_status
from camrec.store.manifest import read_chain
from camrec.store.writer import Store
from tests.test_daemon_health import NotifyListener
from tests.test_disk import SYNTHETIC, storage_daemon, tmpfs  # noqa: F401 - tmpfs is a fixture

DAY = 86400.0


def fill(disk: Path, name: str = "filler.bin") -> Path:
    """Fills the filesystem to the last byte with a file that is not the recorder's."""
    path = disk / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (65536, 4096, 512, 1):  # then the last pages
            block = b"\xa5" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError:
                    break
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0
    return path


def old_clips(disk: Path, owner: X25519Identity, n: int, size: int) -> list[str]:
    """`n` closed clips of about `size` bytes each, days old, as an earlier run left them."""
    store = Store(disk, [owner.recipient()])
    paths = []
    now = time.time()
    for i in range(n):
        start = now - (n - i) * DAY
        clip = store.open_clip("front", start)
        clip.write(os.urandom(size), start + 10)
        paths.append(clip.close(start + 10).path)
    store.close()
    return paths


def test_full_disk_at_start_retention_first_then_index_then_recording(tmpfs, tmp_path):  # noqa: F811
    disk = tmpfs(16_000_000)
    d = storage_daemon(tmp_path, disk, "  min_free: 0\n")
    clips = old_clips(disk, d.owner, 4, 2_000_000)
    filler = fill(disk)
    d.start()
    try:
        rows = d.wait_for(lambda rows: any(r["state"] == "complete" and r["path"] not in clips for r in rows), 60,
                          "a new clip recorded on the disk that was full")
        assert d.proc is not None and d.proc.poll() is None
        assert d.stop() == 0
    finally:
        d.close()
    log = d.log.read_text()
    assert "the disk was too full to open the index; deleted" in log, log[-3000:]
    assert "Traceback" not in log
    # Oldest first, by the manifest's signed times, and only as many as the index needed.
    gone = [p for p in clips if not (disk / p).exists()]
    assert gone and gone == clips[:len(gone)] and len(gone) < len(clips), gone
    rows = d.rows()
    assert not {r["path"] for r in rows} & set(gone), rows  # no `missing` rows for deleted clips
    assert all(r["state"] == "complete" for r in rows), rows
    assert filler.exists()  # not the recorder's file: never touched
    # Each deletion was signed before the files went.
    chain = read_chain(disk / "manifest.jsonl", signed=False)
    deleted = [ln.entry["clip"] for ln in chain.lines if ln.entry and ln.entry.get("kind") == "delete"]
    assert deleted == gone


@pytest.mark.parametrize("store", ["existing", "new"])
def test_full_disk_with_nothing_to_delete_waits_and_then_records(tmpfs, tmp_path, store):  # noqa: F811
    disk = tmpfs(8_000_000)
    runtime = tmp_path / "run"  # under systemd the status lives in /run (RUNTIME_DIRECTORY)
    runtime.mkdir()
    d = storage_daemon(tmp_path, disk, "  min_free: 0\n")
    if store == "existing":
        Store(disk, [d.owner.recipient()]).close()  # no clips yet: nothing retention could delete
    filler = fill(disk)
    listener = NotifyListener(tmp_path / "notify.sock")  # systemd's side
    listener.start()
    env = {**os.environ, "RUNTIME_DIRECTORY": str(runtime), "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
           "WATCHDOG_USEC": "2000000"}
    with open(d.log, "ab") as log:
        d.proc = subprocess.Popen([sys.executable, "-m", "camrec", "run", "-c", str(d.config)], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        doc: dict = {}
        while time.monotonic() < deadline:
            try:
                doc = json.loads((runtime / "status.json").read_text())
            except (OSError, ValueError):
                doc = {}
            if doc.get("storage_error"):
                break
            time.sleep(0.2)
        assert "disk is full" in (doc.get("storage_error") or ""), (doc, d.log.read_text()[-2000:])
        time.sleep(3)
        assert d.proc.poll() is None, d.log.read_text()[-3000:]  # waiting, not exiting or restarting
        # Under systemd: started (no start timeout), the reason in `systemctl status`, watchdog fed.
        waiting = list(listener.messages)
        assert any("READY=1" in m and "waiting for storage space" in m for _, m in waiting), waiting
        pings = [t for t, m in waiting if "WATCHDOG=1" in m]
        assert len(pings) >= 2 and max(b - a for a, b in itertools.pairwise(pings)) < 2.0, waiting
        status = subprocess.run([sys.executable, "-m", "camrec", "status", "-c", str(d.config)], env=env,
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 9, status.stdout + status.stderr
        assert "STORAGE:" in status.stdout and "disk is full" in status.stdout, status.stdout
        filler.unlink()  # the owner frees space: recording starts by itself
        d.wait_for(lambda rows: any(r["state"] in ("recording", "complete") for r in rows), 40,
                   "recording once there is space")
        assert d.stop() == 0
    finally:
        d.close()
        listener.close()
    assert "Traceback" not in d.log.read_text()
    # (the recorder's lock holds its pid only when there was room to write it: the flock is the lock)
    assert not [p.name for p in disk.iterdir()
                if p.is_file() and p.stat().st_size == 0 and p.name not in ("audit.jsonl", "recorder.lock")]


def test_clip_cut_by_a_full_disk_then_stopped_is_partial(tmpfs, tmp_path):  # noqa: F811
    disk = tmpfs(30_000_000)
    d = storage_daemon(tmp_path, disk, "  min_free: 0\n")
    d.config.write_text(d.config.read_text().replace("max_clip: 10s", "max_clip: 60s"))
    d.start()
    try:
        d.wait_for(lambda rows: any(r["state"] == "recording" and r["size"] > 0 for r in rows), 30, "a clip")
        fill(disk)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cam = d.status().get("cameras", {}).get("front", {})
            if cam.get("storage_error"):
                break
            time.sleep(0.2)
        # The status write itself fails on the full disk: no empty temporary file, no stale status.
        doc = d.status()
        assert "disk is full" in (doc.get("cameras", {}).get("front", {}).get("storage_error") or ""), doc
        assert time.time() - doc["time"] < 5 and doc["cameras"]["front"]["state"] != "recording", doc
        assert not [p for p in disk.iterdir() if p.name.startswith(".status.json")]
        assert d.stop(signal.SIGTERM) == 0  # a clean stop while the disk is still full
    finally:
        d.close()
    rows = d.rows()
    assert rows and not [r for r in rows if r["state"] == "recording"], (rows, d.log.read_text()[-3000:])
    assert "partial" in [r["state"] for r in rows], rows
    assert json.loads((disk / "status.json").read_text())["state"] == "stopped"


def test_failed_status_write_keeps_no_temp_and_no_stale_state(tmpfs):  # noqa: F811
    disk = tmpfs(1_000_000)
    path = disk / "status.json"
    main = {"state": "connected", "stream": "h264 1280x720", "error": None, "connects": 1, "packets": 9000,
            "connected_at": 1.0, "first_packet_at": 1.0, "last_packet_age": 0.05}
    running = {"pid": 1, "state": "running", "time": 1.0, "storage_error": None,
               "cameras": {"front": {"state": "recording", "streams": {"main": main}}}}
    publish_status(path, running)
    fill(disk)
    now_connected = {"front": {"state": "connected", "streams": {"main": main}}}
    publish_status(path, {**running, "time": 2.0, "cameras": now_connected})
    assert [p.name for p in disk.iterdir() if p.name != "filler.bin"] == ["status.json"]
    doc = json.loads(path.read_text())  # rewritten in place: no new space needed
    assert doc["time"] == 2.0 and doc["cameras"]["front"]["state"] == "connected"
    assert "No space left" in doc["status_error"]
    # A status that no longer fits in the old file's space: the stale one is removed, not kept.
    publish_status(path, {**running, "time": 3.0, "cameras": {f"cam{i}": {"state": "x" * 100, "streams": {}}
                                                              for i in range(50)}})
    assert not path.exists()
    assert [p.name for p in disk.iterdir()] == ["filler.bin"]


def test_index_update_on_a_full_disk_reuses_wal_space(tmpfs):  # noqa: F811
    """The update that marks a cut clip `partial` must get through on a full disk."""
    disk = tmpfs(20_000_000)
    owner = X25519Identity.generate()
    store = Store(disk, [owner.recipient()])
    clip = store.open_clip("front", time.time())
    for _ in range(20):
        clip.write(b"v" * 10_000, time.time())
        clip.sync()
    fill(disk)
    store.mark_partial(clip.id, 200_000, time.time())
    assert store.index.query()[0].state == "partial"
    store.close()
