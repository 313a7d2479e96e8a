"""Keeping the motion detector's background in the frame's light (pure core).

Three mechanisms, from the most to the least common:

1. **Compensation.** Every frame, ``frame ≈ gain * background + offset`` is fitted robustly on a
   coarse grid (``fit_global_change``). When most of the picture follows it and it moves typical
   pixels by more than a little, the background is mapped through it before differencing:
   auto-exposure, clouds, dusk, constant mains flicker, a light switch in a room without
   windows. A change no single mapping explains but a smooth gain surface does (a lamp lighting
   one side of a room, sun through a window) is mapped the same way. Detection goes on through
   all of these: a person who switches the light on is still seen.
2. **Memory of lighting states.** Before the light changes a lot, a settled background is kept
   (a few of them). When a change comes that no model explains — the room lights back on, an IR
   camera switching between day and night mode — the stored background that matches the new
   light is brought back instead of learning the picture afresh, so whoever switched the light on
   is foreground at once rather than baked into the new background.
3. **Re-learning.** Only when nothing explains the change and most of the picture changed (a new
   lighting state seen for the first time, a moved camera) is the background taken from the
   current frame, and the detector watches for a moment before reporting again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from camrec.motion.stages import F32, U8, GlobalChange, fit_gain_surface, fit_global_change
from camrec.motion.tuning import MotionTuning


@dataclass(frozen=True)
class SampleGrid:
    """Where the photometric model samples the picture: the mean of each ``cell``-pixel cell
    (integer ratios keep OpenCV's area resize fast), only cells clear of masks."""

    cell: int
    size: tuple[int, int]  # (columns, rows)
    index: np.ndarray  # flat indices of the usable cells
    xy: np.ndarray  # normalized (-1..1) centre of every cell, shape (columns * rows, 2)

    @staticmethod
    def build(valid: U8, target_columns: int) -> SampleGrid:
        height, width = valid.shape
        cell = max(1, width // max(1, target_columns))
        size = (max(1, width // cell), max(1, height // cell))
        usable = cv2.resize(valid[: size[1] * cell, : size[0] * cell], size, interpolation=cv2.INTER_AREA)
        gy, gx = np.divmod(np.arange(size[0] * size[1]), size[0])
        xy = np.stack([(gx + 0.5) / size[0] * 2 - 1, (gy + 0.5) / size[1] * 2 - 1], axis=1)
        return SampleGrid(cell, size, np.flatnonzero(usable.ravel() == 255), xy.astype(np.float64))

    def sample(self, image: np.ndarray) -> np.ndarray:
        w, h = self.size
        small = cv2.resize(image[: h * self.cell, : w * self.cell], self.size, interpolation=cv2.INTER_AREA)
        return small.ravel()[self.index].astype(np.float32, copy=False)


@dataclass(frozen=True, slots=True)
class Alignment:
    change: GlobalChange
    explained: bool  # the light (changed or not) follows a model; False: nothing explains it
    step: bool  # a big change in the light, compensated
    huge: bool = False  # too big to compensate (a light switched on or off): start afresh


@dataclass
class _Snapshot:
    background: F32
    grid: np.ndarray  # the background's grid samples, for matching a later frame's light
    t: float


class LightTracker:
    """Photometric alignment of the background, with a small memory of lighting states."""

    def __init__(self, tuning: MotionTuning, threshold: int) -> None:
        self.tuning = tuning
        self.threshold = threshold
        self._bank: list[_Snapshot] = []
        self._last_step = -math.inf
        self._settled_since = -math.inf

    def reset(self) -> None:
        self._bank.clear()
        self._last_step = -math.inf
        self._settled_since = -math.inf

    def started(self, t: float) -> None:
        """A background was (re)started at ``t``: it is not a settled state yet."""
        self._settled_since = t

    def _settled(self, t: float) -> bool:
        settle = self.tuning.light_settle_s
        return t - self._settled_since >= settle and t - self._last_step >= settle

    def align(self, blur: U8, background: F32, grid: SampleGrid, t: float) -> Alignment:
        """Map ``background`` (in place) to the light of ``blur`` if a model explains the change."""
        if grid.index.size == 0:
            return Alignment(GlobalChange.identity(), True, False)
        tun = self.tuning
        cur = grid.sample(blur)
        ref = grid.sample(background)
        inliers_needed = tun.light_inliers
        change = fit_global_change(ref, cur, float(self.threshold))
        if change.inliers >= inliers_needed:
            log_gain = max(abs(math.log(max(change.gain, 1e-3))), abs(change.log_ratio))
            if log_gain >= tun.relearn_log_gain:
                # Mapping a picture through a gain of 3 or 1/3 multiplies quantization and
                # compression noise by as much, and clipped or self-lit areas (lamps, screens)
                # follow no gain at all: better to start from the new picture.
                return Alignment(change, True, True, huge=True)
            step = change.shift >= tun.lighting_shift * self.threshold or log_gain >= tun.lighting_log_gain
            if step:
                self._remember(background, ref, t)
                self._last_step = t
            if change.effect >= tun.compensate_min_luma:
                change.apply(background, blur)
            return Alignment(change, True, step)
        surface = fit_gain_surface(ref, cur, grid.xy[grid.index], float(self.threshold))
        if surface is None or surface.inliers < inliers_needed:
            # Nothing explains it. Unless most of the picture changed (the caller checks and
            # re-learns), it is most likely something big in front of the camera, not light.
            return Alignment(change, False, False)
        as_global = GlobalChange(1.0, surface.offset, surface.inliers, surface.shift, surface.shift, surface.log_ratio)
        if abs(surface.log_ratio) >= tun.relearn_log_gain:
            return Alignment(as_global, True, True, huge=True)
        self._remember(background, ref, t)
        self._last_step = t
        gain = surface.gains(grid.xy).astype(np.float32).reshape(grid.size[1], grid.size[0])
        full = cv2.resize(gain, (background.shape[1], background.shape[0]), interpolation=cv2.INTER_LINEAR)
        np.multiply(background, full, out=background)
        np.add(background, np.float32(surface.offset), out=background)
        np.clip(background, 0.0, 255.0, out=background)
        return Alignment(as_global, True, True)

    def recall(self, blur: U8, background: F32, grid: SampleGrid, t: float) -> F32 | None:
        """After an unexplained change: keep the old background if it was settled, and return a
        stored background that the new light explains (mapped to it), or None."""
        if grid.index.size == 0:
            return None
        self._remember(background, grid.sample(background), t)
        self._last_step = t
        cur = grid.sample(blur)
        best: tuple[float, _Snapshot, GlobalChange] | None = None
        for snap in self._bank:
            if snap.grid.shape != cur.shape:
                continue
            fit = fit_global_change(snap.grid, cur, float(self.threshold))
            # The same state comes back at about the same exposure; a state that needs a big
            # gain to match is a different one (a lit room is not a dark room times 0.1).
            similar = abs(math.log(max(fit.gain, 1e-3))) < self.tuning.relearn_log_gain
            if similar and fit.inliers >= self.tuning.recall_inliers and (best is None or fit.inliers > best[0]):
                best = (fit.inliers, snap, fit)
        if best is None:
            return None
        _, snap, fit = best
        restored = snap.background.copy()
        fit.apply(restored)
        return restored

    def _remember(self, background: F32, grid: np.ndarray, t: float) -> None:
        """Keep a settled background (one per lighting state, the newest few states)."""
        if not self._settled(t):
            return
        for i, snap in enumerate(self._bank):
            if snap.grid.shape == grid.shape:
                same = fit_global_change(snap.grid, grid, float(self.threshold))
                if same.inliers >= 0.9 and abs(math.log(max(same.gain, 1e-3))) < 0.1 and abs(same.offset) < 8:
                    del self._bank[i]  # the same state again: replace it with the newer view
                    break
        self._bank.append(_Snapshot(background.copy(), grid.copy(), t))
        del self._bank[: -self.tuning.light_states]
