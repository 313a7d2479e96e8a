"""Tests of the test fixture itself: synthetic media and the RTSP camera on 127.0.0.1.

These prove the properties integration tests rely on: the clip has motion exactly in its
ground-truth windows, the camera streams it forever with increasing timestamps starting at frame 0
of the clip for every session, and the faults (drop, freeze, restart) look to a PyAV client the way
DESIGN.md §4 says real cameras look.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.camera import RtspCamera, free_port, media_cache_dir, require_rtsp_camera
from tests.support.media import CameraMedia, ffmpeg_available, load_truth, make_camera_media, make_test_media

# Registers test_media / rtsp_camera / rtsp_camera_factory here too (a no-op if conftest.py did).
pytest_plugins = ["tests.support.camera"]

REPO = Path(__file__).resolve().parents[1]
SHORT = {
    "width": 320,
    "height": 180,
    "fps": 15,
    "duration": 3.0,
    "motion_windows": [(0.6, 1.4), (1.8, 2.6)],  # left->right, then right->left
    "gop_seconds": 1.0,
}
CHANGED = 25  # a pixel "changed" if its luma moved more than this (the noise stays well below)


@pytest.fixture(scope="module")
def short_media(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CameraMedia:
    """3 s 320x180 clip (+160x90 sub) so a test can watch the camera loop in a few seconds."""
    if not ffmpeg_available():
        pytest.skip("ffmpeg not found")
    return make_camera_media(media_cache_dir(request.config, tmp_path_factory), sub_size=(160, 90), **SHORT)


@pytest.fixture
def short_camera(short_media: CameraMedia, tmp_path: Path) -> Iterator[RtspCamera]:
    require_rtsp_camera()
    with RtspCamera(short_media.mounts, log_dir=tmp_path) as cam:
        yield cam


def open_rtsp(url: str, timeout_s: float = 5.0, fast: bool = True) -> av.container.InputContainer:
    """Open like camrec does (TCP, read timeout). ``fast`` skips the ~1.9 s stream probing: the
    SDP already carries SPS/PPS, so width/height are known without it."""
    options = {"rtsp_transport": "tcp", "timeout": str(int(timeout_s * 1_000_000))}
    if fast:
        options |= {"analyzeduration": "0", "probesize": "32"}
    return av.open(url, options=options)


def read_packets(container: av.container.InputContainer, n: int) -> list[av.Packet]:
    """n real packets (skipping empty flush packets)."""
    packets = []
    for packet in container.demux(video=0):
        if packet.size:
            packets.append(packet)
            if len(packets) == n:
                break
    return packets


def gray_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray").astype(np.int16) for f in c.decode(video=0)]


def decode_gray(container: av.container.InputContainer, packet: av.Packet) -> np.ndarray:
    frames = container.streams.video[0].codec_context.decode(packet)
    assert frames, "keyframe did not decode to a picture"
    return frames[0].to_ndarray(format="gray").astype(np.int16)


def stream_end(container: av.container.InputContainer, within: float) -> str:
    """Read until the stream ends; returns "eof" or the FFmpeg error's name. Fails if that takes
    longer than ``within`` seconds (open with a read timeout shorter than that)."""
    start = time.monotonic()
    outcome = "eof"
    try:
        for _ in container.demux(video=0):
            assert time.monotonic() - start < within, f"stream still delivering after {within} s"
    except av.error.FFmpegError as e:
        outcome = type(e).__name__
    assert time.monotonic() - start < within, f"stream took {time.monotonic() - start:.1f} s to end"
    return outcome


# -- media --------------------------------------------------------------------------------------


def test_motion_only_inside_truth_windows(short_media: CameraMedia) -> None:
    truth = short_media.truth
    assert truth["motion_windows_s"] == [list(w) for w in SHORT["motion_windows"]]
    # Diff i compares frame i with frame i-1: a run of visible frames [a, b] changes diffs a..b+1.
    expected = {i for a, b in truth["motion_frames"] for i in range(a, b + 2)}
    for path in (short_media.main, short_media.sub):
        assert path is not None
        frames = gray_frames(path)
        assert len(frames) == truth["frames"] == 45
        diffs = [np.abs(frames[i] - frames[i - 1]) for i in range(1, len(frames))]
        changed = {i for i, d in enumerate(diffs, start=1) if (d > CHANGED).mean() > 0.002}
        assert changed == expected, path.name
        # Every frame window boundary must match the seconds in the truth file.
        for (a, b), (fa, fb) in zip(truth["motion_windows_s"], truth["motion_frames"], strict=True):
            assert a < fa / truth["fps"] <= a + 2 / truth["fps"]
            assert b - 2 / truth["fps"] <= fb / truth["fps"] < b
        # Sensor noise everywhere, all the time: static frames still differ a little.
        static = [d for i, d in enumerate(diffs, start=1) if i not in expected]
        assert min(float(d.mean()) for d in static) > 0.3
        assert max(int(d.max()) for d in static) <= CHANGED


def test_media_is_camera_like_h264(short_media: CameraMedia) -> None:
    with av.open(str(short_media.main)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.profile in ("Main", "High")
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 180)
        assert stream.average_rate == 15
        packets = [p for p in c.demux(stream) if p.size]
    assert [p.pts for p in packets] == [p.dts for p in packets]  # no B-frames: decode order = display
    assert [i for i, p in enumerate(packets) if p.is_keyframe] == [0, 15, 30]  # fixed GOP, no scene-cut


def test_media_cached_and_deterministic(tmp_path: Path) -> None:
    kwargs = {**SHORT, "duration": 1.0, "motion_windows": [(0.2, 0.8)]}
    first = make_test_media(tmp_path / "a", **kwargs)
    mtime = first.stat().st_mtime_ns
    assert make_test_media(tmp_path / "a", **kwargs) == first
    assert first.stat().st_mtime_ns == mtime  # reused, not re-encoded
    other = make_test_media(tmp_path / "b", **kwargs)
    assert other.read_bytes() == first.read_bytes()
    assert load_truth(other) == load_truth(first)
    assert make_test_media(tmp_path / "a", **{**kwargs, "noise": 0}) != first  # new params, new clip


# -- camera -------------------------------------------------------------------------------------


def test_live_loop_with_increasing_timestamps(short_camera: RtspCamera, short_media: CameraMedia) -> None:
    file_frames = gray_frames(short_media.main)
    n = len(file_frames)
    with open_rtsp(short_camera.url("/cam"), fast=False) as c:  # camrec's default open path
        packets = read_packets(c, n + 16)  # past the loop point (~4 s of real time)
        first = decode_gray(c, packets[0])
    assert packets[0].is_keyframe
    # Timestamps: the first may be missing (RTSP), the rest increase at ~1/15 s through the loop.
    pts = [p.pts for p in packets[1:]]
    assert None not in pts
    steps = np.diff(np.array(pts, dtype=np.int64)) * float(packets[1].time_base)
    assert steps.min() > 0
    assert abs(steps.mean() - 1 / 15) < 0.01
    assert steps.max() < 0.5
    # The session started at frame 0 and the clip repeats from frame 0 after n frames.
    assert np.array_equal(first, file_frames[0])
    sizes = [p.size for p in packets]
    assert sizes[n : n + 16] == sizes[:16]
    assert [i for i, p in enumerate(packets) if p.is_keyframe] == [0, 15, 30, 45, 60]
    # Every session starts at frame 0 of the clip, whenever it connects.
    with open_rtsp(short_camera.url("/cam")) as c:
        assert np.array_equal(decode_gray(c, read_packets(c, 1)[0]), file_frames[0])
    assert short_camera.sessions("/cam") == 2


def test_drop_clients_ends_the_stream(short_camera: RtspCamera) -> None:
    with open_rtsp(short_camera.url(), timeout_s=2.0) as c:
        read_packets(c, 3)
        assert short_camera.drop_clients() == 1
        # DESIGN.md §4: PyAV ends quietly (flush packet, then StopIteration) on a dropped connection.
        assert stream_end(c, within=3.0) != "TimeoutError"
    with open_rtsp(short_camera.url()) as c:  # the camera is back at once, like after a quick reboot
        assert len(read_packets(c, 3)) == 3


def test_freeze_times_out_then_thaw_resumes(short_camera: RtspCamera) -> None:
    with open_rtsp(short_camera.url(), timeout_s=1.0) as c:
        read_packets(c, 3)
        short_camera.freeze(True)
        assert short_camera.frozen
        start = time.monotonic()
        with pytest.raises(av.error.TimeoutError):
            for _ in c.demux(video=0):  # drains what was already buffered, then stalls
                assert time.monotonic() - start < 6.0, "frozen camera kept sending"
        # PyAV reports the stall after about twice the read timeout.
        assert 1.0 <= time.monotonic() - start < 6.0
        short_camera.freeze(False)
        # The same connection carries on, from a keyframe, within one GOP (+ read timeout margin).
        start = time.monotonic()
        packets = read_packets(c, 3)
        assert packets[0].is_keyframe
        assert time.monotonic() - start < 3.0


def test_restart_on_same_port(short_camera: RtspCamera) -> None:
    port, old_pid = short_camera.port, short_camera.pid
    with open_rtsp(short_camera.url(), timeout_s=2.0) as c:
        read_packets(c, 3)
        short_camera.restart()
        assert stream_end(c, within=3.0) != "TimeoutError"
    assert short_camera.port == port and short_camera.pid != old_pid
    with open_rtsp(short_camera.url()) as c:
        assert len(read_packets(c, 3)) == 3
    assert short_camera.sessions() == 2  # counted across restarts


def test_stopped_camera_refuses_connections(short_camera: RtspCamera) -> None:
    pid = short_camera.pid
    assert pid is not None
    short_camera.stop()
    assert not short_camera.running and short_camera.pid is None
    assert not _process_alive(pid)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", short_camera.port), 2):
        pass


def test_digest_auth(rtsp_camera_factory, short_media: CameraMedia) -> None:
    cam = rtsp_camera_factory(short_media, auth="viewer:s3cret/pw")
    assert cam.url("/cam_sub").startswith("rtsp://viewer:s3cret%2Fpw@127.0.0.1:")
    with pytest.raises(av.error.HTTPUnauthorizedError):
        open_rtsp(cam.url(credentials=False))
    with open_rtsp(cam.url("/cam_sub")) as c:
        assert len(read_packets(c, 2)) == 2


def test_rtsp_camera_fixture_serves_main_and_sub(rtsp_camera: RtspCamera, test_media: CameraMedia) -> None:
    assert test_media.motion_windows == [(8.0, 12.0), (20.0, 23.0)]
    assert test_media.duration == 30.0
    for mount, size in (("/cam", (640, 360)), ("/cam_sub", (320, 180))):
        assert rtsp_camera.url(mount) == f"rtsp://127.0.0.1:{rtsp_camera.port}{mount}"
        with open_rtsp(rtsp_camera.url(mount)) as c:
            cc = c.streams.video[0].codec_context
            assert (cc.width, cc.height) == size
            assert len(read_packets(c, 2)) == 2
    assert rtsp_camera.sessions("/cam") == rtsp_camera.sessions("/cam_sub") == 1


def test_server_exits_when_the_test_process_dies(short_media: CameraMedia, tmp_path: Path) -> None:
    """A test run killed with SIGKILL must not leave a camera behind (no teardown runs then)."""
    require_rtsp_camera()
    script = (
        "import sys, time; from tests.support.camera import RtspCamera; "
        f"cam = RtspCamera({{'/cam': {str(short_media.main)!r}}}, log_dir={str(tmp_path)!r}).start(); "
        "print(cam.pid, flush=True); time.sleep(60)"
    )
    with subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True) as runner:
        try:
            assert runner.stdout is not None
            server_pid = int(runner.stdout.readline())
            assert _process_alive(server_pid)
            runner.send_signal(signal.SIGKILL)
            runner.wait(5)
            deadline = time.monotonic() + 5
            while _process_alive(server_pid):
                assert time.monotonic() < deadline, "RTSP server outlived its test process"
                time.sleep(0.05)
        finally:
            runner.kill()


def test_free_port_is_loopback_and_unused() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass


def _process_alive(pid: int) -> bool:
    """True if pid runs (a zombie counts as gone: in containers nobody may reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
