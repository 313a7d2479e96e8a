"""A real camrec web server on 127.0.0.1 for tests: plain HTTP (loopback), a fake clock, fast argon2.

`WebHarness` runs `camrec.web.server.WebServer` (its own loop thread, as in `camrec run`) and
talks to it with http.client, so every header and cookie the tests see is what a browser gets.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from camrec.config.models import WebConfig
from camrec.web.accounts import Accounts
from camrec.web.context import WebContext, state_dir_for
from camrec.web.server import WebServer
from camrec.web.sessions import SessionStore
from camrec.web.throttle import LoginThrottle

PASSWORD = "correct horse battery"
# Low-cost argon2id so a test with many logins stays fast; production uses argon2-cffi's defaults.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def cookie(self, name: str) -> str | None:
        for value in self.headers.get_all("Set-Cookie") or []:
            if value.startswith(f"{name}="):
                return value
        return None


@dataclass
class WebHarness:
    root: Path
    settings: WebConfig = field(default_factory=lambda: WebConfig(listen=("127.0.0.1:0",), plain_http=True))
    clock: FakeClock = field(default_factory=FakeClock)
    audited: list[dict[str, Any]] = field(default_factory=list)
    with_accounts: bool = True
    static_dir: Path | None = None
    live: Any = None  # camera → {"main"|"sub": PacketHub} for the live routes
    status: Any = None  # the daemon's status document, as a callable

    def __post_init__(self) -> None:
        self.state_dir = state_dir_for(self.settings, self.root)
        self.accounts = Accounts(self.state_dir, hasher=FAST_HASHER) if self.with_accounts else None
        self.server: WebServer | None = None

    def build_context(self) -> WebContext:
        sessions = SessionStore(self.state_dir / "sessions.json" if self.accounts else None,
                                idle=self.settings.session_idle, lifetime=self.settings.session_lifetime,
                                clock=self.clock)
        return WebContext(store_root=self.root, read_only_store=self.accounts is None, accounts=self.accounts,
                          status=self.status or (lambda: {"cameras": {}}), audit=self.audited.append,
                          settings=self.settings, sessions=sessions, throttle=LoginThrottle(clock=self.clock),
                          clock=self.clock, live=self.live)

    def start(self) -> WebHarness:
        from camrec.web.app import make_app

        self.ctx = self.build_context()
        self.server = WebServer(self.ctx, self.settings.listen, None,
                                app_factory=lambda ctx: make_app(ctx, static_dir=self.static_dir))
        self.server.start()
        m = re.match(r"http://127\.0\.0\.1:(\d+)/", self.server.urls[0])
        assert m, self.server.urls
        self.port = int(m.group(1))
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def request(self, method: str, path: str, body: bytes | str | dict[str, Any] | None = None, *,
                headers: dict[str, str] | None = None, session: str | None = None, csrf: str | None = None,
                host: str | None = None) -> Answer:
        h = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        if session is not None:
            h["Cookie"] = f"camrec_session={session}"
        if csrf is not None:
            h["X-CSRF-Token"] = csrf
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.putrequest(method, path, skip_host=host is not None)
            if host is not None:
                conn.putheader("Host", host)
            data = body.encode() if isinstance(body, str) else body
            if data is not None and "Content-Length" not in h:
                h["Content-Length"] = str(len(data))
            for k, v in h.items():
                conn.putheader(k, v)
            conn.endheaders(data)
            r = conn.getresponse()
            return Answer(r.status, r.headers, r.read())
        finally:
            conn.close()

    def login(self, user: str = "alice", password: str = PASSWORD) -> tuple[str, str]:
        """(session id, csrf token) after a successful login."""
        a = self.request("POST", "/api/login", {"username": user, "password": password})
        assert a.status == 200, (a.status, a.body)
        cookie = a.cookie("camrec_session")
        assert cookie is not None
        return cookie.split(";")[0].split("=", 1)[1], a.json()["csrf"]


def raw_websocket(port: int, path: str, session: str, *, rcvbuf: int | None = None) -> socket.socket:
    """A WebSocket upgraded by hand and then left alone (nothing is read from it): a viewer that
    holds a place, or with a tiny `rcvbuf` one that stalls the server's sends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect: a fixed buffer turns off the kernel's autotuning
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n"
                  f"Cookie: camrec_session={session}\r\n\r\n").encode())
    assert sock.recv(12) == b"HTTP/1.1 101"
    return sock

