"""`camrec bench motion` on a tiny synthetic data set laid out like the shared one, and its
scoring rules on hand-made label sequences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from camrec.bench.motion_support.scoring import discover, runs, score
from camrec.cli import main
from camrec.motion.input import IMAGE_SUFFIXES
from tests.support.motion_media import frames, write_h264, write_images


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CDnet-like images (1-based names, a temporal ROI, a don't-care frame) and a Wallflower-like
    video (0-based labels), each with one crossing object."""
    root = tmp_path_factory.mktemp("motion-data")
    labels = root / "labels"
    labels.mkdir()
    write_images(root / "Set" / "walk" / "input", frames(80, (40, 60), seed=1))
    rows = ["frame,evaluated,fg_px_255,unknown_px_170,motion"]
    for number in range(1, 81):
        i = number - 1
        moving = 40 <= i < 60
        evaluated = i >= 10  # temporalROI starts at frame 11
        fg = 800 if moving else (3 if i == 70 else 0)  # frame 71: a few moving pixels, don't care
        rows.append(f"{number},{int(evaluated)},{fg},0,{int(moving)}")
    (labels / "Set_walk_frames.csv").write_text("\n".join(rows) + "\n")
    (labels / "Set_walk_events.csv").write_text("event,start_frame,end_frame,length\n1,41,60,20\n")
    video_dir = root / "Clips" / "room"
    video_dir.mkdir(parents=True)
    write_h264(video_dir / "room.mp4", frames(75, (40, 55), seed=2))
    (labels / "Clips_room_frames.csv").write_text(
        "frame,motion\n" + "".join(f"{i},{int(40 <= i < 55)}\n" for i in range(75)))
    (labels / "Clips_room_events.csv").write_text(
        'event,start_frame,end_frame,length,description\n1,40,54,15,"a block crosses"\n')
    return root


def test_discovers_labelled_sequences_and_maps_frame_numbers(data: Path) -> None:
    seqs = {s.name: s for s in discover(data, IMAGE_SUFFIXES)}
    assert set(seqs) == {"Set/walk", "Clips/room"}
    walk = seqs["Set/walk"]
    assert walk.input.name == "input" and walk.events == [(40, 59)]  # in000041.png is index 40
    assert walk.truth is not None and walk.truth[5] is None and walk.truth[70] is None  # ROI, don't care
    assert walk.truth[40] is True and walk.truth[20] is False
    room = seqs["Clips/room"]
    assert room.input.suffix == ".mp4" and room.events == [(40, 54)]


def test_bench_reports_camrec_and_both_baselines(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "motion", "--data", str(data), "--json", "--rate", "5", "--perturb", "noise"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["threshold"] == 25 and report["settings"]["hold_s"] == 1.0
    by_name = {s["name"]: s for s in report["sequences"]}
    for name in ("Set/walk", "Clips/room"):
        seq = by_name[name]
        assert set(seq["detectors"]) == {"camrec", "MOG2", "framediff"}
        mine = seq["detectors"]["camrec"]
        assert mine["event_recall"] == 1.0 and mine["false_events"] == 0
        assert mine["f1"] > 0.5  # 1-s events: the 1 s hold weighs on precision
        for key in ("precision", "recall", "f1", "false_events_per_hour", "motion_free_s", "detected_events"):
            assert key in mine
        assert set(seq["variants"]) == {"@5fps", "+noise"}
    speed = report["speed"]
    assert speed["size"] == "640x360" and speed["frames"] == 155
    assert set(speed["detectors"]) == {"camrec", "MOG2", "framediff"}
    assert speed["detectors"]["camrec"]["median_ms"] > 0
    assert any("Set/walk" in line for line in report["summary"])


def test_bench_text_output(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "motion", "--data", str(data), "--only", "room", "--no-speed"]) == 0
    out = capsys.readouterr().out
    assert "Clips/room" in out and "Set/walk" not in out
    assert "MOG2" in out and "framediff" in out and "note:" in out


def test_bench_rejects_a_directory_without_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "motion", "--data", str(tmp_path)]) == 2
    assert "no labelled sequences" in capsys.readouterr().err
    assert main(["bench", "motion", "--data", str(tmp_path / "missing")]) == 2


def test_runs() -> None:
    assert runs([False, True, True, False, True]) == [(1, 2), (4, 4)]
    assert runs([]) == []


def test_scoring_counts_events_false_alarms_and_frames() -> None:
    truth: list[bool | None] = [None] * 5 + [False] * 20 + [True] * 10 + [False] * 25
    events = [(25, 34)]
    predicted = [False] * 60
    for i in range(27, 40):  # found, 2 frames late, 5 frames of hold
        predicted[i] = True
    for i in range(10, 13):  # starts in a motion-free stretch: a false event
        predicted[i] = True
    s = score(predicted, truth, events, fps=15.0)
    assert (s.found, s.events, s.false_events) == (1, 1, 1)
    assert (s.tp, s.fp, s.fn) == (8, 8, 2)
    assert s.free_s == pytest.approx(45 / 15)
    assert s.false_per_hour == pytest.approx(3600 / 3)
    # A detection that starts in the motion-free stretch and runs into the event is a false alarm
    # (and still finds the event); one outside the scored range is ignored.
    stuck = [False] * 5 + [True] * 55
    s = score(stuck, truth, events, fps=15.0)
    assert (s.found, s.false_events) == (1, 1)
    early = [True] * 3 + [False] * 57
    assert score(early, truth, events, fps=15.0).false_events == 0
