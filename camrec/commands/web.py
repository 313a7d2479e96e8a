"""`camrec web …`: the owner's web app (docs/web.md).

`camrec web cert -c CONFIG` prints the HTTPS certificate's SHA-256 fingerprint (making the
self-signed certificate now if the recorder has not yet), so the owner can check the browser's
warning against it.

`camrec web serve --store DIR` serves a copied or pulled store (an rsync backup, the disk taken out
after a break-in) read-only, on loopback only, with no cameras, no config and no accounts: it
hands out only ciphertext, and only to this machine, whose browser decrypts with the owner's
identity. Nothing is written into the store: every fetch is audited in the owner's per-user audit
log (camrec/owner/audit.py), never in the store's own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import sys
from pathlib import Path
from typing import Any

from camrec.commands.common import add_config, load_config
from camrec.errors import StorageError, UsageError

ORDER = 65
DEFAULT_PORT = 8080


def register(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("web", help="the owner's web app: certificate fingerprint, serve a copied store")
    actions = w.add_subparsers(dest="web_command", required=True, metavar="ACTION", parser_class=type(w))
    s = actions.add_parser("cert", help="print the HTTPS certificate's SHA-256 fingerprint (made if absent)")
    add_config(s)
    s.set_defaults(func=cmd_cert)
    add_serve(actions)


def cmd_cert(args: argparse.Namespace) -> int:
    from camrec.web.context import state_dir_for
    from camrec.web.tls import certificate_files, fingerprint, load_certificate

    config = load_config(args.config, secrets=False)
    settings = config.web
    if settings.plain_http:
        print("note: web.plain_http is set: the web app serves plain HTTP (loopback only), without this certificate")
    state_dir = state_dir_for(settings, config.storage.path)
    if settings.tls is None and not (state_dir / "cert.pem").exists():
        from camrec.commands.users import refuse_other_owner

        refuse_other_owner(state_dir, config.storage.path)  # it would make the key
    files = certificate_files(settings, state_dir)
    cert = load_certificate(files.cert)
    print(f"certificate: {files.cert}{' (self-signed)' if files.self_signed else ''}")
    print(f"SHA-256 fingerprint: {fingerprint(cert)}")
    return 0


def add_serve(actions: argparse._SubParsersAction) -> None:
    s = actions.add_parser("serve", help="serve a copied or pulled store read-only to this machine's browser "
                                         "(http://127.0.0.1 only; no accounts; the browser decrypts)")
    s.add_argument("--store", required=True, metavar="DIR", help="the store directory (a copy, or a pulled disk)")
    s.add_argument("--host", default="127.0.0.1", metavar="ADDRESS",
                   help="a loopback address to listen on (default 127.0.0.1); any other is refused")
    s.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="N",
                   help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    s.add_argument("--open", action="store_true", help="open the page in the default browser")
    s.set_defaults(func=cmd_serve)


def loopback_host(text: str) -> str:
    """The --host value if it is a loopback IP address; UsageError for anything else (names too:
    `localhost` can resolve anywhere)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise UsageError(f"--host {text}: refusing to serve a store beyond this machine "
                         "(no accounts in this mode); use a loopback address such as 127.0.0.1")
    return text


def cmd_serve(args: argparse.Namespace) -> int:
    from camrec.commands.common import store_only

    host = loopback_host(args.host)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not a TCP port")
    root = store_only(args.store).storage.path.resolve()
    return asyncio.run(_serve(root, host, args.port, args.open))


def _audit_sink(root: Path) -> Any:
    from camrec.owner import audit

    def write(entry: dict[str, Any]) -> None:
        # The per-user log only (log_path): a served store is never written, not even its audit log.
        extra = {k: v for k, v in entry.items() if k not in ("event", "files", "user")}
        extra["web_user"] = entry.get("user")
        audit.record("web-fetch", files=list(entry["files"]), recipients=[], storage_root=root,
                     log_path=audit.state_log_path(), command="camrec web serve", extra=extra)
    return write


async def _serve(root: Path, host: str, port: int, open_browser: bool) -> int:
    from aiohttp import web

    from camrec.config.models import WebConfig
    from camrec.web.app import make_app
    from camrec.web.context import WebContext

    ctx = WebContext(store_root=root, read_only_store=True, accounts=None, status=None,
                     audit=_audit_sink(root), settings=WebConfig())
    runner = web.AppRunner(make_app(ctx), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StorageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                           hint="choose another --port (0 picks a free one)") from None
    bound = runner.addresses[0][1] if runner.addresses else port
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/"
    print(f"camrec: serving {root} read-only at {url} (Ctrl-C to stop)", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
    print("camrec: stopped", file=sys.stderr)
    return 0
