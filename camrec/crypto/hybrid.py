"""Post-quantum hybrid keys: `age1pq1...` / `AGE-SECRET-KEY-PQ-1...` (age 1.3+).

The stanza is HPKE (RFC 9180) base mode with the MLKEM768-X25519 KEM (X-Wing,
draft-ietf-hpke-pq), HKDF-SHA256 and ChaCha20-Poly1305, info
"age-encryption.org/mlkem768x25519", sealing the file key. `cryptography` implements that
KEM and HPKE, so nothing here is a hand-written primitive: we only expand the 32-byte
identity seed into the two component keys (SHAKE256, as the KEM's key derivation defines)
and check the stanza's shape as the spec requires.

A file for a hybrid recipient must not also be readable by classic keys (that would undo
the post-quantum protection), hence the "postquantum" mixing label.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from camrec.crypto import bech32
from camrec.crypto.age import FILE_KEY_SIZE, WRAPPED_KEY_SIZE, Stanza, b64decode, b64encode
from camrec.errors import FormatError, IdentityError

STANZA_TYPE = "mlkem768x25519"
LABEL = b"age-encryption.org/mlkem768x25519"
RECIPIENT_HRP = "age1pq"
IDENTITY_HRP = "AGE-SECRET-KEY-PQ-"
SEED_SIZE = 32
MLKEM_PK_SIZE = 1184
MLKEM_CT_SIZE = 1088
X25519_SIZE = 32
PUBLIC_KEY_SIZE = MLKEM_PK_SIZE + X25519_SIZE  # 1216
ENC_SIZE = MLKEM_CT_SIZE + X25519_SIZE  # 1120

_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


class HybridRecipient:
    """An MLKEM768-X25519 public key."""

    __slots__ = ("_key", "_raw")

    def __init__(self, public_key: bytes) -> None:
        if len(public_key) != PUBLIC_KEY_SIZE:
            raise IdentityError("invalid post-quantum recipient: wrong key length")
        try:
            pq = mlkem.MLKEM768PublicKey.from_public_bytes(public_key[:MLKEM_PK_SIZE])
            classic = x25519.X25519PublicKey.from_public_bytes(public_key[MLKEM_PK_SIZE:])
        except ValueError:
            raise IdentityError("invalid post-quantum recipient: not a valid ML-KEM-768 key") from None
        self._raw = bytes(public_key)
        self._key = hpke.MLKEM768X25519PublicKey(pq, classic)

    @classmethod
    def parse(cls, s: str) -> HybridRecipient:
        s = s.strip()
        try:
            hrp, data = bech32.decode(s)
        except bech32.Bech32Error as e:
            raise IdentityError(f"malformed post-quantum recipient: {e}") from None
        if hrp != RECIPIENT_HRP:
            raise IdentityError("malformed post-quantum recipient: expected an age1pq1... key")
        return cls(data)

    def __str__(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self._raw)

    def __repr__(self) -> str:
        return f"HybridRecipient({str(self)[:20]}...)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HybridRecipient) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    @property
    def public_bytes(self) -> bytes:
        return self._raw

    def labels(self) -> frozenset[str]:
        return frozenset({"postquantum"})

    def wrap(self, file_key: bytes) -> list[Stanza]:
        sealed = _SUITE.encrypt(file_key, self._key, info=LABEL)
        enc, body = sealed[:ENC_SIZE], sealed[ENC_SIZE:]
        return [Stanza(STANZA_TYPE, [b64encode(enc)], body)]


class HybridIdentity:
    """An MLKEM768-X25519 private key: a 32-byte seed."""

    __slots__ = ("_key", "_recipient", "_seed", "_x25519")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise IdentityError("malformed post-quantum secret key: wrong length")
        # The KEM's DeriveKeyPair: SHAKE256(seed) -> 64-byte ML-KEM seed (d || z) and a
        # 32-byte X25519 scalar. cryptography takes the component keys, not the seed.
        expanded = hashlib.shake_256(seed).digest(96)
        pq = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        self._x25519 = x25519.X25519PrivateKey.from_private_bytes(expanded[64:])
        self._seed = bytes(seed)
        self._key = hpke.MLKEM768X25519PrivateKey(pq, self._x25519)
        self._recipient = HybridRecipient(
            pq.public_key().public_bytes_raw() + self._x25519.public_key().public_bytes_raw()
        )

    @classmethod
    def generate(cls) -> HybridIdentity:
        return cls(os.urandom(SEED_SIZE))

    @classmethod
    def parse(cls, s: str) -> HybridIdentity:
        # Error messages never quote s: it is a secret.
        s = s.strip()
        try:
            hrp, data = bech32.decode(s)
        except bech32.Bech32Error as e:
            raise IdentityError(f"malformed post-quantum secret key: {e}") from None
        if hrp != IDENTITY_HRP:
            raise IdentityError("malformed post-quantum secret key: expected AGE-SECRET-KEY-PQ-1...")
        return cls(data)

    def __str__(self) -> str:
        return bech32.encode(IDENTITY_HRP, self._seed)

    def __repr__(self) -> str:
        return f"HybridIdentity(recipient={str(self._recipient)[:20]}...)"

    def recipient(self) -> HybridRecipient:
        return self._recipient

    def unwrap(self, stanzas: list[Stanza]) -> bytes | None:
        for s in stanzas:
            if s.type != STANZA_TYPE:
                continue
            if len(s.args) != 1:
                raise FormatError("invalid mlkem768x25519 stanza: wrong number of arguments")
            try:
                enc = b64decode(s.args[0])
            except ValueError:
                raise FormatError("invalid mlkem768x25519 stanza: bad encapsulated key encoding") from None
            if len(enc) != ENC_SIZE:
                raise FormatError("invalid mlkem768x25519 stanza: encapsulated key has the wrong size")
            if len(s.body) != WRAPPED_KEY_SIZE:
                raise FormatError("invalid mlkem768x25519 stanza: wrapped file key has the wrong size")
            try:
                # A low-order X25519 share gives an all-zero shared secret; the spec's
                # X25519 rules (and age) reject it outright rather than treating it as
                # "not for us". cryptography raises ValueError for that case.
                share = x25519.X25519PublicKey.from_public_bytes(enc[MLKEM_CT_SIZE:])
                self._x25519.exchange(share)
            except ValueError:
                raise FormatError("invalid mlkem768x25519 stanza: low-order X25519 share") from None
            try:
                file_key = _SUITE.decrypt(enc + s.body, self._key, info=LABEL)
            except InvalidTag:
                # ML-KEM decapsulation rejects implicitly: a stanza for another key simply
                # fails to open here. That means "not for us", so try the next stanza.
                continue
            if len(file_key) != FILE_KEY_SIZE:  # unreachable given the body length check
                raise FormatError("invalid mlkem768x25519 stanza: wrong file key size")
            return file_key
        return None
