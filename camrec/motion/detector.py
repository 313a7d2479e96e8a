"""Motion detection: downscaled grayscale frames in, a motion decision with regions out.

Part of the pure core (DESIGN.md §1): no files, sockets, threads or clocks. The caller decodes,
downscales to ``detect_width`` and passes each frame with its time in seconds; everything here is
a function of those arrays and numbers, so tests drive it with synthetic numpy frames. Every time
constant is in seconds, so the detector behaves the same at the daemon's ``detect_fps`` and at a
file's full frame rate (``camrec detect``, ``camrec bench motion``).

The question asked of each frame is "is something *moving* here?". A region counts when it
passes three tests, each of which vetoes the others' typical false alarms:

* **Present** — it differs from the learned background by more than its pixels' own thresholds.
  This sees the whole extent of an object, slow walkers included. Each pixel's threshold rises
  with how often its verdict flips (or it swaps between darker and brighter than the
  background): leaves, water, flicker and noisy pixels raise their own thresholds within
  seconds, a person passing by does not (camrec.motion.model).
* **Moving** — something in it changed, relative to the background, within ``motion_gap_s``
  (and ``motion_memory_s`` since). What was merely left behind — a moved chair, a parked car, the
  "ghost" of someone who was in the picture when the background was learnt — is present but
  never moving, so it never counts, and fades into the background.
* **Lasting** — something was there in the previous frame too, and it is not a speck: rain,
  snow, insects and compression glitches appear once, in one place, and are small.

Per frame:

1. **Working size**: frames wider than ``work_width`` (320) are scaled down (area averaging);
   then a Gaussian blur scaled with the width averages sensor noise away.
2. **Light** (camrec.motion.light): the background is mapped to the frame's light when a global
   gain/offset or a smooth gain surface explains the change (auto-exposure, clouds, dusk,
   flicker, a lamp), and detection goes on; a light switched on or off, or an IR camera changing
   mode, brings back the background remembered for that lighting state, or re-learns it.
3. **Presence**, **movement** and **persistence** as above, on masks cleaned by an opening and
   a closing, and judged region by region.
4. **Score** = counted pixels inside the watched area (zones minus masks) / watched pixels, so
   ``min_area`` means the same fraction for the whole frame and for a doorway.
5. **Hysteresis**: on after ``min_frames`` frames' worth of time (at ``detect_fps``), off after
   ``hold_s`` without an active frame.
6. **Learning**: see camrec.motion.model.

Configuration arrives as any object with the ``MotionParams`` attributes (the pydantic
``MotionSettings`` in production, ``DefaultMotionParams`` in tests). Internal constants, each a
documented trade-off, are in ``MotionTuning`` (camrec.motion.tuning).
"""


from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from camrec.motion.model import BackgroundModel
from camrec.motion.stages import U8, Box, Hysteresis, Polygon, validate_polygons
from camrec.motion.tuning import MotionTuning

__all__ = [
    "DefaultMotionParams",
    "MotionDetector",
    "MotionParams",
    "MotionResult",
    "MotionTuning",
]


class MotionParams(Protocol):
    """The user-facing knobs (``camrec.config.MotionSettings`` has exactly these fields).

    Read-only properties so that frozen models and frozen dataclasses both satisfy it.
    """

    @property
    def threshold(self) -> int:
        """Per-pixel luma difference (0-255) that counts as change, the floor under the
        noise-adaptive per-pixel thresholds. Lower sees low-contrast movement (dark clothes at
        night) but lets more noise and shimmer through."""
        ...

    @property
    def min_area(self) -> float:
        """Fraction of the watched area that must be moving. Lower catches small or distant
        objects; higher ignores cats, insects and leaves."""
        ...

    @property
    def min_frames(self) -> int:
        """Frames (at ``detect_fps``) the movement must last before motion is reported. Higher
        rejects short glitches at the cost of (min_frames - 1) / detect_fps of latency."""
        ...

    @property
    def detect_fps(self) -> float:
        """The rate the daemon feeds frames at: the unit of ``min_frames``, and the nominal step
        when timestamps are unusable."""
        ...

    @property
    def detect_width(self) -> int:
        """The width the caller downscales to (kernel sizes scale with the actual width)."""
        ...

    @property
    def zones(self) -> Sequence[Polygon]:
        """Normalized polygons; if any, only change inside them counts."""
        ...

    @property
    def masks(self) -> Sequence[Polygon]:
        """Normalized polygons where change is ignored (and which lighting judgement ignores)."""
        ...


@dataclass(frozen=True)
class DefaultMotionParams:
    """Plain defaults matching ``MotionSettings``, for tests and tools without a config file."""

    threshold: int = 25
    min_area: float = 0.002
    min_frames: int = 2
    detect_fps: float = 5.0
    detect_width: int = 320
    zones: tuple[tuple[tuple[float, float], ...], ...] = ()
    masks: tuple[tuple[tuple[float, float], ...], ...] = ()


@dataclass(frozen=True, slots=True)
class MotionResult:
    """The verdict for one frame.

    ``score`` and ``boxes`` describe this frame's moving regions whatever the hysteresis decided
    (a frame below ``min_area`` still reports its small boxes). ``lighting_change`` marks a frame
    whose brightness jumped as a whole (it was compensated or, if unexplained, re-learnt; in the
    latter case score and boxes are empty because the change was not motion).
    """

    t: float  # the frame's time in seconds, as given
    score: float  # fraction of the watched area that is moving (after noise filtering), 0..1
    motion: bool  # the decision after hysteresis
    boxes: tuple[Box, ...]  # moving regions as normalized (x, y, w, h), largest first
    lighting_change: bool  # this frame was judged a global brightness change
    active: bool = False  # this frame alone had enough movement (before the hysteresis)


class MotionDetector:
    """Frame-by-frame motion detector with an adaptive background. Not thread-safe; one per camera."""

    def __init__(self, params: MotionParams, *, tuning: MotionTuning | None = None) -> None:
        if not 1 <= params.threshold <= 255:
            raise ValueError(f"threshold must be 1..255, got {params.threshold}")
        if not 0.0 <= params.min_area <= 1.0:
            raise ValueError(f"min_area must be 0..1, got {params.min_area}")
        if params.min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {params.min_frames}")
        if not (math.isfinite(params.detect_fps) and params.detect_fps > 0):
            raise ValueError(f"detect_fps must be > 0, got {params.detect_fps}")
        validate_polygons("zones", params.zones)
        validate_polygons("masks", params.masks)
        self.params = params
        self.tuning = tuning or MotionTuning()
        self._nominal_dt = 1.0 / float(params.detect_fps)
        self._hysteresis = Hysteresis(params.min_frames, self.tuning.hold_s, self._nominal_dt)
        self._model = BackgroundModel(int(params.threshold), self._nominal_dt, params.zones, params.masks,
                                      self.tuning, float(params.min_area))
        self._foreground: U8 | None = None

    # ------------------------------------------------------------------ public API

    def reset(self) -> None:
        """Forget the background and the motion state (e.g. after a camera reconnect).

        The next frame only initialises. Zone rasters are kept: they depend only on the size.
        """
        self._model.forget()
        self._foreground = None
        self._hysteresis.reset()

    @property
    def foreground(self) -> U8 | None:
        """The last frame's counted moving pixels (255 = counted, inside the watched area), at the
        working resolution (frames wider than ``MotionTuning.work_width`` are scaled down).

        For diagnostics and overlays; do not modify it.
        """
        return self._foreground

    def process(self, gray: np.ndarray, t: float) -> MotionResult:
        """Judge one frame. ``gray`` is a 2-D uint8 array; ``t`` its time in seconds.

        The first frame, and the first after a size change or ``reset()``, only initialises the
        background and reports no motion.
        """
        if not math.isfinite(t):
            raise ValueError(f"frame time must be a finite number of seconds, got {t}")
        frame = self._check_frame(gray)
        observed = self._model.observe(frame, t)
        if observed.seeded:
            self._hysteresis.reset()
            self._foreground = observed.counted
            return MotionResult(t, 0.0, False, (), False)
        if observed.relearnt or observed.warming_up:
            motion = self._hysteresis.update(False, t)
            self._foreground = observed.counted
            return MotionResult(t, 0.0, motion, (), observed.lighting)

        counted = observed.counted
        watch = self._model.geometry.watch
        changed = int(cv2.countNonZero(counted))
        score = changed / watch.watched_px if watch.watched_px else 0.0
        boxes = self._model.boxes(counted) if changed else ()
        active = changed > 0 and score >= self.params.min_area
        motion = self._hysteresis.update(active, t)
        self._foreground = counted
        return MotionResult(t, score, motion, boxes, observed.lighting, active)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _check_frame(gray: np.ndarray) -> U8:
        if not isinstance(gray, np.ndarray) or gray.ndim != 2 or gray.dtype != np.uint8:
            got = f"{gray.dtype} array of shape {gray.shape}" if isinstance(gray, np.ndarray) else type(gray)
            raise ValueError(f"expected a 2-D uint8 grayscale frame, got {got}")
        if gray.shape[0] < 2 or gray.shape[1] < 2:
            raise ValueError(f"frame too small: {gray.shape}")
        return np.ascontiguousarray(gray)
