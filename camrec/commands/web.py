"""`camrec web …`: the owner's web app (docs/web.md).

`camrec web cert -c CONFIG` prints the HTTPS certificate's SHA-256 fingerprint (making the
self-signed certificate now if the recorder has not yet), so the owner can check the browser's
warning against it.
"""

from __future__ import annotations

import argparse

from camrec.commands.common import add_config, load_config

ORDER = 65


def register(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("web", help="the owner's web app: certificate fingerprint")
    actions = w.add_subparsers(dest="web_command", required=True, metavar="ACTION")
    s = actions.add_parser("cert", help="print the HTTPS certificate's SHA-256 fingerprint (made if absent)")
    add_config(s)
    s.set_defaults(func=cmd_cert)
    # `camrec web serve --store DIR` (issue 11, item 8) registers here.


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


# --- `camrec web serve --store DIR` (issue 11, item 8): added by the API part ---
