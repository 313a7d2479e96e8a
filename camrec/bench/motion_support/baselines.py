"""Baseline detectors the benchmark compares camrec against, on exactly the frames camrec sees.

Each baseline only produces a per-frame foreground mask; the decision stage is camrec's own
(the fraction of changed pixels against ``min_area``, then the same min_frames/hold hysteresis),
so the comparison measures the pixel model and not the event logic.

- ``MOG2``: OpenCV's ``createBackgroundSubtractorMOG2()`` with its default parameters (history
  500 frames, variance threshold 16, shadow detection on; only definite foreground, 255, counts).
- ``framediff``: a plain frame difference, ``|frame - previous frame| >= threshold`` per pixel
  with camrec's default threshold, no blur and no background model.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from camrec.motion.detector import MotionParams
from camrec.motion.stages import Hysteresis


class PixelModel(Protocol):
    name: str

    def foreground(self, gray: np.ndarray) -> float:
        """Fraction of the frame's pixels that are foreground."""
        ...


class Mog2:
    name = "MOG2"

    def __init__(self) -> None:
        self._sub = cv2.createBackgroundSubtractorMOG2()

    def foreground(self, gray: np.ndarray) -> float:
        mask = self._sub.apply(gray)
        return float(np.count_nonzero(mask == 255)) / mask.size


class FrameDiff:
    name = "framediff"

    def __init__(self, threshold: int) -> None:
        self._threshold = threshold
        self._previous: np.ndarray | None = None

    def foreground(self, gray: np.ndarray) -> float:
        previous, self._previous = self._previous, gray
        if previous is None or previous.shape != gray.shape:
            return 0.0
        changed = cv2.absdiff(gray, previous) >= self._threshold
        return float(np.count_nonzero(changed)) / gray.size


class Decided:
    """A pixel model behind camrec's decision stage (min_area, min_frames, hold)."""

    def __init__(self, model: PixelModel, params: MotionParams, hold_s: float) -> None:
        self.model = model
        self.name = model.name
        self._min_area = params.min_area
        self._hysteresis = Hysteresis(params.min_frames, hold_s, 1.0 / params.detect_fps)

    def process(self, gray: np.ndarray, t: float) -> bool:
        fraction = self.model.foreground(gray)
        return self._hysteresis.update(fraction > 0 and fraction >= self._min_area, t)


def baselines(params: MotionParams, hold_s: float) -> list[Decided]:
    return [Decided(Mog2(), params, hold_s), Decided(FrameDiff(params.threshold), params, hold_s)]
