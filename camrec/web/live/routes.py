"""The live view's HTTP routes: WHEP-shaped WebRTC signalling, the MSE WebSocket, stream states.

- `POST /api/live/<camera>/whep?stream=main|sub`: body = the browser's SDP offer
  (`Content-Type: application/sdp`), answer = 201 with the SDP answer and `Location:
  /api/live/sessions/<id>`; `DELETE` on that URL ends the session. No trickle ICE: the answer
  holds every candidate (host candidates only, `web.webrtc.addresses`). A stream with B-frames
  gets 409 `{"error": …, "fallback": "mse"}`: browsers can't decode it over WebRTC.
- `GET /api/live/<camera>/mse?stream=main|sub` (WebSocket): a text frame `{"type": "mse",
  "value": <MIME type with codecs>}`, then binary frames: the init segment, then one media segment
  per frame. `{"type": "state", "value": "live|offline|reconnecting"}` text frames tell the page
  when the camera drops or comes back; a new stream (reconnect, new resolution) starts again with
  a `mse` text frame and an init segment.
- `GET /api/live` and `GET /api/live/<camera>`: per stream its state, codec, size and frame rate,
  whether it has B-frames, and the camera's viewer count and limit.

Every route needs a login session and the CSRF token for POST/DELETE (camrec.web.app's
middlewares), and the WebSocket upgrade an Origin of this server. Viewers are counted, limited and
audited by camrec.web.live.registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import WSMsgType, web

from camrec.sources.base import MediaPacket
from camrec.sources.hub import Gap, PacketHub, StreamEnd, Subscription
from camrec.web.context import WebContext
from camrec.web.live.registry import LiveRegistry, Viewer, ViewerLimitError
from camrec.web.parsers import ApiError

log = logging.getLogger(__name__)

REGISTRY = web.AppKey("camrec_live_registry", LiveRegistry)
MAX_OFFER_BYTES = 64 * 1024  # a browser's offer is a few kilobytes
# A viewer's hub queue: room for a whole cached GOP (10 s at 15 fps, 5 s at 30 fps) so a viewer
# starts from the cached keyframe; past that the hub drops this viewer's packets up to the next
# keyframe, which also bounds how far behind live a slow viewer can fall.
VIEWER_MAX_ITEMS = 150
VIEWER_MAX_BYTES = 8 * 1024 * 1024
RECONNECTING_SECONDS = 60.0  # a camera silent for longer than this is shown as offline
CLOSE_SECONDS = 1.0  # a WebSocket whose client doesn't answer the close is cut after this
CONNECT_SECONDS = 10.0  # a WebRTC viewer must connect within this after its answer
CAPTURE_ROLE = {"main": "main", "sub": "detect"}  # live stream name → the daemon's capture role
_NO_STORE = {"Cache-Control": "no-store"}


def add_routes(app: web.Application, ctx: WebContext, guarded: Any) -> None:
    """The live routes, each wrapped by `guarded` (camrec.web.api: ApiError → JSON, bugs → 500)."""

    async def audit(entry: dict[str, Any]) -> None:
        await asyncio.get_running_loop().run_in_executor(None, ctx.audit, entry)

    async def session_alive(session_id: str | None) -> bool:
        if ctx.sessions is None or ctx.accounts is None:
            return True
        return await asyncio.get_running_loop().run_in_executor(None, ctx.sessions.alive, session_id,
                                                                ctx.accounts.epoch)

    registry = LiveRegistry(max_viewers=ctx.settings.live.max_viewers, audit=audit, session_alive=session_alive)
    app[REGISTRY] = registry
    live = _Live(ctx, registry)
    app.router.add_get("/api/live", guarded(live.cameras))
    app.router.add_get("/api/live/{camera}", guarded(live.camera))
    app.router.add_post("/api/live/{camera}/whep", guarded(live.whep))
    app.router.add_delete("/api/live/sessions/{id}", guarded(live.end_session))
    app.router.add_get("/api/live/{camera}/mse", guarded(live.mse))

    async def close_viewers(_app: web.Application) -> None:
        await registry.close()

    app.on_shutdown.append(close_viewers)


def session_cookie(request: web.Request) -> str | None:
    from camrec.web.app import SESSION_COOKIE  # the app module imports this one

    return request.cookies.get(SESSION_COOKIE) if request.get("session") is not None else None


class _Live:
    def __init__(self, ctx: WebContext, registry: LiveRegistry) -> None:
        self.ctx = ctx
        self.registry = registry
        self.joined = 0

    # --- lookups ---------------------------------------------------------------------------------

    def _cameras(self) -> Mapping[str, Mapping[str, PacketHub]]:
        if self.ctx.live is None:
            raise ApiError(404, "live view needs the recorder (camrec run); this server only shows a store")
        if not self.ctx.settings.live.enabled:
            raise ApiError(404, "live view is switched off (web.live.enabled)")
        return self.ctx.live

    def _stream(self, request: web.Request) -> tuple[str, str, PacketHub]:
        cameras = self._cameras()
        camera = request.match_info["camera"]
        if camera not in cameras:
            raise ApiError(404, "no such camera")
        stream = request.query.get("stream", "main")
        if stream not in ("main", "sub"):
            raise ApiError(400, "stream must be main or sub")
        hub = cameras[camera].get(stream)
        if hub is None:
            raise ApiError(404, f"camera {camera} has no sub-stream", hint="set detect_source in its config")
        return camera, stream, hub

    def _state(self, camera: str, stream: str, hub: PacketHub) -> str:
        if hub.info is not None:
            return "live"
        doc = self.ctx.status() if self.ctx.status is not None else {}
        capture = (((doc.get("cameras") or {}).get(camera) or {}).get("streams") or {}).get(CAPTURE_ROLE[stream]) or {}
        age = capture.get("last_packet_age")
        if capture.get("state") in ("starting", "disconnected") and (age is None or age < RECONNECTING_SECONDS):
            return "reconnecting"
        return "offline"

    def _describe(self, camera: str, streams: Mapping[str, PacketHub]) -> dict[str, Any]:
        out: dict[str, Any] = {"camera": camera, "viewers": self.registry.count(camera),
                               "max_viewers": self.registry.max_viewers, "streams": {}}
        for name, hub in streams.items():
            info = hub.info
            out["streams"][name] = {
                "state": self._state(camera, name, hub), "codec": info.codec if info else None,
                "width": info.width if info else None, "height": info.height if info else None,
                "fps": info.fps if info else None, "b_frames": hub.b_frames,
            }
        out["webrtc"] = self.ctx.settings.webrtc.enabled
        return out

    # --- routes ----------------------------------------------------------------------------------

    async def cameras(self, request: web.Request) -> web.StreamResponse:
        body = [self._describe(name, streams) for name, streams in sorted(self._cameras().items())]
        return web.json_response(body, headers=_NO_STORE)

    async def camera(self, request: web.Request) -> web.StreamResponse:
        cameras = self._cameras()
        camera = request.match_info["camera"]
        if camera not in cameras:
            raise ApiError(404, "no such camera")
        return web.json_response(self._describe(camera, cameras[camera]), headers=_NO_STORE)

    def _viewer(self, request: web.Request, camera: str, stream: str, kind: str, sub: Subscription) -> Viewer:
        return Viewer(camera=camera, stream=stream, kind=kind, user=str(request.get("user", "?")),  # type: ignore[arg-type]
                      client=request.remote or "unknown", session_id=session_cookie(request), subscription=sub)

    def _subscribe(self, request: web.Request, hub: PacketHub, kind: str) -> Subscription:
        self.joined += 1  # numbers the subscriptions, so `camrec status` tells two of one user apart
        return hub.subscribe(f"viewer {kind} {request.get('user', '?')}@{request.remote} #{self.joined}",
                             start="cached_keyframe", max_items=VIEWER_MAX_ITEMS, max_bytes=VIEWER_MAX_BYTES)

    async def _register(self, viewer: Viewer) -> None:
        try:
            await self.registry.add(viewer)
        except Exception as exc:
            log.error("web: cannot write the audit log: %s", getattr(exc, "message", exc))
            viewer.subscription.close()
            if viewer.closer is not None:
                await viewer.closer()
            raise ApiError(503, "the audit log cannot be written, so live view is refused",
                           hint="see the recorder's log") from None

    async def whep(self, request: web.Request) -> web.StreamResponse:
        camera, stream, hub = self._stream(request)
        if request.content_type != "application/sdp":
            raise ApiError(415, "the offer must be sent as Content-Type: application/sdp")
        if not self.ctx.settings.webrtc.enabled:
            raise ApiError(409, "WebRTC is switched off (web.webrtc.enabled)", fallback="mse")
        if hub.b_frames:
            raise ApiError(409, f"camera {camera}'s {stream} stream has B-frames, which browsers can't play over "
                           "WebRTC", hint="the MSE player plays it", fallback="mse")
        if (request.content_length or 0) > MAX_OFFER_BYTES:
            raise ApiError(413, "the SDP offer is too large")
        body = await request.content.read(MAX_OFFER_BYTES + 1)
        if len(body) > MAX_OFFER_BYTES:
            raise ApiError(413, "the SDP offer is too large")
        try:
            offer = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "the SDP offer is not UTF-8 text") from None
        from camrec.web.live.webrtc import IceSettings, LivePeer, NoCandidatesError, OfferError  # aiortc: on use

        webrtc = self.ctx.settings.webrtc
        ended: list[str] = []  # the viewer's id once registered

        def closed(_peer: object) -> None:  # ICE/DTLS failed or closed, or the subscription closed
            if ended:
                asyncio.get_running_loop().create_task(self.registry.end(ended[0], "connection closed"))

        with self._slot(camera, request):
            sub = self._subscribe(request, hub, "webrtc")
            peer = LivePeer(sub, IceSettings(addresses=webrtc.addresses, ports=webrtc.ports), on_closed=closed)
            try:
                answer = await peer.answer(offer)  # closes the peer itself when it raises
            except OfferError as exc:
                raise ApiError(400, f"bad SDP offer: {exc}") from None
            except NoCandidatesError as exc:
                log.error("web: live %s/%s: %s", camera, stream, exc)
                raise ApiError(503, str(exc), hint="check web.webrtc.addresses and web.webrtc.ports",
                               fallback="mse") from None
            viewer = self._viewer(request, camera, stream, "webrtc", sub)
            viewer.closer = peer.close
            await self._register(viewer)
            ended.append(viewer.id)
        if peer.state == "closed":  # it closed while the viewer was being registered
            await self.registry.end(viewer.id, "connection closed")
        else:
            viewer.watchdog = asyncio.get_running_loop().create_task(self._connect_watchdog(viewer, peer))
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": f"/api/live/sessions/{viewer.id}", **_NO_STORE})

    async def _connect_watchdog(self, viewer: Viewer, peer: Any) -> None:
        # A client that sends an offer and never connects (a closed tab, a firewall) holds a viewer
        # slot until ICE gives up; end it sooner.
        await asyncio.sleep(CONNECT_SECONDS)
        if peer.state != "connected":
            await self.registry.end(viewer.id, "never connected")

    async def end_session(self, request: web.Request) -> web.StreamResponse:
        viewer = self.registry.viewers.get(request.match_info["id"])
        # Another user's session is answered like an unknown one: its id tells nothing.
        if viewer is None or viewer.user != request.get("user"):
            raise ApiError(404, "no such live session")
        await self.registry.end(viewer.id, "viewer left")
        return web.json_response({"ok": True}, headers=_NO_STORE)

    @contextlib.contextmanager
    def _slot(self, camera: str, request: web.Request) -> Any:
        try:
            with self.registry.slot(camera, session_cookie(request)):
                yield
        except ViewerLimitError as exc:
            raise ApiError(429, str(exc), hint="close another live view of this camera") from None

    async def mse(self, request: web.Request) -> web.StreamResponse:
        camera, stream, hub = self._stream(request)
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096, compress=False)
        if not ws.can_prepare(request).ok:
            raise ApiError(400, "this URL expects a WebSocket upgrade")
        with self._slot(camera, request):
            sub = self._subscribe(request, hub, "mse")
            viewer = self._viewer(request, camera, stream, "mse", sub)

            async def close_socket() -> None:
                # A stalled client never reads the close frame: after a moment, cut the connection
                # (that also wakes a pump blocked in a send).
                try:
                    await asyncio.wait_for(ws.close(), CLOSE_SECONDS)
                except TimeoutError:
                    if request.transport is not None:
                        request.transport.abort()

            viewer.closer = close_socket
            await self._register(viewer)
        reason = "viewer left"
        try:
            await ws.prepare(request)
            reader = asyncio.get_running_loop().create_task(self._read_until_closed(ws, viewer))
            try:
                reason = await MsePump(ws, sub, f"{camera}/{stream}", lambda: self._state(camera, stream, hub)).run()
            finally:
                reader.cancel()
        finally:
            await self.registry.end(viewer.id, reason)
        return ws

    async def _read_until_closed(self, ws: web.WebSocketResponse, viewer: Viewer) -> None:
        # The page sends nothing we need; reading lets aiohttp see its close frame (and pings).
        async for msg in ws:
            if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
        viewer.subscription.close()  # wakes the pump, which then ends the viewer


class MsePump:
    """Hub items → WebSocket frames for one MSE viewer (see the module docstring for the protocol)."""

    def __init__(self, ws: web.WebSocketResponse, sub: Subscription, name: str, state: Any) -> None:
        self.ws = ws
        self.sub = sub
        self.name = name
        self.state = state  # () -> "live|offline|reconnecting", asked when the stream ends
        self.sent_state: str | None = None

    async def _send_state(self, value: str) -> None:
        if value != self.sent_state:
            self.sent_state = value
            await self.ws.send_str(json.dumps({"type": "state", "value": value}))

    async def run(self) -> str:
        """Pumps until the subscription closes or the socket fails; returns why it ended."""
        from camrec.web.live.fmp4 import LiveFragmenter

        frag: LiveFragmenter | None = None
        need_key = False  # after a refused packet: its followers reference it, skip to a keyframe
        try:
            while True:
                item = await self.sub.aget()
                if item is None:
                    return "viewer left"
                if isinstance(item, StreamEnd):
                    await self._send_state(self.state())
                    continue
                if isinstance(item, Gap):
                    if frag is not None:
                        frag.mark_gap()  # the next keyframe continues the timeline without a hole
                    continue
                if not isinstance(item, MediaPacket):
                    continue  # a StreamStart: its first keyframe makes the new init segment
                if need_key and not item.keyframe:
                    continue
                need_key = False
                try:
                    if frag is None or item.stream is not frag.info or frag.needs_new_init(item):
                        if not item.keyframe:
                            continue
                        # after=: the new stream's timeline continues the old one, so the page keeps
                        # its SourceBuffer across a reconnect or a resolution change.
                        frag = LiveFragmenter(item.stream, item, after=frag)
                        await self.ws.send_str(json.dumps({"type": "mse", "value": frag.mime}))
                        await self.ws.send_bytes(frag.init_segment)
                        await self._send_state("live")
                    data = frag.add(item)
                except ValueError as exc:  # a packet the fragmenter can't use: wait for a keyframe
                    log.warning("web: live %s: skipping to the next keyframe: %s", self.name, exc)
                    if frag is not None:
                        frag.mark_gap()
                    need_key = True
                    continue
                await self.ws.send_bytes(data)
        except (ConnectionError, RuntimeError) as exc:  # the socket went away mid-send
            log.debug("web: live %s: MSE socket closed: %s", self.name, exc)
            return "connection closed"
