"""One camera stream, many consumers: the per-stream packet hub.

One capture thread publishes (`start_stream`, `publish`, `end_stream`); any number of
subscribers (recorder, detector, live viewers over asyncio, MQTT, metrics) receive, each at its
own pace. The hub has no threads of its own: everything runs in the publisher's thread or the
subscriber's, under one hub lock (re-entrant, so a sink may unsubscribe or read `stats()`).

What a subscriber receives, in publish order:

- `StreamStart(info)`: a (re)connect or a resolution change, always before that stream's first
  packet. A packet whose ``packet.stream`` is not the current `StreamInfo` (identity) starts a new
  stream by itself. `start_stream` with the current info while it is live does nothing.
- `MediaPacket`: the publisher's own objects, never copied; consumers must not mutate them.
- `StreamEnd(reason)`: a disconnect. `end_stream` while no stream is live does nothing, so a
  consumer sees at most one end per start.
- `Gap(dropped)`: this subscriber lost `dropped` packets; always directly followed by a keyframe,
  or by a `StreamStart`/`StreamEnd` when the stream ended or changed while it was dropping.

Who may drop what (back-pressure): the publisher never blocks on a queue-mode subscriber. Its
queue is bounded in packets (`max_items`) and bytes (`max_bytes`); a packet that doesn't fit is
dropped together with every following packet until a keyframe that fits, which is queued after
a `Gap`. What was already queued is kept (a contiguous run); after a loss the consumer resumes at
a keyframe, never at a packet whose references it lost. A packet always fits into an empty queue, so one oversized
keyframe can't starve a subscriber. Stream starts, ends and gaps are never dropped and don't count
against the bounds. Push-mode subscribers (``sink=callable``) are called synchronously in the
publisher thread, in order, with every item: they own their queue and their drop policy and must
not block for long: they run under the hub lock, so they hold up the camera, every other
subscriber, and `subscribe`/`unsubscribe`/`stats` in other threads. A sink that raises is
logged once with its traceback and detached (`Subscription.error` says why); the publisher and
the other subscribers carry on. A detached push subscriber receives nothing more, not even a
`StreamEnd`: its owner learns of it from `error` and `stats()`.

Joining: a subscriber that joins while a stream is live first gets `StreamStart(current info)`,
then with ``start="cached_keyframe"`` the hub's cached current GOP (the last keyframe and every
packet since) followed by the live packets, or with ``start="next_keyframe"`` nothing until the
next keyframe. Either way its first packet is a keyframe. The cache is bounded
(`gop_cache_bytes`): a GOP that outgrows it is forgotten until the next keyframe, and a cached
join then waits for that keyframe, as it does when the cached GOP wouldn't fit into the new
subscriber's queue. The cache is cleared when a stream ends or changes. A join is atomic with
publishing (both hold the hub lock): no packet is lost or repeated between the cached GOP and the
live packets. A push subscriber's joining items are handed to its sink in the publisher thread,
just before the next published item, so a sink is only ever called from the publisher thread.
A subscriber that joins while no stream is live sees the next stream whole, from its first packet
(the camera's first packet is usually, but not always, a keyframe).

Reading (queue mode): `Subscription.get(timeout)` returns the next item, raises `queue.Empty`
when nothing came within `timeout`, and returns None once the subscription is closed (closing
discards what is still queued). `await Subscription.aget()` is the asyncio equivalent: it never
blocks the loop (it only takes the subscription's own lock, held for a few list operations),
the publisher wakes it with ``loop.call_soon_threadsafe`` only, and closing from
any thread wakes it with None. ``async for item in sub`` reads until the subscription is closed.

Reconnects: the capture thread calls `end_stream` on a disconnect and `start_stream` (or simply
`publish`) with the new connection's `StreamInfo`; subscribers stay attached across reconnects
and see ``StreamEnd``, ``StreamStart``, then the new stream. Closing a subscription, or the hub
detaching a raising sink, drops every reference the hub holds to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from camrec.sources.base import MediaPacket, StreamInfo

log = logging.getLogger(__name__)

GOP_CACHE_BYTES = 8 * 1024 * 1024
MAX_ITEMS = 120
MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StreamStart:
    info: StreamInfo


@dataclass(frozen=True, slots=True)
class StreamEnd:
    reason: str


@dataclass(frozen=True, slots=True)
class Gap:
    dropped: int


HubItem = StreamStart | StreamEnd | Gap | MediaPacket
Start = Literal["cached_keyframe", "next_keyframe"]


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Subscription:
    """One consumer of a `PacketHub`: made by `PacketHub.subscribe`, never directly."""

    def __init__(self, hub: PacketHub, name: str, *, max_items: int, max_bytes: int,
                 sink: Callable[[HubItem], object] | None, depth: Callable[[], int] | None) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("max_items and max_bytes must be at least 1")
        self.name = name
        self.mode: Literal["queue", "push"] = "queue" if sink is None else "push"
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.delivered = 0  # packets queued for (or handed to) this subscriber
        self.dropped = 0  # packets this subscriber never got
        self.gaps = 0
        self.error: BaseException | None = None  # why the hub detached a push subscriber
        self._hub: PacketHub | None = hub
        self._sink = sink
        self._depth = depth
        self._cond = threading.Condition(threading.Lock())
        self._items: deque[HubItem] = deque()
        self._packets = 0  # packets in _items
        self._bytes = 0  # their payload bytes
        self._closed = False
        self._need_key = False  # joined mid-stream: skip packets until a keyframe
        self._dropping = 0  # packets dropped since the last one queued (0: not dropping)
        self._backlog: list[HubItem] = []  # push mode: joining items, sent before the next live one
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # --- consumer side -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, timeout: float | None = None) -> HubItem | None:
        """The next item; raises `queue.Empty` after `timeout` seconds; None once closed."""
        self._require_queue()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                item = self._pop_locked()
                if item is not None or self._closed:
                    return item
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                self._cond.wait(remaining)

    async def aget(self) -> HubItem | None:
        """`get` for asyncio: waits without blocking the loop; None once closed."""
        self._require_queue()
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                item = self._pop_locked()
                if item is not None or self._closed:
                    return item
                waiter = (loop, loop.create_future())
                self._waiters.append(waiter)
            try:
                await waiter[1]
            finally:
                with self._cond:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> HubItem:
        item = await self.aget()
        if item is None:
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        """Detaches from the hub and wakes every reader; idempotent, from any thread."""
        hub = self._hub
        if hub is not None:
            hub.unsubscribe(self)
        else:
            self._shut()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            depth = len(self._items)
            queued_bytes = self._bytes
        if self.mode == "push":
            try:
                depth = self._depth() if self._depth is not None else 0
            except Exception:  # status must not fail because a consumer's gauge does
                log.debug("%s: depth() raised", self.name, exc_info=True)
                depth = -1
        return {"name": self.name, "mode": self.mode, "depth": depth, "bytes": queued_bytes,
                "delivered": self.delivered, "dropped": self.dropped, "gaps": self.gaps,
                "error": None if self.error is None else repr(self.error)}

    def _require_queue(self) -> None:
        if self.mode != "queue":
            raise TypeError(f"subscription {self.name!r} has a sink: nothing to get from it")

    def _pop_locked(self) -> HubItem | None:
        if not self._items:
            return None
        item = self._items.popleft()
        if isinstance(item, MediaPacket):
            self._packets -= 1
            self._bytes -= len(item.data)
        return item

    # --- hub side (called with the hub lock held) ----------------------------------------------

    def _join(self, items: list[HubItem], need_key: bool) -> None:
        if self.mode == "push":
            self._backlog = items
        else:
            for item in items:
                self._offer(item)
        self._need_key = need_key  # after the joining items: their StreamStart must not clear it

    def _fits(self, packet: MediaPacket) -> bool:
        return self._packets == 0 or (self._packets < self.max_items
                                      and self._bytes + len(packet.data) <= self.max_bytes)

    def _offer(self, item: HubItem) -> None:
        """Queues or hands over one item; a raising sink's exception propagates to the hub."""
        if self.mode == "push":
            if self._closed:  # detached by an earlier sink during this same fan-out
                return
            backlog, self._backlog = self._backlog, []
            for it in backlog:
                self._push(it, replay=True)
            self._push(item)
            return
        with self._cond:
            if self._closed:
                return
            if isinstance(item, MediaPacket):
                if self._need_key:
                    if not item.keyframe:
                        return
                    self._need_key = False
                if not (self._fits(item) and (item.keyframe or not self._dropping)):
                    self._dropping += 1
                    self.dropped += 1
                    return
                self._gap_locked()
                self._packets += 1
                self._bytes += len(item.data)
                self.delivered += 1
            else:
                self._gap_locked()
                if isinstance(item, StreamStart | StreamEnd):
                    self._need_key = False
            self._items.append(item)
            self._wake_locked()

    def _gap_locked(self) -> None:
        if self._dropping:
            self._items.append(Gap(self._dropping))
            self.gaps += 1
            self._dropping = 0

    def _push(self, item: HubItem, replay: bool = False) -> None:
        if isinstance(item, MediaPacket):
            if self._need_key and not replay:
                if not item.keyframe:
                    return
                self._need_key = False
            self.delivered += 1
        elif isinstance(item, StreamStart | StreamEnd) and not replay:
            self._need_key = False
        assert self._sink is not None
        self._sink(item)

    def _wake_locked(self) -> None:
        self._cond.notify_all()
        waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_resolve, fut)

    def _shut(self) -> None:
        with self._cond:
            self._closed = True
            self._hub = None
            self._items.clear()
            self._packets = self._bytes = 0
            self._backlog = []
            self._wake_locked()


class PacketHub:
    """Fans one camera stream out to any number of subscribers; see the module docstring."""

    def __init__(self, name: str = "", *, gop_cache_bytes: int = GOP_CACHE_BYTES) -> None:
        self.name = name
        self.gop_cache_bytes = gop_cache_bytes
        self._lock = threading.RLock()
        self._subs: list[Subscription] = []
        self._info: StreamInfo | None = None  # the live stream, None between streams
        self._gop: list[MediaPacket] = []  # the last keyframe and every packet since; [] = none usable
        self._gop_bytes = 0
        self.packets = 0
        self.streams = 0
        self.sink_errors = 0
        # Decode order differs from presentation order (B-frames) in the current stream: browsers
        # can't play such a stream over WebRTC, so live view routes it to MSE (camrec.web.live).
        self._b_frames = False
        self._max_pts: int | None = None

    # --- publisher -----------------------------------------------------------------------------

    def start_stream(self, info: StreamInfo) -> None:
        with self._lock:
            if info is not self._info:
                self._start_locked(info)

    def publish(self, packet: MediaPacket) -> None:
        with self._lock:
            if packet.stream is not self._info:
                self._start_locked(packet.stream)
            self.packets += 1
            if self._max_pts is not None and packet.pts < self._max_pts:
                self._b_frames = True
            if self._max_pts is None or packet.pts > self._max_pts:
                self._max_pts = packet.pts
            self._cache_locked(packet)
            self._fan_out_locked(packet)

    def end_stream(self, reason: str = "disconnected") -> None:
        with self._lock:
            if self._info is None:
                return
            self._info = None
            self._clear_cache_locked()
            self._fan_out_locked(StreamEnd(reason))

    # --- subscribers ---------------------------------------------------------------------------

    def subscribe(self, name: str, *, start: Start = "cached_keyframe", max_items: int = MAX_ITEMS,
                  max_bytes: int = MAX_BYTES, sink: Callable[[HubItem], object] | None = None,
                  depth: Callable[[], int] | None = None) -> Subscription:
        """A new subscriber. With `sink`, push mode (see the module docstring); else queue mode."""
        if start not in ("cached_keyframe", "next_keyframe"):
            raise ValueError(f"start must be 'cached_keyframe' or 'next_keyframe', not {start!r}")
        sub = Subscription(self, name, max_items=max_items, max_bytes=max_bytes, sink=sink, depth=depth)
        with self._lock:
            items: list[HubItem] = []
            need_key = False
            if self._info is not None:
                items.append(StreamStart(self._info))
                gop = self._gop if start == "cached_keyframe" else []
                fits = sink is not None or (len(gop) <= max_items
                                            and (len(gop) <= 1 or self._gop_bytes <= max_bytes))
                if gop and fits:
                    items.extend(gop)
                else:
                    need_key = True
            sub._join(items, need_key)
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Detaches `sub` and wakes its readers; idempotent."""
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
        sub._shut()

    @property
    def b_frames(self) -> bool:
        """True once the current stream showed a packet presented before an earlier one."""
        with self._lock:
            return self._b_frames

    @property
    def info(self) -> StreamInfo | None:
        """The live stream's description, None between streams."""
        with self._lock:
            return self._info

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def stats(self) -> dict[str, Any]:
        """Plain data for `camrec status`: hub counters and one dict per subscriber."""
        with self._lock:
            subs = list(self._subs)
            info = self._info
            hub: dict[str, Any] = {
                "name": self.name, "streaming": info is not None,
                "stream": None if info is None else info.describe(), "streams": self.streams,
                "packets": self.packets, "gop_cache_bytes": self._gop_bytes,
                "gop_cache_packets": len(self._gop), "subscribers": len(subs),
                "sink_errors": self.sink_errors, "b_frames": self._b_frames,
            }
        hub["subscriptions"] = [s.stats() for s in subs]
        return hub

    # --- internals (hub lock held) -------------------------------------------------------------

    def _start_locked(self, info: StreamInfo) -> None:
        self._info = info
        self.streams += 1
        self._b_frames = False
        self._max_pts = None
        self._clear_cache_locked()
        self._fan_out_locked(StreamStart(info))

    def _clear_cache_locked(self) -> None:
        self._gop = []
        self._gop_bytes = 0

    def _cache_locked(self, packet: MediaPacket) -> None:
        size = len(packet.data)
        if packet.keyframe:
            self._gop, self._gop_bytes = [packet], size
        elif self._gop:
            self._gop.append(packet)
            self._gop_bytes += size
        if self._gop_bytes > self.gop_cache_bytes:  # forgotten until the next keyframe
            self._clear_cache_locked()

    def _fan_out_locked(self, item: HubItem) -> None:
        for sub in tuple(self._subs):
            try:
                sub._offer(item)
            except Exception as exc:
                self.sink_errors += 1
                log.exception("%s: subscriber %r raised; detaching it", self.name or "hub", sub.name)
                sub.error = exc
                self.unsubscribe(sub)
