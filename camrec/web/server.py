"""WebServer: the aiohttp app on its own asyncio loop, in one thread, for `camrec run`.

Recording never waits for it: the loop runs in a daemon thread, and its only links to the
recorder are the status callable and the audit log. With no client connected the loop sleeps in
epoll (no timers of ours), so it costs no CPU.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from camrec.config.models import WebConfig, loopback_host, parse_listen
from camrec.errors import CamrecError, ConfigError, StorageError
from camrec.web.accounts import Accounts
from camrec.web.app import make_app
from camrec.web.context import LiveHubs, WebContext, state_dir_for
from camrec.web.tls import certificate_files, fingerprint, load_certificate, server_context

log = logging.getLogger(__name__)

STOP_SECONDS = 3.0
START_SECONDS = 30.0


class WebServerError(CamrecError):
    """The web server could not start (a port in use, an unusable certificate)."""


def _format_url(scheme: str, host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/"


class WebServer:
    """Serves `make_app(ctx)` on every `listen` address ("host:port"; "" host = all interfaces).

    HTTPS with `ssl_context`; plain HTTP only when `ssl_context` is None, which is refused unless
    every address is loopback (the config refuses it too: this is the last line)."""

    def __init__(self, ctx: WebContext, listen: tuple[str, ...], ssl_context: ssl.SSLContext | None,
                 *, app_factory: Callable[[WebContext], web.Application] = make_app) -> None:
        self.ctx = ctx
        self.addresses = [parse_listen(a) for a in listen]
        if ssl_context is None:
            exposed = [h or "*" for h, _ in self.addresses if not loopback_host(h)]
            if exposed:
                raise ConfigError(f"plain HTTP is allowed only on loopback, not on {exposed[0]}")
        self.ssl_context = ssl_context
        self.app_factory = app_factory
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.runner: web.AppRunner | None = None
        self.urls: list[str] = []

    def start(self) -> list[str]:
        """Binds every address (or none: WebServerError, nothing left running); returns the URLs."""
        loop = asyncio.new_event_loop()
        self.loop = loop
        self.thread = threading.Thread(target=self._run_loop, name="web", daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), loop)
        try:
            self.urls = future.result(START_SECONDS)
        except BaseException as exc:
            self.stop()
            if isinstance(exc, CamrecError):
                raise
            if isinstance(exc, OSError):
                raise WebServerError(f"the web server cannot listen: {exc.strerror or exc}",
                                     hint="another program uses the port? change web.listen") from None
            if isinstance(exc, concurrent.futures.TimeoutError):
                raise WebServerError("the web server did not start in time") from None
            raise
        return self.urls

    def _run_loop(self) -> None:
        assert self.loop is not None
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def _start(self) -> list[str]:
        app = self.app_factory(self.ctx)
        # No access log: a line per clip chunk would flood the journal; camrec logs what matters.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_SECONDS / 2,
                               handler_cancellation=True)
        await runner.setup()
        self.runner = runner
        urls: list[str] = []
        scheme = "https" if self.ssl_context is not None else "http"
        for host, port in self.addresses:
            site = web.TCPSite(runner, host or None, port, ssl_context=self.ssl_context, reuse_address=True)
            await site.start()
            server = site._server  # the bound sockets tell the real port when 0 was asked for
            sockets = getattr(server, "sockets", None) or []
            for sock in sockets:
                # Every interface: the name a phone on the LAN would use (it is in the certificate).
                shown = host or f"{socket.gethostname().split('.')[0]}.local"
                urls.append(_format_url(scheme, shown, sock.getsockname()[1]))
        return list(dict.fromkeys(urls))

    async def _stop(self) -> None:
        if self.runner is not None:
            with contextlib.suppress(Exception):
                await self.runner.cleanup()
            self.runner = None

    def stop(self) -> None:
        """Closes the listeners and open connections; returns within a few seconds."""
        loop, thread = self.loop, self.thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._stop(), loop)
            with contextlib.suppress(Exception):
                future.result(STOP_SECONDS)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_SECONDS)
        self.loop = self.thread = None


def build_server(settings: WebConfig, store_root: Path, *, status: Callable[[], dict[str, Any]] | None,
                 audit: Callable[[dict[str, Any]], None], accounts: Accounts | None = None,
                 live: LiveHubs | None = None) -> WebServer:
    """The recorder's web server for these settings (TLS made or loaded here), not yet started."""
    state_dir = state_dir_for(settings, store_root)
    accounts = accounts if accounts is not None else Accounts(state_dir)
    ctx = WebContext(store_root=store_root, read_only_store=False, accounts=accounts, status=status, audit=audit,
                     settings=settings, live=live)
    ssl_context = None
    if not settings.plain_http:
        files = certificate_files(settings, state_dir)
        ssl_context = server_context(files)
        log.info("web: TLS certificate %s, SHA-256 fingerprint %s", files.cert,
                 fingerprint(load_certificate(files.cert)))
    return WebServer(ctx, settings.listen, ssl_context)


def launch(settings: WebConfig, store_root: Path, *, status: Callable[[], dict[str, Any]] | None,
           audit: Callable[[dict[str, Any]], None], config_path: Path | None = None,
           live: LiveHubs | None = None) -> WebServer | None:
    """What `camrec run` calls once recording runs: the started server, or None (switched off, no
    user yet, or it failed: then the reason is logged, and recording goes on regardless)."""
    if not settings.enabled:
        return None
    try:
        accounts = Accounts(state_dir_for(settings, store_root))
        if not accounts.has_users():
            config = f"-c {config_path} " if config_path else ""
            log.info("web: the web app is off until a web user exists: add one with `camrec user add %sNAME` "
                     "(as the user camrec runs as)", config)
            return None
        server = build_server(settings, store_root, status=status, audit=audit, accounts=accounts, live=live)
        urls = server.start()
    except (CamrecError, StorageError) as exc:
        log.error("web: the web app is not running: %s%s; recording goes on", exc.message,
                  f" ({exc.hint})" if exc.hint else "")
        return None
    except Exception:
        log.exception("web: the web app failed to start; recording goes on")
        return None
    log.info("web: serving %s", " ".join(urls))
    return server
