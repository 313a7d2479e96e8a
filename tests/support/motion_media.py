"""Small synthetic footage for the `camrec detect` and `camrec bench motion` tests (no tests here).

A textured scene with sensor noise and a bright textured block that crosses it during a known
window of frames; written as PNG images or as an H.264 file (PyAV/libx264, no B-frames), so the
tests never need the shared data set.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

W, H = 160, 120


def frames(count: int, window: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """``count`` grey frames; the block is in view for frame indices window[0] <= i < window[1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(50, 150, size=(H // 6 + 1, W // 6 + 1)).astype(np.float32)
    scene = np.repeat(np.repeat(coarse, 6, 0), 6, 1)[:H, :W]
    block = np.repeat(np.repeat(rng.integers(190, 250, size=(10, 5)).astype(np.float32), 4, 0), 4, 1)
    start, stop = window
    out = []
    for i in range(count):
        img = scene.copy()
        if start <= i < stop:
            x = 4 + (i - start) * (W - 28) // max(1, stop - start - 1)
            img[40:80, x : x + 20] = block
        img += rng.normal(0.0, 3.0, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def write_images(directory: Path, grays: list[np.ndarray], first_number: int = 1) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, g in enumerate(grays):
        cv2.imwrite(str(directory / f"in{i + first_number:06d}.png"), g)
    return directory


def write_h264(path: Path, grays: list[np.ndarray], fps: int = 15) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.codec_context.options = {"preset": "ultrafast", "bf": "0", "crf": "18", "threads": "1"}
        for i, g in enumerate(grays):
            frame = av.VideoFrame.from_ndarray(g, format="gray").reformat(format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
