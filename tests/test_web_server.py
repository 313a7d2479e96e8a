"""The web server's attack surface (issue 11, items 1 and 3), against a real aiohttp server on
127.0.0.1: every route needs a session (proved by walking the router, so routes added later are
covered too), login answers and its audit entries, throttling, CSRF, Origin checks, the security
headers on every kind of answer, hostile bodies, and no inline script in any shipped page."""

from __future__ import annotations

import asyncio
import html.parser
import itertools
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from camrec.config.models import WebConfig
from camrec.errors import ConfigError
from camrec.web import api
from camrec.web import app as web_app
from camrec.web.context import WebContext
from camrec.web.server import WebServer
from tests.support.web_server import PASSWORD, WebHarness

CSP = ("default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' blob: data:; "
       "media-src 'self' blob:; style-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'self'; object-src 'none'")
PAGES = ("index", "login", "camera", "event")


def make_static(root: Path) -> Path:
    static = root / "static"
    static.mkdir()
    for page in PAGES:
        (static / f"{page}.html").write_text(f'<!doctype html><title>{page}</title><script src="/static/app.js">'
                                             "</script>")
    (static / "app.js").write_text("console.log('camrec');\n")
    (static / "style.css").write_text("body { margin: 0 }\n")
    return static


@pytest.fixture
def web_harness(tmp_path: Path) -> Iterator[WebHarness]:
    h = WebHarness(tmp_path / "store", static_dir=make_static(tmp_path))
    h.root.mkdir()
    assert h.accounts is not None
    h.accounts.add("alice", PASSWORD)
    h.start()
    yield h
    h.stop()


# --- route enumeration ------------------------------------------------------------------------


def sample_paths(resource: web.AbstractResource) -> Iterator[str]:
    """Concrete URLs for a route, every {placeholder} filled with one of a few sample values."""
    canonical = resource.canonical
    if isinstance(resource, web.StaticResource):
        yield f"{canonical}/app.js"
        return
    for value in ("x1", "1", "front", "a/b"):
        yield re.sub(r"\{[^}]*\}", value, canonical)
    pattern = resource.get_info().get("pattern")
    if isinstance(pattern, re.Pattern):
        # Whatever a later route's parameters must look like (say 64 hex digits): the simplest path
        # its own regex accepts, made of characters a URL carries as they are.
        safe = re.compile(r"[A-Za-z0-9/_.~-]+")
        yield find(st.from_regex(pattern, fullmatch=True),
                   lambda p: bool(safe.fullmatch(p)) and "//" not in p and p.startswith("/"))


def built_routes(app: web.Application) -> list[tuple[str, str, tuple[str, str | None]]]:
    """(method, concrete path, route key) for every route of the app, each path checked to resolve
    to its own route (so the request below really reaches it, not a 404)."""
    out = []

    async def resolve(method: str, path: str) -> web.AbstractRoute:
        match = await app.router.resolve(make_mocked_request(method, path, app=app))
        return match.route

    for route in app.router.routes():
        resource = route.resource
        assert resource is not None
        methods = ["GET", "HEAD", "POST", "PUT", "DELETE"] if route.method == "*" else [route.method]
        for method in methods:
            path = next((p for p in sample_paths(resource) if asyncio.run(resolve(method, p)).resource is resource),
                        None)
            assert path is not None, f"no sample path reaches {method} {resource.canonical}"
            out.append((method, path, (method, resource.canonical)))
    return out


def extra_routes(app: web.Application, ctx: WebContext) -> None:
    """Routes a later change could add, in every shape: API GET and POST with parameters, a page,
    a WebSocket, a method-agnostic route. None of them does anything about sessions."""

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"user": request.get("user")})

    app.router.add_get("/api/later/{id:[0-9]+}", ok)
    app.router.add_post("/api/later", ok)
    app.router.add_delete("/api/later/{name}", ok)
    app.router.add_get("/later-page/{tail:.*}", ok)
    app.router.add_route("*", "/api/anything", ok)
    app.router.add_get("/ws/later", ok)
    app.router.add_get("/api/later-clips/{digest:[0-9a-f]{64}}/{kind:(video|thumbnail)}", ok)


def test_every_route_needs_a_session_now_and_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = api.add_routes

    def with_extras(app: web.Application, ctx: WebContext) -> None:
        original(app, ctx)  # the real API routes, whatever they are
        extra_routes(app, ctx)

    monkeypatch.setattr(api, "add_routes", with_extras)
    h = WebHarness(tmp_path / "store", static_dir=make_static(tmp_path))
    h.root.mkdir()
    assert h.accounts is not None
    h.accounts.add("alice", PASSWORD)
    built: list[web.Application] = []

    def factory(ctx: WebContext) -> web.Application:
        built.append(web_app.make_app(ctx, static_dir=h.static_dir))
        return built[-1]

    h.ctx = h.build_context()
    h.server = WebServer(h.ctx, h.settings.listen, None, app_factory=factory)
    h.server.start()
    h.port = int(h.server.urls[0].rsplit(":", 1)[1].strip("/"))
    try:
        routes = built_routes(built[0])
        keys = {key for _, _, key in routes}
        # The app's own routes and the planted ones are all there: the walk is not vacuous.
        for key in [("POST", "/api/login"), ("POST", "/api/logout"), ("GET", "/api/session"), ("GET", "/"),
                    ("GET", "/login"), ("GET", "/camera/{name}"), ("GET", "/event/{id}"), ("GET", "/static"),
                    ("GET", "/api/later/{id}"), ("POST", "/api/later"), ("DELETE", "/api/later/{name}"),
                    ("GET", "/ws/later")]:
            assert key in keys, key
        checked = 0
        for method, path, key in routes:
            a = h.request(method, path, b"{}" if method not in ("GET", "HEAD") else None,
                          headers={"Content-Type": "application/json"})
            if key in web_app.PUBLIC_ROUTES:
                assert a.status not in (401, 302, 403), (method, path, a.status)
                continue
            checked += 1
            if method in ("GET", "HEAD") and not path.startswith("/api/"):
                assert a.status == 302 and a.header("Location") == "/login", (method, path, a.status)
            else:
                assert a.status == 401, (method, path, a.status, a.body)
                if method != "HEAD":
                    assert a.json() == {"error": "login required"}
        assert checked >= 10
        # With a session, the planted routes work and see the user the middleware put there.
        sid, csrf = h.login()
        assert h.request("GET", "/api/later/7", session=sid).json() == {"user": "alice"}
        assert h.request("POST", "/api/later", b"{}", session=sid, csrf=csrf).json() == {"user": "alice"}
        # Unknown paths are no way around it either.
        assert h.request("GET", "/api/nothing-here").status == 401
        assert h.request("GET", "/nothing-here").status == 302
    finally:
        h.stop()


# --- login ------------------------------------------------------------------------------------


def test_login_sets_a_strict_cookie_and_returns_the_csrf_token(web_harness: WebHarness) -> None:
    h = web_harness
    a = h.request("POST", "/api/login", {"username": "alice", "password": PASSWORD})
    assert a.status == 200
    csrf = a.json()["csrf"]
    assert len(csrf) >= 40
    cookie = a.cookie("camrec_session")
    assert cookie is not None
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert "httponly" in attributes and "secure" in attributes
    assert attributes["samesite"].lower() == "samesite=lax"
    assert attributes["path"] == "Path=/"
    sid = cookie.split(";")[0].split("=", 1)[1]
    assert len(sid) >= 40
    info = h.request("GET", "/api/session", session=sid)
    assert info.status == 200 and info.json() == {"user": "alice", "csrf": csrf}
    assert h.audited[-1]["event"] == "web-login"
    assert h.audited[-1]["user"] == "alice" and h.audited[-1]["client"] == "127.0.0.1"
    assert h.audited[-1]["files"] == []
    # The page itself (no session needed for the login page; the others need one).
    assert h.request("GET", "/login").status == 200
    assert h.request("GET", "/", session=sid).status == 200


@pytest.mark.parametrize("user,password", [("alice", "wrong password!"), ("mallory", PASSWORD)])
def test_bad_credentials_get_401_and_an_audit_entry(web_harness: WebHarness, user: str, password: str) -> None:
    h = web_harness
    a = h.request("POST", "/api/login", {"username": user, "password": password})
    assert a.status == 401
    assert a.json() == {"error": "wrong user name or password"}  # the same for an unknown name
    assert a.cookie("camrec_session") is None
    entry = h.audited[-1]
    assert entry["event"] == "web-login-failed" and entry["user"] == user and entry["client"] == "127.0.0.1"
    assert password not in repr(h.audited)


def test_repeated_failures_lock_out_with_backoff_then_let_the_owner_in(web_harness: WebHarness) -> None:
    h = web_harness
    free = 5  # ADDRESS_RULES.free_failures
    for _ in range(free):
        assert h.request("POST", "/api/login", {"username": "alice", "password": "nope nope nope"}).status == 401
    waits = []
    for _ in range(14):
        a = h.request("POST", "/api/login", {"username": "alice", "password": "nope nope nope"})
        if a.status == 401:
            locked = h.request("POST", "/api/login", {"username": "alice", "password": PASSWORD})
            assert locked.status == 429, locked.body  # even the right password waits
            wait = int(locked.header("Retry-After") or 0)
            assert wait >= 1 and "try again" in locked.json()["error"]
            waits.append(wait)
            h.clock.advance(wait)
        else:
            pytest.fail(f"unexpected {a.status}")
    # Exponential (each lockout at least the previous one), capped (never permanent).
    assert waits[:4] == [1, 2, 4, 8]
    assert all(b >= a for a, b in itertools.pairwise(waits))
    assert max(waits) == 900
    # The 429s were not audited (a locked-out guesser can't flood the log); the failures were.
    assert sum(e["event"] == "web-login-failed" for e in h.audited) == free + 14
    # After the lockout the right password works again, and clears the count.
    sid, _ = h.login()
    assert h.request("GET", "/api/session", session=sid).status == 200
    assert h.request("POST", "/api/login", {"username": "alice", "password": "nope nope nope"}).status == 401


def test_a_burst_of_parallel_guesses_does_not_slip_past_the_throttle(web_harness: WebHarness) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def guess(n: int) -> int:
        return web_harness.request("POST", "/api/login", {"username": "alice", "password": f"guess {n:04d}!"}).status

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(guess, range(40)))
    # 5 free failures, the 6th locks the address (the clock stands still), and every later one is a
    # 429; at most the checks already running in the other login slots finish as well.
    failures = statuses.count(401)
    assert 6 <= failures <= 5 + web_app.CONCURRENT_LOGINS, statuses
    assert statuses.count(429) == 40 - failures, statuses


def test_the_user_limit_stops_guessing_from_many_addresses(tmp_path: Path) -> None:
    from camrec.web.throttle import LoginThrottle
    from tests.support.web_server import FakeClock

    clock = FakeClock()
    t = LoginThrottle(clock=clock)
    for n in range(10):  # USER_RULES.free_failures, each from its own address
        assert t.retry_after(f"10.0.0.{n}", "alice") == 0
        t.failed(f"10.0.0.{n}", "alice")
    t.failed("10.0.0.99", "alice")
    assert t.retry_after("10.0.0.100", "alice") == 1  # a fresh address, the same user
    assert t.retry_after("10.0.0.100", "bob") == 0  # other users are not affected
    clock.advance(1)
    assert t.retry_after("10.0.0.100", "alice") == 0
    # Failures are forgotten after a quiet hour: no ban accumulates over weeks of typos.
    clock.advance(3601)
    t.failed("10.0.0.1", "alice")
    assert t.retry_after("10.0.0.1", "alice") == 0


# --- CSRF, Origin, WebSocket -----------------------------------------------------------------


def test_non_get_requests_need_the_csrf_token(web_harness: WebHarness) -> None:
    h = web_harness
    sid, csrf = h.login()
    missing = h.request("POST", "/api/logout", session=sid)
    assert missing.status == 403 and "CSRF" in missing.json()["error"]
    wrong = h.request("POST", "/api/logout", session=sid, csrf=csrf[:-2] + "xx")
    assert wrong.status == 403
    other_sid, other_csrf = h.login()
    assert h.request("POST", "/api/logout", session=sid, csrf=other_csrf).status == 403  # not this session's
    assert h.request("GET", "/api/session", session=sid).status == 200  # still logged in
    ok = h.request("POST", "/api/logout", session=sid, csrf=csrf)
    assert ok.status == 200
    assert "Max-Age=0" in (ok.cookie("camrec_session") or "") or "expires" in (ok.cookie("camrec_session") or "")
    assert h.request("GET", "/api/session", session=sid).status == 401
    assert h.request("GET", "/api/session", session=other_sid).status == 200  # only that session ended


def test_cross_origin_requests_and_websockets_are_refused(web_harness: WebHarness) -> None:
    h = web_harness
    me = f"http://127.0.0.1:{h.port}"
    evil = h.request("POST", "/api/login", {"username": "alice", "password": PASSWORD},
                     headers={"Origin": "https://evil.example"})
    assert evil.status == 403 and evil.cookie("camrec_session") is None
    assert h.request("POST", "/api/login", {"username": "alice", "password": PASSWORD},
                     headers={"Origin": me}).status == 200
    sid, csrf = h.login()
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    for origin in (None, "https://evil.example", "null", f"http://127.0.0.1:{h.port + 1}"):
        headers = dict(upgrade, **({"Origin": origin} if origin else {}))
        a = h.request("GET", "/api/session", headers=headers, session=sid)
        assert a.status == 403, origin
        assert "WebSocket" in a.json()["error"]
    # Same origin passes the Origin check (then the route decides; without a session: 401).
    assert h.request("GET", "/api/session", headers=dict(upgrade, Origin=me)).status == 401
    # A non-GET with a foreign Origin is refused even with a valid session and token.
    assert h.request("POST", "/api/logout", session=sid, csrf=csrf,
                     headers={"Origin": "https://evil.example"}).status == 403


def test_a_login_form_from_another_site_cannot_log_in(web_harness: WebHarness) -> None:
    """A cross-site <form> can only send form encodings: the login takes JSON only."""
    a = web_harness.request("POST", "/api/login", f"username=alice&password={PASSWORD}",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert a.status == 415 and a.cookie("camrec_session") is None


# --- headers ----------------------------------------------------------------------------------


def check_security_headers(a: object, cache: str) -> None:
    from tests.support.web_server import Answer

    assert isinstance(a, Answer)
    assert a.header("Content-Security-Policy") == CSP
    assert a.header("Referrer-Policy") == "no-referrer"
    assert a.header("X-Content-Type-Options") == "nosniff"
    assert a.header("X-Frame-Options") == "DENY"
    assert a.header("Cache-Control") == cache


def test_security_headers_on_every_kind_of_answer(web_harness: WebHarness) -> None:
    h = web_harness
    sid, _ = h.login()
    for path in ("/", "/camera/front", "/event/abc", "/login"):
        a = h.request("GET", path, session=sid)
        assert a.status == 200 and a.header("Content-Type", ).startswith("text/html")
        check_security_headers(a, "no-store")
    for path in ("/static/app.js", "/static/style.css", "/static/login.html"):
        a = h.request("GET", path)
        assert a.status == 200, path
        check_security_headers(a, "no-cache")
    check_security_headers(h.request("GET", "/api/session", session=sid), "no-store")
    check_security_headers(h.request("GET", "/api/session"), "no-store")  # 401
    check_security_headers(h.request("GET", "/"), "no-store")  # redirect
    check_security_headers(h.request("GET", "/static/missing.js"), "no-store")  # 404
    check_security_headers(h.request("POST", "/api/login", "{"), "no-store")  # 400


class InlineScriptFinder(html.parser.HTMLParser):
    """What the CSP forbids and a page must therefore not contain: inline <script>, event
    handler attributes, javascript: URLs, inline <style> and style attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {k.lower(): v or "" for k, v in attrs}
        if tag == "script":
            self._in_script = "src" in names
            if "src" not in names:
                self.problems.append("inline <script>")
        if tag == "style":
            self.problems.append("inline <style>")
        for k, v in names.items():
            if k.startswith("on"):
                self.problems.append(f"event handler attribute {k}")
            if k == "style":
                self.problems.append("style attribute")
            if v.strip().lower().startswith("javascript:"):
                self.problems.append(f"javascript: URL in {k}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("code inside a <script src> element (browsers ignore it; a mistake)")


def inline_problems(text: str) -> list[str]:
    finder = InlineScriptFinder()
    finder.feed(text)
    return finder.problems


def test_the_inline_script_check_catches_what_the_csp_blocks() -> None:
    assert inline_problems('<script src="/static/a.js"></script><p>hi</p>') == []
    assert inline_problems("<script>alert(1)</script>") == ["inline <script>"]
    assert inline_problems('<img src=x onerror="alert(1)">') == ["event handler attribute onerror"]
    assert inline_problems('<a href="JavaScript:alert(1)">x</a>') == ["javascript: URL in href"]
    assert inline_problems('<div style="color:red"></div><style>p{}</style>') == ["style attribute", "inline <style>"]


def shipped_pages() -> list[Path]:
    return sorted(web_app.STATIC_DIR.glob("**/*.html")) if web_app.STATIC_DIR.is_dir() else []


@pytest.mark.skipif(not shipped_pages(), reason="no pages shipped yet in camrec/web/static")
@pytest.mark.parametrize("page", shipped_pages(), ids=lambda p: p.name)
def test_no_inline_script_in_any_shipped_page(page: Path) -> None:
    assert inline_problems(page.read_text(encoding="utf-8")) == []


# --- hostile input ----------------------------------------------------------------------------


@pytest.mark.parametrize("body,status", [
    ("{", 400), ("[]", 400), ('"x"', 400), ('{"username": "alice"}', 400),
    ('{"username": 1, "password": "x"}', 400), ('{"username": "alice", "password": null}', 400),
    ("\xff\xfe", 400), ("[" * 100000, 413), ('{"username": "alice", "password": "' + "x" * 17000 + '"}', 413),
])
def test_bad_login_bodies_get_a_json_4xx_never_a_500(web_harness: WebHarness, body: str, status: int) -> None:
    a = web_harness.request("POST", "/api/login", body, headers={"Content-Type": "application/json"})
    assert a.status == status, a.body
    assert set(a.json()) == {"error"}


def test_an_oversized_chunked_body_is_cut_off(web_harness: WebHarness) -> None:
    h = web_harness
    with socket.create_connection(("127.0.0.1", h.port), timeout=10) as s:
        s.sendall(b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 8192
        for _ in range(4):
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        s.sendall(b"0\r\n\r\n")
        head = s.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head[:100]


def test_an_unexpected_exception_is_a_500_json_without_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(app: web.Application, ctx: WebContext) -> None:
        async def boom(request: web.Request) -> web.Response:
            raise RuntimeError("secret internal detail")

        app.router.add_get("/api/boom", boom)

    monkeypatch.setattr(api, "add_routes", broken)
    h = WebHarness(tmp_path / "store", static_dir=make_static(tmp_path))
    h.root.mkdir()
    assert h.accounts is not None
    h.accounts.add("alice", PASSWORD)
    h.start()
    try:
        sid, _ = h.login()
        with caplog.at_level(logging.ERROR):
            a = h.request("GET", "/api/boom", session=sid)
        assert a.status == 500
        assert a.json() == {"error": "internal error (see the recorder's log)"}
        assert b"Traceback" not in a.body and b"secret internal detail" not in a.body
        check_security_headers(a, "no-store")
        assert "secret internal detail" in caplog.text and "Traceback" in caplog.text
    finally:
        h.stop()


# --- without accounts (`web serve --store`): loopback names only ---------------------------------


def test_without_accounts_only_loopback_host_names_are_served(tmp_path: Path) -> None:
    h = WebHarness(tmp_path / "store", with_accounts=False, static_dir=make_static(tmp_path))
    h.root.mkdir()
    h.start()
    try:
        for host in ("127.0.0.1", f"127.0.0.1:{h.port}", "localhost", f"[::1]:{h.port}"):
            a = h.request("GET", "/api/session", host=host)
            assert a.status == 200, host
            assert a.json()["user"] == "local"
        csrf = a.json()["csrf"]
        # DNS rebinding: a page on evil.example resolved to 127.0.0.1 is refused by name.
        for host in ("evil.example", f"evil.example:{h.port}", "127.0.0.1.evil.example"):
            assert h.request("GET", "/api/session", host=host).status == 403, host
        assert h.request("POST", "/api/logout").status == 403  # CSRF still needed
        assert h.request("POST", "/api/logout", csrf=csrf).status == 200
        assert h.request("POST", "/api/login", {"username": "a", "password": "b"}).status == 400
    finally:
        h.stop()


# --- the server itself --------------------------------------------------------------------------


def thread_cpu_seconds(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_costs_no_cpu_and_stop_is_quick_even_with_a_client_connected(web_harness: WebHarness) -> None:
    h = web_harness
    assert h.server is not None and h.server.thread is not None
    native_id = h.server.thread.native_id
    assert native_id is not None
    idle = socket.create_connection(("127.0.0.1", h.port))  # a browser's open keep-alive connection
    try:
        before = thread_cpu_seconds(native_id)
        time.sleep(2.0)
        assert thread_cpu_seconds(native_id) - before <= 0.03
        started = time.monotonic()
        h.stop()
        assert time.monotonic() - started < 4.0
    finally:
        idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", h.port), timeout=2).close()


def test_plain_http_is_refused_off_loopback(tmp_path: Path) -> None:
    h = WebHarness(tmp_path)
    ctx = h.build_context()
    for listen in (("0.0.0.0:0",), (":0",), ("127.0.0.1:0", "192.168.1.5:0"), ("camrec.local:0",)):
        with pytest.raises(ConfigError, match="loopback"):
            WebServer(ctx, listen, None)
    WebServer(ctx, ("127.0.0.1:0", "[::1]:0", "localhost:0"), None)  # loopback: allowed
    with pytest.raises(ValueError, match="loopback"):
        WebConfig(listen=("0.0.0.0:8443",), plain_http=True)


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    from camrec.web.server import WebServerError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        h = WebHarness(tmp_path)
        server = WebServer(h.build_context(), (f"127.0.0.1:{port}",), None)
        with pytest.raises(WebServerError, match="cannot listen"):
            server.start()
        assert server.thread is None  # nothing left running


# --- a property: whatever the body, /api/login answers a JSON 4xx (or 200), never a 500 ----------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)


def login_bodies() -> st.SearchStrategy[bytes]:
    shaped = st.fixed_dictionaries({}, optional={"username": json_values | st.text(max_size=80),
                                                 "password": json_values | st.text(max_size=80)})
    return st.one_of(
        shaped.map(lambda d: json.dumps(d).encode()),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=200),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=login_bodies(), content_type=st.sampled_from(["application/json", "application/json; charset=utf-8",
                                                          "text/plain", ""]))
def test_login_answers_every_body_with_json_never_a_500(web_harness: WebHarness, body: bytes,
                                                        content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    a = web_harness.request("POST", "/api/login", body, headers=headers)
    assert a.status in (200, 400, 401, 415, 429), (a.status, a.body)
    payload = a.json()
    assert isinstance(payload, dict)
    assert ("csrf" in payload) if a.status == 200 else (set(payload) == {"error"})
    check_security_headers(a, "no-store")
