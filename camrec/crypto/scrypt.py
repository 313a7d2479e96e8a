"""Passphrase recipients and identities (the age `scrypt` stanza).

camrec itself encrypts clips to public keys; passphrases exist so that exports and test
vectors made with `age -p` can be read, and so an owner can protect a copy with a
passphrase. Rules from the spec that matter for safety:
  * an scrypt stanza must be the only stanza (a passphrase-encrypted file is expected to be
    "authenticated" by that passphrase, which other recipients could break);
  * the work factor is attacker-controlled on decryption, so it is capped (2^22, like age:
    about a second or more of CPU and 4 GiB of memory at the cap).
"""

from __future__ import annotations

import os
import re

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from camrec.crypto.age import Stanza, b64decode, b64encode, open_file_key, seal_file_key
from camrec.errors import FormatError, IdentityError

STANZA_TYPE = "scrypt"
SALT_LABEL = b"age-encryption.org/v1/scrypt"
SALT_SIZE = 16
DEFAULT_WORK_FACTOR = 18
MAX_WORK_FACTOR = 22
_DECIMAL = re.compile(r"[1-9][0-9]*")


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    p = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
    if not p:
        raise IdentityError("passphrase can't be empty")
    return p


def _derive(passphrase: bytes, salt: bytes, log_n: int) -> bytes:
    return Scrypt(salt=SALT_LABEL + salt, length=32, n=1 << log_n, r=8, p=1).derive(passphrase)


class ScryptRecipient:
    """Encrypts the file key to a passphrase."""

    __slots__ = ("_passphrase", "work_factor")

    def __init__(self, passphrase: str | bytes, work_factor: int = DEFAULT_WORK_FACTOR) -> None:
        if not 1 <= work_factor <= 30:
            raise ValueError("scrypt work factor must be between 1 and 30")
        self._passphrase = _passphrase_bytes(passphrase)
        self.work_factor = work_factor

    def __repr__(self) -> str:
        return f"ScryptRecipient(work_factor={self.work_factor})"

    def labels(self) -> frozenset[str]:
        # A fresh random label on every call: no other recipient can ever share it, so a
        # passphrase is always the file's only recipient.
        return frozenset({"scrypt-" + os.urandom(16).hex()})

    def wrap(self, file_key: bytes) -> list[Stanza]:
        salt = os.urandom(SALT_SIZE)
        key = _derive(self._passphrase, salt, self.work_factor)
        return [Stanza(STANZA_TYPE, [b64encode(salt), str(self.work_factor)], seal_file_key(key, file_key))]


class ScryptIdentity:
    """Decrypts files encrypted to a passphrase (refusing work factors above the cap)."""

    __slots__ = ("_passphrase", "max_work_factor")

    def __init__(self, passphrase: str | bytes, max_work_factor: int = MAX_WORK_FACTOR) -> None:
        self._passphrase = _passphrase_bytes(passphrase)
        self.max_work_factor = max_work_factor

    def __repr__(self) -> str:
        return "ScryptIdentity(<passphrase>)"

    def unwrap(self, stanzas: list[Stanza]) -> bytes | None:
        parsed = check_stanzas(stanzas, self.max_work_factor)
        if parsed is None:
            return None
        salt, log_n, body = parsed
        key = _derive(self._passphrase, salt, log_n)
        # A wrong passphrase is "no match", so several passphrases can be tried.
        return open_file_key(key, body, STANZA_TYPE)


def check_stanzas(stanzas: list[Stanza], max_work_factor: int = MAX_WORK_FACTOR) -> tuple[bytes, int, bytes] | None:
    """(salt, log2 work factor, body) of the scrypt stanza, None if there is none.

    Raises FormatError for a malformed stanza, one that is not alone, or a work factor above
    the cap: all checked before anyone is asked for a passphrase or any key is derived.
    """
    if not any(s.type == STANZA_TYPE for s in stanzas):
        return None
    if len(stanzas) != 1:
        raise FormatError("invalid header: an scrypt stanza must be the only stanza")
    s = stanzas[0]
    if len(s.args) != 2:
        raise FormatError("invalid scrypt stanza: wrong number of arguments")
    try:
        salt = b64decode(s.args[0])
    except ValueError:
        raise FormatError("invalid scrypt stanza: bad salt encoding") from None
    if len(salt) != SALT_SIZE:
        raise FormatError("invalid scrypt stanza: salt has the wrong size")
    # Only plain decimal without leading zeros: "010", "+10", "0x10" are refused so
    # that one header has exactly one encoding.
    if not _DECIMAL.fullmatch(s.args[1]):
        raise FormatError("invalid scrypt stanza: bad work factor encoding")
    # The length check comes first: int() of a hostile multi-kilobyte digit string
    # would raise ValueError (Python's int digit limit), not a clean FormatError.
    log_n = int(s.args[1]) if len(s.args[1]) <= 3 else 1000
    if log_n > max_work_factor:
        shown = s.args[1] if log_n < 1000 else f"{s.args[1][:3]}(...{len(s.args[1])} digits)"
        raise FormatError(
            f"scrypt work factor too large: 2^{shown}",
            hint=f"this identity accepts at most 2^{max_work_factor} (age refuses more too)",
        )
    if len(s.body) != 32:  # checked before the expensive derivation
        raise FormatError("invalid scrypt stanza: wrapped file key has the wrong size")
    return salt, log_n, s.body


def scrypt_identity(passphrase: str | bytes) -> ScryptIdentity:
    return ScryptIdentity(passphrase)
