"""`camrec demo`: the whole main path on a machine with no camera.

A synthetic camera (scene + sensor noise + objects crossing at known seconds) is recorded by the
real daemon for ~20 s into age-encrypted clips, to a throw-away owner key made for the demo; then
the owner side exports the clips to MP4. The daemon part only ever sees the public key.

The owner's web app runs too, on 127.0.0.1 only, with a throw-away user and a random password made
for this run (accounts in the demo's own directory): while the daemon records it is the daemon's own
web server (the `web:` section of the demo's config, exactly as `camrec run` starts it); with
`--serve` the demo serves the finished store on the same address until Ctrl-C. Plain HTTP: loopback
is a secure context for the browser, so WebCrypto works without a certificate warning. The identity
stays a file the owner loads in the browser; the server never reads it.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from camrec.errors import UsageError

log = logging.getLogger(__name__)

DEMO_USER = "demo"
WEB_STATE_DIR = "web"  # users and sessions of the demo's web app, in the demo's own directory



def _loopback_port(port: int) -> int:
    """`port` on 127.0.0.1 if it can be bound now (0: a free one), checked before recording starts:
    the daemon only logs a web server that cannot listen, and the demo prints this URL up front."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As aiohttp binds it (SO_REUSEADDR): a port left in TIME_WAIT by an earlier demo is usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise UsageError(f"--port {port}: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}",
                             hint="another program uses it? pick another --port, or leave --port out") from None
        return int(sock.getsockname()[1])


def _demo_user(state_dir: Path) -> str:
    """The throw-away web user with a new random password (a rerun with the same --dir gets a new one)."""
    from camrec.web.accounts import Accounts

    password = secrets.token_urlsafe(15)  # 20 characters, 120 bits
    accounts = Accounts(state_dir)
    if DEMO_USER in accounts.names():
        accounts.set_password(DEMO_USER, password)  # also ends the sessions of an earlier run
    else:
        accounts.add(DEMO_USER, password)
    return password


def _demo_config(recipient: str, storage: Path, duration: float, port: int) -> str:
    # Two crossings inside the recording window, so the demo shows two separate clips.
    first = (max(2.0, duration * 0.15), max(4.0, duration * 0.35))
    second = (duration * 0.6, duration * 0.75)
    motion = f"{first[0]:g}-{first[1]:g},{second[0]:g}-{second[1]:g}"
    return f"""# Written by `camrec demo`: a synthetic camera and a throw-away owner key.
recipients: [{recipient}]
storage:
  path: {storage}
cameras:
  demo:
    source: "synthetic:?size=640x360&fps=15&motion={motion}&period=600"
    pre_roll: 2s
    post_roll: 2s
# The owner's web app on this machine only; plain HTTP is allowed on loopback alone.
web:
  listen: ["127.0.0.1:{port}"]
  plain_http: true
  state_dir: {WEB_STATE_DIR}
"""


def _web_lines(url: str, password: str, key_path: Path) -> list[str]:
    return [f"  URL:      {url}",
            f"  user:     {DEMO_USER}",
            f"  password: {password}",
            f"  identity: {key_path}   (load this file in the browser; it never leaves the browser)"]


def run_demo(args: argparse.Namespace) -> int:
    from camrec.cli import setup_logging
    from camrec.config import load_config
    from camrec.crypto.keys import X25519Identity, identity_file_text, load_identities
    from camrec.owner.export import remux_encrypted
    from camrec.service.daemon import Daemon
    from camrec.store import layout
    from camrec.timeparse import parse_duration

    try:
        duration = parse_duration(args.duration)
    except ValueError as exc:
        raise UsageError(f"bad --duration: {exc}") from None
    if not 8 <= duration <= 600:
        raise UsageError("--duration must be between 8s and 10m")
    asked_port = getattr(args, "port", 0)
    if not 0 <= asked_port <= 65535:
        raise UsageError(f"--port {asked_port} is out of range (1-65535, or 0 for a free port)")
    port = _loopback_port(asked_port)
    serve = bool(getattr(args, "serve", False))
    # Absolute: the config written below is read relative to its own directory.
    base = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="camrec-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    key_path = base / "owner-identity.txt"
    if not key_path.exists():
        identity = X25519Identity.generate()
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(identity_file_text(identity))
    identities = load_identities(str(key_path))
    recipient = str(identities[0].recipient())
    config_path = base / "camrec.yaml"
    config_path.write_text(_demo_config(recipient, base / "storage", duration, port))
    password = _demo_user(base / WEB_STATE_DIR)
    url = f"http://127.0.0.1:{port}/"

    setup_logging("info", getattr(args, "debug", False))
    print(f"camrec demo: recording a synthetic camera for {duration:g}s into {base / 'storage'}", file=sys.stderr)
    when = "now, and after the recording until Ctrl-C" if serve else f"while it records (~{duration:g}s)"
    print(f"The owner's web app (this machine only) serves the demo's store {when}:")
    for line in _web_lines(url, password, key_path):
        print(line)
    print(f"  live:     {url}live   (the camera as it records; no key needed)")
    print(flush=True)
    config = load_config(config_path)
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    interrupted = _note_signals(daemon)
    daemon.run(duration=duration)

    from camrec.store.index import ClipIndex

    index = ClipIndex(base / "storage" / layout.INDEX_NAME, readonly=True)
    rows = index.query(states=("complete", "partial"))
    index.close()
    export_dir = base / "export"
    export_dir.mkdir(exist_ok=True)
    exported: list[Path] = []
    for row in rows:
        name = row.path.rsplit("/", 1)[-1][: -len(layout.VIDEO_SUFFIX)] + ".mp4"
        remux_encrypted(base / "storage" / row.path, identities, export_dir / name)
        exported.append(export_dir / name)

    print()
    print(f"Encrypted clips (age v1, owner key only) under {base / 'storage'}:")
    for row in rows:
        extra = [p for p in (row.thumb, row.meta) if p]
        print(f"  {base / 'storage' / row.path}  ({row.duration:.1f}s, {row.state})")
        for side in extra:
            print(f"  {base / 'storage' / side}")
    print(f"Exported MP4 files under {export_dir}:")
    for p in exported:
        print(f"  {p}")
    print(f"Owner identity (throw-away, demo only): {key_path}")
    print(f"Config used: {config_path}")
    if rows:
        print("Decrypt one with the stock age tool:")
        print(f"  age -d -i {key_path} {base / 'storage' / rows[0].path} > clip.mp4")
    if not rows:
        print("camrec demo: no clips were recorded (the machine may be too slow)", file=sys.stderr)
        return 1
    print()
    print("Next:")
    print(f"  - play {exported[0] if exported else export_dir} with any video player (mpv, VLC, ffplay, a browser)")
    print(f"  - list what was recorded: camrec list -c {config_path}   (or: camrec list --store {base / 'storage'})")
    print("  - record your own cameras: README.md, \"Install on a Raspberry Pi (64-bit)\"")
    if args.dir:
        print(f"  - the demo's files stay in {base}")
    else:
        print(f"  - everything above is in {base}; remove it when done: rm -r {base}")
    if not serve or interrupted.is_set():
        print(f"  - the web app ran only while the demo recorded and has stopped; to look at these clips in the "
              f"browser: camrec demo --serve   (or: camrec web serve --store {base / 'storage'})")
        return 0
    return _serve_store(config, base / "storage", url, password, key_path, interrupted)


def _note_signals(daemon: Any) -> threading.Event:
    """Chains onto the daemon's handlers: a Ctrl-C while recording also means "don't serve after"."""
    interrupted = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous = signal.getsignal(signum)

        def on_signal(num: int, frame: Any, previous: Any = previous) -> None:
            interrupted.set()
            if callable(previous):
                previous(num, frame)

        signal.signal(signum, on_signal)
    return interrupted


def _serve_store(config: Any, storage: Path, url: str, password: str, key_path: Path,
                 stop: threading.Event) -> int:
    """`--serve`: the finished store on the same address, until SIGINT/SIGTERM/SIGHUP (exit 0).

    `stop` is the event the recording's handlers set, so a signal that came in since is not lost."""
    from camrec.store.audit_log import StoreAuditLog
    from camrec.web.server import build_server

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda _num, _frame: stop.set())
    if stop.is_set():
        return 0
    # Every ciphertext handed out is audited in the store's log, as under `camrec run`.
    audit_log = StoreAuditLog(storage)

    def audit(entry: dict[str, Any]) -> None:
        audit_log.append(entry)

    # No status: the recorder has stopped, so the camera shows as offline (the store says so).
    server = build_server(config.web, storage, status=None, audit=audit)
    try:
        server.start()
        print()
        print("The web app keeps serving the demo's store until Ctrl-C:")
        for line in _web_lines(url, password, key_path):
            print(line)
        print(flush=True)
        log.info("web: serving %s until Ctrl-C", url)
        while not stop.wait(0.5):
            pass
        log.info("stopping the web app")
    finally:
        server.stop()
        audit_log.close()
    return 0
