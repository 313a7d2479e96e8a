"""Motion detector tests on synthetic numpy frames (no files, no clocks).

Scenes are coarse random textures (8x8 cells, so they survive the detector's blur) plus
per-frame Gaussian sensor noise; "objects" are brighter textured blocks. Times are frame
index / fps, as the recorder would pass stream time.

The detector learns for ``warmup_s`` (2 s, 10 frames at 5 fps) before it reports, so objects
appear after that. A new object counts from its second frame (it must persist: rain does not),
so motion turns on ``min_frames`` frames after it appears at the daemon's 5 fps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import pytest

from camrec.motion.detector import DefaultMotionParams, MotionDetector, MotionResult, MotionTuning
from camrec.motion.stages import (
    Blobs,
    Hysteresis,
    blobs_touching,
    build_watch_masks,
    extract_boxes,
    fit_gain_surface,
    fit_global_change,
    rasterize_polygons,
)

H, W = 180, 320
FPS = 5.0
TUNING = MotionTuning()
HOLD_S = TUNING.hold_s
WARM = round(TUNING.warmup_s * FPS)  # frames of warm-up at 5 fps
MIN_FRAMES = DefaultMotionParams().min_frames
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


def test_nothing_is_reported_while_warming_up() -> None:
    # A person already walking when the camera connects: the detector learns first.
    results = run(detector(), 30, scene(), person(), walk(2, 30, 20, 60, 8))
    assert not any(r.motion for r in results[:WARM])
    assert any(r.motion for r in results[WARM:])


def test_moving_block_starts_within_min_frames_and_ends_within_hold() -> None:
    appear, leave = 15, 45
    obj = person()
    path = walk(appear, leave, 20, 60, 8)
    results = run(detector(), 75, scene(), obj, path)

    assert len(events(results)) == 1
    first_on, last_on = events(results)[0]
    assert first_on == appear + MIN_FRAMES  # one frame to persist, then min_frames
    leave_t = leave / FPS
    assert leave_t <= results[last_on].t < leave_t + HOLD_S
    assert not any(r.motion for r in results if r.t >= leave_t + HOLD_S)
    for i in range(appear + 1, leave):
        pos = path(i)
        assert pos is not None
        truth = (pos[0] / W, pos[1] / H, obj.shape[1] / W, obj.shape[0] / H)
        assert results[i].boxes, f"frame {i}: no boxes"
        assert iou(results[i].boxes[0], truth) > 0.5, (i, results[i].boxes[0], truth)
        assert 0.8 < results[i].score * W * H / obj.size < 1.5  # score ≈ the block's area


@pytest.mark.parametrize(("side", "expect_motion"), [(6, False), (16, True)])
def test_min_area_decides_small_blocks(side: int, expect_motion: bool) -> None:
    det = detector()  # min_area 0.002 of 320x180 = 115 px: 6x6 is below, 16x16 above
    results = run(det, 50, scene(), person(side, side), walk(15, 45, 40, 80, 5))
    assert any(r.motion for r in results) is expect_motion
    seen = [r.score for r in results[16:45]]
    assert min(seen) > 0.0  # the small block was seen every frame, just not big enough
    assert (max(seen) >= 0.002) is expect_motion


def test_motion_only_inside_a_mask_is_ignored() -> None:
    right_half = ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0))
    path = walk(15, 45, 180, 60, 3)  # stays within x 180..291
    masked = run(detector(masks=(right_half,)), 55, scene(), person(), path)
    assert not any(r.motion for r in masked)
    assert all(r.score == 0.0 and r.boxes == () for r in masked)
    control = run(detector(), 55, scene(), person(), path)
    assert any(r.motion for r in control)


def test_zone_counts_only_motion_inside_it() -> None:
    left_half = ((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0))
    outside = run(detector(zones=(left_half,)), 55, scene(), person(), walk(15, 45, 180, 60, 3))
    assert not any(r.motion for r in outside)
    inside = run(detector(zones=(left_half,)), 55, scene(), person(), walk(15, 45, 10, 60, 3))
    assert any(r.motion for r in inside)
    for r in inside:
        for x, _y, w, _h in r.boxes:
            assert x + w <= 0.5 + 1 / W  # boxes are clipped to the zone


def test_min_area_is_relative_to_the_watched_area() -> None:
    # A 10x10 block is ~0.17 % of the frame: below min_area 0.4 % of the whole frame, but
    # ~0.7 % of a zone covering a quarter of it.
    quarter = ((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.0, 0.5))
    path = walk(15, 45, 20, 30, 2)
    whole = run(detector(min_area=0.004), 55, scene(), person(10, 10), path)
    zoned = run(detector(min_area=0.004, zones=(quarter,)), 55, scene(), person(10, 10), path)
    assert not any(r.motion for r in whole)
    assert any(r.motion for r in zoned)
    ratio = max(r.score for r in zoned) / max(r.score for r in whole)
    assert ratio == pytest.approx(4.0, rel=0.1)


@pytest.mark.parametrize("fps", [5.0, 15.0])
def test_decisions_are_the_same_at_any_frame_rate(fps: float) -> None:
    # Times are in seconds: a walker from 4 s to 8 s is reported from ~4.4 s to within the
    # hold after 8 s, whether the detector sees 5 or 15 frames a second.
    det = detector()
    n = int(11 * fps)
    results = run(det, n, scene(), person(), lambda i: (20 + int(30 * i / fps), 60) if 4 <= i / fps < 8 else None,
                  fps=fps)
    (first_on, last_on), = events(results)
    assert 4.0 < results[first_on].t <= 4.0 + 0.45
    assert 8.0 <= results[last_on].t < 8.0 + HOLD_S


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
    assert appear <= first_on <= appear + MIN_FRAMES


def test_exposure_ramp_over_a_second_is_not_motion() -> None:
    # Auto-exposure: +70 luma spread over 5 frames. Each step is small enough to be compensated
    # silently or flagged; none may become motion.
    before = scene()
    results = run(detector(), 40, lambda i: before + 14 * min(max(i - 15, 0), 5))
    assert not any(r.motion for r in results)
    assert max(r.score for r in results) < DefaultMotionParams().min_area


def test_person_walking_through_an_exposure_ramp_is_still_seen() -> None:
    # The light changes while someone is in view: compensation keeps detecting them.
    before = scene()
    results = run(detector(), 45, lambda i: before * (1.0 + 0.04 * min(max(i - 20, 0), 8)), person(),
                  walk(15, 45, 20, 60, 6))
    assert all(r.motion for r in results[18:45])


def test_constant_flicker_is_compensated_not_relearnt() -> None:
    # Mains or PWM flicker beating with the frame rate: the brightness swings by ±12 % all the
    # time. It must neither count as motion nor blind the detector.
    base = scene()
    flicker = lambda i: base * (1.0 + 0.12 * np.sin(i * 1.7))  # noqa: E731
    results = run(detector(), 80, flicker, person(), walk(50, 80, 20, 60, 6))
    assert not any(r.motion for r in results[:50])
    assert all(r.motion for r in results[53:80])


def test_unexplained_global_change_reseeds() -> None:
    # A bumped camera or an IR cut-over that rearranges contrast: no single gain/offset explains
    # it, but most of the picture changed at once.
    a, b = scene(seed=0), scene(seed=5)
    results = run(detector(), 40, lambda i: a if i < 20 else b)
    assert results[20].lighting_change
    assert [i for i, r in enumerate(results) if r.lighting_change] == [20]
    assert not any(r.motion for r in results)


def test_light_switched_off_and_on_again_recalls_the_lit_room() -> None:
    # A room lit for a while, lights off (the picture goes dark; a screen keeps its brightness),
    # lights on again while someone stands in the room. The lit background is remembered, so
    # the person is foreground at once instead of being learnt into a new background.
    lit = scene(lo=80, hi=200)
    dark = lit * 0.15
    dark[20:50, 200:250] = 230.0  # a monitor: self-lit, not dimmed
    lit_monitor = lit.copy()
    lit_monitor[20:50, 200:250] = 230.0
    off, on = 40, 90

    def bg(i: int) -> np.ndarray:
        return lit_monitor if i < off or i >= on else dark

    def path(i: int) -> Pos:
        return (40 + 4 * (i - on + 3), 70) if on - 3 <= i < on + 25 else None

    results = run(detector(), on + 35, bg, person(), path)
    assert not any(r.motion for r in results[: on - 3]), "lights off or the monitor were taken for motion"
    assert any(r.lighting_change for r in results[off : off + 3])
    assert any(r.motion for r in results[on : on + 5]), "the person was not seen right after the light came on"


def test_close_person_filling_a_third_of_the_view_is_motion() -> None:
    # As much change as the unexplained-lighting case above, but compact: still motion.
    results = run(detector(), 40, scene(), person(150, 110), walk(15, 35, 0, 15, 8))
    assert not any(r.lighting_change for r in results)
    assert events(results)[0][0] == 15 + MIN_FRAMES
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


# --------------------------------------------------------------------------- distractors


def test_swaying_vegetation_raises_its_own_threshold() -> None:
    # The top-left quarter is "leaves": a texture that moves to a new random place every frame
    # (every pixel flips between leaf and sky). It never counts; a person elsewhere does.
    rng = np.random.default_rng(11)
    leaves = [texture(rng, 90, 160, 30, 230, 6) for _ in range(7)]

    def bg(i: int) -> np.ndarray:
        img = scene().copy()
        img[:90, :160] = leaves[i % 7]
        return img

    results = run(detector(), 120, bg, person(), walk(90, 120, 170, 100, 4))
    assert not any(r.motion for r in results[:90])
    assert any(r.motion for r in results[92:120])


@pytest.mark.parametrize(("drops", "width"), [(20, 2), (40, 1)])
def test_rain_streaks_do_not_persist_and_are_not_motion(drops: int, width: int) -> None:
    # Bright streaks at new random places every frame (rain or snow in the IR light). Each one is
    # a speck that does not persist; a person walking through the rain does.
    rng = np.random.default_rng(5)
    base = scene()

    def rainy(i: int) -> np.ndarray:
        img = base.copy()
        for _ in range(drops):
            x, y = int(rng.integers(0, W - 2)), int(rng.integers(0, H - 12))
            img[y : y + 10, x : x + width] = 250.0
        return img

    results = run(detector(), 90, rainy, person(), walk(60, 90, 20, 60, 6))
    assert not any(r.motion for r in results[:60])
    assert any(r.motion for r in results[62:90])


def test_camera_shake_of_a_pixel_is_not_motion() -> None:
    rng = np.random.default_rng(9)
    big = scene(h=H + 4, w=W + 4)

    def shaken(i: int) -> np.ndarray:
        dx, dy = (int(v) for v in rng.integers(0, 3, 2))
        return big[1 + dy : 1 + dy + H, 1 + dx : 1 + dx + W]

    results = run(detector(), 80, shaken)
    assert not any(r.motion for r in results)


# --------------------------------------------------------------------------- background model


def test_brief_pause_stays_one_event() -> None:
    # Walks for 2 s, stands perfectly still for 1 s, walks on for 2 s, leaves.
    def path(i: int) -> Pos:
        if i < 15 or i >= 40:
            return None
        x = 20 + 8 * min(i - 15, 10) + 8 * max(i - 30, 0)
        return (x, 60)

    results = run(detector(), 55, scene(), person(), path)
    spans = events(results)
    assert len(spans) == 1
    assert spans[0][0] == 15 + MIN_FRAMES
    assert spans[0][1] >= 39


def test_long_stillness_ends_the_event_and_moving_again_restarts_it() -> None:
    # Stock-still for 5 s: nothing moves, so no motion (the clip's post_roll covers it); as soon
    # as the person moves again it is motion again, and the person was not absorbed meanwhile.
    def path(i: int) -> Pos:
        if i < 15:
            return None
        x = 20 + 8 * min(i - 15, 10) + 8 * max(i - 50, 0)
        return (x, 60)

    results = run(detector(), 65, scene(), person(), path)
    spans = events(results)
    assert len(spans) == 2
    assert spans[0][1] < 35  # ended during the stillness (motion memory + hold)
    assert 50 <= spans[1][0] <= 50 + MIN_FRAMES


@pytest.mark.parametrize("fps", [2.0, 10.0])
def test_parked_object_stops_being_motion_once_it_stops(fps: float) -> None:
    # An object arrives and stays (a parked car, a moved chair). It is motion while it moves in,
    # then not: the present-but-still region does not count, whatever its age.
    det = detector(detect_fps=fps)
    arrive = int(4 * fps)
    stop = arrive + int(2 * fps)

    def path(i: int) -> Pos:
        return None if i < arrive else (20 + 100 * min(i - arrive, stop - arrive) // (stop - arrive), 60)

    results = run(det, int(20 * fps), scene(), person(), path, fps=fps)
    (first_on, last_on), = events(results)
    assert results[first_on].t < stop / fps
    assert results[last_on].t <= stop / fps + TUNING.motion_memory_s + HOLD_S + 1 / fps
    # Someone walking past the parked object later is seen.
    later = run(det, int(4 * fps), scene(), person(), lambda i: (20 + int(30 * i / fps), 110), fps=fps)
    assert any(r.motion for r in later)


def test_ghost_of_a_person_in_the_first_frame_is_not_motion() -> None:
    # The background is learnt with a person standing in it; they stay for the warm-up, then
    # walk off. Walking off is motion; the empty spot they leave (a "ghost") is not, for long.
    def path(i: int) -> Pos:
        return (100, 60) if i < 15 else ((100 + 8 * (i - 15), 60) if i < 40 else None)

    results = run(detector(), 80, scene(), person(), path)
    (first_on, last_on), = events(results)
    assert first_on <= 15 + MIN_FRAMES + 1
    assert results[last_on].t <= 40 / FPS + TUNING.motion_memory_s + HOLD_S + 0.2


# --------------------------------------------------------------------------- lifecycle


def test_size_change_reinitialises() -> None:
    det = detector()
    small = run(det, 20, scene())
    assert not any(r.motion for r in small)
    rng = np.random.default_rng(1)
    big_scene = scene(h=360, w=640)
    first_big = det.process(render(big_scene, None, None, rng), 20 / FPS)
    assert first_big == MotionResult(20 / FPS, 0.0, False, (), False)
    obj = person(100, 48)
    results = [det.process(render(big_scene, obj if i >= 12 else None, (40 + 12 * i, 120), rng), (21 + i) / FPS)
               for i in range(22)]
    assert [r.motion for r in results][12:] == [False, False] + [True] * 8
    for r in results:
        for box in r.boxes:
            assert all(0.0 <= v <= 1.0 for v in box)
    # Frames wider than work_width are analysed scaled down.
    assert det.foreground is not None and det.foreground.shape == (180, 320)


def test_reset_forgets_background_and_state() -> None:
    det = detector()
    results = run(det, 30, scene(), person(), walk(15, 30, 20, 60, 8))
    assert results[-1].motion
    det.reset()
    rng = np.random.default_rng(2)
    after = det.process(render(scene(), person(), (200, 60), rng), 6.0)
    assert after == MotionResult(6.0, 0.0, False, (), False)
    quiet = det.process(render(scene(), person(), (200, 60), rng), 6.2)
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
    hyst = Hysteresis(min_frames, hold_s=1.0, frame_s=0.2)
    got = "".join(str(int(hyst.update(a == "1", i / 5.0))) for i, a in enumerate(actives))
    assert got == expected


def test_hysteresis_counts_min_frames_in_time_at_a_faster_rate() -> None:
    # min_frames 2 at detect_fps 5 means "lasted about 0.2 s": at 15 fps that is the 3rd frame.
    hyst = Hysteresis(2, hold_s=1.0, frame_s=0.2)
    got = [hyst.update(True, i / 15.0) for i in range(4)]
    assert got == [False, False, True, True]


def test_hysteresis_ends_hold_when_time_goes_backwards() -> None:
    hyst = Hysteresis(1, hold_s=1.0, frame_s=0.2)
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


def test_fit_global_change_does_not_let_a_dark_picture_vouch_for_any_gain() -> None:
    # Both pictures nearly black: nothing says anything about a gain.
    rng = np.random.default_rng(1)
    dark = rng.uniform(0, 3.5, 2000).astype(np.float32)
    fit = fit_global_change(dark, dark * 2.0, tolerance=25.0)
    assert (fit.gain, fit.offset) == (1.0, 0.0)
    # A light switched on in a dark room is a large ratio even if the offset looks small.
    room = rng.uniform(10, 30, 2000).astype(np.float32)
    on = fit_global_change(room, room + 45.0, tolerance=25.0)
    assert on.log_ratio > 0.69


def test_fit_gain_surface_follows_a_lamp_on_one_side() -> None:
    rng = np.random.default_rng(2)
    xy = rng.uniform(-1, 1, (2000, 2))
    ref = rng.uniform(40, 160, 2000).astype(np.float32)
    gain = 1.0 + 0.5 * (xy[:, 0] + 1)  # brighter towards the right
    cur = (ref * gain).astype(np.float32)
    cur[:300] = 20.0  # a dark object in front
    surface = fit_gain_surface(ref, cur, xy, tolerance=25.0)
    assert surface is not None
    assert surface.inliers > 0.8
    assert np.allclose(surface.gains(np.array([[-1.0, 0.0], [1.0, 0.0]])), [1.0, 2.0], atol=0.05)


def test_extract_boxes_largest_first_capped_and_merged() -> None:
    mask = np.zeros((100, 200), np.uint8)
    mask[10:20, 10:30] = 255  # 20x10
    mask[50:90, 100:150] = 255  # 50x40
    mask[5:8, 190:193] = 255  # 3x3
    assert extract_boxes(mask, 8) == ((0.5, 0.5, 0.25, 0.4), (0.05, 0.1, 0.1, 0.1), (0.95, 0.05, 0.015, 0.03))
    assert len(extract_boxes(mask, 2)) == 2
    assert extract_boxes(np.zeros((10, 10), np.uint8), 8) == ()
    # Head and body of one person, 3 px apart, are one box when merging within 4 px.
    person_parts = np.zeros((100, 200), np.uint8)
    person_parts[10:20, 50:60] = 255
    person_parts[23:60, 45:65] = 255
    assert extract_boxes(person_parts, 8, merge_px=4) == ((45 / 200, 0.1, 0.1, 0.5),)


def test_blobs_select_whole_regions_by_seed() -> None:
    mask = np.zeros((40, 80), np.uint8)
    mask[4:20, 4:20] = 255
    mask[24:36, 40:76] = 255
    seed = np.zeros_like(mask)
    seed[30, 70] = 255  # one pixel of the second region
    grown = blobs_touching(seed, mask, 4)
    assert np.array_equal(grown > 0, (mask > 0) & (np.arange(80)[None, :] >= 40))
    blobs = Blobs(mask, 4)
    assert blobs.count == 3  # background label + two regions
    assert not blobs.paint(np.zeros(blobs.count, bool)).any()
