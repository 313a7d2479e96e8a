"""Runs camrec and the baselines over each sequence and collects the report (see bench/motion.py)."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from camrec.bench.motion_support.baselines import Decided, FrameDiff, Mog2, baselines
from camrec.bench.motion_support.perturb import PERTURBATIONS, perturbed
from camrec.bench.motion_support.scoring import EVENT_TOLERANCE_FRAMES, LabelledSequence, discover, runs, score
from camrec.config import MotionSettings
from camrec.motion.detector import MotionDetector, MotionTuning
from camrec.motion.input import IMAGE_SUFFIXES, DetectionRun

SPEED_SIZE = (640, 360)

NOTES = [
    "camrec runs with the default motion settings (MotionSettings(), what a camera without a motion: "
    "section gets) through the daemon's detection path, on every input frame at the sequence's frame rate; "
    "the baselines see the same grey frames",
    "a frame counts as motion when the decision is on (after min_frames and the 1 s hold); the baselines "
    "go through the same decision stage (min_area, min_frames, hold), so tails and onsets cost them alike",
    f"an event is found if a detected event overlaps it within {EVENT_TOLERANCE_FRAMES} frames; a false event "
    "is a detected event that starts on a motion-free frame outside every labelled event (and that tolerance); "
    "false/h is per hour of scored motion-free footage",
    "CDnet frames outside temporalROI and 'don't care' frames (0 < moving px < 0.05 %) are not scored",
    "variants (+perturbation, @N fps) feed the same grey frames, perturbed or subsampled, straight to "
    "MotionDetector and the baselines; decisions are held over skipped frames",
]


class _Timer:
    """Per-frame cost of the detectors on frames scaled to 640x360, each detector timed over a
    whole sequence in a loop of its own (own instances, so timing cannot change the results;
    apart from decoding and the other detectors, whose cache traffic would blur the figures)."""

    def __init__(self, params: MotionSettings) -> None:
        self.params = params
        self.costs: dict[str, list[float]] = {"camrec": [], "MOG2": [], "framediff": []}
        self._frames: list[np.ndarray] = []

    def new_sequence(self) -> None:
        self._frames = []

    def frame(self, gray: np.ndarray, t: float) -> None:
        self._frames.append(gray)

    def end_sequence(self, fps: float) -> None:
        camrec, mog2, diff = MotionDetector(self.params), Mog2(), FrameDiff(self.params.threshold)
        for name, fn in (("camrec", lambda big, t: camrec.process(big, t)),
                         ("MOG2", lambda big, t: mog2.foreground(big)),
                         ("framediff", lambda big, t: diff.foreground(big))):
            costs = self.costs[name]
            for i, gray in enumerate(self._frames):
                big = cv2.resize(gray, SPEED_SIZE, interpolation=cv2.INTER_LINEAR)
                start = time.perf_counter()
                fn(big, i / fps)
                costs.append(time.perf_counter() - start)
        self._frames = []

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"size": f"{SPEED_SIZE[0]}x{SPEED_SIZE[1]}", "frames": len(self.costs["camrec"]),
                               "detectors": {}}
        base = statistics.median(self.costs["camrec"]) if self.costs["camrec"] else 0.0
        for name, costs in self.costs.items():
            if not costs:
                continue
            ms = sorted(c * 1000 for c in costs)
            median = statistics.median(ms)
            out["detectors"][name] = {
                "median_ms": round(median, 4), "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 4),
                "mean_ms": round(statistics.fmean(ms), 4),
                "ratio_to_camrec": round(median / (base * 1000), 2) if base else None,
            }
        return out


def _scores(seq: LabelledSequence, predicted: dict[str, list[bool]], fps: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, flags in predicted.items():
        if seq.truth is not None:
            out[name] = score(flags, seq.truth, seq.events, fps).as_dict()
        else:
            out[name] = {"frames": len(flags), "motion_fraction": round(sum(flags) / len(flags), 4) if flags else 0.0,
                         "detected_events": [list(r) for r in runs(flags)]}
    return out


def run_variant(frames: Iterable[np.ndarray], fps: float, params: MotionSettings,
                step: int = 1) -> dict[str, list[bool]]:
    """camrec and the baselines on (perturbed) grey frames, analysing every ``step``-th frame."""
    camrec = MotionDetector(params)
    others = baselines(params, MotionTuning().hold_s)
    predicted: dict[str, list[bool]] = {"camrec": []}
    predicted.update({b.name: [] for b in others})
    last = dict.fromkeys(predicted, False)
    for i, gray in enumerate(frames):
        if i % step == 0:
            t = i / fps
            last["camrec"] = camrec.process(gray, t).motion
            for b in others:
                last[b.name] = b.process(gray, t)
        for name, value in last.items():
            predicted[name].append(value)
    return predicted


def run_sequence(seq: LabelledSequence, params: MotionSettings, image_fps: float, timer: _Timer | None,
                 perturb: list[str], rate: float | None) -> dict[str, Any]:
    detection = DetectionRun(str(seq.input), params, fps=image_fps, keep_gray=True)
    others: list[Decided] = baselines(params, MotionTuning().hold_s)
    predicted: dict[str, list[bool]] = {"camrec": []}
    predicted.update({b.name: [] for b in others})
    keep = bool(perturb or rate)
    grays: list[np.ndarray] = []
    if timer is not None:
        timer.new_sequence()
    for frame in detection:
        assert frame.gray is not None
        predicted["camrec"].append(frame.result.motion)
        for b in others:
            predicted[b.name].append(b.process(frame.gray, frame.t))
        if timer is not None:
            timer.frame(frame.gray, frame.t)
        if keep:
            grays.append(frame.gray)
    fps = detection.fps
    if timer is not None:
        timer.end_sequence(fps)
    out: dict[str, Any] = {"name": seq.name, "input": str(seq.input), "fps": fps,
                           "labelled": seq.truth is not None, "detectors": _scores(seq, predicted, fps),
                           "variants": {}}
    if rate:
        step = max(1, round(fps / rate))
        out["variants"][f"@{fps / step:g}fps"] = _scores(seq, run_variant(grays, fps, params, step), fps)
    for name in perturb:
        out["variants"][f"+{name}"] = _scores(seq, run_variant(perturbed(grays, name), fps, params), fps)
    return out


def summarize(sequences: list[dict[str, Any]]) -> list[str]:
    lines = []
    for seq in sequences:
        if not seq["labelled"]:
            continue
        for variant, detectors in [("", seq["detectors"]), *seq.get("variants", {}).items()]:
            mine = detectors["camrec"]
            best_other = max(v["f1"] for k, v in detectors.items() if k != "camrec")
            verdict = ("above" if mine["f1"] > best_other else
                       "equal to" if mine["f1"] == best_other else "NOT above")
            lines.append(f"{seq['name']}{variant}: camrec event recall {mine['event_recall']:.2f}, "
                         f"{mine['false_events_per_hour']:.1f} false events/h, F1 {mine['f1']:.4f} "
                         f"{verdict} the best baseline ({best_other:.4f})")
    return lines


def run_all(data: Path, *, image_fps: float, only: list[str] | None, speed: bool, unlabelled: bool,
            progress: bool, perturb: list[str] | None = None, rate: float | None = None) -> dict[str, Any]:
    params = MotionSettings()
    unknown = [p for p in perturb or [] if p not in PERTURBATIONS]
    if unknown:
        from camrec.errors import UsageError

        raise UsageError(f"unknown perturbation {unknown[0]!r}", hint="choose from " + ", ".join(PERTURBATIONS))
    sequences = [s for s in discover(data, IMAGE_SUFFIXES)
                 if (unlabelled or s.truth is not None) and (not only or any(o in s.name for o in only))]
    if not sequences:
        from camrec.errors import UsageError

        raise UsageError(f"no labelled sequences under {data}",
                         hint="expected labels/<set>_<seq>_frames.csv next to <set>/<seq>/ (see the data README)")
    timer = _Timer(params.model_copy(update={"detect_width": SPEED_SIZE[0]})) if speed else None
    results = []
    for seq in sequences:
        if progress:
            print(f"camrec bench motion: {seq.name} …", file=sys.stderr)
        labelled = seq.truth is not None
        results.append(run_sequence(seq, params, image_fps, timer if labelled else None,
                                    perturb or [] if labelled else [], rate if labelled else None))
    report: dict[str, Any] = {
        "settings": params.model_dump(mode="json") | {"hold_s": MotionTuning().hold_s},
        "sequences": results,
        "summary": summarize(results),
        "notes": NOTES,
    }
    if timer is not None:
        report["speed"] = timer.report()
    return report
