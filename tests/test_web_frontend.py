"""The web app's browser side (camrec/web/static, built from web/), in Debian's chromium.

The real server is camrec/web/app.py; these tests exercise the pages against a small aiohttp app
defined here that speaks the same JSON API (docs: the issue's item 7) and serves real age files:
fMP4 clips made by the recorder's own muxer from H.264 test media and encrypted with
camrec.crypto, thumbnails encrypted by the real `age` binary, identities made by `age-keygen`
and `camrec keygen` (plain, passphrase-protected, post-quantum). The browser decrypts them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.media import ffmpeg_available, make_test_media
from tests.support.web_browser import (
    CHROMIUM,
    Browser,
    chromium,
    load_key_file,
    mad,
    open_key_panel,
    pixels,
    wait_text,
)

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "camrec" / "web" / "static"
USER, PASSWORD = "owner", "correct horse 42"
PASSPHRASE = "frontend-test passphrase 7"
FPS = 15

playwright_sync = pytest.importorskip("playwright.sync_api")
aiohttp_web = pytest.importorskip("aiohttp.web")

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
    pytest.mark.skipif(shutil.which("age") is None or shutil.which("age-keygen") is None, reason="age not installed"),
    pytest.mark.skipif(not ffmpeg_available(), reason="ffmpeg not installed"),
]


# ---------------------------------------------------------------------------------------------
# Test data: identities, clips, thumbnails, details


def _run(*argv: str, input: bytes | None = None) -> str:
    done = subprocess.run(argv, input=input, capture_output=True, check=True, cwd=ROOT)
    return done.stdout.decode()


def _fmp4_clip(mp4: Path) -> bytes:
    """The clip the recorder would write: the packets of `mp4` (as Annex B, like the camera sources
    deliver them) remuxed by the recorder's fMP4 muxer."""
    import av
    from av.bitstream import BitStreamFilterContext

    from camrec.record.mux import FragmentedMp4Muxer
    from camrec.sources.base import MediaPacket, StreamInfo

    out = bytearray()
    with av.open(str(mp4)) as src:
        vs = src.streams.video[0]
        assert vs.time_base is not None
        annexb = BitStreamFilterContext("h264_mp4toannexb", vs)
        info = StreamInfo("h264", vs.codec_context.width, vs.codec_context.height, Fraction(vs.time_base), float(FPS))
        muxer = FragmentedMp4Muxer(info, out.extend)
        for packet in src.demux(vs):
            for p in annexb.filter(packet if packet.size else None):
                assert p.pts is not None and p.dts is not None
                muxer.add(MediaPacket(bytes(p), int(p.pts), int(p.dts), int(p.duration), bool(p.is_keyframe),
                                      0.0, info))
        muxer.close()
    return bytes(out)


def _frames_rgb(mp4_bytes: bytes, workdir: Path) -> list[tuple[float, np.ndarray]]:
    import av

    path = workdir / "reference.mp4"
    path.write_bytes(mp4_bytes)
    with av.open(str(path)) as c:
        return [(float(f.time or 0.0), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


class Site:
    """Everything the fake recorder serves, plus what the tests compare against."""

    def __init__(self, base: Path) -> None:
        from camrec.crypto import encrypt_bytes, load_identities, parse_recipient

        self.base = base
        keys = base / "keys"
        keys.mkdir()
        # Plain X25519 identity from the real age-keygen; a passphrase-protected and a post-quantum
        # one from camrec keygen (as an owner would make them).
        self.x25519_file = keys / "owner.txt"
        _run("age-keygen", "-o", str(self.x25519_file))
        (keys / "pass.txt").write_text(PASSPHRASE + "\n")
        self.protected_file = keys / "protected.age"
        _run(sys.executable, "-m", "camrec", "keygen", "--passphrase-file", str(keys / "pass.txt"),
             "-o", str(self.protected_file))
        self.pq_file = keys / "pq.txt"
        _run(sys.executable, "-m", "camrec", "keygen", "--pq", "-o", str(self.pq_file))
        x = load_identities(self.x25519_file)[0]
        protected = load_identities(self.protected_file, passphrase=lambda _prompt: PASSPHRASE)[0]
        pq = load_identities(self.pq_file)[0]
        self.secrets = [str(x), str(protected), str(pq), PASSPHRASE]
        classic = [parse_recipient(str(x.recipient())), parse_recipient(str(protected.recipient()))]
        pq_recipients = [parse_recipient(str(pq.recipient()))]

        media = make_test_media(base / "media", width=640, height=360, fps=FPS, duration=8.0,
                                motion_windows=[(1.0, 7.0)], gop_seconds=1.0)
        self.plain_clip = _fmp4_clip(media)
        self.frames = _frames_rgb(self.plain_clip, base)
        import cv2

        thumb_rgb = self.frames[30][1]
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(thumb_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        self.thumb_rgb = thumb_rgb
        self.details = {
            "camera": "front", "start": 0, "end": 8, "stream": "h264 640x360 @ 15 fps", "reason_closed": "post-roll",
            "motion": [{"t": 1.0, "score": 0.01, "boxes": [[0.1, 0.2, 0.2, 0.2]]},
                       {"t": 2.0, "score": 0.2, "boxes": [[0.5, 0.25, 0.25, 0.5]]}],
        }  # fmt: skip

        store = base / "store"
        store.mkdir()
        self.files: dict[tuple[str, str], Path] = {}

        def put(event: str, part: str, data: bytes) -> None:
            path = store / f"{event}.{part}.age"
            path.write_bytes(data)
            self.files[(event, part)] = path

        def age_cli(data: bytes, recipients: list[Any]) -> bytes:
            args = ["age"]
            for r in recipients:
                args += ["-r", str(r)]
            return subprocess.run(args, input=data, capture_output=True, check=True).stdout

        details = json.dumps(self.details).encode()
        full = encrypt_bytes(self.plain_clip, classic)
        put("ev1", "video", full)
        put("ev1", "thumbnail", age_cli(jpeg.tobytes(), classic))  # the real age binary
        put("ev1", "details", encrypt_bytes(details, classic))
        # A power loss in the middle of a chunk: no final chunk, a partial one at the end.
        self.cut_at = len(full) * 11 // 20 + 1000
        put("ev2", "video", full[: self.cut_at])
        put("ev2", "thumbnail", age_cli(jpeg.tobytes(), classic))
        put("ev2", "details", encrypt_bytes(details, classic))
        # A power loss right after a full chunk: that chunk (written without the last flag, as the
        # writer holds one back until close) is authentic and must be released too.
        payload_start = full.index(b"\n", full.index(b"\n--- ") + 1) + 1 + 16  # after the MAC line and nonce
        self.boundary_chunks = 5
        put("ev6", "video", full[: payload_start + self.boundary_chunks * (65536 + 16)])
        put("ev3", "video", encrypt_bytes(self.plain_clip, pq_recipients))
        put("ev3", "details", encrypt_bytes(details, pq_recipients))
        put("ev3", "thumbnail", encrypt_bytes(jpeg.tobytes(), pq_recipients))
        # ev4's files are gone (retention, or lost): the index still lists it as missing.

        today = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
        self.day = today.strftime("%Y-%m-%d")
        dur = round(len(self.frames) / FPS, 3)

        def event(eid: str, hour: float, state: str, duration: float) -> dict[str, Any]:
            start = today + timedelta(hours=hour)
            return {"id": eid, "camera": "front", "start": start.isoformat(timespec="milliseconds"),
                    "end": (start + timedelta(seconds=duration)).isoformat(timespec="milliseconds"),
                    "duration": duration, "size": 0, "path": f"front/{eid}.mp4.age", "state": state,
                    "thumbnail": f"front/{eid}.jpg.age", "details": f"front/{eid}.json.age"}

        self.events = [event("ev1", 8, "complete", dur), event("ev2", 9.5, "partial", dur / 2),
                       event("ev3", 12.25, "complete", dur), event("ev4", 14, "missing", 30.0),
                       event("ev6", -40, "partial", dur / 2)]  # two days ago
        self.ev6_day = (today - timedelta(hours=40)).strftime("%Y-%m-%d")
        self.cameras = [{"name": "front", "state": "recording", "latest_event": "ev1"},
                        {"name": "garage", "state": "offline", "latest_event": None}]


# ---------------------------------------------------------------------------------------------
# The fake recorder: same routes and answers as the real API, on 127.0.0.1


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; media-src 'self' blob:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class FakeRecorder:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.sessions: dict[str, str] = {}  # cookie value -> csrf token
        self.seen: list[dict[str, Any]] = []  # every request as the server received it
        self.csrf_failures: list[str] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: Any = None

    def expire_sessions(self) -> None:
        self.sessions.clear()

    def _session(self, request: Any) -> str | None:
        cookie = request.cookies.get("camrec_session")
        return cookie if cookie in self.sessions else None

    def app(self) -> Any:
        web = aiohttp_web

        @web.middleware
        async def record_and_guard(request: Any, handler: Any) -> Any:
            body = await request.read()
            self.seen.append({"method": request.method, "url": str(request.rel_url),
                              "headers": {k.lower(): v for k, v in request.headers.items()}, "body": body})
            if request.path.startswith("/api/") and request.path != "/api/login":
                sid = self._session(request)
                if sid is None:
                    return web.json_response({"error": "not logged in"}, status=401)
                if request.method != "GET" and request.headers.get("X-CSRF-Token") != self.sessions[sid]:
                    self.csrf_failures.append(f"{request.method} {request.path}")
                    return web.json_response({"error": "bad CSRF token"}, status=403)
            response = await handler(request)
            response.headers["Cache-Control"] = "no-store"
            response.headers["Content-Security-Policy"] = CSP
            return response

        async def page(request: Any) -> Any:
            name = {"/": "index.html", "/login": "login.html"}.get(request.path)
            if name is None:
                name = "camera.html" if request.path.startswith("/camera/") else "event.html"
            return web.FileResponse(STATIC / name)

        async def static(request: Any) -> Any:
            name = request.match_info["name"]
            if name not in {p.name for p in STATIC.iterdir()}:
                raise web.HTTPNotFound()
            return web.FileResponse(STATIC / name)

        async def login(request: Any) -> Any:
            doc = await request.json()
            if doc.get("username") != USER or doc.get("password") != PASSWORD:
                return web.json_response({"error": "wrong user name or password"}, status=401)
            sid, csrf = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
            self.sessions[sid] = csrf
            response = web.json_response({"csrf": csrf})
            response.set_cookie("camrec_session", sid, httponly=True, samesite="Lax")
            return response

        async def session(request: Any) -> Any:
            sid = self._session(request)
            assert sid is not None
            return web.json_response({"user": USER, "csrf": self.sessions[sid]})

        async def logout(request: Any) -> Any:
            self.sessions.pop(self._session(request) or "", None)
            return web.json_response({})

        async def cameras(request: Any) -> Any:
            return web.json_response(self.site.cameras)

        async def events(request: Any) -> Any:
            rows = [e for e in self.site.events if request.query.get("camera") in (None, e["camera"])]
            since, until = request.query.get("since"), request.query.get("until")
            if since:
                rows = [e for e in rows if datetime.fromisoformat(e["end"]) >= datetime.fromisoformat(since)]
            if until:
                rows = [e for e in rows if datetime.fromisoformat(e["start"]) < datetime.fromisoformat(until)]
            return web.json_response(rows)

        async def clip(request: Any) -> Any:
            path = self.site.files.get((request.match_info["id"], request.match_info["part"]))
            if path is None:
                return web.json_response({"error": "no such clip file"}, status=404)
            return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})

        app = web.Application(middlewares=[record_and_guard])
        app.router.add_get("/", page)
        app.router.add_get("/login", page)
        app.router.add_get("/camera/{name}", page)
        app.router.add_get("/event/{id}", page)
        app.router.add_get("/static/{name}", static)
        app.router.add_post("/api/login", login)
        app.router.add_get("/api/session", session)
        app.router.add_post("/api/logout", logout)
        app.router.add_get("/api/cameras", cameras)
        app.router.add_get("/api/events", events)
        app.router.add_get("/api/clips/{id}/{part:video|thumbnail|details}", clip)
        return app

    def start(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

        async def up() -> None:
            self._runner = aiohttp_web.AppRunner(self.app(), access_log=None)
            await self._runner.setup()
            await aiohttp_web.SockSite(self._runner, sock).start()

        self._loop.run_until_complete(up())
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


# ---------------------------------------------------------------------------------------------
# Fixtures: one site, one server, one browser for the module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return Site(tmp_path_factory.mktemp("webfront"))


@pytest.fixture(scope="module")
def recorder(site: Site) -> Iterator[FakeRecorder]:
    r = FakeRecorder(site)
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="camrec-web-screens-"))
    print(f"\nscreenshots of the web app: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser(recorder: FakeRecorder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), recorder.url) as b:
        yield b


def _logged_in_page(browser: Browser, path: str = "/") -> Any:
    page = browser.page()
    page.goto(browser.base + path)
    page.wait_for_function("() => document.getElementById('view').children.length > 0")
    if page.locator("#login-form").count():
        page.fill("#login-user", USER)
        page.fill("#login-password", PASSWORD)
        page.click("#login-submit")
        page.wait_for_function("() => !document.getElementById('login-form')")
    return page


def _wait_key(page: Any, what: str) -> None:
    wait_text(page, "#key-status", what)


def _wait_playing(page: Any, past: float) -> None:
    page.wait_for_function(f"() => document.getElementById('player').currentTime > {past}")


# ---------------------------------------------------------------------------------------------
# The tests (they share one browser; the last one inspects every request the browser made)


def test_pages_are_csp_clean_and_self_contained() -> None:
    """No inline script or style (the CSP would block it), no third-party origin, licences shipped."""
    for name in ("index.html", "login.html", "camera.html", "event.html", "live.html"):
        html = (STATIC / name).read_text()
        assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/static/app.js" defer>'], name
        assert "<style" not in html and not re.search(r"\sstyle=|\son[a-z]+=", html), name
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]", html.replace("http-equiv", "")), name
    bundle = (STATIC / "app.js").read_text()
    assert "innerHTML" not in bundle
    assert not re.search(r"https?://", bundle)  # nothing is loaded from anywhere but this origin
    lock = json.loads((ROOT / "web" / "package-lock.json").read_text())
    typage = lock["packages"]["node_modules/age-encryption"]["version"]
    assert json.loads((ROOT / "web" / "package.json").read_text())["dependencies"]["age-encryption"] == typage
    assert f"age-encryption {typage} (BSD-3-Clause)" in (STATIC / "LICENSES.txt").read_text()


@pytest.mark.skipif(shutil.which("node") is None or not (ROOT / "web" / "node_modules").is_dir(),
                    reason="node or web/node_modules (npm ci in web/) missing")
def test_committed_bundle_matches_a_fresh_reproducible_build() -> None:
    done = subprocess.run(["node", "build.mjs", "--check"], cwd=ROOT / "web", capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_login_cameras_and_thumbnail(browser: Browser, site: Site, shots: Path) -> None:
    page = browser.page()
    page.goto(browser.base + "/")
    page.wait_for_selector("#login-form")  # no session: the app goes to its login view
    page.fill("#login-user", USER)
    page.fill("#login-password", "wrong")
    page.click("#login-submit")
    page.wait_for_selector("#login-message:not([hidden])")
    assert "Wrong user name or password" in page.inner_text("#login-message")
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#camera-list")
    assert page.url == browser.base + "/"
    assert "load your key" in page.inner_text("[data-camera=front]")
    assert "Camera offline" in page.inner_text("[data-camera=garage]")

    load_key_file(page, site.x25519_file)
    page.wait_for_selector("[data-camera=front] img.thumbnail")
    page.wait_for_function("() => document.querySelector('[data-camera=front] img').naturalWidth > 0")
    shown = pixels(page, "[data-camera=front] img")
    assert shown.shape == site.thumb_rgb.shape
    assert mad(shown, site.thumb_rgb) < 4  # the decrypted JPEG of that frame (quality 90)
    page.screenshot(path=str(shots / "cameras.png"), full_page=True)
    page.close()


def test_timeline_player_frame_and_download(browser: Browser, site: Site, shots: Path) -> None:
    page = _logged_in_page(browser, "/camera/front")
    open_key_panel(page)
    page.fill("#identity-paste", site.x25519_file.read_text())  # the identity file's text, pasted
    page.click("#identity-use")
    _wait_key(page, "pasted key")
    page.wait_for_selector("#event-list li")
    items = page.locator("#event-list li")
    assert items.count() == 4
    texts = [items.nth(i).inner_text() for i in range(4)]
    assert texts[0].startswith("08:00:00") and "8 s" in texts[0]
    assert "cut short" in texts[1] and "missing" in texts[3]
    assert page.locator("#strip .mark").count() == 4
    page.screenshot(path=str(shots / "timeline.png"), full_page=True)
    page.click("#prev-day")
    page.wait_for_selector("#no-events")
    page.click("#next-day")
    page.wait_for_selector("#event-list li")
    assert page.inner_text("#day") == site.day

    page.click("[data-event=ev1]")  # client-side navigation: the key stays in memory
    page.wait_for_selector("#event-thumbnail")
    page.wait_for_function("() => document.getElementById('thumb-boxes').width > 0")
    # The boxes of the highest-scoring motion entry, drawn in frame-relative coordinates.
    edge = page.evaluate("""() => { const c = document.getElementById('thumb-boxes'), g = c.getContext('2d');
        const a = (x, y) => g.getImageData(Math.round(x * c.width), Math.round(y * c.height), 1, 1).data[3];
        return {best: a(0.5, 0.5), inside: a(0.62, 0.5), other: a(0.1, 0.3)}; }""")
    assert edge["best"] > 0 and edge["inside"] == 0 and edge["other"] == 0
    assert page.locator("#prev-event").evaluate("e => e.tagName") == "SPAN"
    assert page.locator("#next-event").get_attribute("href").startswith("/event/ev2")

    page.click("#play")
    _wait_playing(page, 1.0)  # playback advances
    page.wait_for_selector("[data-decrypted='1']")
    assert page.locator("#player-message").is_hidden()
    page.screenshot(path=str(shots / "player.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.screenshot(path=str(shots / "player-phone.png"), full_page=True)
    page.set_viewport_size({"width": 1100, "height": 800})

    k = 45  # a frame while the object crosses the scene
    page.evaluate("""(t) => new Promise((ok) => { const v = document.getElementById('player'); v.pause();
        v.addEventListener('seeked', () => setTimeout(ok, 150), {once: true}); v.currentTime = t; })""",
                  (k + 0.5) / FPS)
    shown = pixels(page, "#player")
    assert abs(site.frames[k][0] - k / FPS) < 1e-3
    ref = site.frames[k][1]
    far = site.frames[k + 30][1]
    assert mad(shown, ref) < 3.0, mad(shown, ref)
    assert mad(shown, far) > 2 * mad(shown, ref)  # the bound tells frames apart

    with page.expect_download() as dl:
        page.click("#download")
    assert dl.value.suggested_filename == "ev1.mp4"
    assert Path(dl.value.path()).read_bytes() == site.plain_clip
    page.close()


def test_crash_cut_clip_plays_its_prefix(browser: Browser, site: Site) -> None:
    page = _logged_in_page(browser, f"/event/ev2?camera=front&day={site.day}")
    load_key_file(page, site.x25519_file)
    page.click("#play")
    page.wait_for_selector("[data-decrypted='1']")
    assert "cut short (power loss or crash)" in page.inner_text("#player-message")
    _wait_playing(page, 0.5)
    duration = page.evaluate("document.getElementById('player').duration")
    full = len(site.frames) / FPS
    assert 0.5 < duration < full * 0.8  # the authenticated prefix, not the whole clip
    with page.expect_download() as dl:
        page.click("#download")
    got = Path(dl.value.path()).read_bytes()
    assert 0 < len(got) < len(site.plain_clip) and site.plain_clip.startswith(got)
    assert len(got) % 65536 == 0  # whole authenticated chunks, nothing from the cut one
    page.close()


def test_clip_cut_at_a_chunk_boundary_keeps_its_last_full_chunk(browser: Browser, site: Site) -> None:
    page = _logged_in_page(browser, f"/event/ev6?camera=front&day={site.ev6_day}")
    load_key_file(page, site.x25519_file)
    with page.expect_download() as dl:
        page.click("#download")  # decrypts without playing
    got = Path(dl.value.path()).read_bytes()
    assert len(got) == site.boundary_chunks * 65536, (len(got), len(site.plain_clip))
    assert got == site.plain_clip[: len(got)]
    assert "cut short" in page.inner_text("#player-message")
    page.close()


def test_protected_and_post_quantum_identities_and_wrong_key(browser: Browser, site: Site) -> None:
    page = _logged_in_page(browser, f"/event/ev3?camera=front&day={site.day}")
    page.set_input_files("#identity-file", str(site.protected_file))
    wait_text(page, "#identity-message", "passphrase")
    page.fill("#identity-passphrase", "not the passphrase")
    page.click("#identity-open")
    wait_text(page, "#identity-message", "wrong passphrase")
    load_key_file(page, site.protected_file, PASSPHRASE)
    # ev3 is encrypted to the post-quantum key only: this key does not open it.
    wait_text(page, "#player-message", "does not open this clip")
    page.click("#play")
    wait_text(page, "#player-message", "does not open this clip")
    assert page.evaluate("document.getElementById('player').currentTime") == 0

    load_key_file(page, site.pq_file)
    page.wait_for_selector("#event-thumbnail")
    page.click("#play")
    _wait_playing(page, 1.0)
    page.close()


def test_missing_clip_and_expired_session(browser: Browser, site: Site, recorder: FakeRecorder) -> None:
    page = _logged_in_page(browser, f"/event/ev4?camera=front&day={site.day}")
    load_key_file(page, site.x25519_file)
    wait_text(page, "#player-message", "missing from the store")
    assert page.locator("#play").is_disabled()

    recorder.expire_sessions()
    page.click(".title a[href='/']")
    page.wait_for_selector("#login-form")
    assert "session expired" in page.inner_text("#login-message")
    assert "owner.txt" in page.inner_text("#key-status")  # the key is still in memory
    page.fill("#login-user", USER)
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("[data-camera=front] img.thumbnail")  # back where it was, same key
    assert page.url == browser.base + "/"
    page.close()


def test_remember_on_device_keeps_a_non_extractable_key(browser: Browser, site: Site, recorder: FakeRecorder) -> None:
    page = _logged_in_page(browser, "/")
    open_key_panel(page)
    page.check("#identity-remember")
    load_key_file(page, site.x25519_file)
    _wait_key(page, "remembered on this device")  # stored in IndexedDB
    page.reload()
    _wait_key(page, "owner.txt: 1 key — remembered on this device")
    page.wait_for_selector("[data-camera=front] img.thumbnail")  # decrypted with the remembered key
    stored = page.evaluate("""() => new Promise((ok, no) => { const r = indexedDB.open('camrec-identity');
        r.onsuccess = () => { const q = r.result.transaction('remembered').objectStore('remembered').get('identity');
          q.onsuccess = () => ok(q.result.keys.map((k) => [k instanceof CryptoKey, k.extractable, k.algorithm.name]));
          q.onerror = no; }; r.onerror = no; })""")
    assert stored == [[True, False, "X25519"]]
    page.click("#key-button")
    page.click("#identity-forget")
    # The IndexedDB delete completes before the page says so; a reload before that would abort it.
    page.wait_for_selector("#identity-message:has-text('The key was forgotten')")
    page.reload()
    page.wait_for_selector("#key-status.warn")  # forgotten on this device too
    load_key_file(page, site.x25519_file)
    sessions = len(recorder.sessions)
    page.click("#logout")  # a POST with the CSRF token; the page forgets the key
    page.wait_for_selector("#login-form")
    assert len(recorder.sessions) == sessions - 1
    assert page.inner_text("#key-status") == "no key"
    page.close()


def test_no_request_carries_the_identity_or_passphrase(browser: Browser, site: Site, recorder: FakeRecorder) -> None:
    """Every request the browser sent during the tests above, and every one the server received."""
    from camrec.crypto.bech32 import decode as bech32_decode

    assert len(browser.requests) > 30 and len(recorder.seen) > 30
    needles: list[bytes] = []
    for secret in site.secrets:
        needles += [secret.encode(), secret.lower().encode(), secret.encode().hex().encode()]
        if secret.startswith("AGE-SECRET-KEY-1"):
            raw = bech32_decode(secret)[1]
            needles += [raw, base64.b64encode(raw).rstrip(b"="), base64.urlsafe_b64encode(raw).rstrip(b"=")]
        else:
            needles.append(base64.b64encode(secret.encode()).rstrip(b"="))
    captured = [(r["url"], r["headers"], r["body"]) for r in browser.requests]
    captured += [(r["url"], r["headers"], r["body"]) for r in recorder.seen]
    for url, headers, body in captured:
        blob = url.encode() + json.dumps(headers).encode() + body
        for needle in needles:
            assert needle not in blob, f"a secret appears in a request to {url}"
        # Nothing left loopback (blob: URLs are the page's own decrypted thumbnails and clips).
        assert url.startswith((browser.base + "/", "/", f"blob:{browser.base}/")), url
    assert recorder.csrf_failures == []
    assert any(r["url"] == "/api/logout" for r in recorder.seen)
    assert all(r["headers"].get("x-csrf-token") for r in recorder.seen
               if r["method"] != "GET" and r["url"] != "/api/login")
    csp = [m for m in browser.console if "Content Security Policy" in m or m.startswith("pageerror")]
    assert csp == []
