"""Live cameras for the live-view tests: the synthetic camera published into a PacketHub in real time.

`LiveFeed` plays the capture thread's part (camrec.sources.capture does the same for a real
camera): it opens a `synthetic:` source, publishes every packet as the encoder makes it, and on
`stop()` ends the stream like a disconnect. It counts what it published (packets, keyframes), so a
test can tell whether the browser's first frame came from the hub's cached GOP (no keyframe
published since the page opened) rather than from waiting for the next one.

`LiveSite` is a real camrec web server (camrec.web.app via tests/support/web_server.WebHarness:
the recorder's own routes, login, CSRF, viewer registry) on 127.0.0.1 over plain HTTP, with these
hubs as its cameras and a status document the test can change (offline / reconnecting).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from camrec.config.models import WebConfig
from camrec.sources.hub import PacketHub
from camrec.sources.synthetic import SyntheticSource
from tests.support.web_server import PASSWORD, WebHarness


class LiveFeed:
    """A synthetic camera stream published into `hub` from its own thread, in real time."""

    def __init__(self, hub: PacketHub, source: str) -> None:
        self.hub = hub
        self.source = source
        self.packets = 0
        self.keyframes = 0
        self.since_keyframe = 0  # packets published since the last keyframe
        self.info: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> LiveFeed:
        self._stop.clear()
        self._opened.clear()
        self._thread = threading.Thread(target=self._run, name=f"feed {self.hub.name}", daemon=True)
        self._thread.start()
        if not self._opened.wait(20):
            raise AssertionError(f"the synthetic camera {self.source} did not start: {self.error}")
        return self

    def _run(self) -> None:
        src = SyntheticSource(self.source)
        try:
            self.info = src.open()
            self._opened.set()
            while not self._stop.is_set():
                packet = src.read()
                if packet is None:
                    break
                self.hub.publish(packet)
                self.packets += 1
                self.keyframes += packet.keyframe
                self.since_keyframe = 0 if packet.keyframe else self.since_keyframe + 1
        except BaseException as exc:  # reported by start() / stop()
            self.error = exc
            self._opened.set()
        finally:
            src.close()

    def wait_packets(self, n: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.packets < n:
            assert time.monotonic() < deadline, f"the feed published {self.packets} packets, not {n}"
            assert self.error is None, self.error
            time.sleep(0.02)

    def stop(self, reason: str = "disconnected") -> None:
        """Stops publishing and ends the hub's stream, as a camera disconnect does."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.hub.end_stream(reason)
        assert self.error is None, self.error


class LiveSite:
    """camrec's web app on 127.0.0.1 with `feeds` as its live cameras, and a logged-in user."""

    def __init__(self, root: Path, cameras: dict[str, dict[str, str]], *, max_viewers: int = 4,
                 user: str = "owner") -> None:
        self.hubs = {cam: {stream: PacketHub(f"{cam}/{stream}") for stream in streams}
                     for cam, streams in cameras.items()}
        self.feeds = {(cam, stream): LiveFeed(self.hubs[cam][stream], source)
                      for cam, streams in cameras.items() for stream, source in streams.items()}
        # What `camrec run` would report per capture stream (camrec.web.live.routes reads it for
        # the state of a stream that has no live packets: reconnecting or offline).
        self.capture: dict[str, dict[str, dict[str, Any]]] = {
            cam: {("detect" if s == "sub" else s): {"state": "connected"} for s in streams}
            for cam, streams in cameras.items()}
        settings = WebConfig(listen=("127.0.0.1:0",), plain_http=True, live={"max_viewers": max_viewers},
                             webrtc={"addresses": ["127.0.0.1"]})
        self.user = user
        self.harness = WebHarness(root, settings=settings, live=self.hubs, status=self.status)
        self.harness.accounts.add(user, PASSWORD)

    def status(self) -> dict[str, Any]:
        return {"cameras": {cam: {"streams": streams} for cam, streams in self.capture.items()}}

    def set_capture(self, camera: str, stream: str, state: str, age: float | None) -> None:
        self.capture[camera]["detect" if stream == "sub" else stream] = {"state": state, "last_packet_age": age}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.harness.port}"

    def start(self) -> LiveSite:
        for feed in self.feeds.values():
            feed.start()
        self.harness.start()
        return self

    def stop(self) -> None:
        self.harness.stop()
        for feed in self.feeds.values():
            if feed._thread is not None:
                feed.stop("test over")
