"""Motion detection: downscaled grayscale frames in, a motion decision with regions out.

Part of the pure core (DESIGN.md §1): no files, sockets, threads or clocks. The caller decodes,
downscales to ``detect_width`` and passes each frame with its stream time; everything here is a
function of those arrays and numbers, so tests drive it with synthetic numpy frames.

The pipeline for each frame (the stages live in ``camrec.motion_stages``):

1. **Blur** (Gaussian, size scaled with the frame width). Sensor noise is independent from pixel
   to pixel and is averaged away; objects, which span many pixels, survive.
2. **Global change model.** On a ~64-pixel-wide grid, fit ``frame ≈ gain * background + offset``
   robustly. If most of the picture follows one such mapping, the change is light, not motion:
   a big shift is a *lighting change* (light switch, IR cut-over, exposure step) and the
   background is re-seeded from this frame; a small one (auto-exposure creep, clouds, dusk) is
   folded into the background before differencing, so slow drift never accumulates into a false
   difference.
3. **Difference and threshold**: ``|frame - background| >= threshold`` per pixel. If most of the
   valid picture changed anyway, or a large part scattered over the whole picture (a change the
   model could not explain, e.g. an IR cut-over that alters contrast, or a bumped camera), that
   is also judged a lighting change and re-seeded. A close person changes as much, but in one
   compact place, and stays motion.
4. **Morphology**: an opening removes specks smaller than the kernel (residual noise, rain,
   compression blocks); a closing joins the fragments of one object.
5. **Score** = changed pixels inside the watched area (zones minus masks) / watched pixels, so
   ``min_area`` means the same fraction whether the zone is the whole frame or a doorway.
6. **Hysteresis**: ``min_frames`` consecutive frames to turn on, ``hold_s`` of quiet to turn off.
7. **Background update**: a running average with time constants in seconds (rate independent);
   pixels in and next to detected change learn much more slowly, so a person who pauses is not
   absorbed while standing still.

Configuration arrives as any object with the ``MotionParams`` attributes (the pydantic
``MotionSettings`` in production, ``DefaultMotionParams`` in tests). Internal constants that a
user should not need to touch, but that tuning against real footage will, are in
``MotionTuning``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from camrec.motion_stages import (
    F32,
    U8,
    Box,
    GlobalChange,
    Hysteresis,
    Polygon,
    WatchMasks,
    build_watch_masks,
    extract_boxes,
    fit_global_change,
    odd_kernel,
    rate_alpha,
    validate_polygons,
)

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
        """Per-pixel luma difference (0-255) that counts as change. Lower sees low-contrast
        movement (dark clothes at night) but lets more noise and shimmer through."""
        ...

    @property
    def min_area(self) -> float:
        """Fraction of the watched area that must change. Lower catches small or distant
        objects; higher ignores cats, insects and leaves."""
        ...

    @property
    def min_frames(self) -> int:
        """Consecutive changed frames before motion is reported. Higher rejects one-frame
        glitches at the cost of (min_frames - 1) / detect_fps of latency."""
        ...

    @property
    def detect_fps(self) -> float:
        """The rate the caller feeds frames at; the nominal step when timestamps are unusable."""
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


@dataclass(frozen=True)
class MotionTuning:
    """Internal constants, each a trade-off; defaults are a baseline to be tuned on real footage.

    Pixel sizes are for a ``reference_width``-pixel-wide frame and scale with the actual width,
    so a kernel covers the same part of the scene at any detection resolution.
    """

    # Quiet pixels follow the scene with this time constant. Shorter absorbs shadows, parked
    # cars and drift sooner; longer keeps the background cleaner of noise and slow walkers.
    background_tau_s: float = 5.0
    # Pixels in or next to detected change. Long enough that a person pausing for a few seconds
    # stays foreground; short enough that a parked car or a left bag stops being "motion" after
    # roughly tau * ln(contrast / threshold) seconds (~20-30 s).
    foreground_tau_s: float = 20.0
    # Quiet time before motion turns off. Longer bridges pauses and occlusions; shorter ends
    # events (and clips) sooner after the scene calms down.
    hold_s: float = 1.0
    reference_width: int = 320
    # Gaussian blur size. Larger averages away more noise but smears small or distant objects.
    blur_px: float = 5.0
    # Opening: changed blobs narrower than this vanish (noise, rain, snow, blockiness).
    open_px: float = 3.0
    # Closing: gaps narrower than this inside one object are filled, so it counts (and boxes)
    # as one region rather than many fragments.
    close_px: float = 5.0
    # Margin around detected change that also learns slowly, so an object's low-contrast edges
    # are not eaten into the background while it stands still.
    protect_px: float = 5.0
    # A global mapping that explains at least this fraction of the picture is trusted as light.
    # Lower catches light changes with more local effects, but a big close object could then
    # masquerade as light.
    light_inliers: float = 0.5
    # A trusted global change moving luma by at least this fraction of ``threshold`` on average
    # is a lighting change (re-seed, no motion this frame); smaller ones are compensated silently.
    lighting_shift: float = 0.5
    # If at least this fraction of the valid picture differs even after compensation, the change
    # is treated as lighting (or a moved camera) and re-seeded. Lower resists odd light changes;
    # higher still reports a person who fills most of the view.
    lighting_area: float = 0.6
    # A smaller change that is *spread over* the picture is also lighting: at least
    # ``spread_area`` of the valid pixels changed and they touch at least ``spread_cells`` of
    # the cells of a coarse grid. This catches changes no gain/offset explains (IR cut-over,
    # a lamp that lights surfaces unevenly, a bumped camera), which alter a scattered half of
    # the pixels everywhere; a close person changes as much but in one compact place.
    spread_area: float = 0.25
    spread_cells: float = 0.85
    # The coarse grid: columns (rows follow the aspect ratio), and the share of a cell's pixels
    # that must change for the cell to count as touched.
    spread_grid_width: int = 12
    spread_cell_min: float = 0.05
    # Smaller trusted global shifts (mean luma) are not worth a pass over the background.
    compensate_min_luma: float = 0.5
    # Width of the grid the global model is fitted on: ~2-3k samples, enough for a stable fit.
    light_grid_width: int = 64
    # At most this many boxes per frame, largest first.
    max_boxes: int = 32
    # A timestamp step larger than this many nominal frame intervals (or not positive) is not
    # trusted for the learning rate; the nominal 1/detect_fps is used instead.
    max_step_frames: float = 10.0


@dataclass(frozen=True, slots=True)
class MotionResult:
    """The verdict for one frame.

    ``score`` and ``boxes`` describe this frame's change whatever the hysteresis decided (a
    frame below ``min_area`` still reports its small boxes); on a lighting-change frame both are
    empty because the change was not motion.
    """

    t: float  # the frame's time in seconds, as given
    score: float  # fraction of the watched area that changed (after noise filtering), 0..1
    motion: bool  # the decision after hysteresis
    boxes: tuple[Box, ...]  # changed regions as normalized (x, y, w, h), largest first
    lighting_change: bool  # this frame was judged a global brightness change, not motion


@dataclass
class _Geometry:
    """Everything that depends only on the frame size, computed once per size."""

    shape: tuple[int, int]
    watch: WatchMasks
    blur_k: int
    open_kernel: U8
    close_kernel: U8
    protect_kernel: U8
    grid_size: tuple[int, int]  # (width, height) of the global-model grid
    grid_index: np.ndarray = field(repr=False)  # flat indices of grid cells fully unmasked
    spread_size: tuple[int, int]  # (width, height) of the coarse grid for the spread test
    spread_index: np.ndarray = field(repr=False)  # flat indices of its mostly unmasked cells


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
        self._threshold = int(params.threshold)
        self._nominal_dt = 1.0 / float(params.detect_fps)
        self._hysteresis = Hysteresis(params.min_frames, self.tuning.hold_s)
        self._geometry: _Geometry | None = None
        self._background: F32 | None = None
        self._last_t = 0.0
        self._foreground: U8 | None = None

    # ------------------------------------------------------------------ public API

    def reset(self) -> None:
        """Forget the background and the motion state (e.g. after a camera reconnect).

        The next frame only initialises. Zone rasters are kept: they depend only on the size.
        """
        self._background = None
        self._foreground = None
        self._hysteresis.reset()

    @property
    def foreground(self) -> U8 | None:
        """The last frame's counted change mask (255 = changed, inside the watched area).

        For diagnostics and overlays (e.g. ``camrec detect``); do not modify it.
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
        geo = self._geometry_for(frame.shape)
        blur: U8 = cv2.GaussianBlur(frame, (geo.blur_k, geo.blur_k), 0)

        if self._background is None or self._background.shape != frame.shape:
            self._hysteresis.reset()
            self._seed(blur, t)
            return MotionResult(t, 0.0, False, (), False)

        background = self._background
        dt = self._step(t)
        lighting = False
        raw: U8 | None = None

        change = self._global_change(blur, background, geo)
        if change.inliers >= self.tuning.light_inliers:
            if change.shift >= self.tuning.lighting_shift * self._threshold:
                lighting = True
            elif change.shift >= self.tuning.compensate_min_luma:
                change.apply(background)

        if not lighting:
            diff = cv2.absdiff(blur, cv2.convertScaleAbs(background))
            _, raw = cv2.threshold(diff, self._threshold - 1, 255, cv2.THRESH_BINARY)
            lighting = self._changed_everywhere(raw, geo)

        if lighting or raw is None:
            self._seed(blur, t)
            return MotionResult(t, 0.0, self._hysteresis.update(False, t), (), True)

        opened = cv2.morphologyEx(raw, cv2.MORPH_OPEN, geo.open_kernel)
        clean: U8 = cv2.morphologyEx(opened, cv2.MORPH_CLOSE, geo.close_kernel)
        watch = geo.watch
        counted = clean if watch.whole_frame else cv2.bitwise_and(clean, watch.watched)
        changed = int(cv2.countNonZero(counted))
        score = changed / watch.watched_px if watch.watched_px else 0.0
        boxes = extract_boxes(counted, self.tuning.max_boxes) if changed else ()
        active = changed > 0 and score >= self.params.min_area
        motion = self._hysteresis.update(active, t)

        self._learn(blur, clean, background, geo, dt)
        self._foreground = counted
        return MotionResult(t, score, motion, boxes, False)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _check_frame(gray: np.ndarray) -> U8:
        if not isinstance(gray, np.ndarray) or gray.ndim != 2 or gray.dtype != np.uint8:
            got = f"{gray.dtype} array of shape {gray.shape}" if isinstance(gray, np.ndarray) else type(gray)
            raise ValueError(f"expected a 2-D uint8 grayscale frame, got {got}")
        if gray.shape[0] < 2 or gray.shape[1] < 2:
            raise ValueError(f"frame too small: {gray.shape}")
        return np.ascontiguousarray(gray)

    def _geometry_for(self, shape: tuple[int, ...]) -> _Geometry:
        height, width = int(shape[0]), int(shape[1])
        if self._geometry is not None and self._geometry.shape == (height, width):
            return self._geometry
        tun = self.tuning
        scale = width / tun.reference_width
        watch = build_watch_masks(self.params.zones, self.params.masks, width, height)
        grid_w = max(1, min(tun.light_grid_width, width))
        grid_h = max(1, round(grid_w * height / width))
        grid_valid = cv2.resize(watch.valid, (grid_w, grid_h), interpolation=cv2.INTER_AREA)
        spread_w = max(1, min(tun.spread_grid_width, width))
        spread_h = max(1, round(spread_w * height / width))
        spread_valid = cv2.resize(watch.valid, (spread_w, spread_h), interpolation=cv2.INTER_AREA)

        def rect(px: float) -> U8:
            k = odd_kernel(px * scale, 3)
            return cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))

        self._geometry = _Geometry(
            shape=(height, width),
            watch=watch,
            blur_k=odd_kernel(tun.blur_px * scale, 3),
            open_kernel=rect(tun.open_px),
            close_kernel=rect(tun.close_px),
            protect_kernel=rect(tun.protect_px),
            grid_size=(grid_w, grid_h),
            grid_index=np.flatnonzero(grid_valid.ravel() == 255),
            spread_size=(spread_w, spread_h),
            spread_index=np.flatnonzero(spread_valid.ravel() >= 128),
        )
        return self._geometry

    def _seed(self, blur: U8, t: float) -> None:
        """(Re)start the background from this frame."""
        self._background = blur.astype(np.float32)
        self._foreground = np.zeros_like(blur)
        self._last_t = t

    def _step(self, t: float) -> float:
        """Seconds since the previous frame, falling back to the nominal step when implausible."""
        dt = t - self._last_t
        self._last_t = t
        if not (0.0 < dt <= self.tuning.max_step_frames * self._nominal_dt):
            return self._nominal_dt
        return dt

    def _global_change(self, blur: U8, background: F32, geo: _Geometry) -> GlobalChange:
        if geo.grid_index.size == 0:
            return GlobalChange.identity()
        cur = cv2.resize(blur, geo.grid_size, interpolation=cv2.INTER_AREA).ravel()[geo.grid_index]
        ref = cv2.resize(background, geo.grid_size, interpolation=cv2.INTER_AREA).ravel()[geo.grid_index]
        return fit_global_change(ref, cur.astype(np.float32), float(self._threshold))

    def _changed_everywhere(self, raw: U8, geo: _Geometry) -> bool:
        """Did most of the valid (unmasked) picture change at once, or a large part spread all over?"""
        watch = geo.watch
        if watch.valid_px == 0:
            return False
        if not watch.whole_frame:
            raw = cv2.bitwise_and(raw, watch.valid)
        changed = int(cv2.countNonZero(raw)) / watch.valid_px
        if changed >= self.tuning.lighting_area:
            return True
        if changed < self.tuning.spread_area or geo.spread_index.size == 0:
            return False
        # Only reached on frames with a lot of change, so the extra resize costs nothing usually.
        cells = cv2.resize(raw, geo.spread_size, interpolation=cv2.INTER_AREA).ravel()[geo.spread_index]
        touched = np.count_nonzero(cells >= 255 * self.tuning.spread_cell_min) / cells.size
        return bool(touched >= self.tuning.spread_cells)

    def _learn(self, blur: U8, clean: U8, background: F32, geo: _Geometry, dt: float) -> None:
        """Blend this frame into the background: fast where quiet, slowly where things changed."""
        a_quiet = rate_alpha(dt, self.tuning.background_tau_s)
        if cv2.countNonZero(clean) == 0:
            cv2.accumulateWeighted(blur, background, a_quiet)
            return
        protect = cv2.dilate(clean, geo.protect_kernel)
        a_busy = rate_alpha(dt, self.tuning.foreground_tau_s)
        cv2.accumulateWeighted(blur, background, a_busy, mask=protect)
        cv2.accumulateWeighted(blur, background, a_quiet, mask=cv2.bitwise_not(protect))
