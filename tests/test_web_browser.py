"""The web server's security settings as Debian's chromium applies them (issue 11, item 3).

- The session cookie is `Secure`, even on the loopback plain-HTTP listener: chromium treats
  http://127.0.0.1 as a secure context, so it keeps the cookie and sends it back. (Checked here
  rather than assumed: without it, plain HTTP on loopback could not log in at all.)
- The page cannot read the cookie (HttpOnly).
- The CSP stops an inline script in a page, and allows the page's own script file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.web_server import PASSWORD, WebHarness

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[WebHarness]:
    static = tmp_path / "static"
    static.mkdir()
    # A login page whose own script runs (allowed) next to an inline one (blocked by the CSP).
    (static / "login.html").write_text(
        '<!doctype html><title>login</title><script src="/static/own.js"></script>'
        "<script>document.title = 'inline ran';</script>")
    (static / "own.js").write_text("window.ownScriptRan = true;\n")
    h = WebHarness(tmp_path / "store", static_dir=static)
    h.root.mkdir()
    assert h.accounts is not None
    h.accounts.add("alice", PASSWORD)
    h.start()
    yield h
    h.stop()


def test_chromium_keeps_the_secure_cookie_on_loopback_http_and_enforces_the_csp(
        harness: WebHarness, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=str(CHROMIUM),
                                                       args=ARGS, headless=True)
        try:
            page = browser.new_page()
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            base = f"http://127.0.0.1:{harness.port}"
            assert page.goto(f"{base}/login").status == 200
            assert page.evaluate("window.isSecureContext") is True
            assert page.evaluate("window.ownScriptRan === true")
            assert page.title() == "login"  # the inline script did not run
            assert violations, "chromium reported no CSP violation for the inline script"
            login = page.evaluate("""async (creds) => {
                const r = await fetch('/api/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                     body: JSON.stringify(creds)});
                return {status: r.status, body: await r.json()};
            }""", {"username": "alice", "password": PASSWORD})
            assert login["status"] == 200
            session = page.evaluate("""async () => {
                const r = await fetch('/api/session');
                return {status: r.status, body: await r.json(), cookie: document.cookie};
            }""")
            # Kept although Secure on http://127.0.0.1, sent back, and invisible to scripts.
            assert session["status"] == 200, json.dumps(session)
            assert session["body"] == {"user": "alice", "csrf": login["body"]["csrf"]}
            assert session["cookie"] == ""
            cookies = {c["name"]: c for c in browser.cookies(base)}
            assert cookies["camrec_session"]["secure"] and cookies["camrec_session"]["httpOnly"]
            assert cookies["camrec_session"]["sameSite"] == "Lax"
            # A logout without the CSRF header is refused; with it, the session ends.
            logout = page.evaluate("async () => (await fetch('/api/logout', {method: 'POST'})).status")
            assert logout == 403
            logout = page.evaluate("""async (csrf) => (await fetch('/api/logout',
                {method: 'POST', headers: {'X-CSRF-Token': csrf}})).status""", login["body"]["csrf"])
            assert logout == 200
            assert page.evaluate("async () => (await fetch('/api/session')).status") == 401
        finally:
            browser.close()
