"""The age v1 header: stanzas, strict parsing, the header MAC, and file-key wrapping.

Spec: C2SP age.md (age-encryption.org/v1). The parser is deliberately strict, like age's
own: canonical unpadded base64 only, body lines of exactly 64 columns except a final short
one, single spaces between arguments, nothing but LF line endings. Strictness is what makes
the header non-malleable: the MAC is computed over the bytes as read, and a strict grammar
guarantees those bytes are the one canonical encoding of the parsed header.

Error mapping (camrec.errors): a malformed header, or a malformed stanza addressed to one of
our identities, is a FormatError; a MAC mismatch is a HeaderMACError (an IntegrityError);
"none of the identities can open any stanza" is an IdentityError.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from camrec.crypto.source import ByteSource
from camrec.errors import FormatError, IdentityError, IntegrityError

VERSION_LINE = b"age-encryption.org/v1\n"
VERSION_PREFIX = b"age-encryption.org/"
FILE_KEY_SIZE = 16
MAC_SIZE = 32
COLUMNS = 64
BYTES_PER_LINE = COLUMNS // 4 * 3  # 48 raw bytes per full base64 line
WRAPPED_KEY_SIZE = FILE_KEY_SIZE + 16  # file key + Poly1305 tag

_STANZA_PREFIX = b"->"
_MAC_PREFIX = b"---"
# Bounds that only exist to stop garbage input from eating memory and time; real headers are
# tiny (a post-quantum stanza is ~1.6 KB, an X25519 one ~110 bytes, and the recorder writes one
# per configured recipient). Both are checked while reading, before a stanza object is built, so
# a hostile file costs at most MAX_HEADER bytes of reading: an 18 MB header of empty stanzas
# used to cost ~0.5 GB and 11-17 s before "header too large".
MAX_HEADER = 1 << 20
MAX_STANZAS = 256
_B64_CHARS = re.compile(rb"[A-Za-z0-9+/]*")

NOT_AGE_HINT = "the file does not start with 'age-encryption.org/v1'; is it a clip from this recorder?"


class HeaderMACError(IntegrityError):
    """The header MAC does not verify: the header was altered (or the file key is wrong)."""


# --- base64 -----------------------------------------------------------------------------


def b64encode(data: bytes) -> str:
    """Unpadded standard base64, as the age header uses."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64decode(s: str | bytes) -> bytes:
    """Strict unpadded base64: rejects padding, whitespace, CR/LF and non-canonical tails.

    Raises ValueError. Non-canonical encodings (unused low bits set) are rejected because
    they would let two different headers carry the same values.
    """
    raw = s.encode("ascii", "replace") if isinstance(s, str) else bytes(s)
    if not _B64_CHARS.fullmatch(raw) or len(raw) % 4 == 1:
        raise ValueError("invalid base64")
    try:
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except binascii.Error:
        raise ValueError("invalid base64") from None
    if base64.b64encode(data).rstrip(b"=") != raw:
        raise ValueError("non-canonical base64")
    return data


# --- primitives composed for age ------------------------------------------------------------


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


_ZERO_NONCE = bytes(12)


def seal_file_key(wrap_key: bytes, file_key: bytes) -> bytes:
    """ChaCha20-Poly1305 of the file key under a one-time wrap key (zero nonce, per spec)."""
    return ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)


def open_file_key(wrap_key: bytes, body: bytes, stanza_type: str) -> bytes | None:
    """The file key from a stanza body, or None if the wrap key is not the right one.

    The body length is checked before decrypting: ChaCha20-Poly1305 is not key-committing,
    and accepting other lengths would open a partitioning-oracle attack (spec requirement).
    """
    if len(body) != WRAPPED_KEY_SIZE:
        raise FormatError(f"invalid {stanza_type} stanza: wrapped file key has the wrong size")
    try:
        return ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, body, None)
    except InvalidTag:
        return None


# --- stanzas and the header ------------------------------------------------------------------


@dataclass
class Stanza:
    """One recipient stanza: `-> type arg...` then a base64 body wrapped at 64 columns."""

    type: str
    args: list[str] = field(default_factory=list)
    body: bytes = b""

    def encode(self) -> bytes:
        for a in (self.type, *self.args):
            if not a or any(not 33 <= ord(c) <= 126 for c in a):
                raise ValueError(f"invalid stanza argument {a!r}")
        lines = [" ".join(["->", self.type, *self.args])]
        b64 = b64encode(self.body)
        lines += [b64[i : i + COLUMNS] for i in range(0, len(b64), COLUMNS)]
        if len(b64) % COLUMNS == 0:
            # The body always ends with a short line, empty if need be: that is how a
            # reader knows where the stanza stops.
            lines.append("")
        return ("\n".join(lines) + "\n").encode("ascii")


@dataclass
class Header:
    stanzas: list[Stanza]
    mac: bytes
    mac_input: bytes  # the header bytes up to and including "---": what the MAC covers

    def encode(self) -> bytes:
        return self.mac_input + b" " + b64encode(self.mac).encode("ascii") + b"\n"


def header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    key = hkdf_sha256(file_key, b"", b"header")
    return hmac.new(key, mac_input, sha256).digest()


def encode_header(stanzas: Sequence[Stanza], file_key: bytes) -> bytes:
    """The complete header (version line, stanzas, MAC line) for file_key."""
    if not stanzas:
        raise ValueError("an age header needs at least one stanza")
    mac_input = VERSION_LINE + b"".join(s.encode() for s in stanzas) + _MAC_PREFIX
    return Header(list(stanzas), header_mac(file_key, mac_input), mac_input).encode()


def _malformed(what: str) -> FormatError:
    return FormatError(f"malformed age header: {what}", hint="the file is damaged or was not written by age")


def _split_args(line: bytes, prefix: bytes) -> list[str]:
    """Arguments after `prefix` in a line (newline removed); strict single-space separation."""
    parts = line.split(b" ")
    if parts[0] != prefix or len(parts) < 2:
        raise _malformed(f"bad {prefix.decode()} line")
    args = []
    for p in parts[1:]:
        # Empty arguments (double or trailing spaces) and non-printable bytes are refused.
        if not p or any(not 33 <= c <= 126 for c in p):
            raise _malformed(f"bad {prefix.decode()} line")
        args.append(p.decode("ascii"))
    return args


def parse_header(src: ByteSource) -> Header:
    """Read and parse the header from src, leaving src at the first payload byte.

    Raises FormatError for anything that is not a well-formed v1 header. The MAC is not
    checked here (that needs the file key): see unwrap_header.
    """
    first = src.read_line(len(VERSION_LINE) + 64)
    if not first:
        raise FormatError("not an age file", hint="the file is empty")
    if first != VERSION_LINE:
        if first.rstrip(b"\r\n") == VERSION_LINE[:-1]:
            raise _malformed("lines end with CR LF (was the file converted as text?)")
        if first.startswith(VERSION_PREFIX) and first.endswith(b"\n"):
            raise FormatError("unsupported age format version", hint="this file needs a newer version of age/camrec")
        raise FormatError("not an age file", hint=NOT_AGE_HINT)
    raw = bytearray(first)
    stanzas: list[Stanza] = []
    while True:
        if len(raw) > MAX_HEADER:
            raise _malformed(f"header too large (more than {MAX_HEADER} bytes)")
        peek = src.peek(3)
        if peek == _MAC_PREFIX:
            line = src.read_line(len(_MAC_PREFIX) + 1 + 43 + 1)
            if not line.endswith(b"\n"):
                raise _malformed("bad MAC line")
            args = _split_args(line[:-1], _MAC_PREFIX)
            if len(args) != 1:
                raise _malformed("bad MAC line")
            try:
                mac = b64decode(args[0])
            except ValueError:
                raise _malformed("bad MAC encoding") from None
            if len(mac) != MAC_SIZE:
                raise _malformed("bad MAC length")
            raw += _MAC_PREFIX
            break
        if len(stanzas) >= MAX_STANZAS:
            raise _malformed(f"too many recipient stanzas (more than {MAX_STANZAS})")
        budget = MAX_HEADER - len(raw)  # the argument line may not take the header past its bound
        line = src.read_line(budget + 1)
        if not line.endswith(b"\n"):
            if len(line) > budget:
                raise _malformed(f"header too large (more than {MAX_HEADER} bytes)")
            raise _malformed("unexpected end of header")
        if not line.startswith(_STANZA_PREFIX):
            raise _malformed("expected a stanza or the MAC line")
        args = _split_args(line[:-1], _STANZA_PREFIX)
        raw += line
        body = bytearray()
        while True:
            bline = src.read_line(COLUMNS + 1)
            if not bline.endswith(b"\n"):
                if len(bline) > COLUMNS:
                    raise _malformed("stanza body line longer than 64 columns")
                raise _malformed("unexpected end of header")
            try:
                chunk = b64decode(bline[:-1])
            except ValueError:
                if bline.startswith((_STANZA_PREFIX, _MAC_PREFIX)):
                    raise _malformed("stanza body does not end with a short line") from None
                raise _malformed("invalid stanza body") from None
            raw += bline
            body += chunk
            if len(chunk) < BYTES_PER_LINE:
                break
            if len(raw) > MAX_HEADER:
                raise _malformed(f"header too large (more than {MAX_HEADER} bytes)")
        stanzas.append(Stanza(args[0], args[1:], bytes(body)))
    if not stanzas:
        raise _malformed("no recipient stanzas")
    return Header(stanzas, mac, bytes(raw))


def parse_header_bytes(data: bytes) -> tuple[Header, int]:
    """Parse a header from bytes; returns it and the offset where the payload starts."""
    src = ByteSource(io.BytesIO(data))
    header = parse_header(src)
    return header, len(header.encode())


# --- recipients and identities ---------------------------------------------------------------


@runtime_checkable
class Recipient(Protocol):
    """Something that can wrap a file key into stanzas (a public key or a passphrase)."""

    def wrap(self, file_key: bytes) -> list[Stanza]: ...


@runtime_checkable
class Identity(Protocol):
    """Something that can unwrap a file key from stanzas (a private key or a passphrase).

    unwrap returns None when no stanza is addressed to it, and raises FormatError when a
    stanza of its type is malformed (age treats that as fatal, not as "try the next key").
    """

    def unwrap(self, stanzas: list[Stanza]) -> bytes | None: ...


def recipient_labels(r: Recipient) -> frozenset[str]:
    """Labels that must agree across all recipients of one file (age's mixing rules).

    A recipient may define `labels()`; post-quantum recipients say {"postquantum"} so a file
    is never also readable by a classic key, and passphrase recipients return a fresh random
    label so they can only be used alone.
    """
    labels = getattr(r, "labels", None)
    return frozenset(labels()) if callable(labels) else frozenset()


def wrap_file_key(recipients: Sequence[Recipient], file_key: bytes) -> list[Stanza]:
    if not recipients:
        raise IdentityError("no recipients given", hint="configure at least one public key (age1...)")
    stanzas: list[Stanza] = []
    first: frozenset[str] | None = None
    for r in recipients:
        labels = recipient_labels(r)
        if first is None:
            first = labels
        elif labels != first:
            if "postquantum" in labels ^ first:
                raise IdentityError(
                    "incompatible recipients: can't mix post-quantum and classic recipients",
                    hint="use only age1pq... keys, or only age1... keys, for one file",
                )
            raise IdentityError("incompatible recipients: a passphrase must be the only recipient")
        stanzas.extend(r.wrap(file_key))
    return stanzas


NO_MATCH_HINT = "decrypt with the identity file whose public key the recorder was configured with"


def unwrap_header(header: Header, identities: Sequence[Identity]) -> bytes:
    """Find the file key with the first identity that opens a stanza, then verify the MAC."""
    if not identities:
        raise IdentityError("no identities given", hint=NO_MATCH_HINT)
    for identity in identities:
        file_key = identity.unwrap(header.stanzas)
        if file_key is not None:
            break
    else:
        raise IdentityError("no identity matched any of the file's recipients", hint=NO_MATCH_HINT)
    if len(file_key) != FILE_KEY_SIZE:  # defensive: our identities already guarantee it
        raise FormatError("malformed age header: wrong file key size")
    if not hmac.compare_digest(header_mac(file_key, header.mac_input), header.mac):
        raise HeaderMACError("bad header mac", hint="the file's header was altered or damaged; it cannot be trusted")
    return file_key
