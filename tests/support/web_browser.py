"""Debian's chromium driven by Playwright, for the web app's browser tests.

Shared by tests/test_web_frontend.py (pages against a stand-in server) and tests/test_web_e2e.py
(against the real `camrec run`): the launch flags (never a browser download; anything that is
not loopback goes to a proxy that does not exist, and fails), the capture of every request the
browser makes (URL, headers, body), the key panel, and pixels drawn from an <img> or <video>.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # Anything that is not loopback goes to a proxy that does not exist, and fails.
                 "--proxy-server=http://127.0.0.1:9", "--autoplay-policy=no-user-gesture-required"]
# WebRTC between chromium and the recorder on 127.0.0.1: chromium gathers no loopback candidates
# unless allowed, and would hide its host address behind an mDNS name the recorder can't resolve.
WEBRTC_LOOPBACK_ARGS = ["--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"]


class Browser:
    """One browser context; every request it makes is kept (URL, headers, body), and failures."""

    def __init__(self, context: Any, base: str) -> None:
        self.context = context
        self.base = base
        self.requests: list[dict[str, Any]] = []
        self.failed: list[str] = []
        self.console: list[str] = []
        context.on("request", self._request)
        context.on("requestfailed", lambda r: self.failed.append(r.url))

    def _request(self, request: Any) -> None:
        self.requests.append({"url": request.url, "method": request.method, "headers": request.all_headers(),
                              "body": request.post_data_buffer or b""})

    def page(self) -> Any:
        page = self.context.new_page()
        page.on("console", lambda m: self.console.append(m.text))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        return page


@contextmanager
def chromium(profile: Path, base: str, *, ignore_https_errors: bool = False,
             extra_args: tuple[str, ...] = ()) -> Iterator[Browser]:
    """Debian's chromium with a fresh profile, as a Browser for the site at `base`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, accept_downloads=True,
            ignore_https_errors=ignore_https_errors, viewport={"width": 1100, "height": 800},
            args=[*CHROMIUM_ARGS, *extra_args])
        context.set_default_timeout(20_000)
        try:
            yield Browser(context, base)
        finally:
            context.close()


def wait_text(page: Any, selector: str, text: str) -> None:
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.textContent || '').includes(t)",
                           arg=[selector, text])


def open_key_panel(page: Any) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    # The app may open the panel itself while the page renders (no key yet): the button toggles.
    page.wait_for_function("() => document.getElementById('view').children.length > 0")
    for _ in range(3):
        if page.locator("#key-panel").is_hidden():
            page.click("#key-button")
        try:
            page.wait_for_selector("#key-panel", state="visible", timeout=2000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError("the key panel does not open")


def load_key_file(page: Any, path: Path, passphrase: str | None = None) -> None:
    """Loads an identity file in the key panel (with its passphrase if protected) and waits for it."""
    open_key_panel(page)
    page.set_input_files("#identity-file", str(path))
    if passphrase is not None:
        wait_text(page, "#identity-message", "passphrase")
        page.fill("#identity-passphrase", passphrase)
        page.click("#identity-open")
    wait_text(page, "#key-status", path.name)


def pixels(page: Any, selector: str) -> np.ndarray:
    """RGB pixels of what the <img> or <video> at `selector` shows, at its natural size."""
    data = page.evaluate(
        """(sel) => {
            const m = document.querySelector(sel);
            const w = m.videoWidth || m.naturalWidth, h = m.videoHeight || m.naturalHeight;
            const c = document.createElement('canvas'); c.width = w; c.height = h;
            const g = c.getContext('2d'); g.drawImage(m, 0, 0);
            const px = g.getImageData(0, 0, w, h).data;
            let s = '';
            for (let i = 0; i < px.length; i += 0x8000) {
                s += String.fromCharCode.apply(null, px.subarray(i, i + 0x8000));
            }
            return {w, h, b64: btoa(s)};
        }""",
        selector,
    )
    rgba = np.frombuffer(base64.b64decode(data["b64"]), np.uint8).reshape(data["h"], data["w"], 4)
    return rgba[:, :, :3]


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference."""
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def seek(page: Any, t: float) -> None:
    """Pauses the #player at `t` seconds and waits for the frame to be drawn."""
    page.evaluate("""(t) => new Promise((ok) => { const v = document.getElementById('player'); v.pause();
        v.addEventListener('seeked', () => setTimeout(ok, 150), {once: true}); v.currentTime = t; })""", t)
