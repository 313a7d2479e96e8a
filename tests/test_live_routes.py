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
