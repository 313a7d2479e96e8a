"""Perturbed copies of the labelled footage: `camrec bench motion --perturb NAME,...`.

The shared sequences contain few of the distractors a home camera meets, so the benchmark can
add them, deterministically (fixed seeds), to the grey frames the detector sees, keeping the
labels: whatever a perturbation adds is not motion. They stand for what was not in the footage,
not for any real camera; each is strong on purpose.

- ``noise``: Gaussian sensor noise, sigma 10 luma per pixel and frame (night gain).
- ``flicker``: the whole picture's gain swings ±12 % at 1.3 Hz (mains beat, PWM lighting).
- ``drift``: the gain falls steadily to 45 % over the sequence (dusk, clouds).
- ``jitter``: the picture shifts by up to ±2 px (at 320 px wide) every frame (a shaky mount).
- ``rain``: short bright streaks at random places every frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cv2
import numpy as np

Perturb = Callable[[np.ndarray, int, int, np.random.Generator], np.ndarray]


def _noise(frame: np.ndarray, i: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(frame + rng.normal(0.0, 10.0, frame.shape), 0, 255).astype(np.uint8)


def _flicker(frame: np.ndarray, i: int, n: int, rng: np.random.Generator) -> np.ndarray:
    gain = 1.0 + 0.12 * np.sin(2 * np.pi * 1.3 * i / 15.0)
    return np.clip(frame.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _drift(frame: np.ndarray, i: int, n: int, rng: np.random.Generator) -> np.ndarray:
    gain = 1.0 - 0.55 * i / max(1, n - 1)
    return np.clip(frame.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _jitter(frame: np.ndarray, i: int, n: int, rng: np.random.Generator) -> np.ndarray:
    h, w = frame.shape
    dx, dy = rng.uniform(-2.0, 2.0, 2) * w / 320
    shift = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    moved: np.ndarray = cv2.warpAffine(frame, shift, (w, h), borderMode=cv2.BORDER_REPLICATE)
    return moved


def _rain(frame: np.ndarray, i: int, n: int, rng: np.random.Generator) -> np.ndarray:
    h, w = frame.shape
    scale = w / 320
    out = frame.copy()
    for _ in range(int(60 * scale * scale)):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        length = int(rng.integers(4, 12) * scale)
        cv2.line(out, (x, y), (x + 1, y + length), int(rng.integers(180, 256)), 1)
    return out


PERTURBATIONS: dict[str, Perturb] = {
    "noise": _noise, "flicker": _flicker, "drift": _drift, "jitter": _jitter, "rain": _rain,
}


def perturbed(frames: list[np.ndarray], name: str, seed: int = 1) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    fn = PERTURBATIONS[name]
    for i, frame in enumerate(frames):
        yield fn(frame, i, len(frames), rng)
