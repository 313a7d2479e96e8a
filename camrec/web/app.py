"""The aiohttp application: security middlewares, login/logout/session routes, pages, static files.

Every route needs a session except the login page, the static files and `POST /api/login`
(PUBLIC_ROUTES). The checks live in middlewares, so a route added later (camrec.web.api) is covered
without doing anything: tests/test_web_server.py walks the router and proves it for every route.

Order of the middlewares (outermost first):
1. errors: any HTTP error becomes `{"error": …}` JSON; any unexpected exception a 500 JSON
   answer without a traceback (the traceback goes to the log).
2. guard: the Origin of a non-GET request or WebSocket upgrade must be this server; without
   accounts (`web serve --store`), the Host must be loopback (DNS rebinding).
3. auth: the session cookie → `request["user"]`; none → 401 JSON for the API, a redirect to
   /login for pages. Then the CSRF token for every non-GET request.
Security headers are set on every answer in `on_response_prepare`, static files and errors included.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from camrec.config.models import loopback_host
from camrec.errors import StorageError
from camrec.web import api
from camrec.web.context import WebContext, state_dir_for
from camrec.web.live.routes import REGISTRY as LIVE_REGISTRY
from camrec.web.sessions import SESSIONS_NAME, Session, SessionStore
from camrec.web.throttle import LoginThrottle

log = logging.getLogger(__name__)

CONTEXT = web.AppKey("camrec_context", WebContext)
LOCAL_CSRF = web.AppKey("camrec_local_csrf", str)
LOGIN_SLOTS = web.AppKey("camrec_login_slots", asyncio.Semaphore)
CONCURRENT_LOGINS = 2
STATIC_DIR = Path(__file__).resolve().parent / "static"
SESSION_COOKIE = "camrec_session"
CSRF_HEADER = "X-CSRF-Token"
LOGIN_BODY_LIMIT = 16 * 1024
BODY_LIMIT = 1024 * 1024  # no route takes more; aiohttp answers 413 beyond it
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# URL path → page file camrec/web/static/<page>.html
PAGES = {"/": "index", "/login": "login", "/camera/{name}": "camera", "/event/{id}": "event", "/live": "live",
         "/live/{name}": "live"}
# (method, route path) pairs reachable without a session; "/static" is the static-file prefix.
PUBLIC_ROUTES = frozenset({("GET", "/login"), ("HEAD", "/login"), ("GET", "/static"), ("HEAD", "/static"),
                           ("POST", "/api/login")})

CSP = ("default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' blob: data:; "
       "media-src 'self' blob:; style-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'self'; object-src 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def client_address(request: web.Request) -> str:
    # The peer address itself: X-Forwarded-For is not trusted (camrec is not meant to sit behind
    # a proxy, and trusting the header would let anyone pick the address the throttle counts).
    return request.remote or "unknown"


async def audit(request: web.Request, event: str, *, user: str | None = None,
                files: list[str] | None = None, **fields: Any) -> None:
    """Appends an audit entry (off the event loop: it fsyncs). Raises what ctx.audit raises."""
    ctx = request.app[CONTEXT]
    body = {"event": event, "user": user if user is not None else request.get("user", "?"),
            "client": client_address(request), "files": files or [], **fields}
    await asyncio.get_running_loop().run_in_executor(None, ctx.audit, body)


# --- middlewares ----------------------------------------------------------------------------


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items()
                   if k.lower() in ("retry-after", "allow", "www-authenticate", "content-range")}
        return json_error(exc.status, exc.reason, headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("web: internal error on %s %s", request.method, request.path)
        return json_error(500, "internal error (see the recorder's log)")


def _same_origin(request: web.Request, origin: str) -> bool:
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme == request.scheme and parts.netloc.lower() == (request.host or "").lower()


def websocket_upgrade(request: web.Request) -> bool:
    return "websocket" in request.headers.get(hdrs.UPGRADE, "").lower()


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    if ctx.accounts is None:
        # No login: only this machine may use it. A DNS-rebinding page (evil.example resolving to
        # 127.0.0.1) would be same-origin with us; its requests carry its own name in Host.
        host = urlsplit(f"//{request.host}").hostname or ""
        if not loopback_host(host):
            log.warning("web: refused a request for host %r (only loopback names are served)", host[:100])
            return json_error(403, "this server answers only to 127.0.0.1, [::1] and localhost")
    origin = request.headers.get(hdrs.ORIGIN)
    if websocket_upgrade(request):
        # Browsers don't apply the same-origin policy to WebSockets: the Origin check is the only
        # thing stopping another site from opening one with the owner's cookie.
        if origin is None or not _same_origin(request, origin):
            log.warning("web: refused a WebSocket from origin %r", (origin or "")[:100])
            return json_error(403, "cross-origin WebSocket refused")
    elif request.method not in SAFE_METHODS and origin is not None and not _same_origin(request, origin):
        log.warning("web: refused a %s from origin %r", request.method, origin[:100])
        return json_error(403, "cross-origin request refused")
    return await handler(request)


def users_unreadable(exc: StorageError) -> web.Response:
    log.error("web: %s", exc.message)
    return json_error(503, "the web users file cannot be read; see the recorder's log")


def route_key(request: web.Request) -> tuple[str, str | None]:
    resource = request.match_info.route.resource
    return request.method, resource.canonical if resource is not None else None


def is_public(request: web.Request) -> bool:
    return route_key(request) in PUBLIC_ROUTES


def unauthorized(request: web.Request, message: str = "login required") -> web.StreamResponse:
    if request.method in ("GET", "HEAD") and not request.path.startswith("/api/") and not websocket_upgrade(request):
        raise web.HTTPFound("/login")
    return json_error(401, message)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_public(request):
        return await handler(request)
    ctx = request.app[CONTEXT]
    if ctx.accounts is None:
        request["user"] = "local"
        csrf = request.app[LOCAL_CSRF]
        session: Session | None = None
    else:
        assert ctx.sessions is not None
        accounts = ctx.accounts
        try:
            session = await asyncio.get_running_loop().run_in_executor(
                None, ctx.sessions.lookup, request.cookies.get(SESSION_COOKIE), accounts.epoch)
        except StorageError as exc:
            return users_unreadable(exc)
        if session is None:
            return unauthorized(request)
        request["user"] = session.user
        request["session"] = session
        csrf = session.csrf
    if request.method not in SAFE_METHODS:
        token = request.headers.get(CSRF_HEADER)
        if token is None or not secrets.compare_digest(token.encode(), csrf.encode()):
            log.warning("web: %s %s without a valid CSRF token from %s", request.method, request.path,
                        client_address(request))
            return json_error(403, "missing or wrong CSRF token (reload the page)")
    return await handler(request)


async def set_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    # Pages and API answers are never stored (they hold the event list, the ciphertext); static
    # files may be kept but are revalidated, so an update reaches the browser at once.
    static = request.path.startswith("/static/") and response.status < 400
    response.headers[hdrs.CACHE_CONTROL] = "no-cache" if static else "no-store"


# --- login, logout, session ---------------------------------------------------------------


async def _read_json(request: web.Request, limit: int) -> Any:
    if request.content_type != "application/json":
        # Also what makes a cross-site form unable to log a victim in: it cannot send JSON.
        raise web.HTTPUnsupportedMediaType(reason="send the body as application/json")
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length,
                                            reason=f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size,
                                                reason=f"the body is larger than {limit} bytes")
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        raise web.HTTPBadRequest(reason="the body is not valid JSON") from None


async def login(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    if ctx.accounts is None:
        return json_error(400, "this server needs no login")
    assert ctx.sessions is not None and ctx.throttle is not None
    body = await _read_json(request, LOGIN_BODY_LIMIT)
    if not (isinstance(body, dict) and isinstance(body.get("username"), str)
            and isinstance(body.get("password"), str)):
        return json_error(400, 'expected {"username": "…", "password": "…"}')
    username, password = body["username"][:128], body["password"]
    address = client_address(request)
    accounts = ctx.accounts
    # argon2id takes 64 MiB and tens of milliseconds per check: a burst of parallel logins must not
    # exhaust a Pi's memory, and must not slip past the throttle before the first failure counts.
    async with request.app[LOGIN_SLOTS]:
        wait = ctx.throttle.retry_after(address, username)
        if wait:
            # Not checked and not audited: a locked-out guesser learns nothing and can't flood the log.
            return json_error(429, f"too many failed logins; try again in {wait} s", {"Retry-After": str(wait)})
        try:
            epoch = await asyncio.get_running_loop().run_in_executor(None, accounts.verify, username, password)
        except StorageError as exc:
            return users_unreadable(exc)
        if epoch is None:
            ctx.throttle.failed(address, username)
    if epoch is None:
        log.warning("web: failed login for %r from %s", username[:64], address)
        try:
            await audit(request, "web-login-failed", user=username[:64])
        except Exception as exc:
            log.error("web: cannot write the audit log: %s", getattr(exc, "message", exc))
        return json_error(401, "wrong user name or password")
    try:
        await audit(request, "web-login", user=username)
    except Exception as exc:
        log.error("web: cannot write the audit log, login refused: %s", getattr(exc, "message", exc))
        return json_error(503, "the audit log cannot be written; see the recorder's log")
    ctx.throttle.succeeded(address, username)
    session_id, session = await asyncio.get_running_loop().run_in_executor(
        None, ctx.sessions.create, username, epoch)
    log.info("web: %s logged in from %s", username, address)
    response = web.json_response({"csrf": session.csrf, "user": username})
    response.set_cookie(SESSION_COOKIE, session_id, path="/", max_age=int(ctx.settings.session_lifetime),
                        httponly=True, secure=True, samesite="Lax")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    if ctx.sessions is not None and ctx.accounts is not None:
        ctx.sessions.end(request.cookies.get(SESSION_COOKIE))
        log.info("web: %s logged out", request["user"])
        await request.app[LIVE_REGISTRY].end_session(request.cookies.get(SESSION_COOKIE))
        try:
            await audit(request, "web-logout")
        except Exception as exc:  # the session is over either way
            log.error("web: cannot write the audit log: %s", getattr(exc, "message", exc))
    response = web.json_response({"ok": True})
    response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
    return response


async def session_info(request: web.Request) -> web.StreamResponse:
    session = request.get("session")
    csrf = session.csrf if session is not None else request.app[LOCAL_CSRF]
    return web.json_response({"user": request["user"], "csrf": csrf})


# --- pages ------------------------------------------------------------------------------------


def page_handler(page: str, static_dir: Path) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        path = static_dir / f"{page}.html"
        if not path.is_file():
            return json_error(404, f"page {page} is not built")
        return web.FileResponse(path, headers={hdrs.CONTENT_TYPE: "text/html; charset=utf-8"})

    return handle


async def static_missing(request: web.Request) -> web.StreamResponse:
    return json_error(404, "no static files are installed")


def make_app(ctx: WebContext, *, static_dir: Path | None = None) -> web.Application:
    """The whole web app for `ctx`: middlewares, login routes, pages, static files, then the API."""
    static_dir = static_dir or STATIC_DIR
    if ctx.throttle is None:
        ctx.throttle = LoginThrottle(clock=ctx.clock)
    if ctx.sessions is None:
        path = None if ctx.accounts is None else state_dir_for(ctx.settings, ctx.store_root) / SESSIONS_NAME
        ctx.sessions = SessionStore(path, idle=ctx.settings.session_idle, lifetime=ctx.settings.session_lifetime,
                                    clock=ctx.clock)
    app = web.Application(middlewares=[errors_middleware, guard_middleware, auth_middleware],
                          client_max_size=BODY_LIMIT)
    app[CONTEXT] = ctx
    app[LOCAL_CSRF] = secrets.token_urlsafe(32)
    app[LOGIN_SLOTS] = asyncio.Semaphore(CONCURRENT_LOGINS)
    app.on_response_prepare.append(set_security_headers)
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/session", session_info)
    for route, page in PAGES.items():
        app.router.add_get(route, page_handler(page, static_dir))
    if static_dir.is_dir():
        app.router.add_static("/static", static_dir, follow_symlinks=False, append_version=False)
    else:
        app.router.add_get("/static/{tail:.*}", static_missing)
    api.add_routes(app, ctx)
    return app
