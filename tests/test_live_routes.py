"""The live view's routes (camrec.web.live.routes) on a real server: lookups, states, refusals.

Hubs are fed by hand with packets from the synthetic camera; the browser side is in
tests/test_live_browser.py and the transports' own tests in tests/test_live_webrtc.py and
tests/test_live_fmp4.py.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from camrec.config.models import WebConfig
from camrec.sources.base import MediaPacket, StreamInfo
from camrec.sources.hub import PacketHub
from tests.support.web_server import PASSWORD, WebHarness

SDP = "application/sdp"


def info(width: int = 640, height: int = 360) -> StreamInfo:
    return StreamInfo("h264", width, height, Fraction(1, 15), 15.0)


def packet(stream: StreamInfo, pts: int, dts: int | None = None) -> MediaPacket:
    return MediaPacket(data=b"\x00\x00\x00\x01\x65" + bytes(20), pts=pts, dts=pts if dts is None else dts,
                       duration=1, keyframe=pts == 0, arrival=pts / 15, stream=stream)


@pytest.fixture
def harness(tmp_path):
    hubs = {"front": {"main": PacketHub("front/main"), "sub": PacketHub("front/detect")},
            "back": {"main": PacketHub("back/main")}, "garage": {"main": PacketHub("garage/main")}}
    main = info(1280, 720)
    for n in range(3):
        hubs["front"]["main"].publish(packet(main, n))
    bframes = info()
    for n, pts in enumerate([0, 2, 1]):
        hubs["garage"]["main"].publish(packet(bframes, pts, dts=n))
    status = {"cameras": {
        "front": {"streams": {"main": {"state": "connected"},
                              "detect": {"state": "disconnected", "last_packet_age": 4.0}}},
        "back": {"streams": {"main": {"state": "disconnected", "last_packet_age": 3600.0}}}}}
    settings = WebConfig(listen=("127.0.0.1:0",), plain_http=True, live={"max_viewers": 2})
    h = WebHarness(tmp_path, settings=settings, live=hubs, status=lambda: status)
    h.accounts.add("alice", PASSWORD)
    h.start()
    yield h
    h.stop()


def test_states_sizes_and_lookups(harness):
    session, _ = harness.login()
    a = harness.request("GET", "/api/live", session=session)
    assert a.status == 200 and a.header("Cache-Control") == "no-store"
    cams = {c["camera"]: c for c in a.json()}
    assert sorted(cams) == ["back", "front", "garage"]
    front = cams["front"]
    assert front["streams"]["main"] == {"state": "live", "codec": "h264", "width": 1280, "height": 720,
                                        "fps": 15.0, "b_frames": False}
    assert front["streams"]["sub"]["state"] == "reconnecting"  # disconnected seconds ago, retrying
    assert cams["back"]["streams"] == {"main": {"state": "offline", "codec": None, "width": None, "height": None,
                                                "fps": None, "b_frames": False}}
    assert cams["garage"]["streams"]["main"]["b_frames"] is True
    assert front["viewers"] == 0 and front["max_viewers"] == 2 and front["webrtc"] is True
    assert harness.request("GET", "/api/live/front", session=session).json() == front


@pytest.mark.parametrize(("method", "path", "ctype", "status", "words"), [
    ("GET", "/api/live/nope", None, 404, "no such camera"),
    ("POST", "/api/live/nope/whep", SDP, 404, "no such camera"),
    ("POST", "/api/live/back/whep?stream=sub", SDP, 404, "no sub-stream"),
    ("POST", "/api/live/front/whep?stream=side", SDP, 400, "main or sub"),
    ("POST", "/api/live/front/whep", "text/plain", 415, "application/sdp"),
    ("POST", "/api/live/garage/whep", SDP, 409, "B-frames"),
    ("GET", "/api/live/front/mse", None, 400, "WebSocket"),
    ("GET", "/api/live/nope/mse", None, 404, "no such camera"),
    ("DELETE", "/api/live/sessions/abc", None, 404, "no such live session"),
])
def test_bad_requests_get_a_clear_4xx(harness, method, path, ctype, status, words):
    session, csrf = harness.login()
    a = harness.request(method, path, "v=0\r\n" if method == "POST" else None, session=session, csrf=csrf,
                        headers={"Content-Type": ctype} if ctype else None)
    assert a.status == status and words in a.json()["error"], (a.status, a.body)
    if status == 409:
        assert a.json()["fallback"] == "mse"


def test_refused_without_a_session_or_csrf_token(harness):
    for method, path in [("GET", "/api/live"), ("GET", "/api/live/front"), ("POST", "/api/live/front/whep"),
                         ("GET", "/api/live/front/mse"), ("DELETE", "/api/live/sessions/x")]:
        a = harness.request(method, path, "v=0\r\n" if method == "POST" else None,
                            headers={"Content-Type": SDP} if method == "POST" else None)
        assert a.status == 401, (method, path, a.status)
    session, _ = harness.login()
    a = harness.request("POST", "/api/live/front/whep", "v=0\r\n", session=session, headers={"Content-Type": SDP})
    assert a.status == 403 and "CSRF" in a.json()["error"]


def test_a_store_only_server_has_no_live_view(tmp_path):
    h = WebHarness(tmp_path, with_accounts=False).start()
    try:
        a = h.request("GET", "/api/live")
        assert a.status == 404 and "camrec run" in a.json()["error"]
    finally:
        h.stop()


def test_live_view_switched_off(tmp_path):
    settings = WebConfig(listen=("127.0.0.1:0",), plain_http=True, live={"enabled": False})
    h = WebHarness(tmp_path, settings=settings, live={"front": {"main": PacketHub("front/main")}})
    h.accounts.add("alice", PASSWORD)
    h.start()
    try:
        session, _ = h.login()
        a = h.request("GET", "/api/live/front", session=session)
        assert a.status == 404 and "web.live.enabled" in a.json()["error"]
    finally:
        h.stop()


# --- WHEP against a real camera hub and a real aiortc viewer ------------------------------------


class LiveServer:
    """The web server with one synthetic camera publishing into its hub in real time."""

    def __init__(self, root, *, max_viewers: int = 2, options: str = "size=320x180&fps=15&gop=1") -> None:
        from tests.test_live_webrtc import Camera

        self.camera = Camera(options)
        settings = WebConfig(listen=("127.0.0.1:0",), plain_http=True, live={"max_viewers": max_viewers},
                             webrtc={"addresses": ["127.0.0.1"]})
        self.h = WebHarness(root, settings=settings, live={"front": {"main": self.camera.hub}})
        self.h.accounts.add("alice", PASSWORD)
        self.h.accounts.add("bob", PASSWORD)
        self.h.accounts.add("carol", PASSWORD)
        self.h.start()
        self.base = f"http://127.0.0.1:{self.h.port}"

    def registry(self):
        from camrec.web.live.routes import REGISTRY

        assert self.h.server is not None and self.h.server.runner is not None
        return self.h.server.runner.app[REGISTRY]

    def close(self) -> None:
        self.h.stop()
        self.camera.stop()


@pytest.fixture
def live(tmp_path):
    server = LiveServer(tmp_path)
    yield server
    server.close()


async def whep_offer(base: str, session: str, csrf: str, *, offer: str | None = None):
    """(status, headers, body, client peer) for one offer from a real aiortc viewer on loopback."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection

    from camrec.web.live.webrtc import IceSettings, restrict_candidates

    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver("video", direction="recvonly")
    restrict_candidates(client, IceSettings(addresses=("127.0.0.1",)))
    await client.setLocalDescription(await client.createOffer())
    async with aiohttp.ClientSession(cookies={"camrec_session": session}) as http, \
            http.post(f"{base}/api/live/front/whep", data=offer or client.localDescription.sdp,
                      headers={"Content-Type": SDP, "X-CSRF-Token": csrf, "Origin": base}) as r:
        return r.status, dict(r.headers), await r.text(), client


async def http(method: str, url: str, session: str, csrf: str, base: str) -> tuple[int, dict]:
    import aiohttp

    async with aiohttp.ClientSession(cookies={"camrec_session": session}) as s, \
            s.request(method, url, headers={"X-CSRF-Token": csrf, "Origin": base}) as r:
        return r.status, await r.json()


def test_whep_plays_counts_limits_and_audits(live):
    import asyncio

    from aiortc import RTCSessionDescription

    session, csrf = live.h.login()
    bob, bob_csrf = live.h.login("bob")
    carol, carol_csrf = live.h.login("carol")

    async def scenario() -> None:
        status, headers, answer, client = await whep_offer(live.base, session, csrf)
        assert status == 201 and headers["Content-Type"].startswith(SDP), answer
        location = headers["Location"]
        assert location.startswith("/api/live/sessions/")
        assert "a=candidate" in answer and "127.0.0.1" in answer and "H264" in answer
        tracks: asyncio.Queue = asyncio.Queue()
        client.on("track", tracks.put_nowait)
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        track = await asyncio.wait_for(tracks.get(), 10)
        frame = await asyncio.wait_for(track.recv(), 10)
        assert (frame.width, frame.height) == (320, 180)
        # The second viewer fits, the third is over web.live.max_viewers; a second view of the same
        # login (the page races WebRTC and MSE) counts as the same viewer.
        status2, _, answer2, client2 = await whep_offer(live.base, bob, bob_csrf)
        status3, _, body3, client3 = await whep_offer(live.base, carol, carol_csrf)
        assert status2 == 201 and status3 == 429 and "max_viewers" in body3
        status5, _, _, client5 = await whep_offer(live.base, session, csrf)
        assert status5 == 201 and len(live.registry().viewers) == 3 and live.registry().count("front") == 2
        await client5.close()
        bob_tracks: asyncio.Queue = asyncio.Queue()
        client2.on("track", bob_tracks.put_nowait)
        await client2.setRemoteDescription(RTCSessionDescription(sdp=answer2, type="answer"))
        await asyncio.wait_for((await asyncio.wait_for(bob_tracks.get(), 10)).recv(), 10)
        _, body = await http("GET", f"{live.base}/api/live/front", session, csrf, live.base)
        assert body["viewers"] == 2
        # Bob can't end Alice's session (answered like an unknown one); Alice can.
        assert (await http("DELETE", live.base + location, bob, bob_csrf, live.base))[0] == 404
        assert (await http("DELETE", live.base + location, session, csrf, live.base))[0] == 200
        assert (await http("DELETE", live.base + location, session, csrf, live.base))[0] == 404
        # Bad offers: a clear 400, never a 500.
        status4, _, body4, client4 = await whep_offer(live.base, session, csrf, offer="v=0\r\nnonsense\r\n")
        assert status4 == 400 and "SDP" in body4
        for c in (client, client2, client3, client4):
            await c.close()
        # Bob's viewer ends when its connection closes.
        for _ in range(200):
            if sum(e["event"] == "live-end" for e in live.h.audited) == 3:
                break
            await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert not live.registry().viewers
    starts = [e for e in live.h.audited if e["event"] == "live-start"]
    ends = [e for e in live.h.audited if e["event"] == "live-end"]
    assert sorted(e["user"] for e in starts) == ["alice", "alice", "bob"] == sorted(e["user"] for e in ends)
    assert {e["camera"] for e in starts} == {"front"} and {e["kind"] for e in starts} == {"webrtc"}
    mine = next(e for e in ends if e["user"] == "alice" and e["reason"] == "viewer left")
    assert mine["reason"] == "viewer left" and mine["seconds"] >= 0 and mine["packets"] > 0
    assert mine["client"] == "127.0.0.1"


def test_an_offer_that_never_connects_frees_its_slot(live, monkeypatch):
    import asyncio

    from camrec.web.live import routes

    monkeypatch.setattr(routes, "CONNECT_SECONDS", 0.5)
    session, csrf = live.h.login()

    async def scenario() -> None:
        status, _, _, client = await whep_offer(live.base, session, csrf)  # the answer is never applied
        assert status == 201 and len(live.registry().viewers) == 1
        for _ in range(100):  # the entry is written after the viewer is gone
            if any(e["event"] == "live-end" for e in live.h.audited):
                break
            await asyncio.sleep(0.05)
        await client.close()

    asyncio.run(scenario())
    assert not live.registry().viewers and live.camera.hub.subscribers == 0
    assert [e["reason"] for e in live.h.audited if e["event"] == "live-end"] == ["never connected"]


def test_fifty_viewers_joining_and_leaving_leave_nothing_behind(live):
    """25 WebRTC and 25 MSE viewers, one after the other: descriptors, threads, the server loop's
    tasks and the hub's subscribers come back to where they started."""
    import asyncio
    import os
    import threading
    import time

    import aiohttp
    from aiortc import RTCSessionDescription

    session, csrf = live.h.login()
    loop = live.h.server.loop

    def server_tasks() -> list[str]:
        async def names() -> list[str]:
            return sorted(t.get_coro().__qualname__ for t in asyncio.all_tasks())  # type: ignore[union-attr]

        return asyncio.run_coroutine_threadsafe(names(), loop).result(5)

    async def one_webrtc() -> None:
        status, headers, answer, client = await whep_offer(live.base, session, csrf)
        assert status == 201, answer
        tracks: asyncio.Queue = asyncio.Queue()
        client.on("track", tracks.put_nowait)
        await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for((await asyncio.wait_for(tracks.get(), 10)).recv(), 10)
        assert (await http("DELETE", live.base + headers["Location"], session, csrf, live.base))[0] == 200
        await client.close()

    async def one_mse() -> None:
        async with aiohttp.ClientSession(cookies={"camrec_session": session}) as s, \
                s.ws_connect(f"{live.base}/api/live/front/mse", origin=live.base) as ws:
            first = await asyncio.wait_for(ws.receive_json(), 10)
            assert first["type"] == "mse" and "avc1." in first["value"]
            init = await asyncio.wait_for(ws.receive_bytes(), 10)
            assert init[4:8] == b"ftyp"

    async def settle() -> None:
        for _ in range(100):
            if not live.registry().viewers and live.camera.hub.subscribers == 0:
                return
            await asyncio.sleep(0.05)

    async def cycles(n: int) -> None:
        for _ in range(n):
            await one_webrtc()
            await one_mse()
        await settle()

    def threads() -> int:
        # The loops' default executors keep a bounded pool of idle workers for reuse: not a leak.
        return sum(not t.name.startswith(("ThreadPoolExecutor", "asyncio_")) for t in threading.enumerate())

    def snapshot() -> tuple[int, int, list[str]]:
        # The session sweeper ends by itself a second after the last viewer: wait for it.
        for _ in range(100):
            tasks = server_tasks()
            if not any("_sweep_forever" in t for t in tasks):
                break
            time.sleep(0.05)
        return len(os.listdir("/proc/self/fd")), threads(), tasks

    asyncio.run(cycles(1))  # warm-up: imports, aiortc's first objects
    before = snapshot()
    asyncio.run(cycles(25))
    for _ in range(100):  # the last handlers finish (audit entry, socket close) after the client left
        after = snapshot()
        if after[0] <= before[0] and after[1] <= before[1] and after[2] == before[2]:
            break
        time.sleep(0.05)
    # Fewer is fine (something of an earlier test closed meanwhile); more would be a leak.
    assert after[0] <= before[0] and after[1] <= before[1] and after[2] == before[2], \
        f"fds, threads, server tasks: {before} → {after}"
    assert live.camera.hub.subscribers == 0 and not live.registry().viewers
    ends = [e for e in live.h.audited if e["event"] == "live-end"]
    assert len(ends) == 52 and {e["kind"] for e in ends} == {"webrtc", "mse"}


def test_mse_plays_and_ends_with_the_login_session(live, tmp_path):
    """The WebSocket carries a playable fMP4 (ffprobe decodes every frame at the camera's size), and
    the viewer ends on logout, and when the user is removed (another process edits the users file)."""
    import asyncio
    import subprocess

    import aiohttp

    alice, alice_csrf = live.h.login()
    bob, _ = live.h.login("bob")

    async def watch(session: str, frames: int) -> tuple[str, bytes]:
        data = b""
        async with aiohttp.ClientSession(cookies={"camrec_session": session}) as s, \
                s.ws_connect(f"{live.base}/api/live/front/mse?stream=main", origin=live.base) as ws:
            mime = (await asyncio.wait_for(ws.receive_json(), 10))["value"]
            got = 0
            while got < frames:
                msg = await asyncio.wait_for(ws.receive(), 10)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    data += msg.data
                    got += msg.data[4:8] == b"moof"
        return mime, data

    mime, data = asyncio.run(watch(alice, 20))
    assert mime.startswith('video/mp4; codecs="avc1.')
    (tmp_path / "live.mp4").write_bytes(data)
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                            "stream=width,height,nb_read_frames", "-of", "csv=p=0", str(tmp_path / "live.mp4")],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "320,180,20" and probe.stderr == ""

    async def ended_by(action, session: str) -> str:
        async with aiohttp.ClientSession(cookies={"camrec_session": session}) as s, \
                s.ws_connect(f"{live.base}/api/live/front/mse", origin=live.base) as ws:
            await asyncio.wait_for(ws.receive_json(), 10)
            await action()
            while True:  # frames until the server closes the socket
                msg = await asyncio.wait_for(ws.receive(), 10)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    return "closed"

    async def logout() -> None:
        assert (await http("POST", f"{live.base}/api/logout", alice, alice_csrf, live.base))[0] == 200

    async def remove_bob() -> None:
        await asyncio.to_thread(live.h.accounts.remove, "bob")

    assert asyncio.run(ended_by(logout, alice)) == "closed"
    assert asyncio.run(ended_by(remove_bob, bob)) == "closed"
    reasons = [(e["user"], e["reason"]) for e in live.h.audited if e["event"] == "live-end"]
    assert reasons == [("alice", "viewer left"), ("alice", "logout"), ("bob", "session ended")]


def test_slots_count_logins_not_views():
    """The registry's arithmetic: one login's second view needs no slot, a new login does, and
    setting-up views hold theirs (two offers at once can't both take the last place)."""
    import asyncio

    from camrec.web.live.registry import PER_SESSION, LiveRegistry, Viewer, ViewerLimitError

    async def audit(entry):  # type: ignore[no-untyped-def]
        pass

    hub = PacketHub("front/main")

    async def scenario() -> None:
        reg = LiveRegistry(max_viewers=2, audit=audit)

        def viewer(session: str) -> Viewer:
            return Viewer("front", "main", "mse", "u", "127.0.0.1", session, hub.subscribe(session))

        with reg.slot("front", "s1"):
            assert reg.count("front") == 1
            with reg.slot("front", "s2"):  # a second login while the first is still setting up
                assert reg.count("front") == 2
                with pytest.raises(ViewerLimitError), reg.slot("front", "s3"):
                    pass
            await reg.add(viewer("s1"))
        assert reg.count("front") == 1 and not reg._pending
        for _ in range(PER_SESSION - 1):  # s1's other views: no new slot
            with reg.slot("front", "s1"):
                await reg.add(viewer("s1"))
        assert reg.count("front") == 1 and not reg._pending
        with pytest.raises(ViewerLimitError, match="this login"), reg.slot("front", "s1"):
            pass
        with reg.slot("front", "s2"):
            await reg.add(viewer("s2"))
        with pytest.raises(ViewerLimitError, match="max_viewers"), reg.slot("front", "s3"):
            pass
        await reg.close()
        assert reg.count("front") == 0 and hub.subscribers == 0

    asyncio.run(scenario())
