"""`camrec bench webrtc`: what one WebRTC live viewer costs the recorder, and how fast it sees a picture.

The synthetic camera (stamp=1: its capture time drawn into the picture) publishes into a packet hub
from its own thread, in real time, as a camera connection does. The recorder side (camrec.web.live)
runs on the main asyncio loop; the viewers are real aiortc peers on loopback on a second loop
thread, decoding in aiortc's own decoder threads, so their work is not counted as the server's.

Measured, each over --seconds:
- server CPU per viewer: CPU time of the server's loop thread (aiortc packetizes and encrypts
  there) with the viewers connected, minus the same thread without viewers, per viewer;
- for scale, the whole process (the synthetic camera's x264 threads, and the viewers' decoding)
  and the camera thread that publishes into the hub (per-subscriber cost of the hub lands there);
- time to first frame: from the viewer's offer to its first decoded frame, and that frame's age
  at join (positive: it was captured before the viewer joined, i.e. it came from the GOP cache);
- capture-to-decode latency: the viewer's clock when a frame is decoded minus the stamp in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from camrec.sources.hub import PacketHub
from camrec.sources.stamp import MODULUS, read_stamp
from camrec.sources.synthetic import SyntheticSource

LOOPBACK = ("127.0.0.1",)


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("webrtc", help="live view over WebRTC: server CPU per viewer, time to first frame, "
                                      "capture-to-decode latency (aiortc viewers on loopback)")
    s.add_argument("--size", default="1920x1080", metavar="WxH", help="camera picture size (default 1920x1080)")
    s.add_argument("--fps", type=int, default=15, help="camera frame rate (default 15)")
    s.add_argument("--gop", type=float, default=2.0, metavar="S", help="keyframe interval in seconds (default 2)")
    s.add_argument("--bitrate", type=int, default=4000, metavar="KBIT", help="camera bitrate (default 4000)")
    s.add_argument("--seconds", type=float, default=20.0, metavar="S", help="length of each phase (default 20)")
    s.add_argument("--viewers", type=int, default=1, metavar="N", help="viewers at once (default 1)")
    s.add_argument("--quick", action="store_true", help="480x270, 3 s phases: checks that the benchmark works")
    s.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    s.set_defaults(func=cmd_bench_webrtc)


def cmd_bench_webrtc(args: argparse.Namespace) -> int:
    if args.quick:
        args.size, args.seconds, args.bitrate = "480x270", 3.0, 600
    for noisy in ("aioice", "aiortc"):  # one INFO line per ICE check otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = asyncio.run(_run(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        cpu, first, lat = result["server_cpu"], result["first_frame"], result["latency_ms"]
        print(f"camera {result['camera']}, {result['viewers']} viewer(s), {args.seconds:g} s per phase")
        print(f"  server CPU per viewer: {cpu['per_viewer_percent']:.2f} % of a core "
              f"(loop thread {cpu['idle_percent']:.2f} % without viewers)")
        print(f"  whole process (synthetic camera with x264's threads, viewers decoding): "
              f"{cpu['process_without_viewers_percent']:.1f} % without viewers, "
              f"{cpu['process_with_viewers_percent']:.1f} % with")
        print(f"  first frame: {first['ms_after_offer']} ms after the offer (slowest viewer), captured "
              f"{first['age_at_join_ms']} ms before the join; "
              f"{first['viewers_without_a_frame_in_10s']} viewer(s) without a frame in 10 s")
        print(f"  capture to decode: median {lat['median']} ms, p95 {lat['p95']} ms ({lat['frames']} frames)")
    return 0


class _Camera:
    def __init__(self, source: str) -> None:
        self.hub = PacketHub("bench")
        self.source = SyntheticSource(source)
        self.source.open()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-camera", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            packet = self.source.read()
            if packet is None:
                return
            self.hub.publish(packet)

    def cpu(self) -> float:
        assert self.thread.ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(self.thread.ident))

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()
        self.source.close()


class _ViewerLoop:
    """A second asyncio loop in its own thread, where the aiortc viewers live."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-viewers", daemon=True)
        self.thread.start()

    async def call(self, coro_fn: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro_fn(), self.loop))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class _Viewer:
    def __init__(self) -> None:
        self.pc: Any = None
        self.first_frame_at: float | None = None
        self.first_stamp: int | None = None
        self.latencies: list[float] = []
        self.frames = 0
        self.collect = False
        self._reader: asyncio.Task[None] | None = None

    async def offer(self) -> str:
        from aiortc import RTCConfiguration, RTCPeerConnection

        from camrec.web.live.webrtc import IceSettings, restrict_candidates

        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.on("track", lambda track: setattr(self, "_reader", asyncio.ensure_future(self._read(track))))
        restrict_candidates(self.pc, IceSettings(addresses=LOOPBACK))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def _read(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await track.recv()
                now_ms = time.time() * 1000
                stamp = read_stamp(frame.to_ndarray(format="gray"))
                self.frames += 1
                if self.first_frame_at is None:
                    self.first_frame_at, self.first_stamp = time.monotonic(), stamp
                elif self.collect and stamp is not None:
                    self.latencies.append((now_ms - stamp) % MODULUS)
        except MediaStreamError:
            return

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from camrec.web.live.webrtc import IceSettings, LivePeer

    width, height = (int(v) for v in args.size.lower().split("x"))
    camera = _Camera(f"synthetic:?size={width}x{height}&fps={args.fps}&gop={args.gop}&bitrate={args.bitrate}"
                     f"&stamp=1&motion=0-1000&period=1000")
    viewers_loop = _ViewerLoop()
    peers: list[LivePeer] = []
    viewers = [_Viewer() for _ in range(args.viewers)]
    try:
        await asyncio.sleep(min(2.0, args.seconds))  # the camera's encoder warms up, a GOP is cached
        loop0, cam0, proc0 = time.thread_time(), camera.cpu(), time.process_time()
        await asyncio.sleep(args.seconds)
        idle_loop, idle_cam, idle_proc = time.thread_time() - loop0, camera.cpu() - cam0, time.process_time() - proc0

        await asyncio.sleep(args.gop / 2)  # join mid-GOP, so the first frame shows the cached start
        ice = IceSettings(addresses=LOOPBACK)
        first_after_offer: list[float] = []
        ages: list[float] = []
        for viewer in viewers:
            offer = await viewers_loop.call(viewer.offer)
            started, joined_ms = time.monotonic(), time.time() * 1000
            peer = LivePeer(camera.hub.subscribe("bench-viewer", start="cached_keyframe"), ice)
            peers.append(peer)
            answer = await peer.answer(offer)
            await viewers_loop.call(lambda v=viewer, a=answer: v.accept(a))  # type: ignore[misc]
            deadline = time.monotonic() + 10
            while viewer.first_frame_at is None and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if viewer.first_frame_at is None:
                # Reported, not fatal: several aiortc viewers decoding 1080p in this one process can
                # fall behind, lose packets and (PLI being ignored in passthrough) wait for a keyframe.
                continue
            first_after_offer.append((viewer.first_frame_at - started) * 1000)
            if viewer.first_stamp is not None:
                ages.append((joined_ms - viewer.first_stamp) % MODULUS)
        await asyncio.sleep(1.0)  # past the cached GOP's burst: latency of live frames only
        for viewer in viewers:
            viewer.collect = True
        loop1, cam1, proc1 = time.thread_time(), camera.cpu(), time.process_time()
        await asyncio.sleep(args.seconds)
        busy_loop, busy_cam, busy_proc = time.thread_time() - loop1, camera.cpu() - cam1, time.process_time() - proc1
        sent = [peer.stats() for peer in peers]
    finally:
        for peer in peers:
            await peer.close()
        for viewer in viewers:
            await viewers_loop.call(viewer.close)
        viewers_loop.stop()
        camera.stop()
    latencies = sorted(x for v in viewers for x in v.latencies)

    def pct(seconds: float) -> float:
        return round(100 * seconds / args.seconds, 3)

    return {
        "camera": f"{width}x{height}@{args.fps} gop {args.gop:g}s {args.bitrate} kbit/s",
        "viewers": args.viewers,
        "seconds": args.seconds,
        "server_cpu": {"idle_percent": pct(idle_loop), "with_viewers_percent": pct(busy_loop),
                       "per_viewer_percent": round(pct(busy_loop - idle_loop) / args.viewers, 3),
                       "camera_thread_percent": pct(busy_cam),
                       "camera_thread_delta_percent": pct(busy_cam - idle_cam),
                       "process_without_viewers_percent": pct(idle_proc),
                       "process_with_viewers_percent": pct(busy_proc)},
        "first_frame": {"ms_after_offer": round(max(first_after_offer), 1) if first_after_offer else None,
                        "viewers_without_a_frame_in_10s": args.viewers - len(first_after_offer),
                        "age_at_join_ms": round(min(ages), 1) if ages else None},
        "latency_ms": {"frames": len(latencies),
                       "median": round(statistics.median(latencies), 1) if latencies else None,
                       "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None},
        "sent": [{k: s[k] for k in ("packets_sent", "bytes_sent", "dropped")} for s in sent],
        "frames_decoded": [v.frames for v in viewers],
    }
