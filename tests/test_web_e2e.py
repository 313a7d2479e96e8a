"""Issue 11's acceptance end to end: Debian's chromium against the real `camrec run`.

One recording serves the whole module: `camrec run` (a child process, its web app on 127.0.0.1
with its own self-signed certificate) records the loopback RTSP test camera. The first event is
closed normally; the second is being written when the recorder is killed with SIGKILL (a power
cut), and the restarted recorder serves it as a partial clip. The first event is then re-wrapped
by `camrec rekey` for a post-quantum key only; the restart's first event is the classic clip the
player is checked with, and a fourth is being recorded while the browser looks. The browser logs in as a user made by
`camrec user add --password-file`, decrypts with identities made by `age-keygen` and `camrec
keygen` (passphrase-protected, post-quantum), and never talks to anything but the recorder.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.camera import RtspCamera, free_port, media_cache_dir, rtsp_server_unavailable_reason
from tests.support.daemon import Daemon
from tests.support.media import ffmpeg_available, make_camera_media
from tests.support.web_browser import (
    CHROMIUM,
    Browser,
    chromium,
    load_key_file,
    mad,
    open_key_panel,
    pixels,
    seek,
    wait_text,
)

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "owner", "correct horse battery 42"
PASSPHRASE = "e2e passphrase for the protected key"
FPS = 15

pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
    pytest.mark.skipif(shutil.which("age-keygen") is None, reason="age not installed"),
    pytest.mark.skipif(not ffmpeg_available(), reason="ffmpeg not installed"),
]


def camrec(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "camrec", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


class Recording:
    """The recorder, its store, the identities and what the browser should find there."""

    def __init__(self, base: Path, camera_url: str) -> None:
        keys = base / "keys"
        keys.mkdir()
        self.base = base
        self.passphrase_file = keys / "passphrase.txt"
        self.passphrase_file.write_text(PASSPHRASE + "\n")
        self.protected_file = keys / "protected.age"
        camrec("keygen", "--passphrase-file", str(self.passphrase_file), "-o", str(self.protected_file))
        self.pq_file = keys / "pq.txt"
        camrec("keygen", "--pq", "-o", str(self.pq_file))
        self.stranger_file = keys / "stranger.txt"  # a valid key that opens nothing here
        subprocess.run(["age-keygen", "-o", str(self.stranger_file)], capture_output=True, check=True)

        from camrec.crypto import load_identities

        protected = load_identities(self.protected_file, passphrase=lambda _prompt: PASSPHRASE)[0]
        pq = load_identities(self.pq_file)[0]
        (keys / "pq-recipients.txt").write_text(f"{pq.recipient()}\n")
        self.pq_recipients = keys / "pq-recipients.txt"

        port = free_port()
        self.base_url = f"https://127.0.0.1:{port}"
        self.daemon = Daemon(base, camera_url, pre_roll=1.0, post_roll=1.0,
                             extra=f"web:\n  listen: ['127.0.0.1:{port}']\n")
        self.key_file = self.daemon.key  # the plain X25519 identity the recorder encrypts to
        # The recorder's recipients: the owner's plain key and the passphrase-protected one.
        text = self.daemon.config.read_text()
        owner = str(self.daemon.owner.recipient())
        self.daemon.config.write_text(text.replace(f"recipients: [{owner}]",
                                                   f"recipients: [{owner}, {protected.recipient()}]"))
        self.secrets = [str(self.daemon.owner), str(protected), str(pq), PASSPHRASE]
        pw = keys / "web-password.txt"
        pw.write_text(PASSWORD + "\n")
        camrec("user", "add", "-c", str(self.daemon.config), USER, "--password-file", str(pw))
        self.complete: dict[str, Any] = {}
        self.cut: dict[str, Any] = {}
        self.pq: dict[str, Any] = {}

    def wait_log(self, text: str, timeout: float = 30, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.daemon.log.read_text(errors="replace").count(text) >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} in the log:\n{self.daemon.log.read_text()}")

    def record(self) -> None:
        d = self.daemon
        d.start()
        self.wait_log(f"web: serving {self.base_url}/")
        # Event 1 closes (the object leaves, post-roll ends); event 2 opens right after it.
        rows = d.wait_for(lambda rows: len(rows) >= 2 and rows[0]["state"] == "complete"
                          and rows[1]["state"] == "recording" and rows[1]["size"] > 200_000, 60,
                          "a complete clip and a second one being written")
        time.sleep(0.5)
        first, second = rows[0], rows[1]
        d.stop(signal.SIGKILL)  # a power cut while event 2 is written
        d.start()
        self.wait_log(f"web: serving {self.base_url}/", count=2)  # the second start's line
        rows = d.wait_for(lambda rows: len(rows) >= 3 and any(r["id"] == second["id"] and r["state"] == "partial"
                                                              for r in rows)
                          and rows[2]["state"] == "complete", 60, "the partial clip and the restart's first clip")
        third = rows[2]
        # The first clip, re-wrapped for the post-quantum key only (header only).
        start = datetime.fromtimestamp(first["start"]).astimezone()
        camrec("rekey", "-c", str(d.config), "--since", start.isoformat(timespec="milliseconds"),
               "--until", datetime.fromtimestamp(first["start"] + 0.5).astimezone().isoformat(timespec="milliseconds"),
               "-i", str(self.key_file), "--recipients", str(self.pq_recipients))
        # The restart's first clip is the classic one the browser plays; a fourth is being recorded.
        self.pq, self.complete = first, third
        self.cut = next(r for r in rows if r["id"] == second["id"])  # as the restart recovered it
        self._wait_serving()

    def _wait_serving(self) -> None:
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(self.base_url + "/login", context=ctx, timeout=5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.fixture(scope="module")
def recording(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    reason = rtsp_server_unavailable_reason()
    if reason:
        pytest.skip(reason)
    # The object crosses at 0.5–3.5 s and from 5 s on: a clip that closes, then one that stays open.
    media = make_camera_media(media_cache_dir(request.config, tmp_path_factory), sub_size=None, duration=20.0,
                              motion_windows=((0.5, 3.5), (5.0, 19.5)))
    with RtspCamera({"/cam": media.main}) as cam:
        rec = Recording(tmp_path_factory.mktemp("e2e"), cam.url("/cam"))
        try:
            rec.record()
            yield rec
        finally:
            rec.daemon.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="camrec-web-e2e-screens-"))
    print(f"\nscreenshots of the web app against the real recorder: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser(recording: Recording, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), recording.base_url,
                  ignore_https_errors=True) as b:  # the recorder's self-signed certificate
        yield b


def _login(page: Any) -> None:
    page.wait_for_selector("#login-form")
    page.fill("#login-user", USER)
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_function("() => !document.getElementById('login-form')")


def _logged_in_page(browser: Browser, path: str = "/") -> Any:
    page = browser.page()
    page.goto(browser.base + path)
    page.wait_for_function("() => document.getElementById('view').children.length > 0")
    if page.locator("#login-form").count():
        _login(page)
    return page


def _day(row: dict[str, Any]) -> str:
    return datetime.fromtimestamp(row["start"]).astimezone().strftime("%Y-%m-%d")


def _event_id(row: dict[str, Any]) -> str:
    """The API's id of an index row: its video file's name without the suffix (docs/web-api.md)."""
    from camrec.store import layout

    return str(row["path"]).rsplit("/", 1)[-1][: -len(layout.VIDEO_SUFFIX)]


# ---------------------------------------------------------------------------------------------
# The tests share the recording and the browser; the last ones inspect every request and the audit.


def test_routes_need_a_session_on_the_live_server(recording: Recording) -> None:
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                         type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                                              {"redirect_request": lambda *a, **k: None})())
    for path, want in [("/api/cameras", 401), ("/api/events", 401), ("/api/session", 401),
                       ("/api/clips/x/video", 401), ("/api/events/x", 401), ("/", 302), ("/camera/front", 302),
                       ("/event/1", 302)]:
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(recording.base_url + path, timeout=10)
        assert err.value.code in ((want,) if want == 401 else (302, 303)), (path, err.value.code)
        if want == 401:
            assert "error" in json.loads(err.value.read())
        else:
            assert err.value.headers["Location"].startswith("/login")
    assert opener.open(recording.base_url + "/login", timeout=10).status == 200


def test_login_lockout_cameras_and_thumbnail(browser: Browser, recording: Recording, shots: Path) -> None:
    page = browser.page()
    t0 = time.monotonic()
    page.goto(browser.base + "/")
    page.wait_for_selector("#login-form")
    page.fill("#login-user", USER)
    page.fill("#login-password", "not the password")
    page.click("#login-submit")
    wait_text(page, "#login-message", "Wrong user name or password")
    # The address gets 5 failures free; the 6th locks it for a second, the next attempt is refused.
    for _ in range(8):
        page.click("#login-submit")
        page.wait_for_selector("#login-message:not([hidden])")
        page.wait_for_function("() => !document.getElementById('login-submit').disabled")
        if "Too many failed logins" in page.inner_text("#login-message"):
            break
    assert "Too many failed logins" in page.inner_text("#login-message")
    time.sleep(2.5)  # the lockout is temporary (1 s, then 2 s)
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#camera-list")
    print(f"\nlogin page to camera list, lockout included: {time.monotonic() - t0:.1f} s")
    assert "load your key" in page.inner_text("[data-camera=front]")

    load_key_file(page, recording.key_file)
    page.wait_for_selector("[data-camera=front] img.thumbnail, [data-camera=front] .placeholder.error")
    assert page.locator("[data-camera=front] img.thumbnail").count(), (
        page.inner_text("[data-camera=front]"), page.evaluate("fetch('/api/cameras').then((r) => r.json())"),
        recording.daemon.rows())
    page.wait_for_function("() => document.querySelector('[data-camera=front] img').naturalWidth > 0")
    shown = pixels(page, "[data-camera=front] img")
    assert shown.shape[0] > 50 and shown.shape[1] > 50 and shown.std() > 5  # a picture, not a blank
    page.screenshot(path=str(shots / "cameras.png"), full_page=True)
    page.close()


def test_timeline_player_frame_matches_export(browser: Browser, recording: Recording, shots: Path,
                                              tmp_path: Path) -> None:
    import av

    first = recording.complete
    page = _logged_in_page(browser, "/camera/front")
    load_key_file(page, recording.key_file)
    page.wait_for_selector("#event-list li")
    if page.inner_text("#day") != _day(first):
        page.click("#prev-day")  # the recording straddled midnight
        page.wait_for_selector("#event-list li")
    texts = page.locator("#event-list li").all_inner_texts()
    assert len(texts) >= 3, texts
    starts = [datetime.fromtimestamp(r["start"]).astimezone().strftime("%H:%M:%S")
              for r in (recording.complete, recording.cut, recording.pq)]
    for s in starts:
        assert any(t.startswith(s) for t in texts), (s, texts)
    cut_text = next(t for t in texts if t.startswith(starts[1]))
    assert "cut short" in cut_text, cut_text
    page.screenshot(path=str(shots / "timeline.png"), full_page=True)

    ev = _event_id(first)
    page.click(f"[data-event='{ev}']")
    page.wait_for_selector("#event-thumbnail")
    page.click("#play")
    page.wait_for_function("() => document.getElementById('player').currentTime > 1.0")  # it advances
    page.wait_for_selector("[data-decrypted='1']")
    assert page.locator("#player-message").is_hidden()
    page.screenshot(path=str(shots / "player.png"), full_page=True)

    out = tmp_path / "export"
    camrec("export", "-c", str(recording.daemon.config), "-i", str(recording.key_file), "-o", str(out),
           "--since", datetime.fromtimestamp(first["start"]).astimezone().isoformat(timespec="milliseconds"),
           "--until", datetime.fromtimestamp(first["start"] + 0.5).astimezone().isoformat(timespec="milliseconds"))
    exported = list(out.rglob("*.mp4"))
    assert len(exported) == 1, exported
    with av.open(str(exported[0])) as c:
        frames = [(float(f.time or 0.0), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    k = len(frames) // 2
    t0 = frames[0][0]
    seek(page, frames[k][0] - t0 + 0.5 / FPS)
    shown = pixels(page, "#player")
    ref = frames[k][1]
    far = frames[(k + len(frames) // 3) % len(frames)][1]
    assert shown.shape == ref.shape
    print(f"\nframe {k} of the player vs camrec export: mean abs difference {mad(shown, ref):.2f} "
          f"(a frame {len(frames) // 3} later: {mad(shown, far):.2f})")
    assert mad(shown, ref) < 3.0, mad(shown, ref)
    assert mad(shown, far) > 2 * mad(shown, ref), (mad(shown, far), mad(shown, ref))  # frames differ

    with page.expect_download() as dl:
        page.click("#download")
    # The browser's download is the decrypted clip (the fMP4 as recorded; `camrec export` remuxes).
    plain = tmp_path / "decrypted.mp4"
    camrec("decrypt", "-i", str(recording.key_file), "-o", str(plain), str(recording.daemon.storage / first["path"]))
    assert Path(dl.value.path()).read_bytes() == plain.read_bytes()
    page.close()


def test_crash_cut_clip_plays_its_prefix(browser: Browser, recording: Recording) -> None:
    cut = recording.cut
    assert cut["state"] == "partial"
    # A bare event link (a bookmark): the page finds the event by id, then its day for prev/next.
    page = _logged_in_page(browser, f"/event/{_event_id(cut)}")
    page.wait_for_selector("#event-flag")
    if _day(recording.pq) == _day(cut) == _day(recording.complete):  # (not across midnight)
        prev, after = (page.locator(s).get_attribute("href") or "" for s in ("#prev-event", "#next-event"))
        assert prev.startswith(f"/event/{_event_id(recording.pq)}?"), prev
        assert after.startswith(f"/event/{_event_id(recording.complete)}?"), after
    load_key_file(page, recording.key_file)
    page.click("#play")
    page.wait_for_selector("[data-decrypted='1']")
    assert "cut short (power loss or crash)" in page.inner_text("#player-message")
    page.wait_for_function("() => document.getElementById('player').currentTime > 0.5")
    duration = page.evaluate("document.getElementById('player').duration")
    assert 0.5 < duration < 60
    page.close()


def test_wrong_passphrase_protected_and_post_quantum_identities(browser: Browser, recording: Recording) -> None:
    pq = recording.pq
    page = _logged_in_page(browser, f"/event/{_event_id(pq)}?camera=front&day={_day(pq)}")
    load_key_file(page, recording.stranger_file)
    wait_text(page, "#player-message", "does not open this clip")  # a clear message, nothing plays
    assert page.evaluate("document.getElementById('player').currentTime") == 0
    # The passphrase-protected key opens the recorder's classic clips, not this re-wrapped one.
    open_key_panel(page)
    page.set_input_files("#identity-file", str(recording.protected_file))
    wait_text(page, "#identity-message", "passphrase")
    page.fill("#identity-passphrase", "not the passphrase")
    page.click("#identity-open")
    wait_text(page, "#identity-message", "wrong passphrase")
    load_key_file(page, recording.protected_file, PASSPHRASE)
    wait_text(page, "#player-message", "does not open this clip")
    load_key_file(page, recording.pq_file)
    page.wait_for_selector("#event-thumbnail")
    page.click("#play")
    page.wait_for_function("() => document.getElementById('player').currentTime > 1.0")

    first = recording.complete
    page.goto(browser.base + f"/event/{_event_id(first)}?camera=front&day={_day(first)}")
    load_key_file(page, recording.protected_file, PASSPHRASE)
    page.click("#play")
    page.wait_for_function("() => document.getElementById('player').currentTime > 1.0")
    page.close()


def test_no_request_left_loopback_or_carried_a_secret(browser: Browser, recording: Recording) -> None:
    from camrec.crypto.bech32 import decode as bech32_decode

    assert len(browser.requests) > 30
    needles: list[bytes] = []
    for secret in recording.secrets:
        needles += [secret.encode(), secret.lower().encode(), secret.encode().hex().encode()]
        if secret.startswith("AGE-SECRET-KEY-"):
            raw = bech32_decode(secret)[1]
            needles += [raw, base64.b64encode(raw).rstrip(b"="), base64.urlsafe_b64encode(raw).rstrip(b"=")]
        else:
            needles.append(base64.b64encode(secret.encode()).rstrip(b"="))
    for r in browser.requests:
        blob = r["url"].encode() + json.dumps(r["headers"]).encode() + r["body"]
        for needle in needles:
            assert needle not in blob, f"a secret appears in a request to {r['url']}"
        assert r["url"].startswith((browser.base + "/", f"blob:{browser.base}/")), r["url"]
    # Failed requests are streams cancelled by leaving a page mid-clip: the recorder's, never others.
    assert all(u.startswith((browser.base + "/", "blob:")) for u in browser.failed), browser.failed
    assert [m for m in browser.console if m.startswith("pageerror")] == []
    log = recording.daemon.log.read_text(errors="replace")
    assert "Traceback" not in log
    # The server's log names the client of every login and refusal: loopback only.
    clients = re.findall(r" web: .* from (\S+)", log)
    assert clients and set(clients) == {"127.0.0.1"}, clients


def test_audit_shows_the_web_logins_and_fetches(browser: Browser, recording: Recording) -> None:
    entries = json.loads(camrec("audit", "-c", str(recording.daemon.config), "--json").stdout)
    kinds = [e.get("event") for e in entries]
    assert "web-login" in kinds and "web-login-failed" in kinds, kinds
    fetches = [e for e in entries if e.get("event") == "web-fetch"]
    assert fetches, kinds
    assert all(e.get("user") == USER for e in fetches)
    assert {e.get("client") for e in entries if str(e.get("event", "")).startswith("web-")} <= {"127.0.0.1"}
    fetched = {f for e in fetches for f in e.get("files", [])}
    for row in (recording.complete, recording.cut, recording.pq):
        assert row["path"] in fetched, (row["path"], fetched)
    shown = camrec("audit", "-c", str(recording.daemon.config)).stdout
    assert "web-login" in shown and "web-fetch" in shown
    camrec("audit", "-c", str(recording.daemon.config), "--verify")
