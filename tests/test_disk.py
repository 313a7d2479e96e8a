"""Disk faults: a full disk, I/O errors, a storage disk unmounted under the recorder, clock steps.

The full-disk and unmount tests mount a small tmpfs (they need root and mount permission, as on
the CI machine; elsewhere they skip). I/O errors can't be produced on demand by a real disk, so
that test injects EIO at the one place a disk would raise it: the clip file's write.
"""

from __future__ import annotations

import errno
import io
import itertools
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from camrec.crypto.keys import X25519Identity
from camrec.crypto.stream import decrypt_stream
from camrec.errors import TruncatedError
from camrec.motion.detector import DefaultMotionParams
from camrec.motion.worker import DetectionWorker
from camrec.record.recorder import Recorder
from camrec.sources.synthetic import SyntheticSource
from camrec.store import writer as store_writer
from camrec.store.writer import Store
from tests.support.daemon import Daemon

SYNTHETIC = "synthetic:?motion=0-6&period=6&bitrate=1000"  # an object crossing every 6 s, forever


@pytest.fixture
def tmpfs(tmp_path):
    """Mounts a fresh tmpfs of the given size (bytes) at a new directory; unmounts at the end."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(point)
        return point

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def storage_daemon(tmp_path: Path, storage: Path, extra_storage: str, source: str = SYNTHETIC) -> Daemon:
    d = Daemon(tmp_path, source, pre_roll=1.0, post_roll=1.0, extra="    max_clip: 10s\n")
    text = d.config.read_text().replace(f"  path: {d.storage}\n", f"  path: {storage}\n{extra_storage}")
    d.config.write_text(text)
    d.storage = storage
    return d


def test_free_space_floor_keeps_recording(tmpfs, tmp_path):
    disk = tmpfs(2_200_000)
    # An object crossing for 3 s every 6 s: a clip of ~5 s (pre-roll + 3 s + post-roll), ~0.65 MB,
    # every 6 s, so the disk fills in a few clips rather than a few 10 s (max_clip) ones.
    d = storage_daemon(tmp_path, disk, "  min_free: 1.2MB\n", source="synthetic:?motion=0-3&period=6&bitrate=1000")
    d.start()
    try:
        # ~0.65 MB per clip on a 2.2 MB disk that must keep 1.2 MB free: only retention keeps it going
        deadline = time.monotonic() + 60
        while d.log.read_text().count("retention: deleted") < 2 and time.monotonic() < deadline:
            assert d.proc is not None and d.proc.poll() is None, d.log.read_text()[-2000:]
            time.sleep(0.5)
        assert d.log.read_text().count("clip closed") >= 2
        assert d.stop() == 0
    finally:
        d.close()
    log = d.log.read_text()
    assert "retention: deleted" in log, log[-2000:]
    assert "disk is full" not in log and "No space" not in log, log[-2000:]
    rows = d.rows()
    assert all(r["state"] == "complete" for r in rows), rows
    for r in rows:
        assert (disk / r["path"]).stat().st_size <= r["size"]


def test_disk_full_is_survived_and_reported(tmpfs, tmp_path):
    disk = tmpfs(2_000_000)
    filler = disk / "filler.bin"
    filler.write_bytes(b"\0" * 1_400_000)
    d = storage_daemon(tmp_path, disk, "  min_free: 0\n")
    d.start(constants={"camrec.record.recorder.STORAGE_RETRY_SECONDS": 1.0})  # clips retried after 1 s, not 5 s
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            cam = d.status().get("cameras", {}).get("front", {})
            if cam.get("storage_error"):
                break
            assert d.proc is not None and d.proc.poll() is None, d.log.read_text()[-2000:]
            time.sleep(0.2)
        assert "disk is full" in d.log.read_text() or "No space" in d.log.read_text(), d.log.read_text()[-2000:]
        full_rows = d.rows()
        filler.unlink()  # the owner frees space: recording must carry on by itself
        d.wait_for(lambda rows: any(r["id"] not in {x["id"] for x in full_rows} for r in rows), 30,
                   "a new clip once there is space again")
        assert d.stop() == 0
    finally:
        d.close()
    owner = d.owner
    for r in d.rows():
        path = disk / r["path"]
        assert r["state"] in ("complete", "partial"), r
        assert r["size"] <= sum(p.stat().st_size for p in path.parent.glob(path.name.split(".")[0] + ".*"))
        if r["state"] == "partial":
            with open(path, "rb") as f:
                try:
                    decrypt_stream(f, [owner], io.BytesIO())
                except TruncatedError as exc:
                    assert exc.authenticated_bytes >= 0
    assert "Traceback" not in d.log.read_text()


def test_unmounted_storage_is_not_refilled_on_the_root_fs(tmpfs, tmp_path):
    disk = tmpfs(50_000_000)
    d = storage_daemon(tmp_path, disk, "")
    d.start()
    try:
        d.wait_for(lambda rows: any(r["state"] == "recording" for r in rows), 30, "recording")
        subprocess.run(["umount", "-l", str(disk)], check=True)  # the USB disk is pulled
        # Motion goes on: the open clip is split at max_clip (10 s) and the recorder tries to open the
        # next one, which is where a new file could land on the root filesystem: wait for that
        # refusal (then one more status turn: status.json must not land there either).
        refusal = "front: storage " + str(disk)
        deadline = time.monotonic() + 30
        while d.log.read_text().count(refusal) < 1:
            assert d.proc is not None and d.proc.poll() is None, d.log.read_text()[-3000:]
            assert time.monotonic() < deadline, d.log.read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(1.0)
        assert d.proc is not None and d.proc.poll() is None
        assert d.stop(signal.SIGTERM) == 0
    finally:
        d.close()
    assert list(disk.rglob("*")) == [], "camrec wrote onto the root filesystem under the old mount point"
    assert "no longer on the filesystem" in d.log.read_text()


class _FlakyFile(io.FileIO):
    """A clip file whose disk fails with EIO while `failing` is set."""

    failing = threading.Event()

    def write(self, data):  # type: ignore[override]
        if _FlakyFile.failing.is_set():
            raise OSError(errno.EIO, "Input/output error")
        return super().write(data)


def test_io_error_costs_only_the_open_clip(tmp_path, monkeypatch):
    def flaky_fdopen(fd: int, mode: str = "rb", buffering: int = -1):
        return _FlakyFile(fd, mode.replace("b", ""), closefd=True)

    monkeypatch.setattr(store_writer.os, "fdopen", flaky_fdopen)
    owner = X25519Identity.generate()
    store = Store(tmp_path / "s", [owner.recipient()])
    settings = SimpleNamespace(pre_roll=1.0, post_roll=1.0, max_clip=300.0, motion=DefaultMotionParams())
    rec = Recorder("cam", settings, store, store.clock)
    det = DetectionWorker("cam", settings.motion, rec.put_motion, threading.Event())
    src = SyntheticSource("synthetic:?motion=2-6,14-18&period=600&realtime=0", clock=store.clock)
    src.open()
    rec.start()
    try:
        for i in range(22 * 15):
            if i == 4 * 15:
                _FlakyFile.failing.set()  # the disk fails in the middle of the first event
            if i == 9 * 15:
                _FlakyFile.failing.clear()  # and recovers before the second
            p = src.read()
            assert p is not None
            rec.put_packet(p)
            det.feed(p)
            time.sleep(0.001)
    finally:
        _FlakyFile.failing.clear()
        rec.stop()
        rec.join(10)
    assert not rec.is_alive()
    rows = store.index.query()
    assert [r.state for r in rows] == ["partial", "complete"], rows
    first = rows[0]
    assert first.size == (store.root / first.path).stat().st_size  # the index claims only what is there
    with open(store.root / first.path, "rb") as f, pytest.raises(TruncatedError):
        decrypt_stream(f, [owner], io.BytesIO())
    assert rec.status.storage_error is None  # cleared by the clip that worked again


class SteppingClock:
    """A simulated clock: monotonic time is set by the test, wall time = monotonic + an offset."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.offset = 1_790_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.mono + self.offset


@pytest.mark.parametrize("step", [-3600.0, 3600.0])
def test_wall_clock_steps_never_make_negative_or_overlapping_clips(tmp_path, step):
    owner = X25519Identity.generate()
    clock = SteppingClock()
    store = Store(tmp_path / "s", [owner.recipient()], clock=clock)
    settings = SimpleNamespace(pre_roll=2.0, post_roll=1.0, max_clip=10.0, motion=DefaultMotionParams())
    rec = Recorder("cam", settings, store, clock)
    det = DetectionWorker("cam", settings.motion, rec._on_motion, threading.Event())
    src = SyntheticSource("synthetic:?motion=3-15,22-26,33-36&period=600&realtime=0", clock=clock)
    src.open()
    for i in range(40 * 15):
        p = src.read()
        assert p is not None
        clock.mono = p.arrival
        if i in (8 * 15, 29 * 15):  # a step in the middle of a clip, and one between clips
            clock.offset += step
        rec._on_packet(p)
        det.feed(p)
    rec._close_clip("test over")
    rows = store.index.query(camera="cam")
    assert len(rows) >= 4
    for r in rows:
        assert r.end > r.start, r
    for a, b in itertools.pairwise(rows):
        assert b.start >= a.end - 1e-6, (a, b)
    if step > 0:  # a forward step shows: later clips carry the new (later) time
        assert rows[-1].start - rows[0].start > 3600
