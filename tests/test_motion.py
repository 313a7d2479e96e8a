"""Motion detector tests on synthetic numpy frames (no files, no clocks).

Scenes are coarse random textures (8x8 cells, so they survive the detector's blur) plus
per-frame Gaussian sensor noise; "objects" are brighter textured blocks. Times are frame
index / fps, as the recorder would pass stream time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pytest

from camrec.motion import DefaultMotionParams, MotionDetector, MotionResult, MotionTuning
from camrec.motion_stages import (
    Hysteresis,
    build_watch_masks,
    extract_boxes,
    fit_global_change,
    rasterize_polygons,
)

H, W = 180, 320
FPS = 5.0
HOLD_S = MotionTuning().hold_s
Pos = tuple[int, int] | None  # top-left (x, y) of the object in a frame, or None if absent


def texture(rng: np.random.Generator, h: int, w: int, lo: int, hi: int, cell: int) -> np.ndarray:
    coarse = rng.integers(lo, hi, size=(h // cell + 1, w // cell + 1)).astype(np.float32)
    return np.repeat(np.repeat(coarse, cell, 0), cell, 1)[:h, :w]


def scene(seed: int = 0, h: int = H, w: int = W, lo: int = 60, hi: int = 160) -> np.ndarray:
    return texture(np.random.default_rng(seed), h, w, lo, hi, 8)


def person(h: int = 50, w: int = 24, seed: int = 1) -> np.ndarray:
    return texture(np.random.default_rng(seed), h, w, 190, 250, 4)


def render(
    background: np.ndarray,
    obj: np.ndarray | None,
    pos: Pos,
    rng: np.random.Generator,
    sigma: float = 6.0,
) -> np.ndarray:
    img = background.copy()
    if obj is not None and pos is not None:
        x, y = pos
        oh, ow = obj.shape
        img[y : y + oh, x : x + ow] = obj[: img.shape[0] - y, : img.shape[1] - x]
    img += rng.standard_normal(img.shape, dtype=np.float32) * sigma
    frame: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
    return frame


def run(
    det: MotionDetector,
    frames: int,
    background: Callable[[int], np.ndarray] | np.ndarray,
    obj: np.ndarray | None = None,
    path: Callable[[int], Pos] = lambda i: None,
    fps: float = FPS,
    seed: int = 7,
    sigma: float = 6.0,
) -> list[MotionResult]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(frames):
        bg = background(i) if callable(background) else background
        out.append(det.process(render(bg, obj, path(i), rng, sigma), i / fps))
    return out


def walk(start: int, stop: int, x0: int, y: int, step: int) -> Callable[[int], Pos]:
    """An object present in frames [start, stop), moving right by ``step`` px per frame."""
    return lambda i: (x0 + (i - start) * step, y) if start <= i < stop else None


def events(results: Sequence[MotionResult]) -> list[tuple[int, int]]:
    """(first, last) frame indices of each run of motion=True."""
    spans: list[tuple[int, int]] = []
    for i, r in enumerate(results):
        if r.motion and (not spans or spans[-1][1] != i - 1):
            spans.append((i, i))
        elif r.motion:
            spans[-1] = (spans[-1][0], i)
    return spans


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


def detector(**kw: object) -> MotionDetector:
    return MotionDetector(replace(DefaultMotionParams(), **kw))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- basic behaviour


def test_first_frame_only_initialises() -> None:
    det = detector()
    rng = np.random.default_rng(0)
    first = det.process(render(scene(), person(), (100, 60), rng), 0.0)
    assert first == MotionResult(0.0, 0.0, False, (), False)
    # The object was learned as background: the same picture again is not a change.
    second = det.process(render(scene(), person(), (100, 60), rng), 0.2)
    assert second.score == 0.0 and not second.motion and second.boxes == ()


def test_static_noisy_scene_never_reports_motion() -> None:
    det = detector()
    rng = np.random.default_rng(3)
    bg = scene()
    results = []
    for i in range(200):
        # Heavy per-pixel noise, spatially correlated noise (what a camera's ISP and encoder
        # leave) and a little global flicker, all independent from frame to frame.
        corr = texture(rng, H, W, -6, 7, 2)
        img = bg + corr + rng.normal(0.0, 9.0, bg.shape) + rng.uniform(-1.5, 1.5)
        results.append(det.process(np.clip(img, 0, 255).astype(np.uint8), i / FPS))
    assert not any(r.motion for r in results)
    assert not any(r.lighting_change for r in results)
    assert max(r.score for r in results) < 0.1 * DefaultMotionParams().min_area


def test_moving_block_starts_within_min_frames_and_ends_within_hold() -> None:
    params = DefaultMotionParams()
    det = MotionDetector(params)
    appear, leave = 10, 40
    obj = person()
    path = walk(appear, leave, 20, 60, 8)
    results = run(det, 70, scene(), obj, path)

    assert len(events(results)) == 1
    first_on, last_on = events(results)[0]
    assert first_on == appear + params.min_frames - 1
    leave_t = leave / FPS
    assert leave_t <= results[last_on].t < leave_t + HOLD_S
    assert not any(r.motion for r in results if r.t >= leave_t + HOLD_S)
    for i in range(appear, leave):
        pos = path(i)
        assert pos is not None
        truth = (pos[0] / W, pos[1] / H, obj.shape[1] / W, obj.shape[0] / H)
        assert results[i].boxes, f"frame {i}: no boxes"
        assert iou(results[i].boxes[0], truth) > 0.5, (i, results[i].boxes[0], truth)
        assert 0.8 < results[i].score * W * H / obj.size < 1.5  # score ≈ the block's area


@pytest.mark.parametrize(("side", "expect_motion"), [(6, False), (16, True)])
def test_min_area_decides_small_blocks(side: int, expect_motion: bool) -> None:
    det = detector()  # min_area 0.002 of 320x180 = 115 px: 6x6 is below, 16x16 above
    results = run(det, 40, scene(), person(side, side), walk(5, 35, 40, 80, 5))
    assert any(r.motion for r in results) is expect_motion
    seen = [r.score for r in results[5:35]]
    assert min(seen) > 0.0  # the small block was seen every frame, just not big enough
    assert (max(seen) >= 0.002) is expect_motion


def test_motion_only_inside_a_mask_is_ignored() -> None:
    right_half = ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0))
    path = walk(5, 35, 180, 60, 3)  # stays within x 180..291
    masked = run(detector(masks=(right_half,)), 45, scene(), person(), path)
    assert not any(r.motion for r in masked)
    assert all(r.score == 0.0 and r.boxes == () for r in masked)
    control = run(detector(), 45, scene(), person(), path)
    assert any(r.motion for r in control)


def test_zone_counts_only_motion_inside_it() -> None:
    left_half = ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0))
    outside = run(detector(zones=(left_half,)), 45, scene(), person(), walk(5, 35, 180, 60, 3))
    assert not any(r.motion for r in outside)
    inside = run(detector(zones=(left_half,)), 45, scene(), person(), walk(5, 35, 10, 60, 3))
    assert any(r.motion for r in inside)
    for r in inside:
        for x, _y, w, _h in r.boxes:
            assert x + w <= 0.5 + 1 / W  # boxes are clipped to the zone


def test_min_area_is_relative_to_the_watched_area() -> None:
    # A 10x10 block is ~0.17 % of the frame: below min_area 0.4 % of the whole frame, but
    # ~0.7 % of a zone covering a quarter of it.
    quarter = ((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5))
    path = walk(5, 35, 20, 30, 2)
    whole = run(detector(min_area=0.004), 45, scene(), person(10, 10), path)
    zoned = run(detector(min_area=0.004, zones=(quarter,)), 45, scene(), person(10, 10), path)
    assert not any(r.motion for r in whole)
    assert any(r.motion for r in zoned)
    ratio = max(r.score for r in zoned) / max(r.score for r in whole)
    assert ratio == pytest.approx(4.0, rel=0.1)


# --------------------------------------------------------------------------- lighting


LIGHT_CHANGES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "plus60": lambda s: s + 60,
    "minus60": lambda s: s - 60,
    "gain1.6_clipping": lambda s: np.clip(s * 1.6, 0, 255),  # bright cells clip at 255
    "gain0.5": lambda s: s * 0.5,
}


@pytest.mark.parametrize("change", LIGHT_CHANGES)
def test_global_brightness_step_is_lighting_not_motion(change: str) -> None:
    step = 25
    before = scene(lo=60, hi=180)
    after = LIGHT_CHANGES[change](before)
    appear = step + 15  # a person walks in 3 s after the lights changed
    results = run(detector(), 75, lambda i: before if i < step else after, person(), walk(appear, 70, 20, 60, 6))
    assert results[step].lighting_change
    assert results[step].score == 0.0 and results[step].boxes == ()
    assert not any(r.motion for r in results[:appear])
    first_on = events(results)[0][0]
    assert appear <= first_on <= appear + DefaultMotionParams().min_frames - 1


def test_exposure_ramp_over_a_second_is_not_motion() -> None:
    # Auto-exposure: +70 luma spread over 5 frames. Each step is small enough to be compensated
    # silently or flagged; none may become motion.
    before = scene()
    results = run(detector(), 40, lambda i: before + 14 * min(max(i - 10, 0), 5))
    assert not any(r.motion for r in results)
    assert max(r.score for r in results) < DefaultMotionParams().min_area


def test_unexplained_global_change_reseeds() -> None:
    # A bumped camera or an IR cut-over that rearranges contrast: no single gain/offset explains
    # it, but most of the picture changed at once.
    a, b = scene(seed=0), scene(seed=5)
    results = run(detector(), 40, lambda i: a if i < 15 else b)
    assert results[15].lighting_change
    assert [i for i, r in enumerate(results) if r.lighting_change] == [15]
    assert not any(r.motion for r in results)


def test_close_person_filling_a_third_of_the_view_is_motion() -> None:
    # As much change as the unexplained-lighting case above, but compact: still motion.
    results = run(detector(), 30, scene(), person(150, 110), walk(5, 25, 0, 15, 8))
    assert not any(r.lighting_change for r in results)
    assert events(results)[0][0] == 6
    assert max(r.score for r in results) > 0.25


@pytest.mark.parametrize("fps", [2.0, 10.0])
def test_slow_drift_is_absorbed(fps: float) -> None:
    # Dusk: 1 luma per second for 100 s (60..160 becomes 160..260, partly clipped at the end).
    det = detector(detect_fps=fps)
    base = scene()
    results = run(det, int(100 * fps), lambda i: np.clip(base + i / fps, 0, 255), fps=fps)
    assert not any(r.motion for r in results)
    assert not any(r.lighting_change for r in results)
    # Still alive afterwards: a person on the drifted scene is detected.
    bright = np.clip(base + 100, 0, 255)
    later = run(det, 20, bright, person(), walk(0, 20, 20, 60, 6), fps=fps)
    assert any(r.motion for r in later)


# --------------------------------------------------------------------------- background model


def test_paused_person_stays_one_event() -> None:
    # Walks for 2 s, stands still for 2 s, walks on for 2 s, leaves.
    def path(i: int) -> Pos:
        if i < 5 or i >= 35:
            return None
        x = 20 + 8 * min(i - 5, 10) + 8 * max(i - 25, 0)
        return (x, 60)

    results = run(detector(), 50, scene(), person(), path)
    spans = events(results)
    assert len(spans) == 1
    first_on, last_on = spans[0]
    assert first_on == 5 + DefaultMotionParams().min_frames - 1
    assert last_on >= 34
    still = results[15:25]
    assert all(r.motion for r in still)
    assert min(r.score for r in still) > 0.5 * max(r.score for r in still)  # not being absorbed


@pytest.mark.parametrize("fps", [2.0, 10.0])
def test_parked_object_is_absorbed_in_seconds_not_frames(fps: float) -> None:
    # An object arrives and stays (a parked car, a left bag). It must eventually stop being
    # motion, after about the same number of seconds at any detection rate.
    # The empty scene is seen for one second first, so the object is not part of the seed.
    det = detector(detect_fps=fps)
    results = run(det, int(60 * fps), scene(), person(), lambda i: None if i < fps else (100, 60), fps=fps)
    spans = events(results)
    assert len(spans) == 1
    end_s = results[spans[0][1]].t
    assert 20.0 < end_s < 45.0  # ~30 s: foreground_tau_s * ln(contrast / threshold) + hold
    assert not results[-1].motion


# --------------------------------------------------------------------------- lifecycle


def test_size_change_reinitialises() -> None:
    det = detector()
    small = run(det, 10, scene())
    assert not any(r.motion for r in small)
    rng = np.random.default_rng(1)
    big_scene = scene(h=360, w=640)
    first_big = det.process(render(big_scene, None, None, rng), 10 / FPS)
    assert first_big == MotionResult(10 / FPS, 0.0, False, (), False)
    obj = person(100, 48)
    results = [det.process(render(big_scene, obj, (40 + 12 * i, 120), rng), (11 + i) / FPS) for i in range(10)]
    assert [r.motion for r in results] == [False] + [True] * 9
    for r in results:
        for box in r.boxes:
            assert all(0.0 <= v <= 1.0 for v in box)
    assert det.foreground is not None and det.foreground.shape == (360, 640)


def test_reset_forgets_background_and_state() -> None:
    det = detector()
    results = run(det, 20, scene(), person(), walk(5, 20, 20, 60, 8))
    assert results[-1].motion
    det.reset()
    rng = np.random.default_rng(2)
    after = det.process(render(scene(), person(), (200, 60), rng), 4.0)
    assert after == MotionResult(4.0, 0.0, False, (), False)
    quiet = det.process(render(scene(), person(), (200, 60), rng), 4.2)
    assert not quiet.motion and quiet.score == 0.0


@pytest.mark.parametrize(
    "frame",
    [np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.float32), np.zeros((1, 10), np.uint8)],
)
def test_rejects_frames_it_cannot_judge(frame: np.ndarray) -> None:
    with pytest.raises(ValueError):
        detector().process(frame, 0.0)


def test_rejects_a_frame_time_that_is_not_a_number() -> None:
    with pytest.raises(ValueError):
        detector().process(np.zeros((18, 32), np.uint8), float("nan"))


@pytest.mark.parametrize(
    "bad",
    [
        {"threshold": 0},
        {"threshold": 256},
        {"min_area": 1.5},
        {"min_frames": 0},
        {"detect_fps": 0.0},
        {"zones": (((0.0, 0.0), (1.0, 1.0)),)},
        {"masks": (((0.0, 0.0), (1.0, float("nan")), (0.5, 0.5)),)},
    ],
)
def test_rejects_unusable_params(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        detector(**bad)


# --------------------------------------------------------------------------- stages


@pytest.mark.parametrize(
    ("min_frames", "actives", "expected"),
    [
        # 5 fps: hold 1 s = 5 quiet frames after the last active one still report motion.
        (2, "1101111000000", "0111111111100"),
        (1, "100000000", "111110000"),
        (3, "110111000000011", "000001111100000"),
    ],
)
def test_hysteresis(min_frames: int, actives: str, expected: str) -> None:
    hyst = Hysteresis(min_frames, hold_s=1.0)
    got = "".join(str(int(hyst.update(a == "1", i / 5.0))) for i, a in enumerate(actives))
    assert got == expected


def test_hysteresis_ends_hold_when_time_goes_backwards() -> None:
    hyst = Hysteresis(1, hold_s=1.0)
    assert hyst.update(True, 100.0)
    assert not hyst.update(False, 0.2)  # the stream restarted at t=0


def test_rasterized_zones_and_masks() -> None:
    zone = ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0))
    mask = ((0.0, 0.0), (0.25, 0.0), (0.25, 1.0), (0.0, 1.0))
    assert int(np.count_nonzero(rasterize_polygons([zone], 320, 180))) == pytest.approx(160 * 180, rel=0.02)
    watch = build_watch_masks([zone], [mask], 320, 180)
    assert watch.watched_px == pytest.approx(80 * 180, rel=0.03)
    assert watch.valid_px == pytest.approx(240 * 180, rel=0.02)
    assert not watch.whole_frame
    assert watch.watched[90, 120] == 255 and watch.watched[90, 40] == 0 and watch.watched[90, 200] == 0
    plain = build_watch_masks([], [], 64, 36)
    assert plain.whole_frame and plain.watched_px == plain.valid_px == 64 * 36


def test_fit_global_change_recovers_gain_and_offset_despite_outliers() -> None:
    rng = np.random.default_rng(0)
    ref = rng.uniform(20, 180, 3000).astype(np.float32)
    cur = ref * 1.3 - 10 + rng.normal(0, 1.5, ref.size).astype(np.float32)
    cur[:900] = rng.uniform(0, 255, 900)  # 30 % of the picture is something else
    fit = fit_global_change(ref, cur, tolerance=25.0)
    assert fit.gain == pytest.approx(1.3, abs=0.02)
    assert fit.offset == pytest.approx(-10, abs=2.0)
    assert 0.65 < fit.inliers < 0.8
    same = fit_global_change(ref, ref, tolerance=25.0)
    assert (same.gain, same.offset, same.inliers, same.shift) == (1.0, 0.0, 1.0, 0.0)


def test_extract_boxes_largest_first_and_capped() -> None:
    mask = np.zeros((100, 200), np.uint8)
    mask[10:20, 10:30] = 255  # 20x10
    mask[50:90, 100:150] = 255  # 50x40
    mask[5:8, 190:193] = 255  # 3x3
    assert extract_boxes(mask, 8) == ((0.5, 0.5, 0.25, 0.4), (0.05, 0.1, 0.1, 0.1), (0.95, 0.05, 0.015, 0.03))
    assert len(extract_boxes(mask, 2)) == 2
    assert extract_boxes(np.zeros((10, 10), np.uint8), 8) == ()
