"""The V4L2 (USB camera) source. No kernel modules here, so no /dev/video: only the device open is
stood in (an opener returning av.open() of a generated MJPEG or YUYV file); option building, device
resolution, the errno table and the whole decode → libx264 path are the real ones.

A real-device test runs when CAMREC_TEST_V4L2_DEVICE names one (e.g. /dev/v4l/by-id/…-index0).
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from pydantic import ValidationError

from camrec.config import CameraConfig
from camrec.errors import SourceError
from camrec.source_spec import parse_v4l2
from camrec.sources import make_source, v4l2
from camrec.sources.capture import Capture
from camrec.sources.hub import PacketHub
from camrec.sources.v4l2 import V4l2Source, resolve_device
from tests.helpers import ffprobe

FPS = 15
W, H = 320, 240


def _frames(n: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        img = np.zeros((H, W, 3), np.uint8)
        img[:, :, 0] = (np.arange(W) + 8 * i) % 256
        img[40:120, (10 * i) % (W - 60):(10 * i) % (W - 60) + 60, 1] = 255
        out.append(img)
    return out


def make_mjpeg(path: Path, seconds: float) -> Path:
    with av.open(str(path), "w", format="avi") as out:
        stream: Any = out.add_stream("mjpeg", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuvj422p"  # like a UVC camera
        for i, img in enumerate(_frames(round(seconds * FPS))):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuvj422p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def make_yuyv(path: Path, seconds: float) -> Path:
    with av.open(str(path), "w", format="nut") as out:
        stream: Any = out.add_stream("rawvideo", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuyv422"
        for i, img in enumerate(_frames(round(seconds * FPS))):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuyv422")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


class Opener:
    """Stands in for the device open: records the options, then opens `media` (or raises)."""

    def __init__(self, media: Path | None = None, fail: int | None = None) -> None:
        self.media, self.fail = media, fail
        self.calls: list[tuple[str, dict[str, str]]] = []

    def __call__(self, device: str, options: dict[str, str], open_timeout: float, read_timeout: float) -> Any:
        self.calls.append((device, options))
        if self.fail is not None:
            raise OSError(self.fail, os.strerror(self.fail))
        return av.open(str(self.media))


def source(spec: str = "/dev/video0", **kw: Any) -> V4l2Source:
    kw.setdefault("resolver", lambda path: path)
    return V4l2Source(spec, **kw)


def mux(packets: list[Any], path: Path) -> dict:
    info = packets[0].stream
    with av.open(str(path), "w", format="mp4") as out:
        stream: Any = out.add_stream("h264", rate=round(info.fps))
        stream.width, stream.height = info.width, info.height
        stream.time_base = info.time_base
        for p in packets:
            packet = av.Packet(p.data)
            packet.pts, packet.dts, packet.duration = p.pts, p.dts, p.duration
            packet.time_base = info.time_base
            packet.is_keyframe = p.keyframe
            packet.stream = stream
            out.mux(packet)
    return ffprobe(path)


# --- options and config ------------------------------------------------------------------------

def test_options_become_demuxer_options() -> None:
    opts = parse_v4l2("/dev/video0?input_format=MJPG&video_size=1280x720&framerate=15&bitrate=3000")
    assert opts.demuxer_options() == {"input_format": "mjpeg", "video_size": "1280x720", "framerate": "15"}
    assert opts.bitrate == 3000 and opts.encoder == "auto"
    assert parse_v4l2("/dev/v4l/by-id/usb-cam-video-index0").demuxer_options() == {}
    opener = Opener(fail=errno.ENOENT)
    with pytest.raises(SourceError):
        source("/dev/video3?input_format=yuyv&video_size=640x480", opener=opener).open()
    assert opener.calls == [("/dev/video3", {"input_format": "yuyv422", "video_size": "640x480"})]


@pytest.mark.parametrize("spec", ["/dev/video0", "/dev/v4l/by-id/usb-046d_C920-video-index0?framerate=30",
                                  "/dev/v4l/by-path/platform-xhci-usb-0:1:1.0-video-index0?input_format=h264"])
def test_config_accepts_v4l2_sources(spec: str) -> None:
    assert CameraConfig(source=spec).source == spec


@pytest.mark.parametrize("spec, fragment", [("/dev/video0?input_format=rgb", "input_format"),
                                            ("/dev/video0?video_size=big", "video_size"),
                                            ("/dev/video0?fps=15", "unknown V4L2 option")])
def test_config_rejects_bad_v4l2_options(spec: str, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        CameraConfig(source=spec)


# --- device resolution ---------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    """dev/video0 (capture) + dev/video1 (metadata) with by-id/by-path links, and a sysfs."""
    dev, sys_root = tmp_path / "dev", tmp_path / "sys"
    for n, index in ((0, 0), (1, 1), (2, 0)):
        (dev / f"video{n}").parent.mkdir(parents=True, exist_ok=True)
        (dev / f"video{n}").touch()
        (sys_root / f"video{n}").mkdir(parents=True)
        (sys_root / f"video{n}" / "index").write_text(f"{index}\n")
    (dev / "v4l" / "by-id").mkdir(parents=True)
    (dev / "v4l" / "by-path").mkdir(parents=True)
    (dev / "v4l" / "by-id" / "usb-cam-video-index0").symlink_to("../../video0")
    (dev / "v4l" / "by-id" / "usb-cam-video-index1").symlink_to("../../video1")
    (dev / "v4l" / "by-path" / "pci-usb-0:1-video-index0").symlink_to("../../video2")
    return dev, sys_root, dev / "v4l"


def test_by_id_follows_a_replug_to_a_new_node(tree: tuple[Path, Path, Path]) -> None:
    dev, sys_root, v4l = tree
    link = v4l / "by-id" / "usb-cam-video-index0"
    assert resolve_device(str(link), sys_root=sys_root, v4l_root=v4l) == str(dev / "video0")
    link.unlink()  # unplugged
    with pytest.raises(SourceError, match=r"no such device.*waiting"):
        resolve_device(str(link), sys_root=sys_root, v4l_root=v4l)
    link.symlink_to("../../video2")  # re-plugged as another node
    assert resolve_device(str(link), sys_root=sys_root, v4l_root=v4l) == str(dev / "video2")


def test_metadata_nodes_are_refused(tree: tuple[Path, Path, Path]) -> None:
    _dev, sys_root, v4l = tree
    with pytest.raises(SourceError, match="not a capture node") as info:
        resolve_device(str(v4l / "by-id" / "usb-cam-video-index1"), sys_root=sys_root, v4l_root=v4l)
    assert "index0" in (info.value.hint or "")


def test_a_plain_node_gets_a_hint_to_use_its_stable_name(tree: tuple[Path, Path, Path],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    dev, sys_root, v4l = tree
    assert v4l2.stable_name(str(dev / "video0"), v4l) == str(v4l / "by-id" / "usb-cam-video-index0")
    assert v4l2.stable_name(str(dev / "video2"), v4l) == str(v4l / "by-path" / "pci-usb-0:1-video-index0")
    assert v4l2.stable_name(str(dev / "video9"), v4l) is None
    with caplog.at_level("INFO", logger="camrec.sources.v4l2"):
        for _ in range(2):
            assert resolve_device(str(dev / "video0"), sys_root=sys_root, v4l_root=v4l) == str(dev / "video0")
        resolve_device(str(v4l / "by-id" / "usb-cam-video-index0"), sys_root=sys_root, v4l_root=v4l)
    hints = [r.getMessage() for r in caplog.records if "survives re-plugging" in r.getMessage()]
    assert len(hints) == 1 and "usb-cam-video-index0" in hints[0]  # once, and not for the by-id name


# --- errno → one line ------------------------------------------------------------------------------

@pytest.mark.parametrize("code, fragment, hint", [
    (errno.ENOENT, "no such device (unplugged?); waiting", "by-id"),
    (errno.EBUSY, "in use by another program", "fuser"),
    (errno.ENODEV, "unplugged", "power"),
    (errno.ENOTTY, "not a video capture device", "input_format"),
    (errno.EINVAL, "refused the format", "v4l2-ctl"),
    (errno.EACCES, "permission denied", "video group"),
])
def test_open_errors_are_one_clear_line(code: int, fragment: str, hint: str) -> None:
    with pytest.raises(SourceError) as info:
        source(opener=Opener(fail=code)).open()
    assert fragment in info.value.message and "\n" not in info.value.message
    assert hint in (info.value.hint or "")


def test_av_errors_map_by_errno() -> None:
    exc = av.error.FFmpegError(errno.EBUSY, "Device or resource busy")
    assert "in use by another program" in v4l2.error_for("/dev/video0", exc).message


def test_the_real_v4l2_demuxer_refuses_a_non_device_with_enotty() -> None:
    with pytest.raises(OSError) as info:  # FFmpeg's v4l2 demuxer, for real: VIDIOC_QUERYCAP fails
        v4l2.default_opener("/dev/null", {"input_format": "mjpeg"}, 2.0, 2.0)
    assert "not a video capture device" in v4l2.error_for("/dev/null", info.value).message


def test_auto_encoder_falls_back_to_libx264_when_the_hardware_encoder_fails(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(v4l2, "_m2m_verdict", {})
    src = source("/dev/video0", opener=Opener(make_mjpeg(tmp_path / "in.avi", 1)))
    src.open()  # no /dev/video here, so the one-second h264_v4l2m2m test encode fails
    assert src.encoder_name == "libx264" and v4l2._m2m_verdict == {(W, H): False}
    assert src.read() is not None
    src.close()


# --- the encode path, end to end ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mjpeg", "yuyv"])
def test_mjpeg_and_yuyv_are_encoded_to_h264(kind: str, tmp_path: Path) -> None:
    media = (make_mjpeg if kind == "mjpeg" else make_yuyv)(tmp_path / f"in.{'avi' if kind == 'mjpeg' else 'nut'}", 3)
    src = source("/dev/video0?encoder=libx264&bitrate=500", opener=Opener(media))
    info = src.open()
    assert (info.codec, info.width, info.height, src.encoder_name) == ("h264", W, H, "libx264")
    packets = []
    while (p := src.read()) is not None:
        packets.append(p)
    src.close()
    assert len(packets) == 3 * FPS
    assert all(b.pts > a.pts for a, b in itertools.pairwise(packets))
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 15, 30]  # GOP 1 s, no B-frames
    probe = mux(packets, tmp_path / "out.mp4")
    assert (probe["codec"], probe["width"], probe["height"], probe["packets"]) == ("h264", W, H, 3 * FPS)
    assert abs(probe["duration"] - 3.0) <= 1 / FPS + 0.01


def test_keyframes_without_headers_get_the_last_ones(tmp_path: Path) -> None:
    """An encoder that writes SPS/PPS only once (h264_v4l2m2m has been seen to): every keyframe
    still starts with them, so clips cut at any keyframe play."""
    src = source("/dev/video0?encoder=libx264", opener=Opener(make_mjpeg(tmp_path / "in.avi", 3)))
    src.open()
    real = src._encoder

    class OnceHeaders:
        def __init__(self) -> None:
            self.seen = False
            self.stripped = 0

        def encode(self, frame: Any) -> list[Any]:
            out = []
            for p in real.encode(frame):
                data = bytes(p)
                if p.is_keyframe and self.seen:  # strip SPS/PPS from later keyframes
                    data = b"".join(b"\0\0\1" + n for n in data.split(b"\0\0\1")[1:]
                                    if n and n[0] & 0x1F not in (7, 8))
                    assert not v4l2._annexb_has_sps(data)
                    self.stripped += 1
                self.seen = self.seen or bool(p.is_keyframe)
                q = av.Packet(data)
                q.pts, q.is_keyframe = p.pts, p.is_keyframe
                out.append(q)
            return out

    src._encoder = once = OnceHeaders()
    packets = list(iter(src.read, None))
    src.close()
    assert once.stripped == 2
    keys = [p for p in packets if p.keyframe]
    assert len(keys) == 3 and all(v4l2._annexb_has_sps(p.data) for p in keys)
    probe = mux(packets[15:], tmp_path / "cut.mp4")  # a clip that starts at the second keyframe
    assert probe["packets"] == 30 and probe["codec"] == "h264"


def test_h264_input_is_copied(tmp_path: Path) -> None:
    media = tmp_path / "in.mkv"
    with av.open(str(media), "w") as out:
        stream: Any = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for i, img in enumerate(_frames(FPS)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with av.open(str(media)) as original:
        payloads = [bytes(p) for p in original.demux(video=0) if p.size]
    src = source(opener=Opener(media))
    src.open()
    assert src.encoder_name is None
    copied = []
    while (p := src.read()) is not None:
        copied.append(p.data)
    assert copied == payloads


def test_device_timestamps_that_go_back_fall_back_to_arrival() -> None:
    src = source()
    times = iter([10.0, 10.1, 10.2])

    class P:
        time_base = Fraction(1, 1000)

        def __init__(self, pts: int) -> None:
            self.pts = pts

    src.clock = type("C", (), {"monotonic": lambda self: next(times)})()
    assert src._stamp(P(5000), 10.0) == 0
    assert src._stamp(P(5066), 10.1) == round(0.066 * 90000)
    assert src._stamp(P(4000), 10.2) == round(0.2 * 90000)  # went back: arrival time from now on
    assert src._use_arrival


def test_a_read_blocked_in_the_driver_is_cut_by_the_watchdog(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    media = make_mjpeg(tmp_path / "in.avi", 1)
    release = threading.Event()
    closed = threading.Event()

    class Hanging:
        def __init__(self, container: Any) -> None:
            self.container, self.streams = container, container.streams

        def demux(self, stream: Any) -> Any:
            it = self.container.demux(stream)
            yield next(it)
            release.wait(30)  # VIDIOC_DQBUF that never returns (until the test lets it)
            yield from it

        def close(self) -> None:
            self.container.close()
            closed.set()

    src = source("/dev/video0?encoder=libx264",
                 opener=lambda *a: Hanging(av.open(str(media))), read_timeout=0.5)
    src.open()
    assert src.read() is not None
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"no video for 0\.5 s"):
        src.read()
    assert time.monotonic() - t0 < 2.0
    with caplog.at_level("WARNING", logger="camrec.sources.v4l2"):
        src.close()  # returns although the read is still stuck
    assert "stuck in the driver" in caplog.text and not closed.is_set()
    release.set()
    assert closed.wait(5), "the reader closes the device once the stuck read returns"


# --- unplug and re-plug through the capture loop ------------------------------------------------

class Replug:
    """Plays `media` in real time; the first connection dies with ENODEV after `cut` packets, then
    the device is missing (ENOENT) until `back_at` on the test's clock, then plays again."""

    def __init__(self, media: Path, cut: int, gone: float) -> None:
        self.media, self.cut, self.gone = media, cut, gone
        self.opens = 0
        self.unplugged_at: float | None = None
        self.reopened_at: float | None = None

    def __call__(self, device: str, options: dict[str, str], open_timeout: float, read_timeout: float) -> Any:
        now = time.monotonic()
        if self.unplugged_at is not None and now < self.unplugged_at + self.gone:
            raise OSError(errno.ENOENT, "No such file or directory")
        self.opens += 1
        if self.opens == 2:
            self.reopened_at = now
        return Paced(av.open(str(self.media)), self if self.opens == 1 else None)


class Paced:
    def __init__(self, container: Any, replug: Replug | None) -> None:
        self.container, self.replug = container, replug
        self.streams = container.streams

    def demux(self, stream: Any) -> Any:
        t0 = time.monotonic()
        for i, packet in enumerate(self.container.demux(stream)):
            if self.replug is not None and i == self.replug.cut:
                self.replug.unplugged_at = time.monotonic()
                raise OSError(errno.ENODEV, "No such device")
            time.sleep(max(0.0, t0 + i / FPS - time.monotonic()))
            yield packet

    def close(self) -> None:
        self.container.close()


def test_unplug_closes_the_stream_and_replug_resumes_within_3_s(tmp_path: Path) -> None:
    media = make_mjpeg(tmp_path / "in.avi", 4)
    replug = Replug(media, cut=FPS, gone=1.5)
    got: list[tuple[float, Any]] = []
    ends: list[str] = []

    class Witness(PacketHub):
        def publish(self, packet: Any) -> None:
            got.append((time.monotonic(), packet))
            super().publish(packet)

        def end_stream(self, reason: str = "disconnected") -> None:
            ends.append(reason)
            super().end_stream(reason)

    hub = Witness("usb/main")
    stop = threading.Event()
    capture = Capture("usb", "main", lambda g: V4l2Source("/dev/video0?encoder=libx264", generation=g, opener=replug,
                                                                       resolver=lambda p: p), hub, stop)
    capture.start()
    try:
        deadline = time.monotonic() + 20
        while (replug.reopened_at is None or not any(t > replug.reopened_at for t, _ in got)) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        capture.join(10)
    assert ends and "unplugged" in ends[0]
    assert replug.unplugged_at is not None and replug.reopened_at is not None
    back = replug.unplugged_at + replug.gone  # the moment the device was there again
    first_after = min(t for t, _ in got if t > replug.reopened_at)
    assert first_after - back <= 3.0
    second = [p for t, p in got if t > replug.reopened_at]
    assert second[0].keyframe and second[0].stream.generation > got[0][1].stream.generation


# --- a real device -----------------------------------------------------------------------------

@pytest.mark.skipif(not os.environ.get("CAMREC_TEST_V4L2_DEVICE"),
                    reason="set CAMREC_TEST_V4L2_DEVICE=/dev/v4l/by-id/…")
def test_real_device_records_h264(tmp_path: Path) -> None:
    src = make_source(os.environ["CAMREC_TEST_V4L2_DEVICE"])
    info = src.open()
    try:
        packets = [src.read() for _ in range(round(3 * info.fps))]
    finally:
        src.close()
    assert all(p is not None for p in packets)
    probe = mux(packets, tmp_path / "real.mp4")
    assert probe["codec"] == "h264" and probe["packets"] == len(packets)


# --- camrec's daemon, recording a USB camera that is unplugged and re-plugged --------------------

def make_scene(path: Path, seconds: float, motion: tuple[float, float]) -> Path:
    """MJPEG (4:2:2, like UVC) of a still textured scene that an object crosses during `motion`."""
    rng = np.random.default_rng(3)
    base = rng.integers(60, 200, size=(H // 8, W // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    with av.open(str(path), "w", format="avi") as out:
        stream: Any = out.add_stream("mjpeg", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuvj422p"
        for i in range(round(seconds * FPS)):
            img = base.copy()
            t = i / FPS
            if motion[0] <= t < motion[1]:
                x = int((t - motion[0]) / (motion[1] - motion[0]) * (W - 80))
                img[80:200, x:x + 80] = (250, 250, 250)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuvj422p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_camrec_records_a_usb_camera_through_unplug_and_replug(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3
    import subprocess

    from camrec.config import load_config
    from camrec.crypto.keys import X25519Identity
    from camrec.service.daemon import Daemon

    media = make_scene(tmp_path / "scene.avi", 9, motion=(3.0, 5.0))
    replug = Replug(media, cut=round(4.5 * FPS), gone=1.0)  # unplugged in the middle of the motion
    monkeypatch.setattr(v4l2, "default_opener", replug)
    monkeypatch.setattr(v4l2, "resolve_device", lambda path, **kw: path)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    owner = X25519Identity.generate()
    key = tmp_path / "owner.key"
    key.write_text(f"{owner}\n")
    storage = tmp_path / "storage"
    storage.mkdir()
    config = tmp_path / "camrec.yaml"
    config.write_text(f"recipients: [{owner.recipient()}]\nstorage:\n  path: {storage}\n  min_free: 0\n"
                      "cameras:\n  usb:\n    source: /dev/v4l/by-id/usb-test-video-index0?input_format=mjpeg"
                      "&encoder=libx264&bitrate=800\n    pre_roll: 1s\n    post_roll: 1s\n    read_timeout: 2s\n")
    daemon = Daemon(load_config(config))
    runner = threading.Thread(target=daemon.run, name="test-daemon", daemon=True)
    runner.start()

    def clips() -> list[tuple[str, float, float]]:
        db_path = storage / "index.sqlite3"
        if not db_path.exists():
            return []
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
            return db.execute("SELECT path, start, end FROM clips WHERE state = 'complete' ORDER BY start").fetchall()

    try:
        deadline = time.monotonic() + 40
        while len(clips()) < 2:  # the one cut by the unplug, and the motion after the re-plug
            assert runner.is_alive() and time.monotonic() < deadline, f"clips: {clips()}"
            time.sleep(0.2)
    finally:
        daemon.stop_event.set()
        runner.join(30)
    assert replug.opens >= 2 and replug.reopened_at is not None and replug.unplugged_at is not None
    assert replug.reopened_at - (replug.unplugged_at + replug.gone) <= 3.0
    first_start, first_end = clips()[0][1:]
    # Cut by the unplug at 4.5 s (from 2 s: 1 s pre-roll before the motion), not at 6 s (post-roll).
    assert first_end - first_start < 3.2, clips()
    for path, start, end in clips()[:2]:
        plain = tmp_path / (Path(path).name + ".mp4")
        subprocess.run(["age", "-d", "-i", str(key), "-o", str(plain), str(storage / path)], check=True)
        probe = ffprobe(plain)
        assert (probe["codec"], probe["width"], probe["height"]) == ("h264", W, H)
        assert abs(probe["duration"] - (end - start)) <= 1 / FPS + 0.05, (probe, start, end)
        assert abs(probe["packets"] - probe["duration"] * FPS) <= 1.5, probe
        assert probe["packets"] >= FPS  # pre-roll and some of the crossing at least
        frames = subprocess.run(["ffmpeg", "-v", "error", "-i", str(plain), "-f", "null", "-"],
                                capture_output=True, text=True)
        assert frames.returncode == 0 and not frames.stderr.strip(), frames.stderr  # it plays
