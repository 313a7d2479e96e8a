"""The capture loop: one thread per camera connection, reconnecting with capped exponential backoff.

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

from camrec.errors import SourceError
from camrec.redact import redact
from camrec.sources import MediaPacket, Source, StreamInfo

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.5
# Capped low on purpose: a camera that comes back must be recording again within ~3 s, and a
# refused connection costs nothing. A black-holed camera costs its open timeout per attempt anyway.
BACKOFF_MAX = 2.0


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


class Capture(threading.Thread):
    """Reads one camera URL forever, handing packets to `on_packet` and stream ends to `on_disconnect`."""

    def __init__(
        self,
        camera: str,
        role: str,
        make: Callable[[int], Source],
        on_packet: Callable[[MediaPacket], None],
        on_disconnect: Callable[[], None],
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
        self._on_packet = on_packet
        self._on_disconnect = on_disconnect
        self._stop_event = stop
        self.status = CaptureStatus(last_progress=time.monotonic())

    def run(self) -> None:
        backoff = BACKOFF_MIN
        generation = 0
        while not self._stop_event.is_set():
            generation += 1
            self.status.last_progress = time.monotonic()
            try:
                source = self._make(generation)
                info = source.open()
            except SourceError as exc:
                self._report_failure(exc.message)
                self._stop_event.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            except Exception:  # a bug or an FFmpeg surprise: log it once, keep the camera alive
                log.exception("%s: %s stream: unexpected error while connecting", self.camera, self.role)
                self._report_failure("unexpected error while connecting (see the log)")
                self._stop_event.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self._connected(info)
            try:
                reason = self._pump(source)
            except Exception:
                log.exception("%s: %s stream: unexpected error while reading", self.camera, self.role)
                reason = "unexpected error (see the log)"
            source.close()
            self._on_disconnect()
            if self._stop_event.is_set():
                break
            self.status.state = "disconnected"
            self.status.error = reason
            log.warning("%s: %s stream lost (%s); reconnecting", self.camera, self.role, reason)
            backoff = BACKOFF_MIN  # it worked a moment ago: try again at once, then back off
            self._stop_event.wait(backoff)
        self.status.state = "stopped"

    def _connected(self, info: StreamInfo) -> None:
        self.status.connects += 1
        self.status.state = "connected"
        self.status.error = None
        self.status.stream = info.describe()
        self.status.connected_at = time.time()
        self.status.first_packet_at = None
        log.info("%s: %s stream connected: %s", self.camera, self.role, info.describe())

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
            self._on_packet(packet)
        return "stopping"

    def stuck(self, now: float) -> bool:
        return self.is_alive() and now - self.status.last_progress > self.stall_limit

    def _report_failure(self, message: str) -> None:
        self.status.last_progress = time.monotonic()
        message = redact(message)
        if self.status.error != message:
            log.error("%s: %s stream: %s (retrying with backoff up to %.0fs)",
                      self.camera, self.role, message, BACKOFF_MAX)
        self.status.state = "disconnected"
        self.status.error = message
