"""Issue 12's live view in Debian's chromium, against the recorder's own web app and live routes.

The server is camrec.web.app (real login, CSRF, live routes, viewer registry, aiortc peers, the
MSE fragmenter) on 127.0.0.1, with `web.webrtc.addresses: [127.0.0.1]`; its cameras are packet
hubs fed in real time by the synthetic camera (tests/support/live_feed.py plays the capture
thread's part, so a test can stop a camera or tell when it sent a keyframe). The browser logs in,
opens the live pages and is asked what it decodes: `getStats()` for WebRTC,
`getVideoPlaybackQuality()` and the buffer for MSE, and the time stamp the camera drew into each
frame (tests/support/live_stamp.js) for the glass-to-glass latency, which is printed, not asserted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.web_browser import CHROMIUM, WEBRTC_LOOPBACK_ARGS, Browser, chromium, wait_text
from tests.support.web_server import PASSWORD, raw_websocket

pytest.importorskip("playwright.sync_api")
pytest.importorskip("aiortc")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")

STAMP_JS = (Path(__file__).parent / "support" / "live_stamp.js").read_text()
FRONT_WIDTH, FRONT_GOP = 1280, 10.0
CAMERAS = {
    # A long GOP: a viewer that waited for the next keyframe would wait seconds.
    "front": {"main": f"synthetic:?size={FRONT_WIDTH}x720&fps=15&gop={FRONT_GOP}&stamp=1",
              "sub": "synthetic:?size=640x360&fps=15&stamp=1"},
    "yard": {"main": "synthetic:?size=640x360&fps=15&bframes=2&stamp=1"},  # B-frames: MSE only
    "garage": {"main": "synthetic:?size=640x360&fps=15"},  # stopped and restarted below
}
MAX_VIEWERS = 3

RTC_STATS = """async () => {
    const report = await window.camrecLive.getStats();
    if (!report) return null;
    const all = new Map();
    report.forEach((s) => all.set(s.id, s));
    const stats = [...all.values()];
    const inbound = stats.find((s) => s.type === 'inbound-rtp' && s.kind === 'video') || {};
    const pair = stats.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
    return {
        framesDecoded: inbound.framesDecoded || 0, keyFramesDecoded: inbound.keyFramesDecoded || 0,
        frameWidth: inbound.frameWidth || 0, frameHeight: inbound.frameHeight || 0,
        codec: inbound.codecId && all.get(inbound.codecId) ? all.get(inbound.codecId).mimeType : null,
        remotes: stats.filter((s) => s.type === 'remote-candidate').map((s) => s.address || s.ip),
        selectedRemote: pair && all.get(pair.remoteCandidateId) ? all.get(pair.remoteCandidateId).address : null,
    };
}"""
MSE_STATE = """() => {
    const p = window.camrecLive && window.camrecLive.players[0];
    const v = p && p.mseVideo;
    return {mode: p ? p.mode : null, frames: v ? v.getVideoPlaybackQuality().totalVideoFrames : 0,
            lag: p ? p.lag() : null, width: v ? v.videoWidth : 0};
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from camrec.errors import SourceError
    from camrec.sources.synthetic import parse_synthetic
    from tests.support.live_feed import LiveSite

    try:
        for streams in CAMERAS.values():
            for source in streams.values():
                parse_synthetic(source)
    except SourceError as exc:
        pytest.skip(f"the synthetic camera lacks an option these tests need: {exc.message}")
    s = LiveSite(tmp_path_factory.mktemp("live"), CAMERAS, max_viewers=MAX_VIEWERS).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser(site: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    # One browser for the module (Playwright's sync API can't run two): it also visits `camrec run`
    # over HTTPS with its self-signed certificate, as https://localhost (its own cookies).
    with chromium(tmp_path_factory.mktemp("chromium-live"), site.base, ignore_https_errors=True,
                  extra_args=tuple(WEBRTC_LOOPBACK_ARGS)) as b:
        page = b.page()
        page.goto(b.base + "/login")
        page.wait_for_selector("#login-form")
        page.fill("#login-user", site.user)
        page.fill("#login-password", PASSWORD)
        page.click("#login-submit")
        page.wait_for_function("() => !document.getElementById('login-form')")
        page.close()
        yield b


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("live-screens")
    print(f"\nscreenshots of the live pages: {folder}")
    return folder


def _open(browser: Browser, path: str, *, webrtc: bool = True) -> Any:
    page = browser.page()
    if not webrtc:
        # A browser without WebRTC (or with it switched off by policy).
        page.add_init_script("delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection;")
    page.goto(browser.base + path)
    return page


def _poll(what: str, fn: Any, timeout: float = 15.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def _mode(page: Any) -> str | None:
    """The transport the page's (first) player shows: "webrtc", "mse", or None (no picture yet)."""
    return page.evaluate("() => window.camrecLive ? window.camrecLive.mode : null")


def _frames(page: Any) -> int:
    return page.evaluate("() => window.camrecLive.videoElement.getVideoPlaybackQuality().totalVideoFrames")


def _viewers(site: Any, camera: str) -> int:
    if not hasattr(site, "api_session"):
        site.api_session = site.harness.login(site.user)[0]
    session = site.api_session
    return int(site.harness.request("GET", f"/api/live/{camera}", session=session).json()["viewers"])


def _glass_to_glass(page: Any, frames: int = 20) -> list[float]:
    page.evaluate(STAMP_JS)
    got = page.evaluate("(n) => window.camrecStamp.sample(window.camrecLive.videoElement, n)", frames)
    return [g["latency"] for g in got]


def test_webrtc_plays_at_once_from_the_cached_gop(browser: Browser, site: Any, shots: Path) -> None:
    feed = site.feeds[("front", "main")]
    # Join in the first 6 s of a 10 s GOP (the next keyframe is at least 4 s away), so a first
    # frame before that keyframe can only come from the hub's cached one.
    _poll("a point early in the camera's GOP", lambda: feed.keyframes and 5 <= feed.since_keyframe <= 90, 15)
    keyframes, into = feed.keyframes, feed.since_keyframe
    t0 = time.monotonic()
    page = _open(browser, "/live/front?stream=main")
    first = _poll("WebRTC frames", lambda: _mode(page) == "webrtc" and (s := page.evaluate(RTC_STATS))
                  and s["framesDecoded"] > 0 and s)
    seconds = time.monotonic() - t0
    assert feed.keyframes == keyframes, "the browser decoded nothing before the camera's next keyframe"
    assert first["keyFramesDecoded"] >= 1
    assert first["codec"] == "video/H264"
    assert (first["frameWidth"], first["frameHeight"]) == (FRONT_WIDTH, 720)
    later = _poll("more WebRTC frames",
                  lambda: (s := page.evaluate(RTC_STATS))["framesDecoded"] > first["framesDecoded"] + 10 and s)
    # The recorder offered 127.0.0.1 only, and that is the pair in use.
    assert later["remotes"] and set(later["remotes"]) == {"127.0.0.1"}, later["remotes"]
    assert later["selectedRemote"] == "127.0.0.1"
    wait_text(page, "#live-status", "Playing over WebRTC")
    assert page.locator(".live-overlay").is_hidden()
    latencies = _glass_to_glass(page)
    assert len(latencies) >= 10, latencies  # the frames shown carry the camera's stamps
    hook = page.evaluate("() => window.camrecLive.players[0].firstFrameMs")
    print(f"\nWebRTC 1280x720: page open to first decoded frame {seconds:.2f} s (player start to first "
          f"frame {hook} ms), joined {into} frames into a {FRONT_GOP:.0f} s GOP; glass-to-glass median "
          f"{statistics.median(latencies):.0f} ms (min {min(latencies):.0f}, max {max(latencies):.0f})")
    page.screenshot(path=str(shots / "live-webrtc.png"), full_page=True)
    # One tap to the camera's latest events; leaving the view DELETEs the WHEP session.
    requests = len(browser.requests)
    page.click("#live-events")
    page.wait_for_selector("#strip")
    assert page.url.startswith(browser.base + "/camera/front")
    _poll("the WebRTC viewer to end with the view", lambda: _viewers(site, "front") == 0, 10, 0.2)
    ended = [r["url"] for r in browser.requests[requests:] if r["method"] == "DELETE"]
    assert len(ended) == 1 and ended[0].startswith(browser.base + "/api/live/sessions/"), ended
    page.close()


def _watch_mse(page: Any, seconds: float = 3.0) -> tuple[list[float], int, int]:
    start = _poll("MSE video", lambda: (s := page.evaluate(MSE_STATE))["mode"] == "mse" and s["frames"] > 0 and s)
    lags = []
    deadline = time.monotonic() + seconds
    state = start
    while time.monotonic() < deadline:
        state = page.evaluate(MSE_STATE)
        assert state["mode"] == "mse", state
        lags.append(state["lag"])
        time.sleep(0.2)
    return lags, start["frames"], state["frames"]


def test_mse_plays_when_the_browser_has_no_webrtc(browser: Browser, site: Any, shots: Path) -> None:
    page = _open(browser, "/live/front?stream=sub", webrtc=False)
    lags, before, after = _watch_mse(page)
    assert after > before + 20  # about 45 frames in 3 s at 15 fps
    assert max(lags) < 1.0, lags  # live: the player trims and catches up
    wait_text(page, "#live-status", "Playing over MSE")
    wait_text(page, "#live-note", "no WebRTC")
    latencies = _glass_to_glass(page)
    assert len(latencies) >= 10, latencies
    print(f"\nMSE 640x360 without WebRTC: lag behind the buffer's end median {statistics.median(lags):.2f} s "
          f"(max {max(lags):.2f}); glass-to-glass median {statistics.median(latencies):.0f} ms")
    page.goto("about:blank")  # pagehide closes the WebSocket
    _poll("the MSE viewer to end with the page", lambda: _viewers(site, "front") == 0, 10, 0.2)
    page.close()


def test_mse_plays_a_camera_with_b_frames(browser: Browser, site: Any, shots: Path) -> None:
    page = _open(browser, "/live/yard")
    lags, before, after = _watch_mse(page)
    assert after > before + 20
    assert max(lags) < 1.0, lags
    # The recorder refused WebRTC for this stream (409, fallback mse) and the page says why.
    wait_text(page, "#live-note", "B-frames")
    wait_text(page, "#live-info", "B-frames (MSE only)")
    latencies = _glass_to_glass(page)
    assert len(latencies) >= 10, latencies
    print(f"\nMSE with B-frames: lag median {statistics.median(lags):.2f} s (max {max(lags):.2f}); glass-to-glass "
          f"median {statistics.median(latencies):.0f} ms")
    page.screenshot(path=str(shots / "live-mse-bframes.png"), full_page=True)
    page.close()


def test_grid_shows_every_camera_and_leaving_ends_every_viewer(browser: Browser, site: Any, shots: Path) -> None:
    page = _open(browser, "/")
    page.click("#live-all")
    page.wait_for_selector("#live-grid")
    assert page.url == browser.base + "/live"
    names = page.locator("[data-live-camera]").evaluate_all("(els) => els.map((e) => e.dataset.liveCamera)")
    assert names == sorted(CAMERAS)
    players = _poll("every camera playing", lambda: (ps := page.evaluate(
        "() => window.camrecLive ? window.camrecLive.players.map((p) => [p.camera, p.stream, p.mode]) : []"))
        and all(p[2] for p in ps) and ps)
    assert {p[0]: p[1] for p in players} == {"front": "sub", "yard": "main", "garage": "main"}  # sub where there is one
    assert dict((p[0], p[2]) for p in players)["yard"] == "mse"
    page.screenshot(path=str(shots / "live-grid.png"), full_page=True)
    # One tap from a tile to that camera's events; the router's navigation ends every player.
    page.click("[data-live-camera=garage] .live-tile-events")
    page.wait_for_selector("#strip")
    assert page.url.startswith(browser.base + "/camera/garage")
    for camera in CAMERAS:
        # 20 s: an offer in flight at the navigation ends when it doesn't connect (CONNECT_SECONDS).
        _poll(f"{camera}'s viewers to end", lambda c=camera: _viewers(site, c) == 0, 20, 0.2)
    page.close()


def test_camera_links_and_stream_choice(browser: Browser, site: Any, shots: Path) -> None:
    page = _open(browser, "/")
    page.click("[data-live=front]")
    page.wait_for_selector("#live-player")
    assert page.url == browser.base + "/live/front"
    assert page.locator("#live-stream").input_value() == "main"  # a large screen: the main stream
    page.select_option("#live-stream", "sub")
    _poll("the sub-stream playing", lambda: _mode(page) and page.evaluate(
        "() => { const p = window.camrecLive.players[0]; return p.stream === 'sub' && p.videoElement.videoWidth; }")
        == 640)
    assert page.url == browser.base + "/live/front?stream=sub"
    page.click("#live-events")
    page.wait_for_selector("#strip")
    assert page.url.startswith(browser.base + "/camera/front")
    page.click("#timeline-live")  # and back to live from the timeline
    page.wait_for_selector("#live-player")
    assert page.url == browser.base + "/live/front"
    page.close()
    small = browser.page()
    small.set_viewport_size({"width": 390, "height": 800})  # a phone: the sub-stream by default
    small.goto(browser.base + "/live/front")
    small.wait_for_selector("#live-player")
    assert small.locator("#live-stream").input_value() == "sub"
    _poll("the phone's picture", lambda: _mode(small))
    small.screenshot(path=str(shots / "live-phone.png"), full_page=True)
    small.goto("about:blank")  # pagehide ends whatever it plays over
    # An offer still in flight when the page goes has no session URL to DELETE yet: the server ends
    # that viewer when it does not connect (CONNECT_SECONDS).
    _poll("the phone's viewers to end with the page", lambda: _viewers(site, "front") == 0, 20, 0.2)
    small.close()


def test_offline_and_reconnecting_are_shown_over_the_picture(browser: Browser, site: Any, shots: Path) -> None:
    feed = site.feeds[("garage", "main")]
    page = _open(browser, "/live/garage")  # auto: WebRTC once it shows frames
    _poll("garage playing over WebRTC", lambda: _mode(page) == "webrtc" and _viewers(site, "garage") == 1, 15, 0.2)
    mse = _open(browser, "/live/garage?transport=mse")  # and one over MSE (its state frames)
    _poll("garage playing over MSE", lambda: _mode(mse) == "mse")
    pages = (page, mse)
    assert all(p.locator(".live-overlay").is_hidden() for p in pages)
    site.set_capture("garage", "main", "disconnected", 2.0)  # what the recorder reports while it retries
    feed.stop()  # the camera drops
    for p in pages:
        wait_text(p, ".live-overlay:not([hidden])", "Camera reconnecting")
    site.set_capture("garage", "main", "disconnected", 3600.0)
    for p in pages:
        wait_text(p, ".live-overlay:not([hidden])", "Camera offline")
        assert p.evaluate("() => document.getElementById('live-player').dataset.state") == "offline"
    page.screenshot(path=str(shots / "live-offline.png"), full_page=True)
    connects = mse.evaluate("() => window.camrecLive.players[0].connects")
    site.set_capture("garage", "main", "connected", 0.0)
    t0 = time.monotonic()
    feed.start()  # back: the overlay goes and frames come again
    back = []
    for p in pages:
        p.wait_for_selector(".live-overlay", state="hidden", timeout=30_000)
        back.append(time.monotonic() - t0)
        frames = _frames(p)
        _poll("frames after the camera came back", lambda p=p, f=frames: _frames(p) > f + 5)
    # The MSE page got the new stream on the WebSocket it had (a new init segment, same buffer).
    assert mse.evaluate("() => window.camrecLive.players[0].connects") == connects
    print(f"\ncamera back: picture again after {back[0]:.1f} s over WebRTC, {back[1]:.1f} s over MSE")
    for p in pages:
        p.close()


def test_viewer_limit_is_shown_clearly(browser: Browser, site: Any) -> None:
    # Other people fill garage's places (one login each: several views of one login count once).
    held = []
    for n in range(MAX_VIEWERS):
        user = f"guest{n}"
        if site.harness.accounts.epoch(user) is None:
            site.harness.accounts.add(user, PASSWORD)
        session, _ = site.harness.login(user, PASSWORD)
        held.append(raw_websocket(int(site.base.rsplit(":", 1)[1]), "/api/live/garage/mse", session))
    _poll("the places taken", lambda: _viewers(site, "garage") == MAX_VIEWERS, 15, 0.2)
    page = _open(browser, "/live/garage")
    wait_text(page, ".live-overlay:not([hidden])", "Viewer limit reached")
    for sock in held:  # frees the places: the page gets in on its next try
        sock.close()
    _poll("the refused page to play after all", lambda: _mode(page), 30, 0.2)
    page.close()


# ---------------------------------------------------------------------------------------------
# The whole recorder: `camrec run` with a synthetic camera and its sub-stream, over HTTPS (its
# self-signed certificate), so the WebSocket is wss:// and the hubs are the daemon's own.


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import subprocess
    import sys

    from tests.support.camera import free_port
    from tests.support.daemon import Daemon

    base = tmp_path_factory.mktemp("live-run")
    port = free_port()
    daemon = Daemon(base, "synthetic:?size=640x360&fps=15&motion=", detect_url="synthetic:?size=320x180&fps=15",
                    extra=f"web:\n  listen: ['127.0.0.1:{port}']\n  webrtc:\n    addresses: ['127.0.0.1']\n")
    pw = base / "web-password.txt"
    pw.write_text(PASSWORD + "\n")
    done = subprocess.run([sys.executable, "-m", "camrec", "user", "add", "-c", str(daemon.config), "owner",
                           "--password-file", str(pw)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    daemon.start()
    daemon.base_url = f"https://localhost:{port}"  # not 127.0.0.1: cookies don't tell ports apart
    try:
        _poll("the recorder's web app", lambda: f"web: serving https://127.0.0.1:{port}/" in daemon.log.read_text(),
              30, 0.1)
        yield daemon
    finally:
        daemon.close()
    log = daemon.log.read_text(errors="replace")
    assert "Traceback" not in log, log


def test_camrec_run_live_page_over_https(browser: Browser, recorder: Any) -> None:
    page = browser.page()
    base = recorder.base_url
    page.goto(base + "/login")
    page.fill("#login-user", "owner")
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#camera-list")
    page.click("#live-all")
    page.wait_for_selector("[data-live-camera=front]")
    _poll("the grid's sub-stream over WebRTC", lambda: _mode(page) == "webrtc"
          and page.evaluate("() => window.camrecLive.players[0].stream") == "sub"
          and (s := page.evaluate(RTC_STATS)) and s["framesDecoded"] > 0 and s["frameWidth"] == 320)
    page.click("[data-live-camera=front] .live-tile-video")  # the tile opens the camera's page
    page.wait_for_selector("#live-player")
    page.select_option("#live-transport", "mse")  # the forced fallback, over wss://
    _poll("the main stream over MSE", lambda: (s := page.evaluate(MSE_STATE))["mode"] == "mse"
          and s["frames"] > 10 and s["width"] == 640)
    assert page.url == base + "/live/front?transport=mse"
    page.close()


def test_no_request_left_loopback(browser: Browser) -> None:
    """Every request of the tests above (both servers) went to this machine."""
    from urllib.parse import urlsplit

    assert len(browser.requests) > 20
    for r in browser.requests:
        if r["url"] == "about:blank":
            continue  # the tests' own way of leaving a page
        url = r["url"][len("blob:"):] if r["url"].startswith("blob:") else r["url"]
        assert urlsplit(url).hostname in ("127.0.0.1", "localhost"), r["url"]
    for url in browser.failed:
        assert urlsplit(url.removeprefix("blob:")).hostname in ("127.0.0.1", "localhost"), url
    problems = [m for m in browser.console if m.startswith("pageerror") or "Content Security Policy" in m]
    assert problems == []
