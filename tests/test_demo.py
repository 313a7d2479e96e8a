"""`camrec demo` (README command 1) records, exports and ends with the next steps and where its files are;
meanwhile the owner's web app serves the demo's store on 127.0.0.1 with a throw-away user, and with
`--serve` it keeps serving until Ctrl-C."""

from __future__ import annotations

import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ffprobe

# The lines `camrec demo` prints about its web app (twice with --serve: before and after recording).
WEB_LINES = re.compile(r"^  URL: +(?P<url>http://\S+/)\n  user: +(?P<user>\S+)\n  password: +(?P<password>\S+)\n"
                       r"  identity: +(?P<identity>\S+)  ", re.M)


def web_blocks(out: str) -> list[dict[str, str]]:
    return [m.groupdict() for m in WEB_LINES.finditer(out)]


def test_demo_records_exports_and_says_what_next(tmp_path):
    base = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "camrec", "demo", "--dir", str(base), "--duration", "8s"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mp4s = sorted((base / "export").glob("*.mp4"))
    assert mp4s and ffprobe(mp4s[0])["duration"] > 1
    out = proc.stdout
    assert "Next:" in out
    assert f"play {mp4s[0]} with any video player" in out
    assert f"camrec list -c {base / 'camrec.yaml'}" in out
    assert "Install on a Raspberry Pi" in out
    assert f"the demo's files stay in {base}" in out
    listed = subprocess.run([sys.executable, "-m", "camrec", "list", "--store", str(base / "storage")],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout.count("complete") == len(mp4s), listed.stdout

    # The web app: announced before recording (loopback only, the demo's user, its identity file),
    # served by the recorder while it recorded, and said to be stopped at the end.
    [web] = web_blocks(out)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", web["url"]), web
    assert web["user"] == "demo" and len(web["password"]) >= 16
    assert Path(web["identity"]) == base / "owner-identity.txt"
    assert "while it records" in out
    assert f"web: serving {web['url']}" in proc.stderr
    assert "the web app ran only while the demo recorded and has stopped" in out
    assert "camrec demo --serve" in out
    with pytest.raises(urllib.error.URLError):  # nothing listens any more
        urllib.request.urlopen(web["url"] + "api/session", timeout=5)
    # The throw-away accounts live in the demo's own directory, and its password is made for the run.
    users = json.loads((base / "web" / "users.json").read_text())
    assert web["password"] not in json.dumps(users)
    assert (base / "web" / "users.json").stat().st_mode & 0o077 == 0


class Client:
    """The JSON API as the pages use it: the session cookie, and the CSRF token on non-GET requests."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookie = ""

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        headers = {"Cookie": self.cookie} if self.cookie else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path.lstrip("/"), data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                for value in resp.headers.get_all("Set-Cookie") or []:
                    if value.startswith("camrec_session="):
                        self.cookie = value.split(";", 1)[0]
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


def listening_addresses(port: int) -> set[str]:
    """The local addresses of every listening TCP socket on `port` (IPv4 and IPv6), from /proc."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for row in f:
                local, state = row.split()[1], row.split()[3]
                address, port_hex = local.split(":")
                if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


def read_lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def test_demo_serve_logs_in_lists_fetches_and_decrypts_then_stops_on_sigint(tmp_path):
    base = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "camrec", "demo", "--dir", str(base), "--duration", "8s", "--serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
    errors: list[str] = []
    threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True).start()
    try:
        out = ""
        deadline = time.monotonic() + 150
        # Serving after the recording: the second block of web lines, printed once the server listens.
        while len(web_blocks(out)) < 2:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"the demo ended early: {out}{''.join(errors)[-2000:]}"
            out += line
        first, web = web_blocks(out)
        assert first == web  # the same address, user and password before and after the recording
        assert "keeps serving the demo's store until Ctrl-C" in out
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", web["url"]), web
        identity = Path(web["identity"])
        assert identity == base / "owner-identity.txt"
        # Nothing of the demo reaches beyond loopback: its one listening socket is 127.0.0.1's.
        assert listening_addresses(int(web["url"].rsplit(":", 1)[1].strip("/"))) == {"0100007F"}

        client = Client(web["url"])
        status, _ = client.request("GET", "/api/events")
        assert status == 401  # a session is needed
        status, _ = client.request("POST", "/api/login", {"username": web["user"], "password": web["password"] + "x"})
        assert status == 401
        status, body = client.request("POST", "/api/login", {"username": web["user"], "password": web["password"]})
        assert status == 200 and json.loads(body)["csrf"], body
        status, body = client.request("GET", "/api/events")
        assert status == 200, body
        events = json.loads(body)
        clips = sorted(p.relative_to(base / "storage").as_posix() for p in (base / "storage").rglob("*.mp4.age"))
        assert clips and sorted(e["path"] for e in events) == clips
        event = events[0]
        status, ciphertext = client.request("GET", f"/api/clips/{event['id']}/video")
        assert status == 200, (ciphertext, "".join(errors)[-2000:])
        on_disk = base / "storage" / event["path"]
        assert ciphertext == on_disk.read_bytes() and ciphertext.startswith(b"age-encryption.org/v1\n")
        # The owner's side: the printed identity file decrypts what the server handed out.
        fetched = tmp_path / "fetched.mp4.age"
        fetched.write_bytes(ciphertext)
        plain = tmp_path / "fetched.mp4"
        subprocess.run(["age", "-d", "-i", str(identity), "-o", str(plain), str(fetched)], check=True, timeout=60)
        assert ffprobe(plain)["duration"] > 1
        # Every ciphertext handed out is audited in the store's log, with who fetched it.
        audit = [json.loads(x) for x in (base / "storage" / "audit.jsonl").read_text().splitlines()]
        assert any(e["user"] == "demo" and event["path"] in json.dumps(e["files"]) for e in audit
                   if e["event"] != "web-login"), audit

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.2)  # the stderr reader drains the pipe
    stderr = "".join(errors)
    assert "Traceback" not in stderr, stderr[-3000:]
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(web["url"] + "api/session", timeout=5)


def test_demo_refuses_a_port_in_use_before_recording(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [sys.executable, "-m", "camrec", "demo", "--dir", str(tmp_path / "demo"), "--port", str(port)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "demo").exists()  # refused before anything was made or recorded
