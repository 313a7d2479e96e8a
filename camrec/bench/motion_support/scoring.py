"""Labelled sequences and how detections are scored against them (pure Python, no media).

Data layout (the README of the shared motion data): ``labels/<set>_<seq>_frames.csv`` gives one
row per frame (``frame,motion`` or CDnet's ``frame,evaluated,fg_px_255,unknown_px_170,motion``)
and ``labels/<set>_<seq>_events.csv`` the labelled events (``start_frame,end_frame`` inclusive).
The input is ``<set>/<seq>/input/`` (images) or the one video file in ``<set>/<seq>/``. Label frame
numbers are the number in an image's file name (CDnet counts from 1) or the 0-based frame index of
a video. Unlabelled videos under ``videos/`` are run for information only.

Scoring choices (printed by the benchmark too):
- A frame is predicted "motion" when the detector's *decision* is on (after min_frames and the
  hold), because that decision is what starts and extends clips. The hold keeps the decision on
  ``hold_s`` after the last changed frame, which costs some frame-level precision at the end of
  every event; the baselines go through the same decision stage so the comparison is fair.
- Frames outside the labelled range (CDnet's temporalROI) and CDnet's "don't care" frames (a
  few moving pixels, fewer than the 0.05 % that make a frame "motion") are not scored.
- A labelled event is found when a detected event (a run of motion frames) overlaps it, with
  ``tolerance`` frames of slack at either end.
- A false event is a detected event that starts (at its first scored frame) on a motion-free frame
  outside every labelled event and its tolerance, even if it then runs on into an event: a
  detector that is "on" from the first frame has raised a false alarm. The rate is per hour of
  scored motion-free footage.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".ts", ".webm")
EVENT_TOLERANCE_FRAMES = 5

Truth = list[bool | None]  # per input frame: motion, no motion, or not scored


@dataclass
class LabelledSequence:
    name: str  # "<set>/<seq>", e.g. "Wallflower/LightSwitch"
    input: Path  # a directory of images or a video file
    truth: Truth | None = None  # None: unlabelled (reported for information only)
    events: list[tuple[int, int]] = field(default_factory=list)  # labelled events, input indices


@dataclass
class Score:
    frames: int
    scored: int  # frames with a label (not outside the ROI, not don't-care)
    tp: int
    fp: int
    fn: int
    events: int
    found: int
    false_events: int
    free_s: float  # scored motion-free footage, seconds
    detected: list[tuple[int, int]]

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else (1.0 if not self.fn else 0.0)

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def event_recall(self) -> float:
        return self.found / self.events if self.events else 1.0

    @property
    def false_per_hour(self) -> float:
        return self.false_events * 3600.0 / self.free_s if self.free_s else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames, "scored_frames": self.scored, "tp": self.tp, "fp": self.fp, "fn": self.fn,
            "precision": round(self.precision, 4), "recall": round(self.recall, 4), "f1": round(self.f1, 4),
            "events": self.events, "events_found": self.found, "event_recall": round(self.event_recall, 4),
            "false_events": self.false_events, "motion_free_s": round(self.free_s, 1),
            "false_events_per_hour": round(self.false_per_hour, 2),
            "detected_events": [list(e) for e in self.detected],
        }


def runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """(first, last) indices of each run of True."""
    out: list[tuple[int, int]] = []
    start = None
    for i, on in enumerate(flags):
        if on and start is None:
            start = i
        elif not on and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(flags) - 1))
    return out


def _overlaps(a: tuple[int, int], b: tuple[int, int], tolerance: int) -> bool:
    return a[0] <= b[1] + tolerance and a[1] >= b[0] - tolerance


def score(predicted: Sequence[bool], truth: Truth, events: Sequence[tuple[int, int]], fps: float,
          tolerance: int = EVENT_TOLERANCE_FRAMES) -> Score:
    """Frame- and event-level figures of one detector on one labelled sequence."""
    n = min(len(predicted), len(truth))
    tp = fp = fn = free = 0
    for p, t in zip(predicted[:n], truth[:n], strict=True):
        if t is None:
            continue
        if t:
            tp += p
            fn += not p
        else:
            fp += p
            free += 1
    detected = runs(predicted[:n])
    found = sum(any(_overlaps(d, e, tolerance) for d in detected) for e in events)
    false_events = 0
    for d in detected:
        # Judged by where it starts: a detection that begins in a motion-free stretch is a false
        # alarm even if it runs on into a labelled event (a detector stuck "on" from the first
        # frame would otherwise have none). Frames outside the scored range do not count.
        start = next((i for i in range(d[0], d[1] + 1) if truth[i] is not None), None)
        if start is None or truth[start]:
            continue
        if not any(_overlaps((start, start), e, tolerance) for e in events):
            false_events += 1
    scored = sum(t is not None for t in truth[:n])
    return Score(n, scored, tp, fp, fn, len(events), found, false_events, free / fps, detected)


# --------------------------------------------------------------------------- data discovery


def _frame_number(path: Path) -> int | None:
    digits = re.findall(r"\d+", path.stem)
    return int(digits[-1]) if digits else None


def _input_of(seq_dir: Path) -> Path | None:
    if (seq_dir / "input").is_dir():
        return seq_dir / "input"
    videos = sorted(p for p in seq_dir.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    return videos[0] if videos else None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def frame_index_map(input_path: Path, image_suffixes: frozenset[str]) -> dict[int, int] | None:
    """Label frame number → 0-based input index for an image directory (None for a video,
    whose label numbers are already indices)."""
    if not input_path.is_dir():
        return None
    names = sorted(p for p in input_path.iterdir() if p.suffix.lower() in image_suffixes)
    mapping: dict[int, int] = {}
    for index, path in enumerate(names):
        number = _frame_number(path)
        if number is not None:
            mapping[number] = index
    return mapping


def load_labels(frames_csv: Path, events_csv: Path | None, mapping: dict[int, int] | None,
                length: int | None = None) -> tuple[Truth, list[tuple[int, int]]]:
    """Per-frame truth (None = not scored) and labelled events, in input indices."""

    def index(number: int) -> int | None:
        return number if mapping is None else mapping.get(number)

    rows = _read_csv(frames_csv)
    size = length if length is not None else len(rows)
    truth: Truth = [None] * size
    for row in rows:
        i = index(int(row["frame"]))
        if i is None or not 0 <= i < size:
            continue
        motion = row["motion"].strip() == "1"
        if "evaluated" in row:
            if row["evaluated"].strip() != "1":
                continue
            if not motion and int(row.get("fg_px_255") or 0) > 0:
                continue  # don't care: some moving pixels, too few to call the frame "motion"
        truth[i] = motion
    events: list[tuple[int, int]] = []
    if events_csv is not None and events_csv.exists():
        for row in _read_csv(events_csv):
            a, b = index(int(row["start_frame"])), index(int(row["end_frame"]))
            if a is not None and b is not None:
                events.append((a, b))
    return truth, events


def discover(data_dir: Path, image_suffixes: frozenset[str]) -> list[LabelledSequence]:
    """Every labelled sequence under ``data_dir`` (from labels/*_frames.csv), then unlabelled
    videos under videos/."""
    found: list[LabelledSequence] = []
    labels = data_dir / "labels"
    for frames_csv in sorted(labels.glob("*_frames.csv")) if labels.is_dir() else []:
        stem = frames_csv.name[: -len("_frames.csv")]
        set_name, _, seq_name = stem.partition("_")
        seq_dir = data_dir / set_name / seq_name
        if not seq_name or not seq_dir.is_dir():
            continue
        input_path = _input_of(seq_dir)
        if input_path is None:
            continue
        mapping = frame_index_map(input_path, image_suffixes)
        length = len(mapping) if mapping is not None else None
        truth, events = load_labels(frames_csv, labels / f"{stem}_events.csv", mapping, length)
        found.append(LabelledSequence(f"{set_name}/{seq_name}", input_path, truth, events))
    videos = data_dir / "videos"
    for path in sorted(videos.rglob("*")) if videos.is_dir() else []:
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            found.append(LabelledSequence(f"videos/{path.parent.name}/{path.name}", path))
    return found
