"""The server side of `camrec bench live`: a camera, its recorder and detector, and the web app,
wired as `camrec run` wires them (camrec.service.daemon.CameraPipeline), all in this process.

- The synthetic camera (stamp=1: its capture time drawn into the top rows) encodes and publishes
  into a `PacketHub` from its own thread, in real time, as a camera connection does.
- Once `start_recording` is called, the recorder is the daemon's push subscriber of that hub; the
  real `DetectionWorker` decodes the same hub and feeds it motion (the scene has an object
  crossing all the time, so it records continuously) into a temporary store, encrypted to a
  throw-away recipient.
- The web app (`camrec.web.app.make_app`) runs in its own loop thread as in `camrec run`, plain
  HTTP on 127.0.0.1, with one user, `web.webrtc.addresses: [127.0.0.1]`, and the hub as its
  camera's live stream: viewers go through login, CSRF, the registry and the real routes.

Each thread's CPU time is read with its own POSIX CPU clock (`pthread_getcpuclockid`, nanoseconds,
from any thread), which is what /proc/self/task/<tid>/stat sums in clock ticks.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

CAMERA = "bench"
USER = "bench"


def thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds (user + system) used so far by another thread of this process."""
    assert thread.ident is not None, f"{thread.name} is not running"
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


class _CameraThread(threading.Thread):
    def __init__(self, source: Any, hub: Any) -> None:
        super().__init__(name="bench-camera", daemon=True)
        self.source, self.hub = source, hub
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            packet = self.source.read()
            if packet is None:
                return
            self.hub.publish(packet)


class Rig:
    """Camera → hub → recorder + detector, and the web app serving the hub as live view."""

    def __init__(self, source: str, *, max_viewers: int) -> None:
        from argon2 import PasswordHasher

        from camrec.config.models import WebConfig
        from camrec.crypto.keys import X25519Identity
        from camrec.motion.detector import DefaultMotionParams
        from camrec.motion.worker import DetectionWorker
        from camrec.record.recorder import Recorder
        from camrec.sources import SystemClock
        from camrec.sources.hub import PacketHub
        from camrec.sources.synthetic import SyntheticSource
        from camrec.store.writer import Store
        from camrec.web.accounts import Accounts
        from camrec.web.app import make_app
        from camrec.web.context import WebContext, state_dir_for
        from camrec.web.server import WebServer

        self.work = Path(tempfile.mkdtemp(prefix="camrec-bench-live-"))
        self.stop_event = threading.Event()
        clock = SystemClock()
        self.hub = PacketHub(f"{CAMERA}/main")
        self.store = Store(self.work / "storage", [X25519Identity.generate().recipient()], clock=clock)
        settings = SimpleNamespace(pre_roll=2.0, post_roll=2.0, max_clip=60.0, motion=DefaultMotionParams())
        self.recorder = Recorder(CAMERA, settings, self.store, clock)
        self.detector = DetectionWorker(CAMERA, settings.motion, self.recorder.put_motion, self.stop_event)
        source_ = SyntheticSource(source, clock=clock)
        source_.open()
        self.camera = _CameraThread(source_, self.hub)
        self.camera.start()

        web = WebConfig.model_validate({"listen": ["127.0.0.1:0"], "plain_http": True,
                                        "live": {"max_viewers": max_viewers},
                                        "webrtc": {"addresses": ["127.0.0.1"]}})
        self.audited: list[dict[str, Any]] = []
        # Low-cost argon2id: the bench logs in a few times; the password is never stored anywhere else.
        accounts = Accounts(state_dir_for(web, self.store.root),
                            hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        self.password = secrets.token_urlsafe(16)
        accounts.add(USER, self.password)
        ctx = WebContext(store_root=self.store.root, read_only_store=False, accounts=accounts,
                         status=lambda: {"cameras": {}}, audit=self.audited.append, settings=web,
                         live={CAMERA: {"main": self.hub}})
        self.server = WebServer(ctx, web.listen, None, app_factory=make_app)
        self.server.start()
        self.base = self.server.urls[0].rstrip("/")
        assert self.server.thread is not None
        self.web_thread = self.server.thread

    def start_recording(self) -> None:
        """Subscribes the recorder and the detector, as CameraPipeline does: the recorder pushes
        first, the detector reads a bounded queue. Until then only the camera runs, so the
        process's CPU before and after tells the recording's whole cost, FFmpeg's decoder threads
        of the detector included (they are native threads without a Python name)."""
        self.hub.subscribe("recorder", start="next_keyframe", sink=self.recorder.on_hub_item,
                           depth=self.recorder.inbox.qsize)
        self.detector.attach(self.hub)
        self.recorder.start()
        self.detector.start()

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of the threads that matter, and of the whole process."""
        recording = self.recorder.ident is not None
        return {"camera": thread_cpu(self.camera), "recorder": thread_cpu(self.recorder) if recording else 0.0,
                "detector": thread_cpu(self.detector) if recording else 0.0, "web": thread_cpu(self.web_thread),
                "process": time.process_time()}

    def recorder_status(self) -> dict[str, Any]:
        s = self.recorder.status
        return {"recording": s.recording, "clips_written": s.clips_written, "packets_dropped": s.packets_dropped,
                "storage_error": s.storage_error, "detector_frames": self.detector.frames_analysed,
                "detector_dropped": self.detector.packets_dropped}

    def close(self) -> None:
        self.server.stop()
        self.camera.halt.set()
        self.camera.join()
        self.camera.source.close()
        self.stop_event.set()
        if self.recorder.ident is not None:
            self.detector.stop()
            self.recorder.stop()
            self.recorder.join(30)
            self.detector.join(10)
        self.store.close()
        shutil.rmtree(self.work, ignore_errors=True)
