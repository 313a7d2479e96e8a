"""The motion detector's per-pixel model: background, dynamics, movement (pure core).

``BackgroundModel.observe(frame, t)`` turns one grey frame into the mask of pixels that belong to
regions that are *present* (differ from the background), *moving* (changed recently) and
*lasting* (were there in the previous frame too); `camrec.motion.detector` turns that mask into a score
and a decision. What each piece of state is for:

- ``background`` (float32): the scene without moving things, a running average in seconds. Quiet
  pixels follow the scene with ``background_tau_s``; regions that are present and moving (people)
  with the much longer ``foreground_tau_s``; present regions in which nothing moves (a parked car,
  a moved chair, the ghost of someone who was in the picture when the background was learnt)
  with ``still_tau_s``, so they fade out — and never count as motion meanwhile.
- ``blink`` (float32): how often each pixel flips — its presence verdict changes, or it swaps
  from darker than the background to brighter or back — averaged over ``blink_tau_s``. Leaves
  against the sky, water, a flickering lamp and noisy pixels flip many times a second (leaves
  that are "present" all the time still swap sides); a person flips each pixel twice on the way
  past and stays on one side of the wall behind them. The pixel's threshold is raised in
  proportion to its flip rate, so every pixel settles where it rarely flips: that is both the
  noise model (no noise level is assumed) and the dynamic-background model.
- ``residuals``: the last ``motion_gap_s`` of signed distances of the frame outside the
  background's local range. Movement is a change of that over ``motion_gap_s``; the background
  follows the light (camrec.motion.light), so a lighting change does not look like movement.
- ``memory`` (uint8): where movement was seen in the last ``motion_memory_s``.
- ``previous`` raw presence (on the blob grid): for the persistence test. Moving regions smaller
  than ``speck_share`` of ``min_area`` never count.

After a (re)start the model learns for ``warmup_s`` with cumulative averages (every frame weighs
the same) before it reports, so the background and the flip rates mean something when used.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from camrec.motion.light import LightTracker, SampleGrid
from camrec.motion.stages import (
    F32,
    U8,
    Blobs,
    Box,
    WatchMasks,
    above,
    blobs_touching,
    build_watch_masks,
    extract_boxes,
    odd_kernel,
    rate_alpha,
)
from camrec.motion.tuning import MotionTuning


@dataclass
class Geometry:
    """Everything that depends only on the (working) frame size, computed once per size."""

    shape: tuple[int, int]
    watch: WatchMasks
    blur_k: int
    tolerance_kernel: U8
    open_kernel: U8
    close_kernel: U8
    protect_kernel: U8
    persist_kernel: U8  # on the blob grid
    blob_cell: int
    merge_px: int
    grid: SampleGrid  # where the photometric model samples the picture
    spread_size: tuple[int, int]
    spread_index: np.ndarray


@dataclass(frozen=True, slots=True)
class Observation:
    counted: U8  # present, moving and lasting, inside the watched area (255)
    seeded: bool = False  # first frame: only initialised
    relearnt: bool = False  # unexplained global change: background re-learnt
    warming_up: bool = False  # learning only, nothing to report yet
    lighting: bool = False  # a step in the light (compensated or re-learnt)


def _rect(size: int) -> U8:
    return cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))


def make_geometry(shape: tuple[int, int], zones: object, masks: object, tun: MotionTuning) -> Geometry:
    height, width = shape
    scale = width / tun.reference_width
    watch = build_watch_masks(zones, masks, width, height)  # type: ignore[arg-type]
    spread_w = max(1, min(tun.spread_grid_width, width))
    spread_h = max(1, round(spread_w * height / width))
    spread_valid = cv2.resize(watch.valid, (spread_w, spread_h), interpolation=cv2.INTER_AREA)
    cell = max(1, round(tun.blob_cell_px * scale))
    return Geometry(
        shape=(height, width),
        watch=watch,
        blur_k=odd_kernel(tun.blur_px * scale, 3),
        tolerance_kernel=_rect(odd_kernel(tun.tolerance_px * scale, 1)),
        open_kernel=_rect(odd_kernel(tun.open_px * scale, 3)),
        close_kernel=_rect(odd_kernel(tun.close_px * scale, 3)),
        protect_kernel=_rect(odd_kernel(tun.protect_px * scale, 3)),
        persist_kernel=_rect(odd_kernel(2 * tun.persist_px * scale / cell, 1)),
        blob_cell=cell,
        merge_px=max(1, round(tun.merge_px * scale)),
        grid=SampleGrid.build(watch.valid, tun.light_grid_width),
        spread_size=(spread_w, spread_h),
        spread_index=np.flatnonzero(spread_valid.ravel() >= 128),
    )


class BackgroundModel:
    def __init__(self, threshold: int, nominal_dt: float, zones: object, masks: object,
                 tuning: MotionTuning, min_area: float = 0.0) -> None:
        self.tuning = tuning
        self._threshold = threshold
        self._nominal_dt = nominal_dt
        self._zones, self._masks = zones, masks
        self._min_area = min_area
        self._speck_px = 0.0
        self._light = LightTracker(tuning, threshold)
        self._geometry: Geometry | None = None
        self._input_shape: tuple[int, ...] = ()
        self._background: F32 | None = None
        self._blink: F32 | None = None
        self._prev_raw: U8 | None = None
        self._prev_polarity: U8 | None = None
        self._prev_known = False  # _prev_raw describes a judged frame (not a fresh seed)
        self._prev_grid: U8 | None = None  # previous presence on the blob grid
        self._memory: U8 | None = None
        self._residuals: deque[tuple[float, np.ndarray]] = deque()
        self._last_t = 0.0
        self._warm_until = 0.0
        self._frames = 0  # frames learnt since the last full start (cumulative averaging)
        self._bg_frames = 0  # ... since the background was last seeded
        self._dt_avg = nominal_dt

    @property
    def geometry(self) -> Geometry:
        assert self._geometry is not None, "observe() first"
        return self._geometry

    def forget(self) -> None:
        self._background = None
        self._blink = None
        self._residuals.clear()
        self._light.reset()

    def boxes(self, mask: U8) -> tuple[Box, ...]:
        return extract_boxes(mask, self.tuning.max_boxes, self.geometry.merge_px)

    def working_frame(self, frame: U8) -> U8:
        """The frame at the working resolution (at most ``work_width`` wide)."""
        height, width = frame.shape
        if width <= self.tuning.work_width:
            return frame
        size = (self.tuning.work_width, max(2, round(height * self.tuning.work_width / width)))
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)

    # ------------------------------------------------------------------ per frame

    def observe(self, frame: U8, t: float) -> Observation:
        if frame.shape != self._input_shape:  # a new stream (resolution): start afresh
            self._input_shape = frame.shape
            self.forget()
        frame = self.working_frame(frame)
        shape = (int(frame.shape[0]), int(frame.shape[1]))
        if self._geometry is None or self._geometry.shape != shape:
            self._geometry = make_geometry(shape, self._zones, self._masks, self.tuning)
            self._speck_px = self.tuning.speck_share * self._min_area * self._geometry.watch.watched_px
            self.forget()
        geo = self._geometry
        blur: U8 = cv2.GaussianBlur(frame, (geo.blur_k, geo.blur_k), 0)
        if self._background is None or self._blink is None:
            self._seed(blur, t, self.tuning.warmup_s, keep_dynamics=False)
            return Observation(np.zeros_like(blur), seeded=True)

        dt = self._step(t)
        background = self._background
        aligned = self._light.align(blur, background, geo.grid, t)
        bg8: U8 = cv2.convertScaleAbs(background)

        # Presence: outside the background's local min..max by more than the pixel's threshold,
        # which its flip rate raises (see the module docstring).
        low = cv2.erode(bg8, geo.tolerance_kernel)
        high = cv2.dilate(bg8, geo.tolerance_kernel)
        darker = cv2.subtract(low, blur)
        brighter = cv2.subtract(blur, high)
        per_flip = self._threshold / (255.0 * self._dt_avg * self.tuning.blink_rate_ref)
        limit = cv2.convertScaleAbs(self._blink, alpha=per_flip, beta=self._threshold)
        raw: U8 = cv2.compare(cv2.max(darker, brighter), limit, cv2.CMP_GE)

        if aligned.huge or (not aligned.explained and self._changed_everywhere(raw, geo)):
            recalled = self._light.recall(blur, background, geo.grid, t)
            self._seed(blur, t, self.tuning.relearn_warmup_s, keep_dynamics=True, background=recalled)
            return Observation(np.zeros_like(blur), relearnt=True, lighting=True)
        if aligned.step:
            self._residuals.clear()  # residuals from before a light change are not comparable
            if self._prev_known:
                raw = self._relearn_unlit(blur, raw, background, darker, brighter, geo)

        present = cv2.morphologyEx(raw, cv2.MORPH_OPEN, geo.open_kernel)
        present = cv2.morphologyEx(present, cv2.MORPH_CLOSE, geo.close_kernel)
        # Movement is measured on the signed distance outside the local background range, so
        # edges shimmering by a pixel (shake, compression) do not look like movement.
        moved = self._movement(cv2.subtract(brighter, darker, dtype=cv2.CV_16S), t, dt, geo)
        # Whole regions move: a present region counts as moving when anything in it changed (a
        # person typing moves their hands, not their back) ...
        blobs = Blobs(present, geo.blob_cell)
        moving_ids = blobs.touching(blobs.to_grid(cv2.bitwise_and(moved, present)))
        # ... and it counts only if something was present near it in the previous frame too:
        # rain, snow, insects in the IR light and compression glitches appear in one frame at one
        # place; people and cars are still (nearly) where they were.
        assert self._prev_grid is not None
        lasting_ids = blobs.touching(cv2.dilate(self._prev_grid, geo.persist_kernel))
        moving = blobs.paint(moving_ids)
        # Specks (regions under speck_share of min_area) never count: scattered rain, snow or
        # leaves must not add up to one big moving thing.
        big_ids = blobs.areas() >= self._speck_px
        counted = blobs.paint(moving_ids & lasting_ids & big_ids)
        if not geo.watch.whole_frame:
            counted = cv2.bitwise_and(counted, geo.watch.watched)
        # Raw presence (before the opening): an object entering at the edge of the picture was a
        # sliver too thin to survive the opening one frame earlier, and still counts as there.
        self._prev_grid = blobs.to_grid(raw)

        # Which side of the background each pixel is on (by half a threshold): leaves against the
        # sky, ripples and flicker swap sides all the time; a person stays darker (or brighter)
        # than the wall behind them, even while moving on the spot.
        half = max(1.0, self._threshold / 2)
        polarity = np.bitwise_and(above(brighter, half), 128) | np.bitwise_and(above(darker, half), 64)
        self._learn(blur, raw, polarity, present, moving, background, geo, dt, t)
        return Observation(counted, warming_up=t < self._warm_until, lighting=aligned.step)

    # ------------------------------------------------------------------ stages

    def _seed(self, blur: U8, t: float, warmup_s: float, keep_dynamics: bool,
              background: F32 | None = None) -> None:
        """(Re)start from this frame, or from a recalled background (already clean, so it
        learns normally rather than cumulatively)."""
        self._background = blur.astype(np.float32) if background is None else background
        self._light.started(t)
        if not keep_dynamics or self._blink is None or self._blink.shape != blur.shape:
            self._blink = np.zeros(blur.shape, np.float32)
            self._frames = 0
        geo = self.geometry
        self._prev_raw = np.zeros_like(blur)
        self._prev_polarity = np.zeros_like(blur)
        self._prev_known = False
        self._prev_grid = np.zeros((geo.shape[0] // geo.blob_cell or 1, geo.shape[1] // geo.blob_cell or 1), np.uint8)
        self._memory = np.zeros_like(blur)
        self._residuals.clear()
        self._last_t = t
        self._warm_until = t + warmup_s
        self._bg_frames = 1 if background is None else 1_000_000

    def _step(self, t: float) -> float:
        """Seconds since the previous frame, falling back to the nominal step when implausible."""
        dt = t - self._last_t
        self._last_t = t
        if dt < 0:  # the time base jumped back (a restarted stream): keep deadlines relative
            self._warm_until += dt
            self._residuals.clear()
        if not (0.0 < dt <= self.tuning.max_step_frames * self._nominal_dt):
            dt = self._nominal_dt
        self._dt_avg += 0.1 * (dt - self._dt_avg)
        return dt

    def _changed_everywhere(self, raw: U8, geo: Geometry) -> bool:
        """Is most of the valid (unmasked) picture present, or a large part spread all over?"""
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
        cells = cv2.resize(raw, geo.spread_size, interpolation=cv2.INTER_AREA).ravel()[geo.spread_index]
        touched = np.count_nonzero(cells >= 255 * self.tuning.spread_cell_min) / cells.size
        return bool(touched >= self.tuning.spread_cells)

    def _relearn_unlit(self, blur: U8, raw: U8, background: F32, darker: U8, brighter: U8, geo: Geometry) -> U8:
        """On a step in the light, take over present regions not connected to what was present
        just before it (a person at the switch): a monitor, a lamp, a window keep their own
        brightness when the room light changes, and would otherwise stay "present" until
        absorbed tens of seconds later."""
        assert self._prev_raw is not None
        kept = blobs_touching(cv2.dilate(self._prev_raw, geo.protect_kernel), raw, geo.blob_cell)
        unlit = cv2.bitwise_and(raw, cv2.bitwise_not(kept))
        if cv2.countNonZero(unlit):
            cv2.copyTo(blur.astype(np.float32), unlit, background)
            cv2.copyTo(np.zeros_like(darker), unlit, darker)
            cv2.copyTo(np.zeros_like(brighter), unlit, brighter)
        return kept

    def _movement(self, residual: np.ndarray, t: float, dt: float, geo: Geometry) -> U8:
        """Pixels whose residual changed by the movement threshold within ``motion_memory_s``.

        The threshold is a fixed share of ``threshold`` rather than the flip-raised presence
        limit: a person working at a desk makes the pixels around their hands flip often, and
        their small movements must still count (the region must be present anyway, which is
        where dynamic background is kept out)."""
        tun = self.tuning
        ring = self._residuals
        # Compare with the newest residual at least ~motion_gap_s old (three quarters of it, so
        # frames that arrive a little early still pair with the previous one at the daemon's rate).
        reference = None
        for when, old in reversed(ring):
            if t - when >= 0.75 * tun.motion_gap_s:
                reference = old
                break
        if reference is None and ring:
            reference = ring[0][1]
        ring.append((t, residual))
        while len(ring) > 1 and t - ring[1][0] >= 0.75 * tun.motion_gap_s:
            ring.popleft()
        assert self._memory is not None
        memory = self._memory
        # Linear decay to zero over motion_memory_s, whatever the frame rate.
        step = max(1, round(255.0 * dt / max(tun.motion_memory_s, 1e-3)))
        cv2.subtract(memory, float(step), dst=memory)  # type: ignore[call-overload]
        if reference is not None:
            change = cv2.absdiff(residual, reference)
            moved = above(change, max(1.0, tun.motion_threshold * self._threshold), inclusive=True)
            cv2.max(memory, cv2.morphologyEx(moved, cv2.MORPH_OPEN, geo.open_kernel), dst=memory)
        return above(memory, 0)

    def _learn(self, blur: U8, raw: U8, polarity: U8, present: U8, moving: U8, background: F32, geo: Geometry,
               dt: float, t: float) -> None:
        """Blend this frame into the background and count flips (presence or side)."""
        tun = self.tuning
        self._frames += 1
        self._bg_frames += 1
        a_quiet = rate_alpha(dt, tun.background_tau_s)
        warming = t < self._warm_until
        if warming:
            # While warming up every frame weighs the same (a cumulative mean), so the seed
            # frame cannot dominate; afterwards, exponential forgetting in seconds.
            a_quiet = max(a_quiet, 1.0 / self._bg_frames)
        if warming or cv2.countNonZero(present) == 0:
            cv2.accumulateWeighted(blur, background, a_quiet)
        else:
            protect = cv2.dilate(present, geo.protect_kernel)
            busy = cv2.dilate(moving, geo.protect_kernel)
            still = cv2.bitwise_and(protect, cv2.bitwise_not(busy))
            cv2.accumulateWeighted(blur, background, rate_alpha(dt, tun.foreground_tau_s), mask=busy)
            cv2.accumulateWeighted(blur, background, rate_alpha(dt, tun.still_tau_s), mask=still)
            cv2.accumulateWeighted(blur, background, a_quiet, mask=cv2.bitwise_not(protect))
        assert self._blink is not None and self._prev_raw is not None and self._prev_polarity is not None
        # A flip: presence changed, or the pixel crossed from darker to brighter than the
        # background or back (bits 128 = brighter, 64 = darker; a swap sets both after the XOR).
        swapped = cv2.bitwise_xor(polarity, self._prev_polarity)
        flips = cv2.bitwise_or(cv2.bitwise_xor(raw, self._prev_raw), above(swapped, 191))
        self._prev_polarity = polarity
        a_blink = max(rate_alpha(dt, tun.blink_tau_s), 1.0 / (self._frames + 1))
        cv2.accumulateWeighted(flips, self._blink, a_blink)
        self._prev_raw = raw
        self._prev_known = True
