"""camrec.service.sdnotify against real AF_UNIX datagram sockets (a path in a tmp dir and an abstract name)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from camrec.redact import register_secret
from camrec.service import sdnotify


class Listener:
    """Plays systemd's side: a datagram socket that collects what the client sends."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": env_value}

    def messages(self) -> list[str]:
        self.sock.settimeout(0.0)
        received = []
        while True:
            try:
                received.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return received


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        yield Listener(sock, str(path))


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"camrec-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        yield Listener(sock, "@" + name)


def test_no_socket_is_a_noop() -> None:
    for env in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}, {"NOTIFY_SOCKET": "relative"}):
        assert sdnotify.notify("READY=1", env) is False
        assert sdnotify.ready(environ=env) is False
        assert sdnotify.watchdog(env) is False


def test_messages_reach_a_path_socket(listener: Listener) -> None:
    assert sdnotify.ready("recording 2 cameras", listener.env)
    assert sdnotify.status("front: recording", listener.env)
    assert sdnotify.watchdog(listener.env)
    assert sdnotify.extend_timeout(1.5, listener.env)
    assert sdnotify.stopping("closing clips", listener.env)
    assert listener.messages() == [
        "READY=1\nSTATUS=recording 2 cameras",
        "STATUS=front: recording",
        "WATCHDOG=1",
        "EXTEND_TIMEOUT_USEC=1500000",
        "STOPPING=1\nSTATUS=closing clips",
    ]


def test_abstract_namespace_socket(abstract_listener: Listener) -> None:
    assert sdnotify.socket_address(abstract_listener.env) == b"\0" + abstract_listener.env["NOTIFY_SOCKET"][1:].encode()
    assert sdnotify.ready(environ=abstract_listener.env)
    assert abstract_listener.messages() == ["READY=1"]


def test_uses_the_process_environment(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.env["NOTIFY_SOCKET"])
    assert sdnotify.status("hello")
    assert listener.messages() == ["STATUS=hello"]


def test_status_cannot_inject_assignments_and_is_redacted(listener: Listener) -> None:
    register_secret("hunter2-camera-pw")
    sdnotify.status("front: error\nREADY=1\nWATCHDOG=1 rtsp://admin:hunter2-camera-pw@cam/x", listener.env)
    (message,) = listener.messages()
    assert message.count("\n") == 0
    assert message.startswith("STATUS=front: error READY=1")
    assert "hunter2" not in message


def test_status_is_bounded(listener: Listener) -> None:
    sdnotify.status("x" * 5000, listener.env)
    (message,) = listener.messages()
    assert len(message) == len("STATUS=") + sdnotify.MAX_STATUS_CHARS


def test_send_failure_returns_false(tmp_path: Path) -> None:
    # A socket path nobody listens on: ECONNREFUSED/ENOENT must not escape.
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert sdnotify.watchdog_interval(env) == expected


def test_watchdog_interval_for_this_process() -> None:
    env = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert sdnotify.watchdog_interval(env) == 4.0


def test_watchdog_timer_pings_every_half_interval(listener: Listener) -> None:
    env = dict(listener.env, WATCHDOG_USEC="10000000")
    timer = sdnotify.WatchdogTimer(env)
    assert timer.enabled and timer.period == 5.0
    sent = [timer.kick(now=t) for t in (100.0, 101.0, 104.9, 105.0, 106.0, 110.0)]
    assert sent == [True, False, False, True, False, True]
    assert listener.messages() == ["WATCHDOG=1"] * 3


def test_watchdog_timer_disabled_without_watchdog(listener: Listener) -> None:
    timer = sdnotify.WatchdogTimer(listener.env)
    assert not timer.enabled
    assert timer.kick(now=1.0) is False
    assert listener.messages() == []
