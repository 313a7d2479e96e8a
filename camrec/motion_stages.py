"""The stages of the motion detector, each a small pure function or state machine.

`camrec.motion.MotionDetector` strings these together; they live here so each can be tested,
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
    inliers: float  # fraction of the sampled pixels the mapping explains to within the tolerance
    shift: float  # mean |gain*ref + offset - ref| over the sample: how far the mapping moves luma

    @staticmethod
    def identity() -> GlobalChange:
        return GlobalChange(1.0, 0.0, 1.0, 0.0)

    def apply(self, image: F32) -> None:
        """Map a float32 background in place and keep it within the luma range."""
        np.multiply(image, np.float32(self.gain), out=image)
        np.add(image, np.float32(self.offset), out=image)
        np.clip(image, 0.0, 255.0, out=image)


# A near-flat sample cannot separate gain from offset (every pixel has about the same value);
# below this variance (luma², i.e. a spread under ~2 luma) only an offset is fitted.
_MIN_FIT_VARIANCE = 4.0
# Bounds on a believable gain between consecutive frames; beyond these the "fit" is chasing
# content, not light, and the inlier test will reject it anyway.
_GAIN_RANGE = (0.2, 5.0)


def fit_global_change(ref: F32, cur: F32, tolerance: float, iterations: int = 2) -> GlobalChange:
    """Fit ``cur ≈ gain * ref + offset`` robustly on 1-D samples (a small grid of the picture).

    Robustness comes from trimming: start from an offset-only guess (the median difference, so
    up to half the picture may be a moving object), or a gain-only guess (the median ratio) when
    that explains more, then refit by least squares on the samples within ``tolerance`` of the
    current model, a couple of times. Pixels clipped at 0/255, moving objects and shadows drop
    out as outliers. Cost is a dozen numpy passes over ~2-3k values (~0.1 ms).
    """
    n = ref.size
    if n == 0:
        return GlobalChange.identity()
    x = ref.astype(np.float64).ravel()
    y = cur.astype(np.float64).ravel()

    gain, offset = 1.0, float(np.median(y - x))
    keep = np.abs(y - x - offset) < tolerance
    support = int(np.count_nonzero(keep))
    if support < 0.9 * n:
        # The offset guess leaves much unexplained: a strong gain change spreads the differences
        # beyond the tolerance (dark pixels move little, bright ones a lot). Try a pure gain.
        ratio = float(np.median((y + 1.0) / (x + 1.0)))  # +1: black pixels do not divide by 0
        ratio = min(max(ratio, _GAIN_RANGE[0]), _GAIN_RANGE[1])
        keep_ratio = np.abs(y - ratio * x) < tolerance
        if int(np.count_nonzero(keep_ratio)) > support:
            gain, offset, keep = ratio, 0.0, keep_ratio
            support = int(np.count_nonzero(keep))
    min_support = max(8, n // 10)
    for _ in range(iterations):
        if support < min_support:
            break
        xi, yi = x[keep], y[keep]
        mx, my = float(xi.mean()), float(yi.mean())
        dx = xi - mx
        var = float(np.dot(dx, dx)) / support
        if var < _MIN_FIT_VARIANCE:
            gain = 1.0
        else:
            gain = float(np.dot(dx, yi - my)) / support / var
            gain = min(max(gain, _GAIN_RANGE[0]), _GAIN_RANGE[1])
        offset = my - gain * mx
        keep = np.abs(y - (gain * x + offset)) < tolerance
        support = int(np.count_nonzero(keep))
    shift = float(np.mean(np.abs((gain - 1.0) * x + offset)))
    return GlobalChange(gain, offset, support / n, shift)


# --------------------------------------------------------------------------- regions


def extract_boxes(mask: U8, max_boxes: int) -> tuple[Box, ...]:
    """Bounding boxes of the changed regions, normalized (x, y, w, h), largest box first.

    Outer contours rather than connectedComponentsWithStats: on this OpenCV build the latter
    costs ~0.8 ms on a 640x360 mask even when it is empty, contours ~0.03 ms on a cleaned
    mask. Capped at ``max_boxes`` so a noisy frame cannot produce an unbounded event record.
    """
    height, width = mask.shape
    contours, _hierarchy = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    rects = sorted((cv2.boundingRect(c) for c in contours), key=lambda r: r[2] * r[3], reverse=True)
    return tuple((x / width, y / height, w / width, h / height) for x, y, w, h in rects[:max_boxes])


# --------------------------------------------------------------------------- decision


class Hysteresis:
    """Turns per-frame "changed enough" verdicts into a steady motion on/off decision.

    On after ``min_frames`` consecutive active frames: one frame of glitch (a compression
    artefact, a moth in the IR light, a half-exposed frame during a light switch) never starts
    an event, at the price of ``min_frames - 1`` frames of latency. Off once no active frame has
    been seen for ``hold_s`` seconds of the caller's time: a person who pauses or is briefly
    hidden does not split the event, at the price of events ending ``hold_s`` late. The hold is
    measured in time, not frames, so it means the same thing at any detection rate.
    """

    def __init__(self, min_frames: int, hold_s: float) -> None:
        self.min_frames = min_frames
        self.hold_s = hold_s
        self.reset()

    def reset(self) -> None:
        self._run = 0
        self._on = False
        self._last_active_t = 0.0

    @property
    def on(self) -> bool:
        return self._on

    def update(self, active: bool, t: float) -> bool:
        if active:
            self._run += 1
            self._last_active_t = t
            if self._run >= self.min_frames:
                self._on = True
        else:
            self._run = 0
            if self._on:
                elapsed = t - self._last_active_t
                # A time base that jumps backwards (a restarted stream) ends the hold rather than
                # stretching it by the size of the jump.
                if elapsed >= self.hold_s or elapsed < 0:
                    self._on = False
        return self._on


# --------------------------------------------------------------------------- helpers


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
