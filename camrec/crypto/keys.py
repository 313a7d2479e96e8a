"""age keys: X25519 recipients/identities, parsing, identity files.

Public keys ("recipients", `age1...`) live on the recorder; private keys ("identities",
`AGE-SECRET-KEY-1...`) stay with the owner. Nothing here ever puts a secret key into an
error message or a repr.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import x25519

from camrec.crypto import bech32
from camrec.crypto.age import Identity, Recipient, Stanza, b64decode, b64encode, hkdf_sha256
from camrec.crypto.age import open_file_key as _open_file_key
from camrec.crypto.age import seal_file_key as _seal_file_key
from camrec.crypto.hybrid import HybridIdentity, HybridRecipient
from camrec.crypto.passphrase import LazyScryptIdentity, PassphraseFn
from camrec.crypto.scrypt import ScryptIdentity, ScryptRecipient, scrypt_identity
from camrec.errors import FormatError, IdentityError, IntegrityError, TruncatedError

__all__ = [
    "AgeIdentity",
    "HybridIdentity",
    "HybridRecipient",
    "Identity",
    "Recipient",
    "ScryptIdentity",
    "ScryptRecipient",
    "Stanza",
    "X25519Identity",
    "X25519Recipient",
    "contains_secret_key",
    "identity_file_text",
    "is_encrypted_file",
    "load_identities",
    "load_identity_files",
    "parse_identities",
    "parse_identity",
    "parse_recipient",
    "parse_recipients",
    "scrypt_identity",
]

X25519_STANZA = "X25519"
X25519_LABEL = b"age-encryption.org/v1/X25519"
RECIPIENT_HRP = "age"
IDENTITY_HRP = "AGE-SECRET-KEY-"
KEYGEN_HINT = "generate a key pair with `camrec keygen` (or `age-keygen`)"
# Identity files are tiny; the cap only protects against pointing at a huge file by mistake.
_IDENTITY_FILE_LIMIT = 1 << 24


class X25519Recipient:
    """An age X25519 public key (`age1...`)."""

    __slots__ = ("_key", "_raw")

    def __init__(self, public_key: bytes) -> None:
        if len(public_key) != 32:
            raise IdentityError("invalid recipient: an X25519 public key is 32 bytes")
        self._key = x25519.X25519PublicKey.from_public_bytes(public_key)
        try:
            # A low-order point would make every file's wrap key predictable (all-zero
            # shared secret); refuse such a "public key" at parse time, not at first use.
            x25519.X25519PrivateKey.generate().exchange(self._key)
        except ValueError:
            raise IdentityError("invalid recipient: X25519 public key is a low-order point") from None
        self._raw = bytes(public_key)

    @classmethod
    def parse(cls, s: str) -> X25519Recipient:
        s = s.strip()
        try:
            hrp, data = bech32.decode(s)
        except bech32.Bech32Error as e:
            raise IdentityError(f"malformed recipient {_shorten(s)!r}: {e}", hint=_recipient_hint(s)) from None
        if hrp != RECIPIENT_HRP:
            raise IdentityError(f"malformed recipient {_shorten(s)!r}: not an age1... key")
        return cls(data)

    def __str__(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self._raw)

    def __repr__(self) -> str:
        return f"X25519Recipient({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X25519Recipient) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    @property
    def public_bytes(self) -> bytes:
        return self._raw

    def wrap(self, file_key: bytes) -> list[Stanza]:
        ephemeral = x25519.X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes_raw()
        shared = ephemeral.exchange(self._key)
        wrap_key = hkdf_sha256(shared, share + self._raw, X25519_LABEL)
        return [Stanza(X25519_STANZA, [b64encode(share)], _seal_file_key(wrap_key, file_key))]


class X25519Identity:
    """An age X25519 private key (`AGE-SECRET-KEY-1...`)."""

    __slots__ = ("_key", "_recipient")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise IdentityError("malformed secret key: an X25519 secret key is 32 bytes")
        self._key = x25519.X25519PrivateKey.from_private_bytes(secret)
        self._recipient = X25519Recipient(self._key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> X25519Identity:
        return cls(os.urandom(32))

    @classmethod
    def parse(cls, s: str) -> X25519Identity:
        # Error messages never quote s: it is a secret.
        s = s.strip()
        try:
            hrp, data = bech32.decode(s)
        except bech32.Bech32Error as e:
            raise IdentityError(f"malformed secret key: {e}", hint=KEYGEN_HINT) from None
        if hrp != IDENTITY_HRP:
            raise IdentityError("malformed secret key: expected AGE-SECRET-KEY-1...", hint=KEYGEN_HINT)
        return cls(data)

    def __str__(self) -> str:
        return bech32.encode(IDENTITY_HRP, self._key.private_bytes_raw())

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={self._recipient})"

    def recipient(self) -> X25519Recipient:
        return self._recipient

    def unwrap(self, stanzas: list[Stanza]) -> bytes | None:
        for s in stanzas:
            if s.type != X25519_STANZA:
                continue
            if len(s.args) != 1:
                raise FormatError("invalid X25519 stanza: wrong number of arguments")
            try:
                share = b64decode(s.args[0])
            except ValueError:
                raise FormatError("invalid X25519 stanza: bad share encoding") from None
            if len(share) != 32:
                raise FormatError("invalid X25519 stanza: share has the wrong size")
            try:
                shared = self._key.exchange(x25519.X25519PublicKey.from_public_bytes(share))
            except ValueError:
                # All-zero shared secret (low-order share): the spec says abort, not skip.
                raise FormatError("invalid X25519 stanza: low-order share") from None
            wrap_key = hkdf_sha256(shared, share + self._recipient.public_bytes, X25519_LABEL)
            file_key = _open_file_key(wrap_key, s.body, X25519_STANZA)
            if file_key is not None:
                return file_key
        return None


# --- parsing ---------------------------------------------------------------------------------

# What identity files hold: secret keys, each with a public half (`.recipient()`). A
# concrete union rather than the Identity protocol so callers can derive the public key.
AgeIdentity = X25519Identity | HybridIdentity


def _shorten(s: str) -> str:
    return s if len(s) <= 80 else s[:40] + "..." + s[-8:]


def _recipient_hint(s: str) -> str | None:
    if contains_secret_key(s):
        return "that is a private key; configure its public key (age1...) instead"
    return None


def parse_recipient(s: str) -> Recipient:
    """Parse any supported recipient string: `age1...` or `age1pq1...`."""
    s = s.strip()
    if s.upper().startswith("AGE-SECRET-KEY-"):
        # Never echo it: it is a private key pasted where a public key belongs.
        raise IdentityError(
            "a private key was given where a public key (recipient) is expected",
            hint="use the '# public key: age1...' line of the key file, or `age-keygen -y`",
        )
    if s.startswith("age1pq1"):
        return HybridRecipient.parse(s)
    if s.startswith("age1"):
        return X25519Recipient.parse(s)
    raise IdentityError(f"unknown recipient type {_shorten(s)!r}", hint="recipients are age public keys: age1...")


def parse_recipients(text: str, source: str = "recipients file") -> list[Recipient]:
    """One recipient per line; `#` comments and blank lines are ignored."""
    out: list[Recipient] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(parse_recipient(line))
        except IdentityError as e:
            raise IdentityError(f"{source} line {n}: {e.message}", hint=e.hint) from None
    if not out:
        raise IdentityError(f"no recipients found in {source}")
    return out


def parse_identity(s: str) -> AgeIdentity:
    """Parse one secret key line: `AGE-SECRET-KEY-1...` or `AGE-SECRET-KEY-PQ-1...`."""
    s = s.strip()
    if s.startswith("AGE-SECRET-KEY-PQ-1"):
        return HybridIdentity.parse(s)
    if s.startswith("AGE-SECRET-KEY-1"):
        return X25519Identity.parse(s)
    if s.startswith("age1"):
        raise IdentityError(
            "a public key (recipient) was found where a private key is expected",
            hint="identity files hold AGE-SECRET-KEY-1... lines; the age1... key is the public half",
        )
    if s.startswith("AGE-PLUGIN-"):
        raise IdentityError("age plugin identities are not supported", hint=KEYGEN_HINT)
    raise IdentityError("unknown identity type (expected AGE-SECRET-KEY-1...)", hint=KEYGEN_HINT)


def parse_identities(text: str, source: str = "identity file") -> list[AgeIdentity]:
    """Identity file text: one key per line; `#` comments and blank lines are ignored."""
    if text.startswith(("age-encryption.org/", "-----BEGIN AGE ENCRYPTED FILE-----")):
        raise IdentityError(
            f"{source} is itself age-encrypted (a passphrase-protected key)",
            hint="give camrec the file itself (-i FILE): it asks for the passphrase",
        )
    out: list[AgeIdentity] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            out.append(parse_identity(line))
        except IdentityError as e:
            raise IdentityError(f"{source} line {n}: {e.message}", hint=e.hint) from None
    if not out:
        raise IdentityError(f"no identities found in {source}", hint=KEYGEN_HINT)
    return out


def _read_identity_file(name: str) -> bytes:
    try:
        with open(name, "rb") as f:
            data = f.read(_IDENTITY_FILE_LIMIT + 1)
    except FileNotFoundError:
        raise IdentityError(f"identity file not found: {name}", hint=KEYGEN_HINT) from None
    except IsADirectoryError:
        raise IdentityError(f"identity file is a directory: {name}") from None
    except PermissionError:
        raise IdentityError(
            f"cannot read identity file: {name}: permission denied",
            hint="run as the key's owner, or check the file's permissions",
        ) from None
    except OSError as e:
        raise IdentityError(f"cannot read identity file: {name}: {e.strerror or e}") from None
    if len(data) > _IDENTITY_FILE_LIMIT:
        raise IdentityError(f"identity file is too large: {name}")
    return data


def is_encrypted_file(data: bytes) -> bool:
    """True if data is an age file (binary or armored) rather than identity file text."""
    from camrec.crypto.armor import looks_armored

    return data.startswith(b"age-encryption.org/") or looks_armored(data[:1100])


def _decrypt_identity_file(data: bytes, name: str, passphrase: PassphraseFn | None) -> bytes:
    """The plaintext of a passphrase-protected identity file (`age -p` over an identity file)."""
    from camrec.crypto.stream import decrypt_bytes

    if passphrase is None:
        raise IdentityError(
            f"identity file {name} is protected by a passphrase, and there is no way to ask for it",
            hint="run on a terminal, or pass --passphrase-file FILE",
        )
    lazy = LazyScryptIdentity(passphrase, f"Enter passphrase for identity file {name}: ")
    try:
        return decrypt_bytes(data, [lazy])
    except IdentityError as e:
        if not lazy.asked:
            raise IdentityError(
                f"identity file {name} is age-encrypted, but not with a passphrase",
                hint="camrec reads passphrase-protected identity files (age -p); decrypt this one with age first",
            ) from None
        raise IdentityError(f"identity file {name}: {e.message}", hint=e.hint) from None
    except (FormatError, IntegrityError, TruncatedError) as e:
        raise IdentityError(f"encrypted identity file {name} is damaged: {e.message}") from None


def load_identities(path: str | os.PathLike[str], passphrase: PassphraseFn | None = None) -> list[AgeIdentity]:
    """Read and parse an identity file, with a clear IdentityError for every failure.

    A passphrase-protected identity file (an age file with one scrypt stanza whose plaintext
    is an identity file, as `age-keygen | age -p` or `camrec keygen --passphrase` make it) is
    decrypted with a passphrase from `passphrase(prompt)`; without that callable it is an
    IdentityError saying how to provide one.
    """
    name = os.fspath(path)
    data = _read_identity_file(name)
    if is_encrypted_file(data):
        data = _decrypt_identity_file(data, name, passphrase)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise IdentityError(f"identity file is not valid UTF-8 text: {name}") from None
    return parse_identities(text, source=f"identity file {name}")


def load_identity_files(
    paths: Sequence[str | os.PathLike[str]], passphrase: PassphraseFn | None = None
) -> list[AgeIdentity]:
    """All identities of several identity files (`-i A -i B`), in order."""
    out: list[AgeIdentity] = []
    for path in paths:
        out.extend(load_identities(path, passphrase))
    return out


_SECRET_KEY_RE = re.compile(
    r"AGE-(?:SECRET-KEY-(?:PQ-)?|PLUGIN-[A-Z0-9._-]+-)1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{20,}",
    re.IGNORECASE,
)


def contains_secret_key(text: str) -> bool:
    """True if text holds something that looks like an age secret key (for refusing configs).

    It requires the bech32 body, so prose such as "never paste AGE-SECRET-KEY-... here" in a
    comment does not trigger it.
    """
    return _SECRET_KEY_RE.search(text) is not None


def identity_file_text(identity: AgeIdentity, now: datetime | None = None) -> str:
    """The text `camrec keygen` writes, in age-keygen's layout (so `age -i` reads it)."""
    created = (now or datetime.now().astimezone()).replace(microsecond=0).isoformat()
    return f"# created: {created}\n# public key: {identity.recipient()}\n{identity}\n"
