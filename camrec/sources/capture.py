"""The capture loop: one thread per camera stream, reconnecting with capped exponential backoff.

It is the one publisher of its stream's `PacketHub`: every connection starts a stream in the hub,
every packet is published there, and every disconnect ends the stream there; the recorder, the
detector and anyone else subscribe to the hub, never to the camera.

A live camera never "ends": end of stream, a read timeout (frozen camera) and I/O errors are all
treated as a disconnect. Errors are logged once per change of condition, not once per retry, so a
camera that is off for a night doesn't flood the journal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from camrec.errors import AuthError, SourceError
from camrec.redact import redact
from camrec.sources.base import Source, StreamInfo
from camrec.sources.hub import PacketHub

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.5
# Capped low on purpose: a camera that comes back must be recording again within ~3 s, and a
# refused connection costs nothing. A black-holed camera costs its open timeout per attempt anyway.
BACKOFF_MAX = 2.0
# A camera that refuses the credentials is asked again only after these waits (then every 10 min).
# Hikvision, Dahua and Reolink lock an account after about five failed logins, which also locks
# the owner's phone app: 11 tries in the first hour and 6 an hour after that stay well clear of
# it, and a password fixed on the camera side is still picked up within minutes.
AUTH_BACKOFF = (15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def auth_backoff(failures: int) -> float:
    """Seconds to wait after the `failures`-th refused login in a row (1-based)."""
    return AUTH_BACKOFF[min(failures, len(AUTH_BACKOFF)) - 1]


@dataclass
class CaptureStatus:
    """What `camrec status` and the logs show about one connection. Written by one thread only."""

    state: str = "starting"  # starting | connected | disconnected | stopped
    error: str | None = None
    stream: str | None = None
    connects: int = 0
    packets: int = 0
    last_packet: float | None = None  # camera clock (monotonic)
    connected_at: float | None = None  # wall clock of the current connection's open
    first_packet_at: float | None = None  # wall clock of the current connection's first packet
    last_progress: float = 0.0  # monotonic: the loop's last sign of life (attempt, packet, backoff)
    retry_at: float | None = None  # wall clock of the next connection attempt while waiting
    waiting_until: float = 0.0  # monotonic end of a deliberate wait (not a hang)


class Capture(threading.Thread):
    """Reads one camera URL forever, publishing its streams, packets and disconnects to `hub`."""

    def __init__(
        self,
        camera: str,
        role: str,
        make: Callable[[int], Source],
        hub: PacketHub,
        stop: threading.Event,
        stall_limit: float = 60.0,
    ) -> None:
        super().__init__(name=f"capture-{camera}-{role}", daemon=True)
        # Longer than any legitimate wait (open timeout + read timeouts + backoff): beyond it, the
        # thread is hung inside FFmpeg and only a restart of the process will free it.
        self.stall_limit = stall_limit
        self.camera = camera
        self.role = role
        self._make = make
        self.hub = hub
        self._stop_event = stop
        self.status = CaptureStatus(last_progress=time.monotonic())

    def run(self) -> None:
        backoff = BACKOFF_MIN
        generation = 0
        refused = 0  # refused logins in a row
        while not self._stop_event.is_set():
            generation += 1
            self.status.last_progress = time.monotonic()
            try:
                source = self._make(generation)
                info = source.open()
            except AuthError as exc:
                refused += 1
                self._report_failure(exc.message, auth_backoff(refused))
                self._wait(auth_backoff(refused))
                continue
            except SourceError as exc:
                refused = 0
                self._report_failure(exc.message, backoff)
                self._wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            except Exception:  # a bug or an FFmpeg surprise: log it once, keep the camera alive
                log.exception("%s: %s stream: unexpected error while connecting", self.camera, self.role)
                self._report_failure("unexpected error while connecting (see the log)", backoff)
                self._wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            refused = 0
            self._connected(info)
            try:
                reason = self._pump(source)
            except Exception:
                log.exception("%s: %s stream: unexpected error while reading", self.camera, self.role)
                reason = "unexpected error (see the log)"
            source.close()
            self.hub.end_stream(reason)
            if self._stop_event.is_set():
                break
            self.status.state = "disconnected"
            self.status.error = reason
            log.warning("%s: %s stream lost (%s); reconnecting", self.camera, self.role, reason)
            backoff = BACKOFF_MIN  # it worked a moment ago: try again at once, then back off
            self._wait(backoff)
        self.status.state = "stopped"

    def _wait(self, seconds: float) -> None:
        """Waits before the next attempt; a stop request ends the wait at once."""
        self.status.waiting_until = time.monotonic() + seconds
        self.status.retry_at = time.time() + seconds
        self._stop_event.wait(seconds)
        self.status.retry_at = None

    def _connected(self, info: StreamInfo) -> None:
        self.status.connects += 1
        self.status.state = "connected"
        self.status.error = None
        self.status.stream = info.describe()
        self.status.connected_at = time.time()
        self.status.retry_at = None
        self.status.first_packet_at = None
        log.info("%s: %s stream connected: %s", self.camera, self.role, info.describe())
        self.hub.start_stream(info)

    def _pump(self, source: Source) -> str:
        while not self._stop_event.is_set():
            try:
                packet = source.read()
            except SourceError as exc:
                return exc.message
            if packet is None:
                return "end of stream"
            self.status.packets += 1
            self.status.last_packet = packet.arrival
            self.status.last_progress = time.monotonic()
            if self.status.first_packet_at is None:
                self.status.first_packet_at = time.time()
            self.hub.publish(packet)
        return "stopping"

    def stuck(self, now: float) -> bool:
        # A long deliberate wait (a refused login backs off for minutes) is not a hang.
        since = max(self.status.last_progress, self.status.waiting_until)
        return self.is_alive() and now - since > self.stall_limit

    def _report_failure(self, message: str, retry_in: float) -> None:
        self.status.last_progress = time.monotonic()
        message = redact(message)
        if self.status.error != message:
            log.error("%s: %s stream: %s (next try in %.0f s)", self.camera, self.role, message, retry_in)
        elif retry_in > BACKOFF_MAX:  # slow retries are rare enough to log each one
            log.warning("%s: %s stream: still %s (next try in %.0f s)", self.camera, self.role, message, retry_in)
        self.status.state = "disconnected"
        self.status.error = message
