"""`camrec detect`: the daemon's detector over images, video files and streams, from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from camrec.cli import main
from camrec.config import MotionSettings
from camrec.crypto.keys import X25519Identity
from camrec.motion.input import DetectionRun
from camrec.motion.worker import DetectionWorker
from tests.support.motion_media import frames, write_h264, write_images

WINDOW = (45, 70)  # the block is in view for these frames (after the detector's 2 s warm-up)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("detect")
    grays = frames(90, WINDOW)
    return {"images": write_images(tmp / "input", grays), "video": write_h264(tmp / "clip.mp4", grays),
            "tmp": tmp}


def detect_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["detect", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_images_json_has_every_frame_and_the_event(media: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = detect_json(capsys, str(media["images"]), "--fps", "15")
    assert out["fps"] == 15.0 and out["kind"] == "images"
    assert [f["index"] for f in out["frames"]] == list(range(90))
    assert all(isinstance(f["motion"], bool) and 0.0 <= f["score"] <= 1.0 for f in out["frames"])
    assert out["frames"][10]["t"] == pytest.approx(10 / 15, abs=1e-3)
    (event,) = out["events"]
    assert WINDOW[0] <= event["start_frame"] <= WINDOW[0] + 4
    assert WINDOW[1] - 1 <= event["end_frame"] <= WINDOW[1] + 15  # the 1 s hold
    assert event["start_s"] == pytest.approx(event["start_frame"] / 15, abs=1e-3)
    assert event["end_s"] == pytest.approx(event["end_frame"] / 15, abs=1e-3)
    assert all(f["motion"] == (event["start_frame"] <= f["index"] <= event["end_frame"]) for f in out["frames"])
    assert out["settings"]["threshold"] == 25  # the daemon's defaults


def test_video_file_gives_the_same_decisions_as_its_images(media: dict[str, Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    video = detect_json(capsys, str(media["video"]))
    images = detect_json(capsys, str(media["images"]), "--fps", "15")
    assert video["fps"] == 15.0 and video["kind"] == "file" and len(video["frames"]) == 90
    assert [e["start_frame"] for e in video["events"]] == [e["start_frame"] for e in images["events"]]
    agree = np.mean([a["motion"] == b["motion"] for a, b in zip(video["frames"], images["frames"], strict=True)])
    assert agree > 0.95  # H.264 at crf 18 is close to, not equal to, the PNGs


def test_fps_sets_the_time_of_images(media: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = detect_json(capsys, str(media["images"]), "--fps", "5")
    assert out["fps"] == 5.0 and out["frames"][10]["t"] == pytest.approx(2.0)


def test_text_output_lists_events_and_frames_on_request(media: dict[str, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect", str(media["images"])]) == 0
    text = capsys.readouterr().out
    assert "1 event(s)" in text and "frames 4" in text and "peak score" in text
    assert "     10 " not in text  # no per-frame lines by default
    assert main(["detect", str(media["images"]), "--frames", "--max-frames", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(1 for line in lines if "score 0." in line) == 20
    assert any("20 frames" in line for line in lines)


def test_flags_override_settings_and_a_mask_hides_the_block(media: dict[str, Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    masked = detect_json(capsys, str(media["images"]), "--mask", "0,0 1,0 1,1 0,1;", "--min-area", "0.01")
    assert masked["events"] == [] and masked["settings"]["min_area"] == 0.01
    zoned = detect_json(capsys, str(media["images"]), "--zone", "0,0 0.5,0 0.5,1 0,1")
    assert zoned["settings"]["zones"] == [[[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]]
    assert len(zoned["events"]) == 1  # the block crosses the left half too


def test_camera_settings_come_from_the_config(media: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = media["tmp"] / "camrec.yaml"
    recipient = X25519Identity.generate().recipient()
    cfg.write_text(f"recipients: [{recipient}]\nstorage:\n  path: {media['tmp'] / 's'}\ncameras:\n"
                   "  front:\n    source: rtsp://127.0.0.1:9/a\n    motion:\n      threshold: 40\n"
                   "      masks:\n        - [[0, 0], [1, 0], [1, 1], [0, 1]]\n"
                   "  back:\n    source: rtsp://127.0.0.1:9/b\n")
    front = detect_json(capsys, str(media["images"]), "-c", str(cfg), "--camera", "front")
    assert front["settings"]["threshold"] == 40 and front["events"] == []
    back = detect_json(capsys, str(media["images"]), "-c", str(cfg), "--camera", "back", "--threshold", "20")
    assert back["settings"]["threshold"] == 20 and len(back["events"]) == 1
    assert main(["detect", str(media["images"]), "-c", str(cfg)]) == 2  # two cameras: which one?
    assert "--camera" in capsys.readouterr().err
    assert main(["detect", str(media["images"]), "-c", str(cfg), "--camera", "side"]) == 2
    assert "front, back" in capsys.readouterr().err


def test_uses_the_daemons_detection_worker(media: dict[str, Path]) -> None:
    run = DetectionRun(str(media["video"]), MotionSettings())
    assert isinstance(run.worker, DetectionWorker)
    assert sum(1 for _ in run) == 90 and run.worker.frames_analysed == 90


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["/nonexistent/clip.mp4"], 2, "no such file"),
        (["{empty}"], 2, "no images"),
        (["{images}", "--zone", "0.1,0.1 0.5"], 2, "--zone"),
        (["{images}", "--zone", "0,0 1.5,0 1,1"], 2, "--zone #1"),
        (["{images}", "--threshold", "0"], 2, "--threshold"),
        (["{images}", "--fps", "0"], 2, "--fps"),
        (["{images}", "--camera", "front"], 2, "-c CONFIG"),
        (["{garbage}"], 6, "not a readable video"),
        (["rtsp://127.0.0.1:1/nothing"], 4, "cannot open"),
    ],
)
def test_bad_input_is_one_line_error(media: dict[str, Path], args: list[str], code: int, needle: str) -> None:
    empty = media["tmp"] / "empty"
    empty.mkdir(exist_ok=True)
    garbage = media["tmp"] / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 10)
    argv = [a.format(empty=empty, images=media["images"], garbage=garbage) for a in args]
    proc = subprocess.run([sys.executable, "-m", "camrec", "detect", *argv], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("camrec: error: ") and needle in proc.stderr
    assert all(line.startswith(("camrec: error: ", "camrec: hint: ")) for line in lines)
    assert "Traceback" not in proc.stderr
