"""Per-frame cost of the motion detector on synthetic frames: ``python3 -m camrec.motion.bench``.

Not a test (timings vary 2-6x between runs on shared machines, DESIGN.md §4); a quick way to
check that a change to the detector keeps it far below the decode cost. Frames are generated
up front so only ``MotionDetector.process`` is timed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np

from camrec.motion.detector import DefaultMotionParams, MotionDetector


def _frames(width: int, height: int, count: int, moving: bool, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cell = max(4, width // 40)
    coarse = rng.integers(60, 160, size=(height // cell + 1, width // cell + 1), dtype=np.uint8)
    scene = np.repeat(np.repeat(coarse, cell, 0), cell, 1)[:height, :width].astype(np.float32)
    bw, bh = width // 12, height // 4
    frames = []
    for i in range(count):
        img = scene + rng.normal(0.0, 5.0, scene.shape).astype(np.float32)
        if moving:
            x = (i * width // 60) % (width - bw)
            img[height // 3 : height // 3 + bh, x : x + bw] = 220.0
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def bench(width: int, height: int, count: int, moving: bool, zoned: bool) -> list[float]:
    params = DefaultMotionParams(
        detect_width=width,
        zones=(((0.0, 0.2), (1.0, 0.2), (1.0, 1.0), (0.0, 1.0)),) if zoned else (),
        masks=(((0.8, 0.0), (1.0, 0.0), (1.0, 0.3)),) if zoned else (),
    )
    det = MotionDetector(params)
    frames = _frames(width, height, count, moving)
    costs = []
    for i, frame in enumerate(frames):
        start = time.perf_counter()
        det.process(frame, i / params.detect_fps)
        costs.append(time.perf_counter() - start)
    return costs[5:]  # skip the first frames (seed, allocations, kernel caches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--threads", type=int, default=None, help="cv2.setNumThreads (default: OpenCV's)")
    args = parser.parse_args()
    if args.threads is not None:
        cv2.setNumThreads(args.threads)
    for width, height in ((640, 360), (320, 180)):
        for moving in (False, True):
            for zoned in (False, True):
                costs = bench(width, height, args.frames, moving, zoned)
                ms = sorted(c * 1000 for c in costs)
                print(
                    f"{width}x{height} {'moving' if moving else 'static'} "
                    f"{'zones+masks' if zoned else 'whole frame'}: "
                    f"median {statistics.median(ms):.3f} ms, p95 {ms[int(0.95 * len(ms))]:.3f} ms, "
                    f"mean {statistics.fmean(ms):.3f} ms"
                )


if __name__ == "__main__":
    main()
