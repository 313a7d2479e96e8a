"""`camrec keygen`: the owner's identity (private key), made on the owner's computer."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from camrec.errors import StorageError, UsageError

ORDER = 10


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("keygen", help="create an owner identity (private key) and print its public key")
    s.add_argument("-o", "--output", metavar="FILE", help="write the identity here (mode 0600, never overwritten)")
    s.set_defaults(func=cmd_keygen)


def cmd_keygen(args: argparse.Namespace) -> int:
    from camrec.crypto.keys import X25519Identity, identity_file_text

    identity = X25519Identity.generate()
    text = identity_file_text(identity)
    recipient = str(identity.recipient())
    if args.output in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
        print(f"Public key: {recipient}", file=sys.stderr)
        return 0
    path = Path(args.output)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; refusing to overwrite an identity",
                         hint="choose another file name, or move the old identity away first") from None
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    print(recipient)
    if sys.stderr.isatty():
        print(f"camrec: wrote the identity to {path}; keep it off the recorder and back it up", file=sys.stderr)
    return 0
