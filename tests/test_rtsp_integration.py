"""`camrec run` against a real RTSP camera (GStreamer) on 127.0.0.1, checked with age and ffprobe.

The camera serves 22 s of 640x360 H.264 (and a 320x180 sub-stream) with sensor noise, looping, with
an object crossing only at 4–7 s and 15–18 s of each session. What a clip shows is checked from its
pixels (not from the detector's own output): the object must be absent for at least the pre-roll at
the start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest

from camrec.crypto.stream import decrypt_bytes
from tests.helpers import ffprobe, plaintext_markers_in, stored_files
from tests.support.daemon import Daemon

PRE_ROLL = 3.0
POST_ROLL = 2.0


@pytest.fixture
def early_camera(rtsp_camera_factory, early_media):
    return rtsp_camera_factory(early_media)


@pytest.fixture
def daemon_factory(tmp_path):
    made: list[Daemon] = []

    def make(url: str, detect_url: str | None = None) -> Daemon:
        d = Daemon(tmp_path, url, detect_url, pre_roll=PRE_ROLL, post_roll=POST_ROLL)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def object_onset(video: Path) -> tuple[float, float]:
    """(seconds until the moving object first shows, clip length in seconds), from the pixels.

    A frame shows the object when >1 % of its pixels differ from the clip's first frame by more
    than 40 grey levels: far above the sensor noise, far below the object's contrast.
    """
    with av.open(str(video)) as c:
        stream = c.streams.video[0]
        first = None
        onset = None
        t = 0.0
        for frame in c.decode(stream):
            gray = frame.to_ndarray(format="gray").astype(np.int16)
            t = float(frame.pts * stream.time_base)
            if first is None:
                first = gray
                start = t
                continue
            if onset is None and np.mean(np.abs(gray - first) > 40) > 0.01:
                onset = t - start
        return (onset if onset is not None else float("inf")), t - start


def check_clips(d: Daemon, rows: list[dict], tmp: Path) -> None:
    """Every clip: decrypted by the stock age, readable by ffprobe, object after ≥ pre-roll."""
    for row in rows:
        clip = d.storage / row["path"]
        mp4 = tmp / (Path(row["path"]).name + ".mp4")
        with open(mp4, "wb") as out:
            subprocess.run(["age", "-d", "-i", str(d.key), str(clip)], stdout=out, check=True)
        probe = ffprobe(mp4)
        assert probe["codec"] == "h264" and probe["width"] == 640
        assert abs(probe["duration"] - (row["end"] - row["start"])) < 0.6
        onset, length = object_onset(mp4)
        assert onset >= PRE_ROLL - 0.05, (row["path"], onset)
        assert onset < length, "a clip without the moving object in it"
        # a motion window is ≤ 4 s long: pre-roll + window + post-roll + detection lag + one GOP
        assert length <= PRE_ROLL + 4 + POST_ROLL + 2.5, length


def assert_no_plaintext(storage: Path) -> None:
    files = stored_files(storage)
    assert files
    for f in files:
        assert f.read_bytes()[:22] == b"age-encryption.org/v1\n", f
        assert plaintext_markers_in(f) == [], f


def test_records_motion_clips_from_rtsp(early_camera, daemon_factory, tmp_path):
    d = daemon_factory(early_camera.url("/cam"))
    d.start()
    # One loop has two motion windows (4–7 s, 15–18 s): expect two clips.
    rows = d.wait_for(lambda rows: sum(r["state"] == "complete" for r in rows) >= 2, 45, "two clips")
    assert d.stop() == 0
    rows = d.rows()
    assert [r["state"] for r in rows] == ["complete", "complete"]
    first, second = rows
    # the clips are about 11 s apart, as the motion windows are
    assert 9.0 <= second["start"] - first["start"] <= 15.0
    check_clips(d, rows, tmp_path)
    assert_no_plaintext(d.storage)
    out = tmp_path / "export"
    proc = d.cli("export", "-c", str(d.config), "-i", str(d.key), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    for mp4 in sorted(out.glob("*.mp4")):
        subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", str(mp4), "-f", "null", "-"], check=True)
    assert len(list(out.glob("*.mp4"))) == 2


def test_detect_substream(early_camera, daemon_factory, tmp_path):
    d = daemon_factory(early_camera.url("/cam"), early_camera.url("/cam_sub"))
    d.start()
    rows = d.wait_for(lambda rows: any(r["state"] == "complete" for r in rows), 30, "a clip")
    d.stop()
    check_clips(d, [r for r in rows if r["state"] == "complete"], tmp_path)
    assert "detect stream connected: h264 320x180" in d.log.read_text()


def test_resumes_after_camera_restart(early_camera, daemon_factory, tmp_path):
    rtsp_camera = early_camera
    d = daemon_factory(rtsp_camera.url("/cam"))
    d.start()
    rtsp_camera.wait_for_sessions(1)
    time.sleep(1)
    rtsp_camera.stop()
    time.sleep(2)
    restarted = time.time()
    rtsp_camera.start()
    # The new session starts at frame 0 again: motion at 4 s after the reconnect.
    rows = d.wait_for(lambda rows: any(r["state"] == "complete" and r["start"] > restarted for r in rows),
                      30, "a clip after the camera restart")
    d.stop()
    after = [r for r in rows if r["start"] > restarted and r["state"] == "complete"]
    check_clips(d, after, tmp_path)
    log = d.log.read_text()
    assert "stream lost" in log and log.count("main stream connected") >= 2


def test_index_and_files_agree_after_daemon_kill(early_camera, daemon_factory, tmp_path):
    d = daemon_factory(early_camera.url("/cam"))
    d.start()
    # kill -9 while the first clip is being written
    d.wait_for(lambda rows: any(r["state"] == "recording" and r["size"] > 2000 for r in rows), 30, "recording")
    time.sleep(1.5)
    d.stop(signal.SIGKILL)
    killed = {r["id"] for r in d.rows()}
    d.start()
    # Recording again after the restart; the clean stop closes that clip (complete).
    d.wait_for(lambda rows: any(r["id"] not in killed and r["state"] == "recording" and r["size"] > 2000
                                for r in rows), 40, "a clip after the restart")
    assert d.stop() == 0
    rows = d.rows()
    states = [r["state"] for r in rows]
    assert states[0] == "partial" and "complete" in states, states
    # every row's file exists and every clip file has a row
    on_disk = {str(p.relative_to(d.storage)) for p in d.storage.rglob("*.mp4.age")}
    assert on_disk == {r["path"] for r in rows}
    listed = json.loads(d.cli("list", "-c", str(d.config), "--json").stdout)
    assert {c["path"] for c in listed} == on_disk
    # the cut clip still gives its video up to the crash: age prints the authenticated prefix
    cut = d.storage / rows[0]["path"]
    proc = subprocess.run(["age", "-d", "-i", str(d.key), str(cut)], capture_output=True)
    assert proc.returncode != 0 and proc.stdout[4:8] == b"ftyp"
    out = tmp_path / "export"
    proc = d.cli("export", "-c", str(d.config), "-i", str(d.key), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    salvaged = out / (Path(rows[0]["path"]).name.removesuffix(".mp4.age") + ".mp4")
    assert ffprobe(salvaged)["duration"] >= 1.0
    assert "cut short" in proc.stdout
    with pytest.raises(Exception):  # noqa: B017 - the library refuses the unfinished file too
        decrypt_bytes(cut.read_bytes(), [d.owner])
    assert_no_plaintext(d.storage)
    assert os.path.getsize(cut) == rows[0]["size"] or rows[0]["size"] <= os.path.getsize(cut)


def test_sigterm_closes_the_open_clip_cleanly(early_camera, daemon_factory, tmp_path):
    d = daemon_factory(early_camera.url("/cam"))
    d.start()
    d.wait_for(lambda rows: any(r["state"] == "recording" and r["size"] > 2000 for r in rows), 30, "recording")
    assert d.stop(signal.SIGTERM) == 0
    rows = d.rows()
    assert [r["state"] for r in rows] == ["complete"]
    clip = d.storage / rows[0]["path"]
    assert rows[0]["size"] >= clip.stat().st_size  # video + sidecars
    out = subprocess.run(["age", "-d", "-i", str(d.key), str(clip)], capture_output=True, check=True).stdout
    mp4 = tmp_path / "clip.mp4"
    mp4.write_bytes(out)
    assert ffprobe(mp4)["duration"] > 1.0
    assert "received SIGTERM" in d.log.read_text()
