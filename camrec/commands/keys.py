"""`camrec keygen`: the owner's identity (private key), made on the owner's computer.

`--pq` makes a post-quantum hybrid identity (ML-KEM-768 + X25519, `age1pq1…`, age ≥ 1.3).
`--passphrase` protects the identity the way age does: the identity file text, encrypted with
an scrypt passphrase stanza into an ASCII-armored age file (`age-keygen | age -p -a` gives the
same kind of file). Armored, because it is a text file people print as a paper backup and open
in editors. Every command that takes `-i` reads such a file and asks for its passphrase.
"""

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
    s.add_argument("--pq", action="store_true",
                   help="post-quantum hybrid identity (age1pq1…; readable by age ≥ 1.3, not by Debian's age 1.1)")
    s.add_argument("--passphrase", action="store_true",
                   help="protect the identity with a passphrase (asked twice on the terminal)")
    s.add_argument("--passphrase-file", metavar="FILE",
                   help="take the passphrase from the first line of FILE (implies --passphrase; for scripts)")
    s.set_defaults(func=cmd_keygen)


def _create_exclusive(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; refusing to overwrite an identity",
                         hint="choose another file name, or move the old identity away first") from None
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}") from None


NEXT_STEPS = """\
Next:
  1. Back up {path} now (a USB stick in a drawer, a password manager, a printout). Losing it makes
     every clip unreadable forever: nobody, camrec included, can recover them without it.
  2. Consider a second recipient as insurance, e.g. a paper key: camrec keygen -o paper.key, print
     it, delete the file, and list both public keys in the config.
  3. Paste the age1… line above under `recipients:` in the recorder's config (/etc/camrec/config.yaml),
     then restart the recorder. Never copy this identity file to the recorder."""


def cmd_keygen(args: argparse.Namespace) -> int:
    from camrec.crypto.keys import HybridIdentity, X25519Identity, identity_file_text
    from camrec.crypto.passphrase import PassphraseSource

    to_stdout = args.output in (None, "-")
    path = None if to_stdout else Path(args.output)
    # Refuse early (before any passphrase is typed); O_EXCL below still settles races.
    if path is not None and (path.exists() or path.is_symlink()):
        _create_exclusive(path)
    identity = HybridIdentity.generate() if args.pq else X25519Identity.generate()
    text = identity_file_text(identity).encode("ascii")
    recipient = str(identity.recipient())
    if args.passphrase or args.passphrase_file:
        from camrec.crypto.scrypt import ScryptRecipient
        from camrec.crypto.stream import encrypt_bytes

        phrase = PassphraseSource(args.passphrase_file).new_passphrase("the new identity")
        text = encrypt_bytes(text, [ScryptRecipient(phrase)], armor=True)
    if path is None:
        if sys.stdout.isatty() and not (args.passphrase or args.passphrase_file):
            print("camrec: hint: the secret key below is shown on the terminal; prefer -o FILE", file=sys.stderr)
        sys.stdout.buffer.write(text)
        sys.stdout.flush()
        print(f"Public key: {recipient}", file=sys.stderr)
        return 0
    fd = _create_exclusive(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc.strerror}") from None
    print(recipient)
    # On stderr, so that scripts taking the public key from stdout are unaffected.
    print(f"camrec: wrote the identity to {path}; keep it off the recorder and back it up", file=sys.stderr)
    print(NEXT_STEPS.format(path=path), file=sys.stderr)
    return 0
