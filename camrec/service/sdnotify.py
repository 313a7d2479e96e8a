"""A small client for systemd's notify protocol (sd_notify(3)), with no dependencies.

Under a `Type=notify` unit systemd puts the address of a datagram socket in $NOTIFY_SOCKET and
waits for ``READY=1`` before it considers the service started; ``STATUS=`` lines show up in
`systemctl status`; ``WATCHDOG=1`` must arrive at least every ``WatchdogSec=`` or systemd kills
and restarts the service; ``STOPPING=1`` says a clean shutdown has begun.

Outside systemd (no $NOTIFY_SOCKET) every call is a cheap no-op that returns False, so the daemon
calls these unconditionally. Errors are never raised: losing a status line must not stop a
recording. They are logged once at debug level.

Threads: any thread may call these. The unit uses ``NotifyAccess=main``, and systemd checks the
sender's PID from the socket credentials, which is the process (thread group) ID for every
thread, so a message sent from a worker thread is accepted.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from camrec.redact import redact

__all__ = [
    "WatchdogTimer",
    "extend_timeout",
    "notify",
    "ready",
    "socket_address",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]

log = logging.getLogger(__name__)

# systemd truncates nothing, but a STATUS= line is meant for one terminal line in `systemctl status`.
MAX_STATUS_CHARS = 512
_warned = False


def socket_address(environ: Mapping[str, str] | None = None) -> str | bytes | None:
    """The address in $NOTIFY_SOCKET in the form socket.sendto() takes, or None.

    ``@name`` is a Linux abstract-namespace socket: the leading "@" stands for a NUL byte. Only
    absolute paths and abstract names are used; anything else (e.g. newer systemd's ``vsock:``
    addresses, meant for VMs) is ignored rather than guessed at.
    """
    env = os.environ if environ is None else environ
    value = env.get("NOTIFY_SOCKET", "")
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Sends ``message`` (newline-separated VAR=value assignments); True if systemd got it."""
    global _warned
    address = socket_address(environ)
    if address is None:
        return False
    try:
        # A fresh socket per message: no state to share between threads or keep across a fork.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8", "replace"), address)
    except OSError as exc:
        if not _warned:
            _warned = True
            log.debug("sd_notify to %r failed: %s", address, exc)
        return False
    return True


def _one_line(text: str) -> str:
    # A newline would end the STATUS= assignment and start another one: a camera error text
    # containing "\nREADY=1" must not be able to speak for the daemon. Secrets are redacted
    # because `systemctl status` shows this line to every local user.
    flat = " ".join(redact(text).split())
    return flat[:MAX_STATUS_CHARS]


def ready(status_text: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """Start-up is complete (call it only once recovery is done and recording has begun)."""
    message = "READY=1"
    if status_text:
        message += "\nSTATUS=" + _one_line(status_text)
    return notify(message, environ)


def status(text: str, environ: Mapping[str, str] | None = None) -> bool:
    """A one-line status for `systemctl status` (redacted, newlines flattened)."""
    return notify("STATUS=" + _one_line(text), environ)


def stopping(status_text: str | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """A clean shutdown has begun."""
    message = "STOPPING=1"
    if status_text:
        message += "\nSTATUS=" + _one_line(status_text)
    return notify(message, environ)


def watchdog(environ: Mapping[str, str] | None = None) -> bool:
    """Keep-alive: "the service is healthy". Send at least every WatchdogSec= (ideally every half)."""
    return notify("WATCHDOG=1", environ)


def extend_timeout(seconds: float, environ: Mapping[str, str] | None = None) -> bool:
    """Asks for ``seconds`` more before the start (or stop) timeout fires, e.g. during a long
    store recovery before READY=1. Must be repeated before each extension runs out."""
    return notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}", environ)


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds (from $WATCHDOG_USEC), or None if no watchdog applies to us.

    $WATCHDOG_PID, when set, names the process the watchdog is meant for; environment variables
    are inherited, so a child process must not take its parent's watchdog for its own.
    """
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


class WatchdogTimer:
    """Sends WATCHDOG=1 at most every half watchdog interval, the spacing sd_watchdog_enabled(3)
    recommends; call :meth:`kick` as often as convenient (e.g. every loop turn) while healthy."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ
        timeout = watchdog_interval(environ)
        self.period: float | None = timeout / 2 if timeout is not None else None
        self._last: float | None = None

    @property
    def enabled(self) -> bool:
        return self.period is not None

    def kick(self, now: float | None = None) -> bool:
        """Pings if a ping is due; True if one was sent."""
        if self.period is None:
            return False
        now = time.monotonic() if now is None else now
        if self._last is not None and now - self._last < self.period:
            return False
        if watchdog(self._environ):
            self._last = now
            return True
        return False
