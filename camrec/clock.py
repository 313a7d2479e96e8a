"""The injected clock: every stage that stamps or compares times takes one, so tests can step it.

A foundation module (stdlib only): sources stamp packets with it, the store's camrec time and the
recorder read it, and none of them needs the others for it.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Injected time source. `monotonic` orders events; `time` is UTC wall time (epoch seconds)."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


def wall_of(clock: Clock, monotonic_t: float) -> float:
    """UTC epoch seconds of an earlier `clock.monotonic()` reading."""
    return clock.time() - (clock.monotonic() - monotonic_t)
