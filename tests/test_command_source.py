"""Issue 13 part 2: command sources (`exec:`) and the Raspberry Pi camera (`picamera:`).

A stand-in `rpicam-vid` (tests/support/rpicam_standin.py, first on PATH) writes real Annex-B H.264
from libx264 in real time: start, crash, hang and restart are exercised against it, and one test
records a motion clip through `camrec run` and checks it decrypts and plays with the right length.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from camrec.config import CameraConfig
from camrec.errors import SourceError
from camrec.sources import command, make_source
from camrec.sources.capture import Capture
from camrec.sources.command import AnnexBSplitter, CommandSource, is_pi5, picamera_command
from camrec.sources.hub import PacketHub
from tests.helpers import ffprobe
from tests.support.daemon import Daemon
from tests.support.rpicam_standin import install

SMALL = "picamera:?size=320x240&fps=15"


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    script = install(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for name in ("STANDIN_FRAMES", "STANDIN_HANG", "STANDIN_STDERR", "STANDIN_PIDS", "STANDIN_ARGV"):
        monkeypatch.delenv(name, raising=False)
    yield script


@pytest.fixture(autouse=True)
def _fresh_stderr_limits() -> None:
    command._limiters.clear()


def _gone(pgid: int, timeout: float = 3.0) -> bool:
    """True once no process of group `pgid` exists (reparented zombies are reaped by init)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


# --- argument lists ---------------------------------------------------------------------------

def test_picamera_arguments_pi4_and_pi5() -> None:
    pi4, fps = picamera_command("picamera:?size=1280x720&fps=15", "Raspberry Pi 4 Model B Rev 1.4")
    assert fps == 15
    assert pi4 == ["rpicam-vid", "-t", "0", "-n", "--inline", "--codec", "h264", "--width", "1280",
                   "--height", "720", "--framerate", "15", "--intra", "15", "-o", "-"]
    pi5, _ = picamera_command("picamera:?size=1280x720&fps=15", "Raspberry Pi 5 Model B Rev 1.0")
    assert pi5 == [*pi4[:-2], "--libav-format", "h264", "-o", "-"]
    default, fps = picamera_command("picamera:", "")
    assert default[default.index("--width") + 1:default.index("--width") + 2] == ["1280"] and fps == 15
    cam1, _ = picamera_command("picamera:?camera=1", "")
    assert cam1[1:3] == ["--camera", "1"]
    assert is_pi5("Raspberry Pi Compute Module 5 Rev 1.0") and not is_pi5("Raspberry Pi 3 Model B Plus Rev 1.3")


def test_pi_model_is_read_from_the_device_tree(standin: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    monkeypatch.setattr(command, "MODEL_PATH", model)
    assert "--libav-format" in make_source(SMALL).argv  # type: ignore[attr-defined]
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    assert "--libav-format" not in make_source(SMALL).argv  # type: ignore[attr-defined]
    monkeypatch.setattr(command, "MODEL_PATH", tmp_path / "absent")
    assert "--libav-format" not in make_source(SMALL).argv  # type: ignore[attr-defined]


# --- the access-unit splitter -------------------------------------------------------------------

def test_splitter_cuts_pictures_at_aud_headers_and_first_slices() -> None:
    sc = b"\0\0\0\1"
    sps, pps, sei = sc + b"\x67\x42\x00", sc + b"\x68\xce", b"\0\0\1\x06\x05\x01"
    idr, p_first, p_second = sc + b"\x65\x88\x84", b"\0\0\1\x41\x9a\x02", sc + b"\x41\x40\x11"  # 2nd: mb != 0
    aud = sc + b"\x09\xf0"
    stream = sps + pps + sei + idr + p_first + p_second + aud + p_first + sps + pps + idr + aud
    splitter = AnnexBSplitter()
    for i in range(0, len(stream), 3):  # byte-dribbled: start codes split across reads
        splitter.feed(stream[i:i + 3], float(i))
    splitter.finish()
    units = list(splitter.units)
    assert [u[0] for u in units] == [sps + pps + sei + idr, p_first + p_second, aud + p_first, sps + pps + idr]
    assert [u[1] for u in units] == [True, False, False, True]
    assert units[0][2] == 0.0 and units[1][2] == float(len(sps + pps + sei + idr)) // 3 * 3


@pytest.mark.parametrize("aud", [False, True])
def test_splitter_agrees_with_pyav_h264_demuxer(aud: bool) -> None:
    import io
    from fractions import Fraction

    import av

    from camrec.sources.synthetic import SyntheticScene

    scene = SyntheticScene(160, 96, 15, [(0.5, 2.0)], 30.0)
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 160, 96, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 15), Fraction(15)
    params = "keyint=10:min-keyint=10:scenecut=0:repeat-headers=1" + (":aud=1" if aud else "")
    enc.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": params}
    stream = b"".join(bytes(p) for i in range(40) for p in enc.encode(scene.frame(i)))
    stream += b"".join(bytes(p) for p in enc.encode(None))
    with av.open(io.BytesIO(stream), format="h264") as container:
        expected = [(bytes(p), p.is_keyframe) for p in container.demux(video=0) if p.size]
    splitter = AnnexBSplitter()
    for i in range(0, len(stream), 1000):
        splitter.feed(stream[i:i + 1000], 0.0)
    splitter.finish()
    got = [(data, key) for data, key, _ in splitter.units]
    assert len(got) == len(expected) == 40
    assert got == expected  # the same bytes per picture, the same keyframes
    assert b"".join(d for d, _ in got) == stream


def test_format_sniffing() -> None:
    assert command.sniff_format(b"\0\0\0\1\x67") == "h264"
    assert command.sniff_format(b"\0\0\0\0\0\1\x09") == "h264"  # leading zero bytes are allowed
    assert command.sniff_format(b"\0\0") == "pending"
    assert command.sniff_format(b"\0\x47") == "unknown"
    assert command.sniff_format(b"\x47" + bytes(187) + b"\x47") == "mpegts"
    assert command.sniff_format(b"\xff\xd8\xff") == "mjpeg"
    assert command.sniff_format(b"RIFF") == "unknown"


# --- the real child process -----------------------------------------------------------------------

def test_start_gives_keyframes_and_increasing_pts(standin: Path) -> None:
    source = make_source(SMALL, read_timeout=3)
    started = time.monotonic()
    info = source.open()
    try:
        assert (info.codec, info.width, info.height, info.fps) == ("h264", 320, 240, 15.0)
        assert info.extradata and info.extradata.startswith(b"\0\0\0\1\x67")
        assert time.monotonic() - started < 5
        packets = [source.read() for _ in range(32)]
    finally:
        source.close()
    assert all(p is not None for p in packets)
    pts = [p.pts for p in packets if p]
    assert all(b > a for a, b in itertools.pairwise(pts))
    keys = [i for i, p in enumerate(packets) if p and p.keyframe]
    assert keys[:3] == [0, 15, 30]  # --intra 15: an IDR a second
    spacing = (pts[-1] - pts[0]) / (len(pts) - 1) / 90000
    assert 1 / 15 * 0.8 < spacing < 1 / 15 * 1.25  # arrival times, at the real-time pace
    assert all(p and p.dts == p.pts and p.duration > 0 for p in packets)


def test_a_crash_ends_the_stream_and_a_new_source_works(standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_FRAMES", "20")
    source = make_source(SMALL, read_timeout=3)
    source.open()
    got = 0
    try:
        while source.read() is not None:
            got += 1
    finally:
        source.close()
    assert got == 20  # the last picture too, flushed at the end of the pipe
    monkeypatch.delenv("STANDIN_FRAMES")
    again = make_source(SMALL, read_timeout=3, generation=2)
    assert again.open().generation == 2
    try:
        assert again.read() is not None
    finally:
        again.close()


def test_a_hang_is_a_read_timeout_and_close_kills_the_whole_group(standin: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_HANG", "10")
    monkeypatch.setenv("STANDIN_PIDS", str(tmp_path / "pids"))
    source = make_source(SMALL, read_timeout=1)
    source.open()
    pid, pgid = map(int, (tmp_path / "pids").read_text().split())
    assert pid == pgid  # its own process group (start_new_session)
    assert pgid != os.getpgid(0)
    with pytest.raises(SourceError, match=r"no video for 1 s from rpicam-vid"):
        for _ in range(40):
            source.read()
    os.killpg(pgid, 0)  # still there (with its `sleep` grandchild) until close
    started = time.monotonic()
    source.close()
    assert time.monotonic() - started < 3.5
    assert _gone(pgid)


def test_a_child_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "stubborn.sh"
    pids = tmp_path / "pid"
    script.write_text(f"#!/bin/sh\ntrap '' TERM\necho $$ > {pids}\n"
                      "printf '\\000\\000\\000\\001\\011\\360'\nsleep 30 & wait\n")
    script.chmod(0o755)
    source = CommandSource(f"exec:{script}", open_timeout=1, read_timeout=1)
    started = time.monotonic()
    with pytest.raises(SourceError, match="no keyframe within 1 s"):
        source.open()  # open() closes on failure: SIGTERM ignored, SIGKILL after 2 s
    assert 2.9 < time.monotonic() - started < 5
    assert source.proc is None
    assert _gone(int(pids.read_text()))


def test_stderr_is_logged_redacted(standin: Path, monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("STANDIN_STDERR", "ERROR: cannot reach rtsp://admin:hunter2secret@cam/x")
    caplog.set_level(logging.INFO, logger="camrec.sources.command")
    source = make_source(SMALL, read_timeout=3)
    source.open()
    source.read()
    source.close()
    lines = [r.getMessage() for r in caplog.records if "cannot reach" in r.getMessage()]
    assert lines == ["rpicam-vid: ERROR: cannot reach rtsp://***:***@cam/x"]
    assert "hunter2secret" not in caplog.text


def test_stderr_floods_are_rate_limited(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    script = tmp_path / "chatty.sh"
    script.write_text("#!/bin/sh\ni=0\nwhile [ $i -lt 500 ]; do echo line $i >&2; i=$((i+1)); done\n")
    script.chmod(0o755)
    caplog.set_level(logging.INFO, logger="camrec.sources.command")
    source = CommandSource(f"exec:{script}", open_timeout=2)
    with pytest.raises(SourceError, match="exited"):
        source.open()
    logged = [r for r in caplog.records if r.getMessage().startswith("chatty.sh: line")]
    assert 10 <= len(logged) <= 25
    assert any("stderr lines not logged" in r.getMessage() for r in caplog.records)
    # A command that keeps crashing shares one budget across its restarts.
    with pytest.raises(SourceError, match="exited"):
        CommandSource(f"exec:{script}", open_timeout=2).open()
    again = [r for r in caplog.records if r.getMessage().startswith("chatty.sh: line")]
    assert len(again) - len(logged) <= 2


def test_exec_errors_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot run no-such-program-xyz: not found on PATH"):
        make_source("exec:no-such-program-xyz -o -").open()
    with pytest.raises(SourceError, match=r"cannot run /nonexistent/bin/x: no such executable file"):
        make_source("exec:/nonexistent/bin/x").open()
    mjpeg = tmp_path / "mjpeg.sh"
    mjpeg.write_text("#!/bin/sh\nprintf '\\377\\330\\377\\340'\nsleep 5\n")
    mjpeg.chmod(0o755)
    with pytest.raises(SourceError, match="writes MJPEG: not supported yet"):
        make_source(f"exec:{mjpeg}").open()
    with pytest.raises(SourceError, match="mpegts from a command is not supported yet"):
        CommandSource(f"exec:{mjpeg}", input_format="mpegts")


def test_a_child_that_fails_at_start_says_why(tmp_path: Path) -> None:
    script = tmp_path / "busy.sh"
    script.write_text("#!/bin/sh\necho 'ERROR: *** no cameras available *** rtsp://u:pw1234567@h/' >&2\nexit 255\n")
    script.chmod(0o755)
    with pytest.raises(SourceError) as caught:
        CommandSource(f"exec:{script}", open_timeout=5).open()
    assert caught.value.message == ("busy.sh exited (status 255) before sending a keyframe: "
                                    "ERROR: *** no cameras available *** rtsp://***:***@h/")


def test_exec_is_never_run_through_a_shell(tmp_path: Path, standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("STANDIN_ARGV", str(tmp_path / "argv"))
    source = make_source(f"exec:rpicam-vid --width 320 --height 240 'a b' ; touch {marker} $(id)")
    source.open()
    source.close()
    assert json.loads((tmp_path / "argv").read_text()) == ["--width", "320", "--height", "240", "a b", ";",
                                                             "touch", str(marker), "$(id)"]
    assert not marker.exists()


def test_the_capture_loop_reconnects_after_a_crash(standin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setenv("STANDIN_FRAMES", "8")
    hub = PacketHub("front/main")
    stop = threading.Event()
    capture = Capture("front", "main", lambda g: make_source(SMALL, read_timeout=3, generation=g), hub, stop)
    capture.start()
    try:
        deadline = time.monotonic() + 15
        while capture.status.connects < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert capture.status.connects >= 2
        assert capture.status.error in (None, "end of stream")
    finally:
        stop.set()
        capture.join(10)


# --- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    "exec:/usr/bin/rpicam-vid -t 0 -n --inline --codec h264 -o -",
    "exec:ffmpeg -i 'rtsp://cam/a b' -c copy -f h264 -",
    "  exec:  rpicam-vid  ",
    "picamera:",
    "picamera:?size=1920x1080&fps=30",
    "picamera:?camera=1&size=640x480",
])
def test_config_accepts_command_sources(source: str) -> None:
    assert CameraConfig(source=source).source == source.strip()


@pytest.mark.parametrize(("source", "fragment"), [
    ("exec:", "exec: needs a command line"),
    ("exec:   ", "exec: needs a command line"),
    ("exec:rpicam-vid 'unclosed", "cannot split the exec: command line (No closing quotation)"),
    ("exec:./rpicam-vid -o -", "must be an absolute path or a name found on PATH"),
    ("EXEC:/bin/x", "lower case"),
    ("exec", "write exec: with a colon"),
    ("picamera", "write picamera: with a colon"),
    ("picamera:size=1280x720", "start with '?'"),
    ("picamera:?size=big", "size must be WIDTHxHEIGHT"),
    ("picamera:?size=1281x720", "out of range"),
    ("picamera:?fps=0", "fps must be a whole number from 1 to 120"),
    ("picamera:?fps=15.5", "fps must be a whole number"),
    ("picamera:?camera=9", "camera must be a camera index"),
    ("picamera:?bitrate=4", "unknown picamera option 'bitrate'"),
    ("picamera:?size=640x480 &fps=5", "whitespace"),
    ("rtsp://h/a b", "whitespace"),  # unchanged for URLs
])
def test_config_rejects_bad_command_sources(source: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CameraConfig(source=source)
    assert fragment in str(caught.value)


# --- end to end ------------------------------------------------------------------------------------

def test_camrec_run_records_a_motion_clip_from_an_exec_source(standin: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_MOTION", "3-5")  # an object crosses 3-5 s after start (after learning)
    monkeypatch.setenv("STANDIN_PIDS", str(tmp_path / "pids"))
    d = Daemon(tmp_path, f"'exec:{standin} --width 320 --height 240 --framerate 15'", pre_roll=1.0, post_roll=1.0)
    d.start()
    try:
        rows = d.wait_for(lambda rows: any(r["state"] == "complete" for r in rows), 25, "a closed clip")
        _pid, pgid = map(int, (tmp_path / "pids").read_text().split())
        assert d.stop() == 0
    finally:
        d.close()
    assert _gone(pgid), "the source's process group outlived camrec run"
    clip = next(r for r in rows if r["state"] == "complete")
    out = tmp_path / "clip.mp4"
    proc = d.cli("decrypt", "-i", str(d.key), str(d.storage / clip["path"]), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    probe = ffprobe(out)
    assert (probe["codec"], probe["width"], probe["height"]) == ("h264", 320, 240)
    assert abs(probe["duration"] - (clip["end"] - clip["start"])) <= 1 / 15 + 0.01
    assert abs(probe["packets"] - probe["duration"] * 15) <= 1.5
    assert probe["packets"] >= 15 * 2  # pre-roll + the crossing + post-roll


def test_children_do_not_outlive_a_camrec_that_exits_without_closing(standin: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STANDIN_PIDS", str(tmp_path / "pids"))
    monkeypatch.setenv("STANDIN_HANG", "2")  # a silent child gets no SIGPIPE: it would live on
    code = "from camrec.sources import make_source\nmake_source('picamera:?size=320x240&fps=15').open()\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], timeout=30,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    _pid, pgid = map(int, (tmp_path / "pids").read_text().split())
    assert _gone(pgid)
