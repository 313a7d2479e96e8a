"""The Python viewers of `camrec bench live`, in a loop thread of their own (not the server's).

They log in and use the live routes as a browser does (camrec/web/live/routes.py):
- `WebRtcViewer`: a real aiortc peer; WHEP offer over HTTP, DELETE of its session URL at the end.
  It decodes in aiortc's decoder thread and reads the camera's stamp from each decoded frame.
- `MseViewer`: the MSE WebSocket with aiohttp; it counts the media segments it reads (no decoding:
  the browser does that part in the --browser phase).
Only the server's threads are measured; the viewers' own work stays in these threads.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from camrec.sources.stamp import MODULUS, read_stamp

LOOPBACK = ("127.0.0.1",)
SESSION_COOKIE = "camrec_session"  # camrec.web.app.SESSION_COOKIE


class ViewerLoop:
    """A second asyncio loop in its own thread, with an HTTP client logged in to the web app."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-viewers", daemon=True)
        self.thread.start()
        self.http: Any = None
        self.csrf = ""

    async def call(self, coro_fn: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro_fn(), self.loop))

    async def login(self, user: str, password: str) -> None:
        async def go() -> None:
            import aiohttp

            # The session cookie is Secure, which aiohttp's jar never sends over plain HTTP (browsers
            # do, to 127.0.0.1): the cookie goes in a header of its own.
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as login, \
                    login.post(f"{self.base}/api/login", json={"username": user, "password": password},
                               headers={"Origin": self.base}) as r:
                if r.status != 200:
                    raise RuntimeError(f"bench login failed: {r.status} {await r.text()}")
                self.csrf = (await r.json())["csrf"]
                cookie = r.cookies[SESSION_COOKIE].value
            self.http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                              headers={"Origin": self.base, "Cookie": f"{SESSION_COOKIE}={cookie}"})

        await self.call(go)

    async def stop(self) -> None:
        if self.http is not None:
            await self.call(self.http.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class WebRtcViewer:
    def __init__(self, viewers: ViewerLoop, path: str) -> None:
        self.viewers = viewers
        self.path = path  # /api/live/<camera>/whep?stream=main
        self.pc: Any = None
        self.session_url: str | None = None
        self.started: float | None = None
        self._joined_ms = 0.0
        self.first_frame_ms: float | None = None  # offer sent → first decoded frame
        self.first_age_ms: float | None = None  # how old that frame was at the offer (cached start)
        self.latencies: list[float] = []
        self.frames = 0
        self.collect = False
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.viewers.call(self._start)

    async def _start(self) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        from camrec.web.live.webrtc import IceSettings, restrict_candidates

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.on("track", lambda track: setattr(self, "_reader", asyncio.ensure_future(self._read(track))))
        restrict_candidates(self.pc, IceSettings(addresses=LOOPBACK))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.started, self._joined_ms = time.monotonic(), time.time() * 1000
        v = self.viewers
        async with v.http.post(f"{v.base}{self.path}", data=self.pc.localDescription.sdp,
                               headers={"Content-Type": "application/sdp", "X-CSRF-Token": v.csrf}) as r:
            body = await r.text()
            if r.status != 201:
                raise RuntimeError(f"WHEP offer refused: {r.status} {body}")
            self.session_url = r.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def _read(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await track.recv()
                now_ms = time.time() * 1000
                stamp = read_stamp(frame.to_ndarray(format="gray"))
                self.frames += 1
                if self.first_frame_ms is None and self.started is not None:
                    self.first_frame_ms = (time.monotonic() - self.started) * 1000
                    if stamp is not None:  # negative: a frame captured after the join (no cached start)
                        self.first_age_ms = (self._joined_ms - stamp + MODULUS // 2) % MODULUS - MODULUS // 2
                elif self.collect and stamp is not None:
                    self.latencies.append((now_ms - stamp) % MODULUS)
        except MediaStreamError:
            return

    async def close(self) -> None:
        async def go() -> None:
            v = self.viewers
            if self.session_url is not None:
                async with v.http.delete(f"{v.base}{self.session_url}", headers={"X-CSRF-Token": v.csrf}) as r:
                    await r.read()
            if self.pc is not None:
                await self.pc.close()
            if self._reader is not None:
                self._reader.cancel()

        await self.viewers.call(go)


class MseViewer:
    def __init__(self, viewers: ViewerLoop, path: str) -> None:
        self.viewers = viewers
        self.path = path  # /api/live/<camera>/mse?stream=main
        self.mime: str | None = None
        self.first_segment_ms: float | None = None  # connect → first media segment received
        self.segments = 0
        self.bytes = 0
        self._task: asyncio.Future[Any] | None = None
        self._ws: Any = None

    async def start(self) -> None:
        self._task = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._run(), self.viewers.loop))

    async def _run(self) -> None:
        import aiohttp

        started = time.monotonic()
        v = self.viewers
        async with v.http.ws_connect(f"{v.base}{self.path}", origin=v.base) as ws:
            self._ws = ws
            init_seen = False
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    doc = json.loads(msg.data)
                    if doc.get("type") == "mse":
                        self.mime, init_seen = doc["value"], False
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    if not init_seen:
                        init_seen = True  # the init segment
                        continue
                    self.segments += 1
                    self.bytes += len(msg.data)
                    if self.first_segment_ms is None:
                        self.first_segment_ms = (time.monotonic() - started) * 1000
                else:
                    break

    async def close(self) -> None:
        async def go() -> None:
            if self._ws is not None:
                await self._ws.close()

        await self.viewers.call(go)
        if self._task is not None:
            await self._task
