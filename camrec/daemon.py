"""The supervisor: one pipeline per camera, retention housekeeping, signals and systemd notify.

Threads, not asyncio: every stage is a blocking C call (demux, decode, encrypt, fsync) that releases
the GIL, so one thread per stage per camera is the simplest correct shape; queues connect them.

    capture(main) ──packets──▶ recorder ◀──motion── detection ◀──packets── capture(main or detect)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from camrec import sdnotify
from camrec.capture import Capture
from camrec.detection import DetectionWorker
from camrec.errors import CamrecError, StorageError
from camrec.recorder import Recorder
from camrec.sources import Clock, Source, SystemClock, make_source
from camrec.store.writer import Store

log = logging.getLogger(__name__)

# Retention runs this often (and at once when a recorder hits a storage error): a statvfs and an
# index query, cheap enough to keep the free-space floor tight while a disk fills.
HOUSEKEEPING_INTERVAL = 10.0
# How long shutdown waits for the recorders to close their clips (the unit's TimeoutStopSec is longer).
SHUTDOWN_SECONDS = 15.0


class CameraPipeline:
    """Capture → (detection) → recorder for one camera."""

    def __init__(self, name: str, cam: Any, store: Store, clock: Clock, stop: threading.Event) -> None:
        self.name = name
        self.recorder = Recorder(name, cam, store, clock)
        self.detector = DetectionWorker(name, cam.motion, self.recorder.put_motion, stop)

        def maker(url: str) -> Callable[[int], Source]:
            return lambda generation: make_source(
                url, transport=cam.rtsp_transport, open_timeout=cam.open_timeout,
                read_timeout=cam.read_timeout, generation=generation, clock=clock)

        def on_main(p: Any) -> None:
            self.recorder.put_packet(p)
            if not cam.detect_source:  # otherwise the sub-stream alone is decoded
                self.detector.packets.put(p)

        stall = cam.open_timeout + 3 * cam.read_timeout + 15.0
        self.captures = [Capture(name, "main", maker(cam.source), on_main, self.recorder.disconnected, stop,
                                 stall_limit=stall)]
        if cam.detect_source:
            self.captures.append(Capture(name, "detect", maker(cam.detect_source), self.detector.packets.put,
                                         lambda: None, stop, stall_limit=stall))

    def start(self) -> None:
        self.recorder.start()
        self.detector.start()
        for c in self.captures:
            c.start()

    def request_stop(self) -> None:
        """Asks the recorder to close its open clip and the detector to finish (no waiting)."""
        self.recorder.stop()
        self.detector.packets.put(None)

    def join(self, deadline: float) -> None:
        """Waits for the threads until the monotonic `deadline`; the recorder (the open clip) first."""
        for t in (self.recorder, self.detector, *self.captures):
            t.join(max(0.0, deadline - time.monotonic()))

    def dead_threads(self) -> list[str]:
        return [t.name for t in (self.recorder, self.detector, *self.captures) if not t.is_alive()]

    def stuck_threads(self, now: float) -> list[str]:
        stuck = [c.name for c in self.captures if c.stuck(now)]
        return [self.recorder.name, *stuck] if self.recorder.stuck(now) else stuck

    def status_line(self) -> str:
        main = self.captures[0].status
        state = "recording" if self.recorder.status.recording else main.state
        return f"{self.name}: {state}"

    def status(self, now_mono: float) -> dict[str, Any]:
        """What `camrec status` shows for this camera (plain data, nothing secret)."""
        rec = self.recorder.status
        streams = {}
        for c in self.captures:
            s = c.status
            streams[c.role] = {
                "state": s.state, "stream": s.stream, "error": s.error, "connects": s.connects,
                "packets": s.packets, "connected_at": s.connected_at, "first_packet_at": s.first_packet_at,
                "last_packet_age": None if s.last_packet is None else round(now_mono - s.last_packet, 3),
                "retry_at": s.retry_at,
            }
        return {
            "state": "recording" if rec.recording else self.captures[0].status.state,
            "recording": rec.recording, "clips_written": rec.clips_written, "last_clip": rec.last_clip,
            "storage_error": rec.storage_error, "streams": streams,
            "detector": {"frames_analysed": self.detector.frames_analysed,
                         "packets_dropped": self.detector.packets.dropped,
                         "decode_errors": self.detector.decode_errors},
        }


def status_path(storage: Path) -> Path:
    """Where the running daemon publishes its status: the systemd runtime directory (tmpfs) when
    there is one, so a status written every second never wears the SD card; else the storage dir."""
    runtime = os.environ.get("RUNTIME_DIRECTORY")
    if runtime:
        return Path(runtime.split(":")[0]) / "status.json"
    return storage / "status.json"


def find_status(storage: Path) -> Path:
    """The status `camrec status` should read: from a shell, the service's /run/camrec copy or a
    daemon started by hand (in the storage dir), whichever was written last."""
    candidates = [status_path(storage), storage / "status.json", Path("/run/camrec/status.json")]
    existing = [p for p in candidates if p.exists()]
    if not existing:
        return candidates[0]
    return max(existing, key=lambda p: p.stat().st_mtime)


class Daemon:
    def __init__(self, config: Any, clock: Clock | None = None) -> None:
        from camrec.crypto.keys import parse_recipient

        self.config = config
        self.clock = clock or SystemClock()
        self.stop_event = threading.Event()
        recipients = [parse_recipient(r) for r in config.recipients]
        st = config.storage
        self.store = Store(st.path, recipients, fsync_interval=st.fsync_interval, min_free=st.min_free,
                           clock=self.clock)
        self.pipelines = [CameraPipeline(name, cam, self.store, self.clock, self.stop_event)
                          for name, cam in config.cameras.items() if cam.enabled]
        self.status_file = status_path(st.path)
        self.storage_error: str | None = None
        self.started_at = time.time()

    def write_status(self, state: str = "running") -> None:
        if self.status_file.parent == self.store.root:
            try:
                self.store.check_mount()
            except StorageError:
                return  # the storage disk is gone: don't write into whatever is at its path now
        now = time.monotonic()
        doc = {"pid": os.getpid(), "state": state, "time": time.time(), "started_at": self.started_at,
               "storage": str(self.store.root), "storage_error": self.storage_error,
               "cameras": {p.name: p.status(now) for p in self.pipelines}}
        tmp = self.status_file.with_name(f".{self.status_file.name}.tmp")
        try:
            tmp.write_text(json.dumps(doc, indent=1))
            os.replace(tmp, self.status_file)
        except OSError as exc:  # status is a convenience; recording matters more
            log.debug("cannot write %s: %s", self.status_file, exc)

    def recover(self) -> dict[str, int]:
        # A long first retention run (months of clips) must not trip systemd's start timeout.
        last = [time.monotonic()]

        def still_starting() -> None:
            if time.monotonic() - last[0] > 5:
                sdnotify.extend_timeout(30)
                last[0] = time.monotonic()

        counts = self.store.reconcile()
        if any(counts.values()):
            log.info("start-up check: %s", ", ".join(f"{v} {k}" for k, v in counts.items() if v))
        self.housekeeping(progress=still_starting)
        return counts

    def housekeeping(self, progress: Callable[[], object] | None = None) -> None:
        st = self.config.storage
        try:
            self.store.check_mount()
            self.store.settle()
            deleted = self.store.apply_retention(retention_days=st.retention_days, max_size=st.max_size,
                                                 min_free=st.min_free, progress=progress)
        except StorageError as exc:
            if exc.message != self.storage_error:
                log.error("storage: %s", exc.message)
            self.storage_error = exc.message
            return
        if self.storage_error is not None:
            log.info("storage: healthy again")
            self.storage_error = None
        if deleted:
            log.info("retention: deleted %d clip(s), %d bytes", len(deleted), sum(r.size for r in deleted))

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: Any) -> None:
            log.info("received %s: closing clips and stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def run(self, duration: float | None = None) -> None:
        """Records until stopped (a signal, `stop_event`, or after `duration` seconds)."""
        self.recover()
        for p in self.pipelines:
            p.start()
        # READY only now: recovery (reconcile, retention) is done and every pipeline is running.
        sdnotify.ready(f"recording {len(self.pipelines)} camera(s)")
        watchdog = sdnotify.WatchdogTimer()
        unhealthy: list[str] = []
        status_text = ""
        log.info("recording %d camera(s) into %s", len(self.pipelines), self.store.root)
        started = time.monotonic()
        next_housekeeping = started + HOUSEKEEPING_INTERVAL
        try:
            while not self.stop_event.wait(0.5):
                now = time.monotonic()
                if duration is not None and now - started >= duration:
                    break
                dead = [name for p in self.pipelines for name in p.dead_threads()]
                if dead:
                    raise CamrecError(f"internal threads stopped unexpectedly: {', '.join(dead)}",
                                       hint="see the log above; the service manager will restart camrec")
                if now >= next_housekeeping or self.store.wants_housekeeping.is_set():
                    self.store.wants_housekeeping.clear()
                    # Deleting many clips can take long on an SD card: keep the watchdog fed meanwhile.
                    self.housekeeping(progress=None if unhealthy else watchdog.kick)
                    next_housekeeping = now + HOUSEKEEPING_INTERVAL
                stuck = [name for p in self.pipelines for name in p.stuck_threads(now)]
                if stuck != unhealthy:
                    if stuck:
                        log.error("hung: %s; watchdog pings stop, so systemd restarts camrec", ", ".join(stuck))
                    else:
                        log.info("all threads are making progress again")
                    unhealthy = stuck
                if not stuck:
                    watchdog.kick(now)  # only while every stage makes progress
                text = "; ".join(p.status_line() for p in self.pipelines)
                if text != status_text:
                    sdnotify.status(text)
                    status_text = text
                self.write_status()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        sdnotify.stopping()
        self.stop_event.set()
        # All cameras close their clips in parallel: the stop must fit in systemd's TimeoutStopSec.
        for p in self.pipelines:
            p.request_stop()
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        for p in self.pipelines:
            p.join(deadline)
        self.write_status("stopped")
        self.store.close()
        log.info("stopped")
