"""camrec time: the clock retention ages clips by, which a stepped wall clock cannot move.

A Raspberry Pi has no battery clock and NTP on a LAN is unauthenticated, so the wall clock may
jump ahead (a review moved it 31 days forward and retention deleted every clip). camrec time
advances only with `Clock.monotonic()` while camrec runs. It continues from the largest value
recorded in the signed manifest (every entry carries it as `ct`, epoch seconds), and a new chain
starts it at the wall clock. At start-up it may catch up with the wall clock by at most
`TOLERANCE` (a reboot, a short power cut): a longer downtime does not age clips, because camrec
can't tell it from a clock stepped forward. While the daemon runs, a `clock` entry is written
at least every `TICK` seconds, so a restart loses no more than that. Trade-offs: docs/storage.md
"Retention and the clock".
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from camrec.clock import Clock

log = logging.getLogger(__name__)

TOLERANCE = 2 * 3600.0  # seconds the wall clock may be ahead of camrec time before it is suspect
TICK = 3600.0  # a `clock` entry at least this often while running


class CamrecTime:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.recorded: float | None = None  # largest `ct` in the chain (or legacy entry time)
        self._base: float | None = None
        self._mono0 = 0.0
        self._warned = False
        self.last_suspect: float | None = None  # what suspect() found last (for `camrec status`)

    def observe(self, ct: float) -> None:
        """A camrec time found in the chain (read at start-up, or appended by another writer)."""
        if self.recorded is None or ct > self.recorded:
            self.recorded = ct

    def start(self) -> None:
        wall = self.clock.time()
        last = self.recorded
        self._base = wall if last is None else max(last, min(wall, last + TOLERANCE))
        self._mono0 = self.clock.monotonic()
        if last is not None and wall - last > TOLERANCE:
            log.warning("the wall clock is %.0f s ahead of the last time camrec recorded: the recorder was "
                        "off that long, or the clock was stepped; clips are aged by camrec's own clock, "
                        "which counts only %.0f s of it", wall - last, self._base - last)
            self._warned = True

    def now(self) -> float:
        """Current camrec time: never behind anything recorded, never moved by the wall clock."""
        if self._base is None:
            self.start()
        assert self._base is not None
        t = self._base + (self.clock.monotonic() - self._mono0)
        return t if self.recorded is None else max(t, self.recorded)

    def wall_ahead(self) -> float:
        """Seconds the wall clock is ahead of camrec time (negative: behind)."""
        return self.clock.time() - self.now()

    def suspect(self) -> float | None:
        """The wall clock's lead over camrec time when it exceeds TOLERANCE (logged once), else None."""
        ahead = self.wall_ahead()
        self.last_suspect = ahead if ahead > TOLERANCE else None
        if ahead <= TOLERANCE:
            if self._warned:
                log.info("the wall clock agrees with camrec's clock again")
            self._warned = False
            return None
        if not self._warned:
            log.warning("the wall clock is %.0f s ahead of camrec's own clock (stepped forward?): clips are "
                        "aged by camrec's clock, so no clip is deleted early; `camrec status` shows clock_suspect",
                        ahead)
            self._warned = True
        return ahead


def entry_ct(entry: dict[str, Any]) -> float | None:
    """An entry's camrec time in seconds (`ct`, integer milliseconds), None when it has none."""
    ct = entry.get("ct")
    return ct / 1000 if isinstance(ct, int) and not isinstance(ct, bool) and ct >= 0 else None


def parse_utc(value: object) -> float | None:
    """Epoch seconds of a time string as utc_iso writes it; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None
