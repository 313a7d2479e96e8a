"""The stages of the motion detector, each a small pure function or state machine.

`camrec.motion.detector.MotionDetector` strings these together; they live here so each can be tested,
replaced or tuned on its own (a later issue tunes the detector against labelled footage, and is
expected to swap stages rather than grow one long method). Nothing here touches files, sockets,
threads or clocks: inputs are numpy arrays and plain numbers (DESIGN.md §1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import cv2
import numpy as np

# Images as plain ndarrays: OpenCV's stubs return loosely typed arrays, so precise dtype
# parameters would only add casts. The names document what each array holds.
U8: TypeAlias = np.ndarray  # uint8 image or mask (masks: 0 or 255)
F32: TypeAlias = np.ndarray  # float32 image (the background)

Polygon = Sequence[tuple[float, float]]
Box = tuple[float, float, float, float]


# --------------------------------------------------------------------------- watched area


@dataclass(frozen=True)
class WatchMasks:
    """Zones and masks rasterized for one frame size (0 = ignored, 255 = counted).

    ``watched`` is where motion counts (the zones, or the whole frame, minus the masks);
    ``valid`` is everything except the masks. Lighting is judged over ``valid`` rather than
    ``watched``: a global brightness change is a property of the whole picture, and a small zone
    alone is too little evidence to tell a light switch from a person filling the zone. Masked
    areas (a TV, a tree in the wind) are excluded from both because they change for reasons that
    say nothing about the lighting.
    """

    watched: U8
    valid: U8
    watched_px: int
    valid_px: int
    whole_frame: bool  # no zones and no masks: the AND with ``watched`` can be skipped


def rasterize_polygons(polygons: Sequence[Polygon], width: int, height: int) -> U8:
    """Fill normalized (0..1) polygons into a uint8 mask of the given size.

    Coordinates are scaled to the frame's extent (1.0 is the far edge) with 4 fractional bits so
    a zone's edge lands on the same place at any detection width. Out-of-range points are
    clipped by fillPoly, so a zone drawn slightly past the edge covers up to the edge.
    """
    mask = np.zeros((height, width), np.uint8)
    shift = 4
    scale = np.array([width, height], np.float64) * (1 << shift)
    pts = [np.round(np.asarray(poly, np.float64) * scale).astype(np.int32) for poly in polygons]
    if pts:
        cv2.fillPoly(mask, pts, 255, lineType=cv2.LINE_8, shift=shift)
    return mask


def build_watch_masks(zones: Sequence[Polygon], masks: Sequence[Polygon], width: int, height: int) -> WatchMasks:
    """Rasterize zones and masks once per frame size (the caller caches the result)."""
    valid: U8 = np.full((height, width), 255, np.uint8)
    if masks:
        valid = cv2.bitwise_and(valid, cv2.bitwise_not(rasterize_polygons(masks, width, height)))
    watched = cv2.bitwise_and(rasterize_polygons(zones, width, height), valid) if zones else valid
    return WatchMasks(
        watched=watched,
        valid=valid,
        watched_px=int(cv2.countNonZero(watched)),
        valid_px=int(cv2.countNonZero(valid)),
        whole_frame=not zones and not masks,
    )


def validate_polygons(name: str, polygons: Sequence[Polygon]) -> None:
    """Reject polygons the rasterizer cannot honour (config validation should catch these first)."""
    for i, poly in enumerate(polygons):
        if len(poly) < 3:
            raise ValueError(f"{name}[{i}]: a polygon needs at least 3 points, got {len(poly)}")
        for x, y in poly:
            if not (math.isfinite(x) and math.isfinite(y)):
                raise ValueError(f"{name}[{i}]: coordinates must be finite numbers")


# --------------------------------------------------------------------------- global change


@dataclass(frozen=True)
class GlobalChange:
    """The best single brightness mapping ``cur ≈ gain * ref + offset`` between two pictures.

    Illumination is multiplicative in linear light and stays so after a power-law (gamma)
    transfer, so a lamp, an exposure or an IR-gain step is mostly a gain; black level and
    veiling flare add an offset. One global mapping explains all of those; it cannot explain a
    person, who changes a region and leaves the rest alone.
    """

    gain: float
    offset: float
    inliers: float  # fraction of the informative samples the mapping explains within the tolerance
    shift: float  # mean |gain*ref + offset - ref| over the sample: how far the mapping moves luma
    effect: float = 0.0  # the largest such move over the bulk (5th-95th percentile) of the sample
    log_ratio: float = 0.0  # log of the brightness ratio the mapping implies at the median level

    @staticmethod
    def identity() -> GlobalChange:
        return GlobalChange(1.0, 0.0, 1.0, 0.0, 0.0)

    def apply(self, image: F32, observed: U8 | None = None) -> None:
        """Map a float32 background in place and keep it within the luma range.

        With ``observed`` (the frame the mapping was fitted to), background pixels clipped at
        white dim only as far as the observation says when the light dims: a clipped pixel was
        brighter than the camera could say (a lamp, a screen, a window), so it may stay brighter
        than the gain predicts, and light sources often do not dim with the room at all. (Never
        darker than the mapping: something dark in front of a lamp is not the lamp.)
        """
        saturated = None
        if observed is not None and self.gain < 1.0:
            saturated = above(image, _SATURATED, inclusive=True)
        np.multiply(image, np.float32(self.gain), out=image)
        np.add(image, np.float32(self.offset), out=image)
        np.clip(image, 0.0, 255.0, out=image)
        if saturated is not None and observed is not None and cv2.countNonZero(saturated):
            cv2.copyTo(cv2.max(image, observed.astype(np.float32)), saturated, image)


# Background values at or above this are treated as clipped white.
_SATURATED = 250.0
# A near-flat sample cannot separate gain from offset (every pixel has about the same value);
# below this variance (luma², i.e. a spread under ~2 luma) only an offset is fitted.
_MIN_FIT_VARIANCE = 4.0
# Bounds on a believable gain between consecutive frames; beyond these the "fit" is chasing
# content, not light, and the inlier test will reject it anyway.
_GAIN_RANGE = (0.05, 20.0)
# Samples this close to black or white in both pictures say nothing about a gain (any gain maps
# black to black, and clipped white stays white). Counting them as "explained" would let a dark
# room vouch for any mapping at all; fitting on them would bias the gain.
_UNINFORMATIVE = 8.0
# How closely a sample must follow a mapping to be explained by it: this fraction of its
# brightness, but at least the floor (noise, compression) and at most the caller's tolerance.
_RELATIVE_TOLERANCE = 0.15
_TOLERANCE_FLOOR = 8.0


def _tolerance(x: np.ndarray, y: np.ndarray, tolerance: float) -> np.ndarray:
    """Per-sample agreement limit: a fraction of the brightness, between a noise floor and
    ``tolerance``. Absolute limits alone would make a dark picture agree with any mapping."""
    return np.clip(_RELATIVE_TOLERANCE * np.maximum(x, y), _TOLERANCE_FLOOR, max(tolerance, _TOLERANCE_FLOOR))


def fit_global_change(ref: F32, cur: F32, tolerance: float, iterations: int = 2) -> GlobalChange:
    """Fit ``cur ≈ gain * ref + offset`` robustly on 1-D samples (a small grid of the picture).

    Robustness comes from trimming: start from an offset-only guess (the median difference, so
    up to half the picture may be a moving object) or a gain-only guess (the median ratio),
    whichever explains more, then refit by least squares on the samples it explains, a couple of
    times. A sample is explained when it lies within a fraction of its brightness of the mapping
    (at least a noise floor, at most ``tolerance``). Moving objects and shadows drop out as
    outliers; samples near black or white in both pictures are left out altogether. Cost is a
    dozen numpy passes over ~2-3k values (~0.1 ms).
    """
    x = ref.astype(np.float64).ravel()
    y = cur.astype(np.float64).ravel()
    lo, hi = _UNINFORMATIVE, 255.0 - _UNINFORMATIVE
    informative = ~(((x < lo) & (y < lo)) | ((x > hi) & (y > hi)))
    x, y = x[informative], y[informative]
    n = x.size
    if n < max(8, informative.size // 20):
        return GlobalChange.identity()  # (almost) all black or white: nothing to judge by
    limit = _tolerance(x, y, tolerance)
    diff = y - x
    explained = np.abs(diff) < limit
    if abs(float(diff.mean())) < 1.0 and int(np.count_nonzero(explained)) >= 0.9 * n:
        # The usual case, nothing changed in the light: skip the fit (the median and the least
        # squares cost more than the rest of the frame's photometry).
        return GlobalChange(1.0, 0.0, float(np.count_nonzero(explained)) / n, 0.0, 0.0)

    offset_guess = float(np.median(diff))
    ratio = float(np.median((y + 1.0) / (x + 1.0)))  # +1: black pixels do not divide by 0
    ratio = min(max(ratio, _GAIN_RANGE[0]), _GAIN_RANGE[1])
    keep_offset = np.abs(diff - offset_guess) < limit
    keep_ratio = np.abs(y - ratio * x) < limit
    if int(np.count_nonzero(keep_ratio)) > int(np.count_nonzero(keep_offset)):
        gain, offset, keep = ratio, 0.0, keep_ratio
    else:
        gain, offset, keep = 1.0, offset_guess, keep_offset
    support = int(np.count_nonzero(keep))
    min_support = max(8, n // 10)
    # Clipped values follow no gain: they may be explained (kept as inliers) but not fitted on.
    unclipped = (y > 2.0) & (y < 253.0)
    for _ in range(iterations):
        fit = keep & unclipped
        count = int(np.count_nonzero(fit))
        if count < min_support:
            break
        xi, yi = x[fit], y[fit]
        mx, my = float(xi.mean()), float(yi.mean())
        dx = xi - mx
        var = float(np.dot(dx, dx)) / count
        if var < _MIN_FIT_VARIANCE:
            new_gain = 1.0
        else:
            new_gain = float(np.dot(dx, yi - my)) / count / var
            new_gain = min(max(new_gain, _GAIN_RANGE[0]), _GAIN_RANGE[1])
        new_offset = my - new_gain * mx
        new_keep = np.abs(y - (new_gain * x + new_offset)) < limit
        new_support = int(np.count_nonzero(new_keep))
        if new_support < support:
            break  # least squares chased the noise; the simpler guess explained more
        gain, offset, keep, support = new_gain, new_offset, new_keep, new_support
    moved = (gain - 1.0) * x + offset
    shift = float(np.mean(np.abs(moved)))
    p5, p50, p95 = np.percentile(x, (5, 50, 95))
    effect = max(abs((gain - 1.0) * p5 + offset), abs((gain - 1.0) * p95 + offset))
    # How much brighter or darker the typical pixel becomes: an offset of +40 on a dark room is
    # a light switched on, however small it looks in luma.
    level = max(float(p50), _UNINFORMATIVE)
    log_ratio = math.log(max(gain * level + offset, 1.0) / level)
    return GlobalChange(gain, offset, support / n, shift, float(effect), log_ratio)


@dataclass(frozen=True)
class GainSurface:
    """A smooth illumination change: ``cur ≈ ref * g(x, y) + offset`` with ``g`` quadratic in the
    normalized image coordinates (-1..1).

    A lamp switched on at one side of a room, or sun through a window, brightens the picture by a
    factor that varies slowly across it; one global gain cannot follow that, a quadratic surface
    can, and it still cannot follow a compact object (a person), which therefore stays an outlier.
    """

    coefficients: np.ndarray  # (6,) for 1, x, y, x², y², xy
    offset: float
    inliers: float
    shift: float
    log_ratio: float = 0.0  # as in GlobalChange: the brightness ratio at the median level

    def gains(self, xy: np.ndarray) -> np.ndarray:
        return _quadratic_terms(xy) @ self.coefficients


def _quadratic_terms(xy: np.ndarray) -> np.ndarray:
    x, y = xy[:, 0], xy[:, 1]
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)


def fit_gain_surface(ref: F32, cur: F32, xy: np.ndarray, tolerance: float,
                     iterations: int = 3) -> GainSurface | None:
    """Fit a `GainSurface` robustly on grid samples; None if there is too little to fit.

    Least squares on the samples that are neither clipped (0/255 say nothing about gain) nor
    outliers: the first pass keeps the better half by residual, later passes those within
    ``tolerance``. Only tried when one global mapping failed, so its ~0.3 ms is rare.
    """
    x = ref.astype(np.float64).ravel()
    y = cur.astype(np.float64).ravel()
    n = x.size
    if n < 24:
        return None
    terms = _quadratic_terms(xy)
    design = np.concatenate([terms * x[:, None], np.ones((n, 1))], axis=1)
    keep = (x > 3) & (x < 252) & (y > 3) & (y < 252)
    params = None
    for i in range(iterations):
        if int(np.count_nonzero(keep)) < 24:
            return None
        params, *_ = np.linalg.lstsq(design[keep], y[keep], rcond=None)
        residual = np.abs(design @ params - y)
        limit = float(np.median(residual[keep])) * 2.0 if i == 0 else tolerance
        keep = residual < max(limit, 1.0)
    assert params is not None
    residual = np.abs(design @ params - y)
    inliers = float(np.count_nonzero(residual < tolerance)) / n
    shift = float(np.mean(np.abs(design @ params - x)))
    level = max(float(np.median(x)), _UNINFORMATIVE)
    gain = float(np.median(terms @ params[:6]))
    log_ratio = math.log(max(gain * level + float(params[6]), 1.0) / level)
    return GainSurface(params[:6], float(params[6]), inliers, shift, log_ratio)


# --------------------------------------------------------------------------- blobs


class Blobs:
    """The connected regions of a mask, labelled once and then selected by seeds.

    Labelling works on a grid of ``cell``-pixel cells (a cell belongs to the mask if any of its
    pixels does): a few thousand cells, so labelling, selecting and painting back cost ~0.1 ms.
    The grid covers the largest multiple of ``cell`` in each direction (integer ratios keep
    OpenCV's area resize on its fast path); the last few rows/columns of a frame whose size is
    not a multiple belong to no region. Painted results are cut back to the mask.
    """

    def __init__(self, mask: U8, cell: int) -> None:
        height, width = mask.shape
        self.mask = mask
        self.cell = cell
        self.size = (max(1, width // cell), max(1, height // cell))
        self.fill: U8 = self._area(mask)  # how much of each cell is in the mask, 0..255
        self.coarse: U8 = above(self.fill, 0)
        self.count, self.labels = cv2.connectedComponents(self.coarse, connectivity=8)

    def _area(self, image: U8) -> U8:
        w, h = self.size
        return cv2.resize(image[: h * self.cell, : w * self.cell], self.size, interpolation=cv2.INTER_AREA)

    def to_grid(self, image: U8) -> U8:
        """255 in every cell where ``image`` has any non-zero pixel."""
        return above(self._area(image), 0)

    def areas(self) -> np.ndarray:
        """Pixels of the mask in each region (by label; exact for 0/255 masks up to rounding)."""
        weights = self.fill.ravel().astype(np.float64) * (self.cell * self.cell / 255.0)
        return np.bincount(self.labels.ravel(), weights=weights, minlength=self.count)

    def touching(self, seed_grid: U8) -> np.ndarray:
        """Which regions (by label) contain a seed cell; label 0 (outside the mask) never."""
        chosen = np.zeros(self.count, bool)
        chosen[self.labels[seed_grid > 0]] = True
        chosen[0] = False
        return chosen

    def paint(self, chosen: np.ndarray) -> U8:
        out = np.zeros_like(self.mask)
        if self.count <= 1 or not chosen.any():
            return out
        lut = np.where(chosen, 255, 0).astype(np.uint8)
        w, h = self.size
        cropped = (h * self.cell, w * self.cell)
        out[: cropped[0], : cropped[1]] = cv2.resize(lut[self.labels], (cropped[1], cropped[0]),
                                                    interpolation=cv2.INTER_NEAREST)
        return cv2.bitwise_and(out, self.mask)


def blobs_touching(seed: U8, mask: U8, cell: int) -> U8:
    """The connected regions of ``mask`` that contain any ``seed`` pixel, within ``mask``."""
    blobs = Blobs(mask, cell)
    return blobs.paint(blobs.touching(blobs.to_grid(cv2.bitwise_and(seed, mask))))


# --------------------------------------------------------------------------- regions


def extract_boxes(mask: U8, max_boxes: int, merge_px: int = 0) -> tuple[Box, ...]:
    """Bounding boxes of the changed regions, normalized (x, y, w, h), largest box first.

    Boxes closer than ``merge_px`` (gap between them, in pixels) are merged, so one person whose
    mask fell apart into head, torso and legs is one box. Outer contours rather than
    connectedComponentsWithStats: on this OpenCV build the latter costs ~0.8 ms on a 640x360 mask
    even when it is empty, contours ~0.03 ms on a cleaned mask. Capped at ``max_boxes`` so a
    noisy frame cannot produce an unbounded event record.
    """
    height, width = mask.shape
    contours, _hierarchy = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    rects = [list(cv2.boundingRect(c)) for c in contours]
    if merge_px > 0 and 1 < len(rects) <= 4 * max_boxes:
        rects = _merge_rects(rects, merge_px)
    rects.sort(key=lambda r: r[2] * r[3], reverse=True)
    return tuple((x / width, y / height, w / width, h / height) for x, y, w, h in rects[:max_boxes])


def _merge_rects(rects: list[list[int]], gap: int) -> list[list[int]]:
    """Merge rectangles whose gap is at most ``gap`` until none are that close (few boxes: O(n²))."""
    merged = True
    while merged:
        merged = False
        for i in range(len(rects)):
            ax, ay, aw, ah = rects[i]
            for j in range(i + 1, len(rects)):
                bx, by, bw, bh = rects[j]
                if bx - (ax + aw) <= gap and ax - (bx + bw) <= gap and by - (ay + ah) <= gap and ay - (by + bh) <= gap:
                    x0, y0 = min(ax, bx), min(ay, by)
                    rects[i] = [x0, y0, max(ax + aw, bx + bw) - x0, max(ay + ah, by + bh) - y0]
                    del rects[j]
                    merged = True
                    break
            if merged:
                break
    return rects


# --------------------------------------------------------------------------- decision


class Hysteresis:
    """Turns per-frame "changed enough" verdicts into a steady motion on/off decision.

    On once the change has lasted ``min_frames`` frames *at the nominal rate* (``frame_s`` apart):
    one frame of glitch (a compression artefact, a moth in the IR light, a half-exposed frame
    during a light switch) never starts an event, at the price of ``(min_frames - 1) * frame_s``
    of latency. Off once no active frame has been seen for ``hold_s`` seconds: a person who
    pauses or is briefly hidden does not split the event, at the price of events ending
    ``hold_s`` late. Both are measured in the caller's time, not in frames, so the decision is
    the same whether frames come at the daemon's ``detect_fps`` or at a file's full rate (where
    "2 frames" would otherwise mean 0.13 s at 15 fps instead of 0.4 s at 5 fps). Half a nominal
    frame of slack absorbs jitter in arrival times.
    """

    def __init__(self, min_frames: int, hold_s: float, frame_s: float) -> None:
        self.min_frames = min_frames
        self.hold_s = hold_s
        self.min_run_s = max(0.0, (min_frames - 1.5) * frame_s)
        self.reset()

    def reset(self) -> None:
        self._run_start: float | None = None
        self._on = False
        self._last_active_t = 0.0

    @property
    def on(self) -> bool:
        return self._on

    def update(self, active: bool, t: float) -> bool:
        if active:
            if self._run_start is None or t < self._run_start:
                self._run_start = t
            self._last_active_t = t
            if self.min_frames <= 1 or t - self._run_start >= self.min_run_s:
                self._on = True
        else:
            self._run_start = None
            if self._on:
                elapsed = t - self._last_active_t
                # A time base that jumps backwards (a restarted stream) ends the hold rather than
                # stretching it by the size of the jump.
                if elapsed >= self.hold_s or elapsed < 0:
                    self._on = False
        return self._on


# --------------------------------------------------------------------------- helpers


def above(image: np.ndarray, value: float, inclusive: bool = False) -> U8:
    """255 where ``image`` > ``value`` (>= when inclusive), else 0, for any depth.

    (cv2.compare takes a scalar at run time; its type stubs only know arrays.)
    """
    op = cv2.CMP_GE if inclusive else cv2.CMP_GT
    result: U8 = cv2.compare(image, float(value), op)  # type: ignore[call-overload]
    return result


def odd_kernel(size: float, minimum: int = 1) -> int:
    """Round a kernel size to the nearest odd integer ≥ minimum (symmetric kernels need odd)."""
    k = max(minimum, round(size))
    return k if k % 2 == 1 else k + 1


def rate_alpha(dt: float, tau_s: float) -> float:
    """Running-average weight for one step of ``dt`` seconds with time constant ``tau_s``.

    ``1 - exp(-dt/tau)`` makes n steps of dt equal one step of n*dt, so the background learns at
    the same speed in seconds whatever the frame rate.
    """
    if tau_s <= 0:
        return 1.0
    return 1.0 - math.exp(-dt / tau_s)
