"""The supervisor: one pipeline per camera, retention housekeeping, signals and systemd notify.

Threads, not asyncio: every stage is a blocking C call (demux, decode, encrypt, fsync) that releases
the GIL, so one thread per stage per camera is the simplest correct shape; queues connect them.

    capture(main) ─▶ hub(main) ──push──▶ recorder ◀──motion── detection ◀──queue── hub(main or detect)
                        └──queue──▶ (later: live viewers, MQTT, metrics)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from camrec.errors import CamrecError, DiskFullError, StorageError
from camrec.motion.worker import DetectionWorker
from camrec.record.recorder import Recorder
from camrec.service import sdnotify
from camrec.sources import Clock, Source, SystemClock, make_source
from camrec.sources.capture import Capture
from camrec.sources.hub import PacketHub
from camrec.store.audit_log import StoreAuditLog
from camrec.store.lock import RecorderLock
from camrec.store.writer import Store

log = logging.getLogger(__name__)

# Retention runs this often (and at once when a recorder hits a storage error): a statvfs and an
# index query, cheap enough to keep the free-space floor tight while a disk fills.
HOUSEKEEPING_INTERVAL = 10.0
# How long shutdown waits for the recorders to close their clips (the unit's TimeoutStopSec is longer).
SHUTDOWN_SECONDS = 15.0
# A camera reported failing (recorder.failing) makes `camrec run` exit (StorageError, exit 9) this
# much later unless a clip gets through meanwhile. The watchdog pings stop at once, so this stays
# below the unit's WatchdogSec minus half of it: camrec stops cleanly before systemd's SIGABRT.
FAILING_EXIT_SECONDS = 10.0
# How often start-up retries the storage while the disk is too full to open the index.
STORAGE_WAIT_SECONDS = 5.0
# The status file is group-readable (the owner's `camrec status`), never world-readable.
STATUS_MODE = 0o640


class CameraPipeline:
    """Capture → hub → recorder and detection for one camera: one connection and one hub per stream."""

    def __init__(self, name: str, cam: Any, store: Store, clock: Clock, stop: threading.Event) -> None:
        self.name = name
        self.recorder = Recorder(name, cam, store, clock)
        self.detector = DetectionWorker(name, cam.motion, self.recorder.put_motion, stop)
        self.hubs = {"main": PacketHub(f"{name}/main")}
        if cam.detect_source:
            self.hubs["detect"] = PacketHub(f"{name}/detect")
        # The recorder in push mode: its own inbox is its queue, and no other subscriber can make
        # it lose a packet. The detector decodes the sub-stream when there is one, else the main one.
        self.hubs["main"].subscribe("recorder", start="next_keyframe", sink=self.recorder.on_hub_item,
                                    depth=self.recorder.inbox.qsize)
        self.detector.attach(self.hubs["detect"] if cam.detect_source else self.hubs["main"])

        def maker(url: str) -> Callable[[int], Source]:
            return lambda generation: make_source(
                url, transport=cam.rtsp_transport, open_timeout=cam.open_timeout,
                read_timeout=cam.read_timeout, generation=generation, clock=clock)

        stall = cam.open_timeout + 3 * cam.read_timeout + 15.0
        self.captures = [Capture(name, role, maker(cam.source if role == "main" else cam.detect_source), hub, stop,
                                 stall_limit=stall) for role, hub in self.hubs.items()]

    def start(self) -> None:
        self.recorder.start()
        self.detector.start()
        for c in self.captures:
            c.start()

    def request_stop(self) -> None:
        """Asks the recorder to close its open clip and the detector to finish (no waiting)."""
        self.recorder.stop()
        self.detector.stop()

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
        if self.recorder.status.failing:
            state = f"FAILING: {self.recorder.status.failing}"
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
        state = "recording" if rec.recording else self.captures[0].status.state
        return {
            "state": "failing" if rec.failing else state,
            "recording": rec.recording, "clips_written": rec.clips_written, "last_clip": rec.last_clip,
            "storage_error": rec.storage_error, "failing": rec.failing, "streams": streams,
            "detector": {"frames_analysed": self.detector.frames_analysed,
                         "packets_dropped": self.detector.packets_dropped,
                         "decode_errors": self.detector.decode_errors},
            "recorder_packets_dropped": rec.packets_dropped,
            # Per stream: each subscriber's queue depth, deliveries, drops and gaps.
            "hubs": {role: hub.stats() for role, hub in self.hubs.items()},
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


def publish_status(path: Path, doc: dict[str, Any]) -> None:
    """Replaces the status file with `doc`, never through a link and never half-written.

    The new text goes to a fresh temporary file (mkstemp: an unpredictable name, O_EXCL|O_NOFOLLOW)
    that is renamed over `path`; renaming replaces a planted symlink itself, not its target. If that
    fails (typically a full disk), the temporary file is removed and the old file is overwritten in
    place when the new text fits in its blocks (no new space needed), so `camrec status` still shows
    the current state and the error; failing that the old file is removed: a stale "recording"
    status is worse than none."""
    data = json.dumps(doc, indent=1).encode()
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, STATUS_MODE)  # exactly, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        log.debug("cannot write %s: %s", path, exc)
        error = f"cannot write {path}: {exc.strerror or exc}"
    compact = {**doc, "status_error": error}
    smaller = {**compact, "cameras": {n: {**c, "streams": {}} for n, c in doc.get("cameras", {}).items()}}
    for candidate in (compact, smaller):
        if _overwrite_in_place(path, json.dumps(candidate, separators=(",", ":")).encode()):
            return
    with contextlib.suppress(OSError):
        os.unlink(path)


def _overwrite_in_place(path: Path, data: bytes) -> bool:
    """Writes `data` over the start of the existing regular file `path` and cuts it there; only if
    it fits in the file's current size, so the write needs no free space. False if not done."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < len(data):
            return False
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class Daemon:
    def __init__(self, config: Any, clock: Clock | None = None) -> None:
        from camrec.crypto.keys import parse_recipient

        self.config = config
        self.clock = clock or SystemClock()
        self.stop_event = threading.Event()
        self.recipients = [parse_recipient(r) for r in config.recipients]
        self.storage_root: Path = config.storage.path
        self.store: Store | None = None
        self.lock = RecorderLock(self.storage_root)
        self.pipelines: list[CameraPipeline] = []
        self.status_file = status_path(self.storage_root)
        # The fixed temporary name older versions used (and left behind, empty, on a full disk).
        # Unlinking removes a file or a planted link itself, never what a link points to.
        with contextlib.suppress(OSError):
            self.status_file.with_name(f".{self.status_file.name}.tmp").unlink()
        self.storage_error: str | None = None
        self.started_at = time.time()
        self.ready_sent = False
        self.started = False  # the pipelines' threads
        self.web: Any = None  # camrec.web.server.WebServer while the web app runs
        self.audit_log: StoreAuditLog | None = None

    def open_store(self) -> Store:
        """Opens the store (retention first when the disk is too full for the index, see Store);
        other storage errors (an unwritable directory) raise at once."""
        st = self.config.storage
        store = Store(st.path, self.recipients, fsync_interval=st.fsync_interval, min_free=st.min_free,
                      clock=self.clock)
        self.store = store
        self.pipelines = [CameraPipeline(name, cam, store, self.clock, self.stop_event)
                          for name, cam in self.config.cameras.items() if cam.enabled]
        return store

    def wait_for_store(self, watchdog: sdnotify.WatchdogTimer, deadline: float | None) -> Store | None:
        """Start-up on a disk so full that even retention could not make room for the index: keep
        running, say why (status, `systemctl status`), and try again every few seconds: recording
        starts as soon as there is space. A restart would not help, so systemd is told READY and
        the watchdog is fed meanwhile. None if stopped while waiting."""
        next_try = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_try:
                try:
                    return self.open_store()
                except DiskFullError as exc:
                    if exc.message != self.storage_error:
                        log.error("storage: %s; recording starts as soon as there is space%s", exc.message,
                                  f" ({exc.hint})" if exc.hint else "")
                    self.storage_error = exc.message
                next_try = now + STORAGE_WAIT_SECONDS
                text = f"waiting for storage space: {self.storage_error}"
                if not self.ready_sent:
                    sdnotify.ready(text)
                    self.ready_sent = True
                sdnotify.status(text)
            watchdog.kick(now)  # at the main loop's pace, whatever WatchdogSec is
            self.write_status("running")
            if self.stop_event.wait(0.5) or (deadline is not None and time.monotonic() >= deadline):
                return None

    def write_status(self, state: str = "running") -> None:
        if self.status_file.parent == self.storage_root and self.store is not None:
            try:
                self.store.check_mount()
            except StorageError:
                return  # the storage disk is gone: don't write into whatever is at its path now
        publish_status(self.status_file, self.status_document(state))

    def status_document(self, state: str = "running") -> dict[str, Any]:
        """What `camrec status` and the web app's camera list show (plain data, nothing secret)."""
        now = time.monotonic()
        return {"pid": os.getpid(), "state": state, "time": time.time(), "started_at": self.started_at,
                "storage": str(self.storage_root), "storage_error": self.storage_error,
                # seconds the wall clock is ahead of camrec's own clock, when suspect (docs/storage.md)
                "clock_suspect": None if self.store is None else self.store.manifest.camtime.last_suspect,
                "cameras": {p.name: p.status(now) for p in self.pipelines}}

    def start_web(self, store: Store) -> None:
        """The owner's web app, once recording runs; it never stops recording (camrec.web.server.launch
        logs why it did not start). Imported here: nothing in the recording path imports camrec.web."""
        from camrec.web.server import launch

        settings = getattr(self.config, "web", None)
        if settings is None or not settings.enabled:
            return
        audit_log = self.audit_log = StoreAuditLog(store.root)

        def audit(entry: dict[str, Any]) -> None:
            audit_log.append(entry)

        self.web = launch(settings, store.root, status=self.status_document, audit=audit,
                          config_path=self.config.source_path, live=self.live_hubs())

    def live_hubs(self) -> dict[str, dict[str, Any]]:
        """The streams live view may watch: each camera's main stream, and its sub-stream (the
        detection stream) when it has one. Viewers are hub subscribers like the recorder."""
        return {p.name: {"main": p.hubs["main"], **({"sub": p.hubs["detect"]} if "detect" in p.hubs else {})}
                for p in self.pipelines}

    def recover(self, store: Store) -> dict[str, int]:
        # A long first retention run (months of clips) must not trip systemd's start timeout.
        last = [time.monotonic()]

        def still_starting() -> None:
            if time.monotonic() - last[0] > 5:
                sdnotify.extend_timeout(30)
                last[0] = time.monotonic()

        counts = store.reconcile()
        if any(counts.values()):
            log.info("start-up check: %s", ", ".join(f"{v} {k}" for k, v in counts.items() if v))
        self.housekeeping(store, progress=still_starting)
        return counts

    def housekeeping(self, store: Store, progress: Callable[[], object] | None = None) -> None:
        st = self.config.storage
        try:
            store.check_mount()
            store.settle()
            deleted = store.apply_retention(retention_days=st.retention_days, max_size=st.max_size,
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

        # SIGHUP too (a closed terminal, `kill -HUP`): its default action would kill the process
        # with the open clip left `recording`; camrec has no configuration to reload.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, on_signal)

    def run(self, duration: float | None = None) -> None:
        """Records until stopped (a signal, `stop_event`, or after `duration` seconds)."""
        started = time.monotonic()
        deadline = None if duration is None else started + duration
        watchdog = sdnotify.WatchdogTimer()
        # Before anything touches the storage (the status file included): one recorder per storage.
        try:
            self.storage_root.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            raise StorageError(f"cannot create the storage directory {self.storage_root}: "
                               f"{exc.strerror or exc}") from None
        self.lock.acquire()
        try:
            store = self.wait_for_store(watchdog, deadline)
            if store is None:
                return
            self.recover(store)
            self.started = True
            for p in self.pipelines:
                p.start()
            # READY only now: recovery (reconcile, retention) is done and every pipeline is running.
            sdnotify.ready(f"recording {len(self.pipelines)} camera(s)")
            self.ready_sent = True
            log.info("recording %d camera(s) into %s", len(self.pipelines), store.root)
            self.start_web(store)
            self._supervise(store, watchdog, deadline)
        finally:
            self.shutdown()

    def _supervise(self, store: Store, watchdog: sdnotify.WatchdogTimer, deadline: float | None) -> None:
        unhealthy: list[str] = []
        failing_since: float | None = None
        status_text = ""
        next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL
        while not self.stop_event.wait(0.5):
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            dead = [name for p in self.pipelines for name in p.dead_threads()]
            if dead:
                raise CamrecError(f"internal threads stopped unexpectedly: {', '.join(dead)}",
                                  hint="see the log above; the service manager will restart camrec")
            if now >= next_housekeeping or store.wants_housekeeping.is_set():
                store.wants_housekeeping.clear()
                # Deleting many clips can take long on an SD card: keep the watchdog fed meanwhile.
                self.housekeeping(store, progress=None if unhealthy else watchdog.kick)
                next_housekeeping = now + HOUSEKEEPING_INTERVAL
            stuck = [name for p in self.pipelines for name in p.stuck_threads(now)]
            failing = [f"{p.name}: {why}" for p in self.pipelines if (why := p.recorder.failing(now))]
            problems = stuck + failing
            if problems != unhealthy:
                if stuck:
                    log.error("hung: %s; watchdog pings stop, so systemd restarts camrec", ", ".join(stuck))
                if failing:
                    log.error("unhealthy: %s; watchdog pings stop, camrec exits in %.0f s unless a clip "
                              "gets through", "; ".join(failing), FAILING_EXIT_SECONDS)
                if not problems:
                    log.info("all cameras are recording normally again")
                unhealthy = problems
            failing_since = (failing_since or now) if failing else None
            if not problems:
                watchdog.kick(now)  # only while every stage makes progress and clips get written
            text = "; ".join(p.status_line() for p in self.pipelines)
            if text != status_text:
                sdnotify.status(text)
                status_text = text
            self.write_status()
            if failing_since is not None and now - failing_since >= FAILING_EXIT_SECONDS:
                raise StorageError(f"recording failed: {'; '.join(failing)}",
                                   hint="see the log above for the first failure")

    def shutdown(self) -> None:
        sdnotify.stopping()
        self.stop_event.set()
        if self.web is not None:  # first: no new fetch while clips close
            self.web.stop()
            self.web = None
        # All cameras close their clips in parallel: the stop must fit in systemd's TimeoutStopSec.
        pipelines = self.pipelines if self.started else []
        for p in pipelines:
            p.request_stop()
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        for p in pipelines:
            p.join(deadline)
        self.write_status("stopped")
        if self.audit_log is not None:
            self.audit_log.close()
        if self.store is not None:
            self.store.close()
        self.lock.release()
        log.info("stopped")
