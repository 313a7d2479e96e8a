"""Recording always wins: live viewers, a stalled one included, never cost the recorder a packet.

A real `camrec run` records the synthetic camera (continuous motion) while five viewers watch it
over loopback: three WebRTC viewers (aiortc, decoding), one MSE viewer that reads, and one MSE
viewer that stops reading for 30 s. The recorder's hub subscription must drop nothing, the stalled
viewer must drop its own packets, and every clip written meanwhile must hold every frame (no
missing timestamp) when decrypted with the owner's key.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.support.camera import free_port
from tests.support.daemon import Daemon
from tests.support.web_server import PASSWORD, raw_websocket

FPS = 15
STALL_SECONDS = 30


def login(base: str) -> tuple[str, str]:
    request = urllib.request.Request(f"{base}/api/login", json.dumps({"username": "alice", "password": PASSWORD})
                                     .encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        cookie = r.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
        return cookie, json.loads(r.read())["csrf"]


async def viewers(base: str, session: str, csrf: str, seconds: float, probe) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Four reading viewers for `seconds`; `probe()` runs in a thread 3 s before they leave."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from camrec.web.live.webrtc import IceSettings, restrict_candidates

    frames = {"webrtc": 0, "mse": 0}
    deadline = time.monotonic() + seconds

    async def webrtc(http: aiohttp.ClientSession) -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        restrict_candidates(pc, IceSettings(addresses=("127.0.0.1",)))
        tracks: asyncio.Queue = asyncio.Queue()
        pc.on("track", tracks.put_nowait)
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(f"{base}/api/live/front/whep", data=pc.localDescription.sdp,
                             headers={"Content-Type": "application/sdp", "X-CSRF-Token": csrf}) as r:
            assert r.status == 201, await r.text()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=await r.text(), type="answer"))
        track = await asyncio.wait_for(tracks.get(), 10)
        while time.monotonic() < deadline:
            await asyncio.wait_for(track.recv(), 10)
            frames["webrtc"] += 1
        await pc.close()

    async def mse(http: aiohttp.ClientSession) -> None:
        async with http.ws_connect(f"{base}/api/live/front/mse", origin=base) as ws:
            while time.monotonic() < deadline:
                msg = await asyncio.wait_for(ws.receive(), 10)
                frames["mse"] += msg.type == aiohttp.WSMsgType.BINARY and msg.data[4:8] == b"moof"

    async with aiohttp.ClientSession(cookies={"camrec_session": session}, headers={"Origin": base}) as http:
        async def probe_late() -> None:
            await asyncio.sleep(seconds - 3)
            await asyncio.to_thread(probe)

        await asyncio.gather(webrtc(http), webrtc(http), webrtc(http), mse(http), probe_late())
    return frames


def frame_steps(mp4: Path) -> set[Fraction]:
    """The distinct steps between consecutive presentation times in a clip, in seconds."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time",
                          "-of", "csv=p=0", str(mp4)], capture_output=True, text=True, check=True).stdout
    times = sorted(Fraction(t).limit_denominator(90000) for t in out.split())
    return {b - a for a, b in pairwise(times)}


@pytest.mark.skipif(not Path("/usr/bin/ffprobe").exists(), reason="ffprobe missing")
def test_five_viewers_and_a_stalled_one_cost_the_recorder_nothing(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = Daemon(tmp_path, f"synthetic:?size=640x360&fps={FPS}&bitrate=4000&motion=1-13&period=14",
                    pre_roll=1.0, post_roll=3.0,
                    extra=(f"web:\n  listen: ['127.0.0.1:{port}']\n  plain_http: true\n"
                           "  live:\n    max_viewers: 6\n  webrtc:\n    addresses: ['127.0.0.1']\n"))
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    added = daemon.cli("user", "add", "-c", str(daemon.config), "alice", "--password-file", str(tmp_path / "pw"))
    assert added.returncode == 0, added.stderr
    daemon.start()
    try:
        daemon.wait_for(lambda rows: len(rows) >= 1, 60, "a clip to start")
        session, csrf = login(base)
        stalled = raw_websocket(port, "/api/live/front/mse", session, rcvbuf=4096)
        seen: dict[str, Any] = {}

        def probe() -> None:  # while all five watch
            seen["status"] = daemon.status()["cameras"]["front"]
            seen["shown"] = daemon.cli("status", "-c", str(daemon.config)).stdout

        frames = asyncio.run(viewers(base, session, csrf, STALL_SECONDS, probe))
        status, shown = seen["status"], seen["shown"]
        stalled.close()
    finally:
        code = daemon.stop()
    assert code == 0, daemon.log.read_text()
    assert frames["webrtc"] > 3 * FPS * STALL_SECONDS * 0.5 and frames["mse"] > FPS * STALL_SECONDS * 0.5, frames
    subs = {s["name"]: s for s in status["hubs"]["main"]["subscriptions"]}
    live = [s for name, s in subs.items() if name.startswith("viewer ")]
    assert len(live) == 5 and "5 live viewer(s) (mse, webrtc)" in shown, shown
    assert subs["recorder"]["dropped"] == 0 and status["recorder_packets_dropped"] == 0
    assert max(s["dropped"] for s in live) > 0, live  # the stalled viewer lost its own packets
    # Every clip holds every frame: decrypted with the owner's key, its frames are 1/FPS apart.
    rows = daemon.rows()
    assert sum(r["end"] - r["start"] for r in rows) > STALL_SECONDS
    for n, row in enumerate(rows):
        out = tmp_path / f"clip{n}.mp4"
        export = subprocess.run([sys.executable, "-m", "camrec", "decrypt", "-i", str(daemon.key),
                                 str(daemon.storage / row["path"]), "-o", str(out)], capture_output=True, text=True)
        assert export.returncode == 0, export.stderr
        assert frame_steps(out) == {Fraction(1, FPS)}, row
