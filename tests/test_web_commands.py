"""`camrec user …` and the web app inside `camrec run` (issue 11, items 1 and 3).

The commands: add/list/passwd/remove, with the password from a file or twice from a terminal
(never echoed, never printed, never in the users file), and their errors with camrec's exit codes.
The daemon: with no web user it logs one line saying how to add one and records as usual; with a
user the web app answers HTTPS on its loopback port, logins land in `camrec audit`, and a port in
use is logged without stopping the recording."""

from __future__ import annotations

import json
import os
import pty
import select
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camrec.crypto.keys import X25519Identity
from tests.support.camera import free_port
from tests.support.daemon import Daemon

SYNTHETIC = "synthetic:?motion=0-6&period=6&bitrate=1000"
PASSWORD = "a long enough web password"


def write_config(tmp_path: Path, web: str = "") -> Path:
    storage = tmp_path / "storage"
    storage.mkdir(exist_ok=True)
    path = tmp_path / "camrec.yaml"
    path.write_text(f"recipients: [{X25519Identity.generate().recipient()}]\nstorage:\n  path: {storage}\n"
                    f"cameras:\n  front:\n    source: 'synthetic:'\n{web}")
    return path


def camrec(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "camrec", *args], capture_output=True, text=True, timeout=60,
                          input=stdin)


def password_file(tmp_path: Path, password: str = PASSWORD) -> str:
    path = tmp_path / f"pw-{len(list(tmp_path.glob('pw-*')))}"
    path.write_text(password + "\nignored second line\n")
    return str(path)


def test_user_add_list_passwd_remove(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    users_file = tmp_path / "storage" / ".web" / "users.json"
    empty = camrec("user", "list", "-c", config)
    assert empty.returncode == 0 and empty.stdout == "" and "no web users" in empty.stderr
    added = camrec("user", "add", "-c", config, "alice", "--password-file", password_file(tmp_path))
    assert added.returncode == 0, added.stderr
    assert "added web user alice" in added.stdout
    assert oct(users_file.stat().st_mode & 0o777) == "0o600"
    assert camrec("user", "add", "-c", config, "bob", "--password-file", password_file(tmp_path)).returncode == 0
    assert camrec("user", "list", "-c", config).stdout == "alice\nbob\n"
    before = json.loads(users_file.read_text())["users"]["alice"]
    changed = camrec("user", "passwd", "-c", config, "alice", "--password-file",
                     password_file(tmp_path, PASSWORD + " 2"))
    assert changed.returncode == 0 and "sessions are over" in changed.stdout
    after = json.loads(users_file.read_text())["users"]["alice"]
    assert after["hash"] != before["hash"] and after["epoch"] != before["epoch"]
    removed = camrec("user", "remove", "-c", config, "bob")
    assert removed.returncode == 0
    assert camrec("user", "list", "-c", config).stdout == "alice\n"
    text = users_file.read_text()
    assert PASSWORD not in text and "ignored" not in text


def test_user_command_errors_and_exit_codes(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    pw = password_file(tmp_path)
    assert camrec("user", "add", "-c", config, "alice", "--password-file", pw).returncode == 0
    cases = [
        (["user", "add", "-c", config, "alice", "--password-file", pw], 2, "already exists"),
        (["user", "passwd", "-c", config, "nobody", "--password-file", pw], 2, "no such user"),
        (["user", "remove", "-c", config, "nobody"], 2, "no such user"),
        (["user", "add", "-c", config, "bob", "--password-file", password_file(tmp_path, "short")], 2, "too short"),
        (["user", "add", "-c", config, "bob/../x", "--password-file", pw], 2, "invalid user name"),
        (["user", "add", "-c", config, "bob", "--password-file", str(tmp_path / "missing")], 9, "cannot read"),
        (["user", "add", "-c", config, "bob"], 2, "no terminal"),  # stdin is not a terminal
        (["user", "list", "-c", str(tmp_path / "nope.yaml")], 3, "no such file"),
        (["user", "frobnicate", "-c", config], 2, "invalid choice"),
    ]
    for args, code, message in cases:
        out = camrec(*args, stdin="")
        assert out.returncode == code, (args, out.stderr)
        assert message in out.stderr, (args, out.stderr)
    assert camrec("user", "list", "-c", config).stdout == "alice\n"  # nothing else changed


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the storage to another user")
def test_user_commands_refuse_a_state_directory_of_another_user(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    os.chown(tmp_path / "storage", 4321, 4321)  # the recorder's user, say
    out = camrec("user", "add", "-c", config, "alice", "--password-file", password_file(tmp_path))
    assert out.returncode == 2 and "belongs to user 4321, not to you" in out.stderr
    assert "sudo -u 4321" in out.stderr
    assert not (tmp_path / "storage" / ".web").exists()
    cert = camrec("web", "cert", "-c", config)
    assert cert.returncode == 2 and not (tmp_path / "storage" / ".web").exists()


def run_on_terminal(args: list[str], answers: list[str]) -> tuple[int, str]:
    """Runs camrec on a pseudo-terminal, typing each answer after a prompt; (exit code, all output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: camrec with the pty as its terminal
        os.execv(sys.executable, [sys.executable, "-m", "camrec", *args])
    output = b""
    pending = list(answers)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            # Answer each prompt once, after it is printed: getpass turns echo off (flushing any
            # input typed earlier) and then prints the prompt.
            if pending and output.endswith(b": ") and output.count(b": ") > len(answers) - len(pending):
                os.write(fd, pending.pop(0).encode() + b"\n")
    else:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_password_twice_on_the_terminal_never_echoed(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    code, out = run_on_terminal(["user", "add", "-c", config, "alice"], [PASSWORD, PASSWORD])
    assert code == 0, out
    assert "New web password:" in out and "Repeat it:" in out and "added web user alice" in out
    assert PASSWORD not in out  # the terminal's echo was off
    code, out = run_on_terminal(["user", "add", "-c", config, "bob"], [PASSWORD, PASSWORD + "x"])
    assert code == 2 and "the two passwords differ" in out and PASSWORD not in out
    assert camrec("user", "list", "-c", config).stdout == "alice\n"


def https_get(port: int, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    method = "POST" if body is not None else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(head.encode() + b"\r\n" + (body or b""))
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def wait_for_log(d: Daemon, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = d.log.read_text() if d.log.exists() else ""
        if text in log:
            return log
        assert d.proc is None or d.proc.poll() is None, log
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in the log:\n{d.log.read_text()}")


def test_run_without_a_web_user_says_how_to_add_one_and_records(tmp_path: Path) -> None:
    port = free_port()
    d = Daemon(tmp_path, SYNTHETIC, pre_roll=1.0, post_roll=1.0, extra=f"web:\n  listen: ['127.0.0.1:{port}']\n")
    d.start()
    try:
        d.wait_for(lambda rows: bool(rows), 30, "a clip")
        log = wait_for_log(d, "camrec user add")
        hints = [line for line in log.splitlines() if "camrec user add" in line]
        assert len(hints) == 1 and f"camrec user add -c {d.config} NAME" in hints[0]
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens
    finally:
        assert d.stop() == 0


def test_run_with_a_web_user_serves_https_and_audits_logins(tmp_path: Path) -> None:
    port = free_port()
    d = Daemon(tmp_path, SYNTHETIC, pre_roll=1.0, post_roll=1.0, extra=f"web:\n  listen: ['127.0.0.1:{port}']\n")
    added = camrec("user", "add", "-c", str(d.config), "alice", "--password-file", password_file(tmp_path))
    assert added.returncode == 0, added.stderr
    d.start()
    try:
        log = wait_for_log(d, f"web: serving https://127.0.0.1:{port}/")
        assert "camrec user add" not in log
        status, body = https_get(port, "/api/session")
        assert status == 401 and json.loads(body) == {"error": "login required"}
        creds = {"Content-Type": "application/json"}
        status, body = https_get(port, "/api/login", json.dumps({"username": "alice", "password": "wrong!"}).encode(),
                                 creds)
        assert status == 401
        status, body = https_get(port, "/api/login", json.dumps({"username": "alice", "password": PASSWORD}).encode(),
                                 creds)
        assert status == 200 and "csrf" in json.loads(body)
        d.wait_for(lambda rows: bool(rows), 30, "a clip")  # recording goes on
        fingerprint = camrec("web", "cert", "-c", str(d.config)).stdout
        assert fingerprint.split("SHA-256 fingerprint: ")[1].strip() in log
    finally:
        assert d.stop() == 0
    shown = camrec("audit", "-c", str(d.config))
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if "web-login" in line]
    assert len(lines) == 2 and "web-login-failed" in lines[0] and "alice@" in lines[0]
    entries = json.loads(camrec("audit", "-c", str(d.config), "--json").stdout)
    web = [e for e in entries if e["event"].startswith("web-")]
    assert [e["event"] for e in web] == ["web-login-failed", "web-login"]
    assert all(e["client"] == "127.0.0.1" and e["user"] == "alice" for e in web)
    assert PASSWORD not in d.log.read_text() and "wrong!" not in d.log.read_text()
    assert camrec("audit", "-c", str(d.config), "--verify").returncode == 0


def test_a_port_in_use_is_logged_and_recording_goes_on(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = Daemon(tmp_path, SYNTHETIC, pre_roll=1.0, post_roll=1.0,
                   extra=f"web:\n  listen: ['127.0.0.1:{port}']\n")
        assert camrec("user", "add", "-c", str(d.config), "alice", "--password-file",
                      password_file(tmp_path)).returncode == 0
        d.start()
        try:
            log = wait_for_log(d, "the web app is not running")
            assert "cannot listen" in log and "recording goes on" in log
            d.wait_for(lambda rows: bool(rows), 30, "a clip")
        finally:
            assert d.stop() == 0
