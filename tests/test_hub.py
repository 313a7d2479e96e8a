"""The per-camera packet hub: ordering, drop policy, keyframe joins, threads and asyncio."""

from __future__ import annotations

import asyncio
import gc
import logging
import queue
import random
import threading
import time
import weakref
from fractions import Fraction

import pytest

from camrec.sources.base import MediaPacket, StreamInfo
from camrec.sources.hub import Gap, HubItem, PacketHub, Start, StreamEnd, StreamStart, Subscription

TB = Fraction(1, 90000)
TICK = 3600  # 25 fps in TB


def info(generation: int = 1, width: int = 640, height: int = 360) -> StreamInfo:
    return StreamInfo("h264", width, height, TB, 25.0, generation=generation)


def pkt(stream: StreamInfo, seq: int, *, gop: int = 5, size: int = 100) -> MediaPacket:
    """Packet number `seq` (kept in pts), a keyframe every `gop` packets."""
    return MediaPacket(data=bytes(size), pts=seq * TICK, dts=seq * TICK, duration=TICK,
                       keyframe=seq % gop == 0, arrival=seq / 25, stream=stream)


def seq(item: HubItem) -> int:
    assert isinstance(item, MediaPacket), item
    return item.pts // TICK


def drain(sub: Subscription) -> list[HubItem]:
    items: list[HubItem] = []
    while True:
        try:
            item = sub.get(timeout=0)
        except queue.Empty:
            return items
        assert item is not None
        items.append(item)


def packet_seqs(items: list[HubItem]) -> list[int]:
    return [seq(i) for i in items if isinstance(i, MediaPacket)]


def assert_gaps_well_formed(items: list[HubItem]) -> None:
    for i, item in enumerate(items):
        if isinstance(item, Gap):
            after = items[i + 1]
            assert isinstance(after, StreamStart | StreamEnd) or (isinstance(after, MediaPacket) and after.keyframe)


def test_fast_and_stalled_subscriber():
    hub = PacketHub("cam")
    stream = info()
    fast = hub.subscribe("fast", max_items=10_000)
    stalled = hub.subscribe("stalled", max_items=8)
    got: list[HubItem] = []

    def read_fast() -> None:
        while (item := fast.get(timeout=5)) is not None:
            got.append(item)
            if isinstance(item, StreamEnd):
                return

    reader = threading.Thread(target=read_fast)
    reader.start()
    hub.start_stream(stream)
    for n in range(50):
        hub.publish(pkt(stream, n, gop=10))
    first = drain(stalled)  # it finally reads: a contiguous prefix, nothing after the overflow yet
    assert first[0] == StreamStart(stream)
    assert packet_seqs(first) == list(range(8))
    assert stalled.dropped == 42
    for n in range(50, 100):
        hub.publish(pkt(stream, n, gop=10))
    hub.end_stream("camera lost")
    reader.join(5)
    assert not reader.is_alive()

    assert isinstance(got[0], StreamStart) and got[0].info is stream
    assert packet_seqs(got) == list(range(100))
    assert got[-1] == StreamEnd("camera lost")
    assert fast.dropped == 0 and fast.gaps == 0 and fast.delivered == 100

    rest = drain(stalled)
    assert rest[0] == Gap(42)
    assert isinstance(rest[1], MediaPacket) and rest[1].keyframe and seq(rest[1]) == 50
    assert packet_seqs(rest) == list(range(50, 58))  # its bound again, then dropping until the end
    assert rest[-2:] == [Gap(42), StreamEnd("camera lost")]  # the stream ended while it was dropping
    assert_gaps_well_formed(first + rest)
    assert stalled.dropped == 84 and stalled.gaps == 2 and stalled.delivered == 16
    stats = {s["name"]: s for s in hub.stats()["subscriptions"]}
    assert stats["stalled"] | {"depth": 0} == {"name": "stalled", "mode": "queue", "depth": 0, "bytes": 0,
                                               "delivered": 16, "dropped": 84, "gaps": 2, "error": None}


def test_drop_keeps_queued_run_and_recovers_on_a_keyframe_that_fits():
    hub = PacketHub()
    stream = info()
    sub = hub.subscribe("s", max_items=100, max_bytes=1000)
    for n in range(5):  # 5 x 300 bytes: the 4th doesn't fit
        hub.publish(pkt(stream, n, gop=5, size=300))
    assert sub.get() == StreamStart(stream)
    assert sub.get() == pkt(stream, 0, gop=5, size=300)  # reading frees room, but only a keyframe ends the drop
    hub.publish(pkt(stream, 5, gop=5, size=300))  # keyframe, fits now
    hub.publish(pkt(stream, 6, gop=5, size=300))  # doesn't fit: dropped again
    items = drain(sub)
    assert packet_seqs(items[:2]) == [1, 2]
    assert items[2] == Gap(2)
    assert seq(items[3]) == 5 and items[3].keyframe  # type: ignore[union-attr]
    assert len(items) == 4 and sub.dropped == 3


def test_oversized_packet_still_reaches_an_empty_queue():
    hub = PacketHub()
    stream = info()
    sub = hub.subscribe("s", max_bytes=50)
    hub.publish(pkt(stream, 0, size=500))
    assert drain(sub) == [StreamStart(stream), pkt(stream, 0, size=500)]
    assert sub.dropped == 0 and sub.delivered == 1


def test_join_cached_and_next_keyframe():
    hub = PacketHub()
    stream = info()
    for n in range(13):  # keyframes at 0, 5, 10
        hub.publish(pkt(stream, n))
    cached = hub.subscribe("cached")
    nxt = hub.subscribe("next", start="next_keyframe")
    pushed: list[HubItem] = []
    push = hub.subscribe("push", sink=pushed.append)
    pushed_next: list[HubItem] = []
    hub.subscribe("push-next", start="next_keyframe", sink=pushed_next.append)
    assert hub.stats()["gop_cache_packets"] == 3
    assert pushed == []  # a sink is only called from the publisher thread
    for n in range(13, 23):
        hub.publish(pkt(stream, n))

    c = drain(cached)
    assert c[0] == StreamStart(stream)
    assert c[1].keyframe and packet_seqs(c) == list(range(10, 23))  # type: ignore[union-attr]
    nx = drain(nxt)
    assert nx[0] == StreamStart(stream)
    assert nx[1].keyframe and packet_seqs(nx) == list(range(15, 23))  # type: ignore[union-attr]
    assert pushed[0] == StreamStart(stream) and packet_seqs(pushed) == list(range(10, 23))
    assert pushed_next[0] == StreamStart(stream) and packet_seqs(pushed_next) == list(range(15, 23))
    assert push.delivered == 13 and nxt.delivered == 8 and nxt.dropped == 0


def test_join_between_streams_sees_the_next_stream_whole():
    hub = PacketHub()
    sub = hub.subscribe("early")
    stream = info()
    hub.publish(pkt(stream, 1))  # not a keyframe: a camera may start like this
    assert drain(sub) == [StreamStart(stream), pkt(stream, 1)]


def test_cached_join_waits_when_the_gop_wont_fit_its_queue():
    hub = PacketHub()
    stream = info()
    for n in range(4):
        hub.publish(pkt(stream, n))
    sub = hub.subscribe("small", max_items=2)
    hub.publish(pkt(stream, 4))
    hub.publish(pkt(stream, 5))
    assert drain(sub) == [StreamStart(stream), pkt(stream, 5)]
    assert sub.dropped == 0 and sub.gaps == 0


def test_stream_changes_reach_everyone_in_order():
    hub = PacketHub()
    a, b, c = info(1), info(2, 1280, 720), info(3)
    pushed: list[HubItem] = []
    q = hub.subscribe("queue", max_items=1000)
    p = hub.subscribe("push", sink=pushed.append)
    hub.start_stream(a)
    hub.start_stream(a)  # the current stream again: nothing
    hub.publish(pkt(a, 0))
    hub.publish(pkt(a, 1))
    hub.publish(pkt(b, 0))  # resolution change without start_stream
    hub.publish(pkt(b, 1))
    hub.end_stream("timeout")
    hub.end_stream("timeout")  # no stream live: nothing
    hub.start_stream(c)
    hub.publish(pkt(c, 0))
    expected = [StreamStart(a), pkt(a, 0), pkt(a, 1), StreamStart(b), pkt(b, 0), pkt(b, 1),
                StreamEnd("timeout"), StreamStart(c), pkt(c, 0)]
    got = drain(q)
    assert got == expected and pushed == expected
    assert got[3].info is b  # type: ignore[union-attr]
    assert hub.stats()["streams"] == 3 and p.delivered == 5


def test_gap_then_stream_change_while_dropping():
    hub = PacketHub()
    a, b = info(1), info(2)
    sub = hub.subscribe("s", max_items=2)
    for n in range(4):
        hub.publish(pkt(a, n))
    hub.publish(pkt(b, 1))  # new stream: the gap ends before its StreamStart; b1 doesn't fit either
    assert drain(sub) == [StreamStart(a), pkt(a, 0), pkt(a, 1), Gap(2), StreamStart(b)]
    hub.publish(pkt(b, 2))  # the queue is empty again, but the drop lasts until a keyframe
    hub.publish(pkt(b, 5))
    assert drain(sub) == [Gap(2), pkt(b, 5)]
    assert sub.dropped == 4 and sub.gaps == 2


def test_gop_cache_over_its_byte_bound():
    hub = PacketHub(gop_cache_bytes=1000)
    stream = info()
    hub.publish(pkt(stream, 0, gop=10, size=300))
    hub.publish(pkt(stream, 1, gop=10, size=300))
    hub.publish(pkt(stream, 2, gop=10, size=300))
    assert hub.stats()["gop_cache_bytes"] == 900
    hub.publish(pkt(stream, 3, gop=10, size=300))  # 1200 bytes: forgotten
    assert hub.stats()["gop_cache_bytes"] == 0
    sub = hub.subscribe("late")
    for n in range(4, 12):
        hub.publish(pkt(stream, n, gop=10, size=300))
    items = drain(sub)
    assert items[0] == StreamStart(stream)
    assert packet_seqs(items) == [10, 11] and items[1].keyframe  # type: ignore[union-attr]
    assert hub.stats()["gop_cache_packets"] == 2
    hub.end_stream("bye")
    assert hub.stats()["gop_cache_packets"] == 0 and hub.stats()["gop_cache_bytes"] == 0


def test_a_raising_sink_is_logged_once_and_detached(caplog):
    hub = PacketHub("door")
    stream = info()
    calls = 0

    def bad(item: HubItem) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("sink broke")

    good: list[HubItem] = []
    bad_sub = hub.subscribe("bad", sink=bad)
    hub.subscribe("good", sink=good.append)
    q = hub.subscribe("queue")
    with caplog.at_level(logging.ERROR, logger="camrec.sources.hub"):
        for n in range(6):
            hub.publish(pkt(stream, n))
        hub.end_stream("x")
    assert calls == 3
    records = [r for r in caplog.records if r.name == "camrec.sources.hub"]
    assert len(records) == 1 and records[0].exc_info is not None and "'bad'" in records[0].getMessage()
    assert isinstance(bad_sub.error, RuntimeError) and bad_sub.closed
    assert packet_seqs(good) == list(range(6)) and good[-1] == StreamEnd("x")
    assert packet_seqs(drain(q)) == list(range(6))
    stats = hub.stats()
    assert stats["sink_errors"] == 1 and stats["subscribers"] == 2
    assert [s["name"] for s in stats["subscriptions"]] == ["good", "queue"]


def test_queue_get_semantics_and_push_depth():
    hub = PacketHub()
    sub = hub.subscribe("s")
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        sub.get(timeout=0.05)
    assert time.monotonic() - t0 >= 0.04
    result: list[HubItem | None] = []
    waiter = threading.Thread(target=lambda: result.append(sub.get(timeout=5)))
    waiter.start()
    time.sleep(0.05)
    sub.close()  # wakes a blocked get with None
    waiter.join(5)
    assert result == [None] and sub.get() is None
    sub.close()
    hub.unsubscribe(sub)  # idempotent
    push = hub.subscribe("rec", sink=lambda item: None, depth=lambda: 7)
    with pytest.raises(TypeError):
        push.get()
    assert hub.stats()["subscriptions"] == [{"name": "rec", "mode": "push", "depth": 7, "bytes": 0,
                                             "delivered": 0, "dropped": 0, "gaps": 0, "error": None}]
    def broken_gauge() -> int:
        raise OSError("gone")

    gauge = hub.subscribe("gauge", sink=lambda item: None, depth=broken_gauge)
    assert gauge.stats()["depth"] == -1  # status still works
    gauge.close()
    with hub.subscribe("ctx") as ctx:
        assert hub.subscribers == 2
    assert ctx.closed and hub.subscribers == 1
    with pytest.raises(ValueError):
        hub.subscribe("x", start="now")  # type: ignore[arg-type]


def test_thousand_attach_detach_cycles_leave_nothing_behind():
    threads_before = threading.active_count()
    hub = PacketHub()
    stream = info()
    stop = threading.Event()
    refs: list[weakref.ref[Subscription]] = []
    refs_lock = threading.Lock()

    def publisher() -> None:
        n = 0
        while not stop.is_set():
            hub.publish(pkt(stream, n))
            n += 1
            if n % 50 == 0:
                time.sleep(0.001)

    def churn(k: int) -> None:
        rng = random.Random(k)
        for i in range(500):
            sink = (lambda item: None) if i % 3 == 0 else None
            start: Start = "cached_keyframe" if rng.random() < 0.5 else "next_keyframe"
            sub = hub.subscribe(f"c{k}-{i}", start=start, sink=sink, max_items=20)
            if sink is None and i % 2:
                drain(sub)
            with refs_lock:
                refs.append(weakref.ref(sub))
            if i % 4 == 0:
                with sub:
                    pass
            else:
                hub.unsubscribe(sub)
            del sub

    pub = threading.Thread(target=publisher)
    churners = [threading.Thread(target=churn, args=(k,)) for k in range(2)]
    pub.start()
    for t in churners:
        t.start()
    for t in churners:
        t.join(60)
    stop.set()
    pub.join(10)
    assert not pub.is_alive() and not any(t.is_alive() for t in churners)
    assert hub.subscribers == 0 and hub.stats()["subscriptions"] == []
    assert hub.packets > 0
    assert threading.active_count() == threads_before
    gc.collect()
    assert len(refs) == 1000
    assert all(r() is None for r in refs)


def test_asyncio_bridge_receives_in_order_and_close_wakes_a_waiter():
    hub = PacketHub()
    stream = info()

    async def main() -> tuple[list[HubItem], int, HubItem | None]:
        sub = hub.subscribe("viewer", max_items=1000)
        ticks = 0
        running = True

        async def ticker() -> None:
            nonlocal ticks
            while running:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.create_task(ticker())

        def publish() -> None:
            for n in range(100):
                hub.publish(pkt(stream, n))
                if n % 10 == 0:
                    time.sleep(0.005)
            hub.end_stream("done")

        t = threading.Thread(target=publish)
        t.start()
        got: list[HubItem] = []
        async for item in sub:
            got.append(item)
            if isinstance(item, StreamEnd):
                break
        t.join(5)
        waiting = asyncio.create_task(sub.aget())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        closer = threading.Thread(target=sub.close)
        closer.start()
        woken = await asyncio.wait_for(waiting, 2)
        closer.join(5)
        running = False
        await tick_task
        return got, ticks, woken

    got, ticks, woken = asyncio.run(main())
    assert got[0] == StreamStart(stream) and got[-1] == StreamEnd("done")
    assert packet_seqs(got) == list(range(100))
    assert ticks > 10  # the loop kept running while aget waited
    assert woken is None


def test_cancelled_aget_leaves_no_waiter_behind():
    hub = PacketHub()
    stream = info()
    sub = hub.subscribe("v")

    async def main() -> None:
        task = asyncio.create_task(sub.aget())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert sub._waiters == []
    hub.publish(pkt(stream, 0))
    assert drain(sub) == [StreamStart(stream), pkt(stream, 0)]


def test_stress_cached_joins_while_publishing_are_gap_free():
    hub = PacketHub()
    stream = info()
    stop = threading.Event()
    results: list[tuple[int, list[HubItem]]] = []

    def publisher() -> None:
        n = 0
        while not stop.is_set():
            hub.publish(pkt(stream, n, gop=10))
            n += 1
            if n % 20 == 0:
                time.sleep(0.0005)

    def joiner() -> None:
        rng = random.Random(7)
        for i in range(300):
            pushed: list[HubItem] = []
            sink = pushed.append if i % 3 == 0 else None
            published_before = hub.packets
            sub = hub.subscribe(f"j{i}", sink=sink, max_items=1_000_000, max_bytes=1 << 30)
            for _ in range(rng.randrange(1, 20)):
                time.sleep(0)
            items = drain(sub) if sink is None else pushed
            sub.close()
            results.append((published_before, list(items)))

    pub = threading.Thread(target=publisher)
    pub.start()
    time.sleep(0.01)
    j = threading.Thread(target=joiner)
    j.start()
    j.join(60)
    stop.set()
    pub.join(10)
    assert len(results) == 300
    with_packets = from_cache = 0
    for published_before, items in results:
        if not items:
            continue  # a push subscriber whose backlog no publish had flushed yet
        assert items[0] == StreamStart(stream)
        assert not any(isinstance(i, Gap | StreamEnd) for i in items)
        seqs = packet_seqs(items)
        if seqs:
            with_packets += 1
            assert seqs[0] % 10 == 0 and items[1].keyframe  # type: ignore[union-attr]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no hole, no repeat at the seam
            from_cache += seqs[0] < published_before
    assert with_packets > 100
    assert from_cache > 50  # the cached GOP was really used, and joined seamlessly with live packets


def test_b_frames_flag_follows_the_current_stream():
    hub = PacketHub("cam/main")
    first = info(1)
    for n, pts in enumerate([0, 3, 1, 2, 6, 4, 5]):  # I P B B P B B: decode order ≠ presentation order
        hub.publish(MediaPacket(data=b"x", pts=pts, dts=n, duration=1, keyframe=n == 0, arrival=float(n),
                                stream=first))
    assert hub.b_frames and hub.stats()["b_frames"] and hub.info is first
    second = info(2)  # a reconnect to a camera that now sends no B-frames
    for n in range(5):
        hub.publish(pkt(second, n))
    assert not hub.b_frames and hub.info is second
    hub.end_stream()
    assert hub.info is None and not hub.b_frames
