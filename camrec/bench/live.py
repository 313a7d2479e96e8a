"""`camrec bench live`: what live viewers cost beside the camera's recording, and how soon and how
late they see the picture, in one run (issue 12's closing numbers).

The server is wired as `camrec run` wires it (camrec/bench/_live_rig.py): the synthetic camera
(1080p15, 4 Mbit/s by default, its capture time stamped into the picture) publishes into a packet
hub; the recorder (push subscriber) and the motion detector record it continuously into a
temporary store; the web app serves that hub through its real routes on 127.0.0.1. Phases, each
--seconds long, one after the other:

0. camera only: the synthetic camera encodes and publishes, nothing subscribes yet.
1. baseline: the recorder and detector subscribed, no viewers. The process's CPU minus the camera
   phase's is the camera's recording cost (recorder and detector threads, and FFmpeg's decoder
   threads of the detector); the web loop thread's is the idle cost of the web app.
2. --viewers aiortc WebRTC viewers (WHEP over HTTP, logged in): web thread CPU minus the baseline,
   per viewer. aiortc packetizes and encrypts in that thread, so this is the per-viewer cost.
3. --viewers MSE WebSocket viewers (aiohttp, counting segments): the same.
4. (--browser) Debian's chromium, one WebRTC viewer then one MSE viewer: time to the first
   presented frame (and that frame's age: older than the join means the cached GOP did its job),
   glass-to-glass latency read from the stamp at every presented frame, and the web thread's CPU.

CPU is per thread (POSIX thread CPU clocks), in % of one core over the phase's wall time, so the
viewers (decoding in this process) and chromium (its own processes) are not counted as server
work. The camera thread's x264 encoding stands in for the RTSP connection and is reported apart.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import statistics
import time
from typing import Any

from camrec.bench._live_browser import CHROMIUM

THREADS = ("camera", "recorder", "detector", "web")


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("live", aliases=["webrtc"],
                       help="live view: server CPU per WebRTC and MSE viewer beside the recording cost, "
                            "time to first frame and glass-to-glass latency in chromium (loopback)")
    s.add_argument("--size", default="1920x1080", metavar="WxH", help="camera picture size (default 1920x1080)")
    s.add_argument("--fps", type=int, default=15, help="camera frame rate (default 15)")
    s.add_argument("--gop", type=float, default=2.0, metavar="S", help="keyframe interval in seconds (default 2)")
    s.add_argument("--bitrate", type=int, default=4000, metavar="KBIT", help="camera bitrate (default 4000)")
    s.add_argument("--seconds", type=float, default=20.0, metavar="S", help="length of each phase (default 20)")
    s.add_argument("--viewers", type=int, default=2, metavar="N",
                   help="Python viewers at once in the WebRTC and MSE phases (default 2)")
    s.add_argument("--browser", action=argparse.BooleanOptionalAction, default=CHROMIUM.exists(),
                   help=f"chromium phases (default: on when {CHROMIUM} exists)")
    s.add_argument("--quick", action="store_true", help="480x270, 3 s phases: checks that the benchmark works")
    s.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    s.set_defaults(func=cmd_bench_live)


def cmd_bench_live(args: argparse.Namespace) -> int:
    if args.quick:
        args.size, args.seconds, args.bitrate = "480x270", 3.0, 600
    if args.viewers < 1:
        raise SystemExit("--viewers must be at least 1")
    for noisy in ("aioice", "aiortc", "camrec.web"):  # one INFO line per ICE check, per viewer otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = asyncio.run(_run(args))
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


async def _measure(rig: Any, seconds: float) -> dict[str, float]:
    """% of a core of each thread (and the process) over `seconds` from now."""
    before, start = rig.cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    after, wall = rig.cpu(), time.monotonic() - start
    return {k: round(100 * (after[k] - before[k]) / wall, 3) for k in before}


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from camrec.bench._live_browser import measure as browser_measure
    from camrec.bench._live_rig import CAMERA, USER, Rig
    from camrec.bench._live_viewers import MseViewer, ViewerLoop, WebRtcViewer

    width, height = (int(v) for v in args.size.lower().split("x"))
    # An object crosses the picture every 10 s, all the time: the detector sees motion and the
    # recorder records continuously, as on a busy street.
    source = (f"synthetic:?size={width}x{height}&fps={args.fps}&gop={args.gop}&bitrate={args.bitrate}"
              f"&stamp=1&motion=0-10&period=10")
    n = args.viewers
    rig = Rig(source, max_viewers=n + 2)
    viewers = ViewerLoop(rig.base)
    rtc: list[WebRtcViewer] = []
    mse: list[MseViewer] = []
    phases: dict[str, dict[str, float]] = {}
    try:
        await viewers.login(USER, rig.password)
        await asyncio.sleep(min(2.0, args.seconds))  # the encoder warms up
        phases["camera_only"] = await _measure(rig, args.seconds)
        rig.start_recording()
        await asyncio.sleep(max(2.0, args.gop))  # a keyframe, the detector learns, a clip opens
        phases["baseline"] = await _measure(rig, args.seconds)

        await asyncio.sleep(args.gop / 2)  # join mid-GOP, so the first frame shows the cached start
        for _ in range(n):
            viewer = WebRtcViewer(viewers, f"/api/live/{CAMERA}/whep?stream=main")
            rtc.append(viewer)
            await viewer.start()
            deadline = time.monotonic() + 10
            while viewer.first_frame_ms is None and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        await asyncio.sleep(1.0)  # past the cached GOP's burst: live frames only
        for viewer in rtc:
            viewer.collect = True
        phases["webrtc"] = await _measure(rig, args.seconds)
        rtc_sent = sum(v.frames for v in rtc)
        for viewer in rtc:
            await viewer.close()

        for _ in range(n):
            m = MseViewer(viewers, f"/api/live/{CAMERA}/mse?stream=main")
            mse.append(m)
            await m.start()
        await asyncio.sleep(1.0)
        phases["mse"] = await _measure(rig, args.seconds)
        for m in mse:
            await m.close()

        browser: dict[str, Any] | None = None
        if args.browser:
            marks: list[tuple[str | None, dict[str, float], float]] = []

            async def between(kind: str | None) -> None:
                marks.append((kind, rig.cpu(), time.monotonic()))

            await asyncio.sleep(args.gop / 2)
            browser = await browser_measure(rig.base, CAMERA, USER, rig.password, args.seconds, skip=1.0,
                                            between=between)
            for (kind, c0, t0), (_, c1, t1) in itertools.pairwise(marks):
                assert kind is not None
                # The whole chromium phase (join, catch-up and the measured part) per thread.
                phases[f"chromium_{kind}"] = {k: round(100 * (c1[k] - c0[k]) / (t1 - t0), 3) for k in c0}
    finally:
        for viewer in rtc:
            if viewer.pc is not None and viewer.pc.connectionState != "closed":
                await viewer.close()
        await viewers.stop()
        rig.close()
    recorder = rig.recorder_status()  # after close: the last clip is counted
    return _results(args, width, height, phases, rtc, rtc_sent, mse, browser, recorder, rig.audited)


def _per_viewer(phases: dict[str, dict[str, float]], phase: str, thread: str, n: int) -> float | None:
    if phase not in phases:
        return None
    return round((phases[phase][thread] - phases["baseline"][thread]) / n, 3)


def _results(args: argparse.Namespace, width: int, height: int, phases: dict[str, dict[str, float]],
             rtc: list[Any], rtc_frames: int, mse: list[Any], browser: dict[str, Any] | None,
             recorder: dict[str, Any], audited: list[dict[str, Any]]) -> dict[str, Any]:
    n = args.viewers
    base = phases["baseline"]
    lat = sorted(x for v in rtc for x in v.latencies)
    firsts = [v.first_frame_ms for v in rtc if v.first_frame_ms is not None]
    ages = [v.first_age_ms for v in rtc if v.first_age_ms is not None]
    mse_firsts = [m.first_segment_ms for m in mse if m.first_segment_ms is not None]
    return {
        "camera": f"{width}x{height}@{args.fps} gop {args.gop:g}s {args.bitrate} kbit/s",
        "seconds": args.seconds, "viewers": n, "cpus": os.cpu_count(),
        "threads_percent": phases,  # % of a core per thread and the process, in each phase
        # The process with the recorder and detector minus the process with the camera alone.
        "recording_percent": {"recorder": base["recorder"], "detector": base["detector"],
                              "total": round(base["process"] - phases["camera_only"]["process"], 3)},
        "web_idle_percent": base["web"],
        "per_viewer_percent": {
            "webrtc": _per_viewer(phases, "webrtc", "web", n), "mse": _per_viewer(phases, "mse", "web", n),
            "chromium_webrtc": _per_viewer(phases, "chromium_webrtc", "web", 1),
            "chromium_mse": _per_viewer(phases, "chromium_mse", "web", 1),
            # The hub's fan-out to one more queue subscriber, in the camera's thread.
            "webrtc_camera_thread": _per_viewer(phases, "webrtc", "camera", n),
            "mse_camera_thread": _per_viewer(phases, "mse", "camera", n)},
        "aiortc": {"first_frame_ms": round(max(firsts), 1) if firsts else None,
                   "viewers_without_a_frame": n - len(firsts),
                   "first_age_ms": round(min(ages), 1) if ages else None,
                   "frames_decoded": rtc_frames,
                   "capture_to_decode_ms": {"samples": len(lat),
                                            "median": round(statistics.median(lat), 1) if lat else None,
                                            "p95": round(lat[int(0.95 * (len(lat) - 1))], 1) if lat else None}},
        "mse_python": {"first_segment_ms": round(max(mse_firsts), 1) if mse_firsts else None,
                       "segments": [m.segments for m in mse], "mime": mse[0].mime if mse else None},
        "chromium": browser,
        "recorder": recorder,
        # The registry's audit entries: every session started and ended, with what it was sent.
        "live_sessions": {"started": sum(1 for e in audited if e.get("event") == "live-start"),
                          "ended": [{k: e.get(k) for k in ("kind", "seconds", "packets", "dropped", "reason")}
                                    for e in audited if e.get("event") == "live-end"]},
    }


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}{unit}"


def report(r: dict[str, Any]) -> str:
    rec, per = r["recording_percent"], r["per_viewer_percent"]
    total = rec["total"]

    def share(v: float | None) -> str:
        return "" if v is None or not total else f"  ({100 * v / total:.0f} % of the recording cost)"

    lines = [f"camera {r['camera']}, {r['seconds']:g} s phases, {r['viewers']} Python viewer(s) of each kind, "
             f"{r['cpus']} CPUs; % of one core",
             "recording, same run (baseline phase, no viewers):",
             f"  recorder thread (mux, encrypt, write)   {_fmt(rec['recorder'])} %",
             f"  detector thread (decode, analyse)       {_fmt(rec['detector'])} %",
             f"  whole recording (process minus camera)  {_fmt(total)} %  (with FFmpeg's decoder threads)",
             f"  (the synthetic camera, x264 in place of the RTSP connection: "
             f"{_fmt(r['threads_percent']['camera_only']['process'], digits=1)} %; web thread idle "
             f"{_fmt(r['web_idle_percent'])} %)",
             "live view, server web thread, per viewer:",
             f"  WebRTC (aiortc viewers)                 {_fmt(per['webrtc'])} %{share(per['webrtc'])}",
             f"  MSE (WebSocket viewers)                 {_fmt(per['mse'])} %{share(per['mse'])}"]
    if r["chromium"] is not None:
        lines += [f"  WebRTC (chromium, whole phase)          {_fmt(per['chromium_webrtc'])} %",
                  f"  MSE (chromium, whole phase)             {_fmt(per['chromium_mse'])} %"]
    lines.append(f"  hub fan-out in the camera thread: WebRTC {_fmt(per['webrtc_camera_thread'])} %, "
                 f"MSE {_fmt(per['mse_camera_thread'])} %")
    c = r["chromium"]
    if c is not None:
        lines.append("chromium (first frame: from opening the connection; age: how old that frame was then)")
        for kind in ("webrtc", "mse"):
            k = c[kind]
            lines.append(f"  {kind:<6} first frame {_fmt(k['first_frame_ms'], ' ms', 0)} "
                         f"(age {_fmt(k['first_age_ms'], ' ms', 0)}), glass-to-glass median "
                         f"{_fmt(k['latency_ms']['median'], ' ms', 0)}, p95 {_fmt(k['latency_ms']['p95'], ' ms', 0)} "
                         f"({k['latency_ms']['samples']} frames), {k.get('codec')} {k.get('width')} px wide, "
                         f"{k.get('frames_dropped')} dropped")
    a = r["aiortc"]
    lines.append(f"aiortc viewers: first frame {_fmt(a['first_frame_ms'], ' ms', 0)} (age "
                 f"{_fmt(a['first_age_ms'], ' ms', 0)}), capture to decode median "
                 f"{_fmt(a['capture_to_decode_ms']['median'], ' ms', 0)}, p95 "
                 f"{_fmt(a['capture_to_decode_ms']['p95'], ' ms', 0)}")
    rs = r["recorder"]
    lines.append(f"recorder: {rs['clips_written']} clip(s) written, recording {rs['recording']}, "
                 f"{rs['packets_dropped']} packet(s) dropped, detector dropped {rs['detector_dropped']}")
    return "\n".join(lines)
