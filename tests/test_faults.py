"""Camera faults against a running `camrec run`: refused, black-holed, dropped, frozen, restarted,
and restarted with another resolution. The daemon must never crash or hang, must record again
≤ 3 s after a dropped connection or a freeze, must try a restarted camera again within its capped
backoff (BACKOFF_MAX), must close an open clip when its camera goes away, and must not leak file
descriptors or threads. 4 cycles of each fault by default, 50 with `pytest --long`.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import threading
import time
from pathlib import Path

import pytest

from camrec.sources.capture import BACKOFF_MAX
from tests.helpers import ffprobe
from tests.support.camera import RtspCamera, free_port
from tests.support.daemon import Daemon
from tests.support.media import make_camera_media

RESUME_LIMIT_S = 3.0
# A timer firing late on a busy machine, and the camera server noting the connection.
SCHEDULING_SLACK_S = 0.5


@pytest.fixture(scope="module")
def busy_media(request, tmp_path_factory):
    """640x360 with the object crossing from 0.5 s to 29.5 s (test_crash's clip): a clip opens at once."""
    from tests.support.camera import media_cache_dir, require_rtsp_camera

    require_rtsp_camera()
    return make_camera_media(media_cache_dir(request.config, tmp_path_factory), sub_size=None,
                             motion_windows=((0.5, 10.0), (10.0, 20.0), (20.0, 29.5)))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def main_stream(d: Daemon) -> dict:
    cams = d.status().get("cameras", {})
    return next(iter(cams.values()))["streams"]["main"] if cams else {}


def last_packet_wall(d: Daemon) -> float | None:
    """Wall time of the newest packet the daemon had received at its last status write."""
    doc = d.status()
    cams = doc.get("cameras", {})
    if not cams:
        return None
    age = next(iter(cams.values()))["streams"]["main"]["last_packet_age"]
    return None if age is None else doc["time"] - age


def wait_resumed(d: Daemon, healed: float, timeout: float = 20.0) -> float:
    """Seconds from `healed` until the daemon reports a packet received after it.

    The first packet of a new connection is reported exactly (its wall time); a connection that
    carried on is seen at the next status write (every 0.5 s), with its newest packet then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert d.proc is not None and d.proc.poll() is None, d.log.read_text()[-3000:]
        stream = main_stream(d)
        if stream.get("connected_at") and stream["connected_at"] > healed and stream.get("first_packet_at"):
            return stream["first_packet_at"] - healed
        t = last_packet_wall(d)
        if t is not None and t > healed and not (stream.get("connected_at") or 0) > healed:
            return t - healed
        time.sleep(0.05)
    raise AssertionError(f"no video within {timeout}s after the camera came back\n{d.log.read_text()[-3000:]}")


def wait_disconnected(d: Daemon, timeout: float = 15.0) -> None:
    """Until the daemon reports its main stream lost (e.g. a frozen camera hit the read timeout)."""
    deadline = time.monotonic() + timeout
    while main_stream(d).get("state") != "disconnected":
        assert time.monotonic() < deadline, f"stream not given up in {timeout}s\n{d.log.read_text()[-3000:]}"
        assert d.proc is not None and d.proc.poll() is None, d.log.read_text()[-3000:]
        time.sleep(0.05)


def reconnect_waits(cam: RtspCamera) -> list[float]:
    """For each (re)start of the camera server: seconds from its READY to the first client connection,
    on the server's own clock. While the server is down every attempt is refused, so this is how long
    the daemon's backoff let the camera wait once it was back."""
    ready = cam.event_times("READY ")
    connects = cam.event_times("EVENT client-connected")
    waits = []
    for t in ready:
        later = [(c - t) % 86400 for c in connects if (c - t) % 86400 < 3600]
        waits.append(min(later) if later else float("inf"))
    return waits


def test_repeated_drop_freeze_restart(rtsp_camera, tmp_path, request):
    # 4 cycles: short and long freezes twice each, every restart downtime (the longest lands in
    # the capped 2 s wait) at least once.
    cycles = 50 if request.config.getoption("--long") else 4
    d = Daemon(tmp_path, rtsp_camera.url("/cam"))
    d.start()
    try:
        wait_resumed(d, time.time() - 60)
        time.sleep(1.0)
        fds0, threads0 = fd_count(d.pid), thread_count(d.pid)
        resumes: dict[str, list[float]] = {"drop": [], "freeze": [], "restart": []}
        for i in range(cycles):
            rtsp_camera.drop_clients()
            resumes["drop"].append(wait_resumed(d, time.time()))

            rtsp_camera.freeze(True)
            # Alternate short freezes (the same connection carries on) with long ones (until the
            # daemon has given up on the connection after its 2 s read timeout, and reconnects).
            if i % 2 == 0:
                time.sleep(1.5)
            else:
                wait_disconnected(d)
            rtsp_camera.freeze(False)
            resumes["freeze"].append(wait_resumed(d, time.time()))

            rtsp_camera.stop()
            # Down for 0.5, 1.25 or 2 s: back while the daemon waits 0.5, 1 or 2 s (its capped backoff).
            time.sleep(0.5 + 0.75 * (i % 3))
            rtsp_camera.start()
            resumes["restart"].append(wait_resumed(d, time.time()))
        time.sleep(1.0)
        fds1, threads1 = fd_count(d.pid), thread_count(d.pid)
        assert d.stop() == 0
    finally:
        d.close()
    # After a restart, how long the daemon left the camera waiting is its backoff's doing (capped
    # at BACKOFF_MAX), measured by the camera; the rest of the resume time is connecting and
    # receiving a keyframe, which only depends on how busy the machine is.
    waits = reconnect_waits(rtsp_camera)[1:]  # the first READY is the camera's initial start
    report = ", ".join(f"{k}: mean {statistics.mean(v):.2f}s max {max(v):.2f}s" for k, v in resumes.items())
    report = (f"{cycles} cycles each; resume after {report}; reconnect after restart max {max(waits):.2f}s; "
              f"fds {fds0}->{fds1}, threads {threads0}->{threads1}")
    print(report)
    (tmp_path / "fault-report.txt").write_text(report + "\n")
    assert len(waits) == cycles, report
    assert max(waits) <= BACKOFF_MAX + SCHEDULING_SLACK_S, (waits, report)
    assert all(max(resumes[k]) <= RESUME_LIMIT_S for k in ("drop", "freeze")), report
    assert fds1 <= fds0 + 2, report
    assert threads1 == threads0, report
    # Sessions restart at frame 0 and the faults come before the motion at 8 s, so clips are rare
    # here; any that were made are whole (the clip-closing path has its own test below).
    assert all(r["state"] == "complete" for r in d.rows())


def test_clip_closed_when_camera_disappears(rtsp_camera_factory, busy_media, tmp_path):
    rtsp_camera = rtsp_camera_factory(busy_media)  # the object crosses from 0.5 s on: a clip opens at once
    d = Daemon(tmp_path, rtsp_camera.url("/cam"))
    d.start()
    try:
        d.wait_for(lambda rows: any(r["state"] == "recording" and r["size"] > 2000 for r in rows), 30, "recording")
        time.sleep(0.6)  # one status turn
        up = d.cli("status", "-c", str(d.config))
        assert up.returncode == 0 and "front: recording" in up.stdout, up.stdout + up.stderr
        rtsp_camera.stop()  # unplugged: never comes back during this test
        rows = d.wait_for(lambda rows: rows and all(r["state"] == "complete" for r in rows), 10, "the clip closed")
        assert "stream lost" in d.log.read_text()
        deadline = time.monotonic() + 5
        while main_stream(d)["state"] != "disconnected" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert main_stream(d)["state"] == "disconnected"
        down = d.cli("status", "-c", str(d.config))
        assert down.returncode == 4 and "not delivering video: front" in down.stderr, down.stdout + down.stderr
        assert d.stop() == 0
        stopped = d.cli("status", "-c", str(d.config))
        assert stopped.returncode == 1 and "not running" in stopped.stderr
    finally:
        d.close()
    mp4 = tmp_path / "clip.mp4"
    import subprocess

    with open(mp4, "wb") as out:
        subprocess.run(["age", "-d", "-i", str(d.key), str(d.storage / rows[0]["path"])], stdout=out, check=True)
    assert ffprobe(mp4)["duration"] > 1.0


def test_refused_and_black_holed_cameras_dont_hang(tmp_path):
    # A black hole on loopback: a listener that accepts connections and never says a word.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        hole.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(hole.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    refused_port = free_port()
    d = Daemon(tmp_path, f"rtsp://127.0.0.1:{hole.getsockname()[1]}/cam",
               extra=f"    open_timeout: 2s\n  other:\n    source: rtsp://127.0.0.1:{refused_port}/cam\n")
    d.start()
    try:
        # Until both cameras have failed once (the black hole after its 2 s open timeout).
        deadline = time.monotonic() + 30
        def errors() -> dict[str, str | None]:
            return {name: cam["streams"]["main"].get("error") for name, cam in d.status().get("cameras", {}).items()}

        while not (accepted and len(errors()) == 2 and all(errors().values())):
            assert d.proc.poll() is None and time.monotonic() < deadline, d.log.read_text()[-3000:]
            time.sleep(0.1)
        fds0, threads0, tries0 = fd_count(d.pid), thread_count(d.pid), len(accepted)
        # Several more attempts at both cameras: two more at the black hole (2 s open timeout plus
        # backoff each), many more refused meanwhile; then a status turn.
        while len(accepted) < max(tries0 + 2, 3):
            assert d.proc.poll() is None and time.monotonic() < deadline, d.log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(0.6)
        doc = d.status()
        assert doc["state"] == "running"
        errors = {name: cam["streams"]["main"]["error"] for name, cam in doc["cameras"].items()}
        assert "refused" in errors["other"].lower(), errors
        assert errors["front"], errors
        assert fd_count(d.pid) <= fds0 + 2 and thread_count(d.pid) == threads0
        assert len(accepted) >= 3  # it kept trying the black hole, one attempt at a time
        t0 = time.monotonic()
        assert d.stop(signal.SIGTERM) == 0
        assert time.monotonic() - t0 < 15  # no hang on shutdown while a connect is pending
    finally:
        stop.set()
        d.close()
        hole.close()
        for s in accepted:
            s.close()
    assert d.rows() == []
    assert "Traceback" not in d.log.read_text()


def test_camera_comes_back_with_another_resolution(busy_media, tmp_path, request):
    from tests.support.camera import media_cache_dir

    small = make_camera_media(media_cache_dir(request.config, request.getfixturevalue("tmp_path_factory")),
                              width=320, height=180, sub_size=None, motion_windows=((2.0, 5.0),), duration=10.0)
    port = free_port()
    big_cam = RtspCamera({"/cam": busy_media.main}, port=port, log_dir=tmp_path / "cam1").start()
    d = Daemon(tmp_path, big_cam.url("/cam"))
    d.start()
    try:
        d.wait_for(lambda rows: any(r["state"] == "recording" for r in rows), 30, "recording at 640x360")
        big_cam.close()
        with RtspCamera({"/cam": small.main}, port=port, log_dir=tmp_path / "cam2") as small_cam:
            assert small_cam.port == port
            rows = d.wait_for(lambda rows: len([r for r in rows if r["state"] == "complete"]) >= 2, 30,
                              "a clip at the new resolution")
        assert d.stop() == 0
    finally:
        d.close()
    sizes = []
    for r in rows:
        mp4 = tmp_path / (Path(r["path"]).name + ".mp4")
        import subprocess

        with open(mp4, "wb") as out:
            subprocess.run(["age", "-d", "-i", str(d.key), str(d.storage / r["path"])], stdout=out, check=True)
        probe = ffprobe(mp4)
        sizes.append((probe["width"], probe["height"]))
    assert (640, 360) in sizes and (320, 180) in sizes, sizes
    assert "stream connected: h264 320x180" in d.log.read_text()


def test_stop_is_prompt_while_frozen(rtsp_camera, tmp_path):
    pytest.importorskip("av")
    d = Daemon(tmp_path, rtsp_camera.url("/cam"))
    d.start()
    try:
        wait_resumed(d, time.time() - 60)
        rtsp_camera.freeze(True)
        time.sleep(0.5)
        t0 = time.monotonic()
        assert d.stop(signal.SIGTERM) == 0
        assert time.monotonic() - t0 < 12
    finally:
        rtsp_camera.freeze(False)
        d.close()
