"""Who is watching what: live viewers, their limits, their audit entries, and how they end.

Every live viewer (a WebRTC peer or an MSE WebSocket) is one `Viewer` here, holding its own hub
subscription in queue mode: the hub drops that viewer's packets up to the next keyframe when it
falls behind, so a stalled browser never touches the recorder (camrec.sources.hub).

A viewer ends when its client leaves (DELETE, WebSocket close, ICE failure), when its login
session ends (logout, idle or lifetime expiry, the user removed or given a new password), or when
the server stops. `sweep()` finds ended sessions: `camrec user remove` edits a file in another
process, so nothing would tell the web loop otherwise. Start and end are audited
(`live-start`, `live-end`: user, camera, stream, kind, client, duration, packets, drops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from camrec.sources.hub import Subscription

log = logging.getLogger(__name__)

Kind = Literal["webrtc", "mse"]
SWEEP_SECONDS = 1.0
PER_SESSION = 4  # live views of one camera one login session may hold (transport race, tabs, grid)


class ViewerLimitError(Exception):
    """The camera already has its configured number of viewers."""


@dataclass(eq=False)
class Viewer:
    camera: str
    stream: str  # "main" or "sub"
    kind: Kind
    user: str
    client: str
    session_id: str | None  # the login session's cookie value (kept in memory only); None: no accounts
    subscription: Subscription
    id: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    started: float = field(default_factory=time.monotonic)
    # Ends the transport (closes the peer or the WebSocket); set by the route that made the viewer.
    closer: Callable[[], Awaitable[object]] | None = None
    watchdog: asyncio.Task[None] | None = None  # cancelled when the viewer ends
    ended: bool = False

    def describe(self) -> dict[str, Any]:
        s = self.subscription.stats()
        return {"id": self.id, "camera": self.camera, "stream": self.stream, "kind": self.kind, "user": self.user,
                "client": self.client, "seconds": round(time.monotonic() - self.started, 1),
                "packets": s["delivered"], "dropped": s["dropped"]}


class LiveRegistry:
    """The live viewers of one web app. Lives on the app's event loop (not thread-safe)."""

    def __init__(self, *, max_viewers: int, audit: Callable[[dict[str, Any]], Awaitable[None]],
                 session_alive: Callable[[str | None], Awaitable[bool]] | None = None) -> None:
        self.max_viewers = max_viewers
        self.audit = audit
        self.session_alive = session_alive
        self.viewers: dict[str, Viewer] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._pending: dict[str, int] = {}  # camera → viewers being set up (counted against the limit)

    # --- limits ---------------------------------------------------------------------------------

    def count(self, camera: str) -> int:
        """Viewers of `camera`, counted by login session: the page races WebRTC against MSE for a
        moment, and a grid tile and the camera's page may both be open; that is one person."""
        seen = {v.session_id or v.id for v in self.viewers.values() if v.camera == camera}
        return len(seen) + self._pending.get(camera, 0)

    @contextlib.contextmanager
    def slot(self, camera: str, session_id: str | None = None) -> Any:
        """Holds one of the camera's viewer slots while a viewer is set up (an offer's ICE gathering
        takes a moment: two offers at once must not both squeeze into the last slot). A session
        that already watches the camera needs no new slot, up to PER_SESSION viewers of it."""
        mine = sum(1 for v in self.viewers.values()
                   if v.camera == camera and session_id is not None and v.session_id == session_id)
        if mine >= PER_SESSION:
            raise ViewerLimitError(f"this login already has {PER_SESSION} live views of camera {camera} open")
        if not mine and self.count(camera) >= self.max_viewers:
            raise ViewerLimitError(f"camera {camera} already has {self.max_viewers} live viewer(s), the most "
                                   "allowed (web.live.max_viewers)")
        if mine:
            yield
            return
        self._pending[camera] = self._pending.get(camera, 0) + 1
        try:
            yield
        finally:
            self._pending[camera] -= 1
            if not self._pending[camera]:
                del self._pending[camera]

    # --- start and end ---------------------------------------------------------------------------

    async def add(self, viewer: Viewer) -> None:
        """Registers a viewer once its `live-start` entry is written (raises what the audit raises:
        then nothing is registered and the caller tears the viewer down)."""
        await self.audit({"event": "live-start", "user": viewer.user, "client": viewer.client, "files": [],
                          "camera": viewer.camera, "stream": viewer.stream, "kind": viewer.kind})
        self.viewers[viewer.id] = viewer
        log.info("web: %s started watching %s/%s (%s) from %s", viewer.user, viewer.camera, viewer.stream,
                 viewer.kind, viewer.client)
        if self._sweeper is None and self.session_alive is not None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(), name="live-sweep")

    async def end(self, viewer_id: str, reason: str) -> bool:
        """Ends a viewer (idempotent): closes its transport and subscription, writes `live-end`."""
        viewer = self.viewers.pop(viewer_id, None)
        if viewer is None or viewer.ended:
            return False
        viewer.ended = True
        if viewer.watchdog is not None and viewer.watchdog is not asyncio.current_task():
            viewer.watchdog.cancel()
        info = viewer.describe()
        viewer.subscription.close()
        if viewer.closer is not None:
            try:
                await viewer.closer()
            except Exception:  # the viewer is gone either way; its transport's error is only logged
                log.exception("web: closing the live viewer %s failed", viewer.id)
        log.info("web: %s stopped watching %s/%s (%s, %s): %.0f s, %d packets, %d dropped", viewer.user,
                 viewer.camera, viewer.stream, viewer.kind, reason, info["seconds"], info["packets"],
                 info["dropped"])
        try:
            await self.audit({"event": "live-end", "user": viewer.user, "client": viewer.client, "files": [],
                              "camera": viewer.camera, "stream": viewer.stream, "kind": viewer.kind,
                              "seconds": info["seconds"], "packets": info["packets"], "dropped": info["dropped"],
                              "reason": reason})
        except Exception as exc:  # the session is over either way; the log says why the entry is missing
            log.error("web: cannot write the audit log: %s", getattr(exc, "message", exc))
        return True

    async def end_where(self, predicate: Callable[[Viewer], bool], reason: str) -> int:
        doomed = [v.id for v in self.viewers.values() if predicate(v)]
        for viewer_id in doomed:
            await self.end(viewer_id, reason)
        return len(doomed)

    async def end_session(self, session_id: str | None, reason: str = "logout") -> int:
        if session_id is None:
            return 0
        return await self.end_where(lambda v: v.session_id is not None and
                                    secrets.compare_digest(v.session_id, session_id), reason)

    async def sweep(self) -> int:
        """Ends the viewers whose login session is over (expired, user removed, new password)."""
        if self.session_alive is None:
            return 0
        ended = 0
        for session_id in {v.session_id for v in self.viewers.values() if v.session_id is not None}:
            if not await self.session_alive(session_id):
                ended += await self.end_session(session_id, "session ended")
        return ended

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            if not self.viewers:  # nothing to watch over: the loop sleeps in epoll again
                self._sweeper = None
                return
            try:
                await self.sweep()
            except Exception:
                log.exception("web: checking live viewers' sessions failed")

    async def close(self) -> None:
        """Ends every viewer (server shutdown)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await self.end_where(lambda v: True, "server stopping")

    def stats(self) -> dict[str, Any]:
        return {"max_viewers": self.max_viewers, "viewers": [v.describe() for v in self.viewers.values()]}
