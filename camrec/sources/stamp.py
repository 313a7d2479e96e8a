"""A wall-clock time drawn into the picture, readable back after lossy encoding: glass-to-glass latency.

The synthetic camera (``stamp=1``) draws its capture time; a viewer (a Python test on decoded frames,
or the browser from a canvas) reads it back and subtracts it from its own clock.

Layout (the JS reader in the front end implements the same):
- `BLOCKS` = 48 square blocks in one row at the top left of the frame, block side
  ``block_size(width) = max(8, (width // 48) // 8 * 8)`` pixels (8 px at 640 wide, 40 px at 1920);
  the row spans rows 0..side-1 and columns 0..48*side-1.
- A block is white (luma 235) for bit 1 and black (luma 16) for bit 0. Read each block's luma
  (or the mean of R, G, B on a canvas) over its centre half and compare with 128.
- Blocks 0–3: start marker 1, 0, 1, 1. Blocks 4–43: the capture time in integer milliseconds
  since the Unix epoch, modulo 2**40, most significant bit first. Block 44: even parity (the data
  bits plus this bit hold an even number of ones). Blocks 45–47: end marker 0, 1, 0.
- A reader that finds a wrong marker or parity has no stamp (a frame without one, or one too
  damaged): it must not guess. 2**40 ms is about 34.8 years, so modulo arithmetic only matters
  when comparing with a clock: `(now_ms - stamp) mod 2**40`.
"""

from __future__ import annotations

import numpy as np

BLOCKS = 48
DATA_BITS = 40
START = (1, 0, 1, 1)
END = (0, 1, 0)
WHITE, BLACK = 235, 16
MODULUS = 1 << DATA_BITS


def block_size(width: int) -> int:
    return max(8, (width // BLOCKS) // 8 * 8)


def stamp_bits(ms: int) -> list[int]:
    value = ms % MODULUS
    data = [(value >> (DATA_BITS - 1 - i)) & 1 for i in range(DATA_BITS)]
    return [*START, *data, sum(data) % 2, *END]


def draw_stamp(luma: np.ndarray, ms: int) -> None:
    """Draws the stamp of `ms` into a luma plane (uint8 or int16, height × width) in place."""
    height, width = luma.shape
    side = block_size(width)
    if BLOCKS * side > width or side > height:
        raise ValueError(f"a {width}x{height} frame is too small for the time stamp")
    for i, bit in enumerate(stamp_bits(ms)):
        luma[0:side, i * side:(i + 1) * side] = WHITE if bit else BLACK


def read_stamp(luma: np.ndarray) -> int | None:
    """The stamped milliseconds (mod 2**40) of a luma plane, or None when there is no valid stamp."""
    if luma.ndim != 2:
        raise ValueError("read_stamp needs a 2-D luma plane")
    height, width = luma.shape
    side = block_size(width)
    if BLOCKS * side > width or side > height:
        return None
    q = side // 4
    band = luma[q:side - q, : BLOCKS * side].astype(np.float32)
    means = band.reshape(band.shape[0], BLOCKS, side)[:, :, q:side - q].mean(axis=(0, 2))
    bits = [int(m >= 128) for m in means]
    if tuple(bits[:4]) != START or tuple(bits[45:]) != END:
        return None
    data = bits[4:4 + DATA_BITS]
    if sum(data) % 2 != bits[44]:
        return None
    value = 0
    for bit in data:
        value = (value << 1) | bit
    return value
