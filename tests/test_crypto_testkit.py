"""The C2SP age test vectors (CCTV testkit), all 143 of them.

Each vector states the expected outcome; for successes and payload failures it also gives
the SHA-256 of all plaintext a decryptor releases, which pins down the "authenticated
prefix" behaviour exactly. Outcome classes map onto our errors as:

    success          no exception
    no match         IdentityError
    HMAC failure     HeaderMACError (an IntegrityError)
    header failure   FormatError, but not ArmorError
    armor failure    ArmorError (a FormatError)
    payload failure  IntegrityError (not HeaderMACError) or TruncatedError
"""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from camrec.crypto.age import HeaderMACError, parse_header_bytes
from camrec.crypto.armor import ArmorError
from camrec.crypto.keys import parse_identity, scrypt_identity
from camrec.crypto.stream import decrypt_stream
from camrec.errors import FormatError, IdentityError, IntegrityError, TruncatedError

VECTORS = Path(__file__).parent / "data" / "age-testkit" / "testdata"
EXPECTED_COUNT = 143
OUTCOMES = {"success", "no match", "HMAC failure", "header failure", "armor failure", "payload failure"}

# Vectors whose armor cannot be recognised without being told: they do not start with a
# PEM line at all. `age` itself (which detects armor by the first bytes) would report these
# as "not an age file" too; both are failures, just of a different class.
NOT_AUTODETECTABLE = {"armor_garbage_leading"}


@dataclass
class Vector:
    name: str
    expect: str
    file: bytes
    payload: str | None = None
    identities: list = field(default_factory=list)
    armored: bool = False


def load_vector(path: Path) -> Vector:
    raw = path.read_bytes()
    head, sep, body = raw.partition(b"\n\n")
    assert sep, f"{path.name}: no blank line after the vector header"
    v = Vector(path.name, "", body)
    compressed = False
    for line in head.decode("utf-8").split("\n"):
        key, _, value = line.partition(": ")
        if key == "expect":
            assert value in OUTCOMES, f"{path.name}: unknown expectation {value!r}"
            v.expect = value
        elif key == "payload":
            v.payload = value
        elif key == "identity":
            v.identities.append(parse_identity(value))
        elif key == "passphrase":
            v.identities.append(scrypt_identity(value))
        elif key == "armored":
            v.armored = value == "yes"
        elif key == "compressed":
            assert value == "zlib", f"{path.name}: unknown compression {value!r}"
            compressed = True
        elif key in ("file key", "comment"):
            pass
        else:
            raise AssertionError(f"{path.name}: unknown header key {key!r}")
    if compressed:
        v.file = zlib.decompress(v.file)
    assert v.expect, f"{path.name}: no expectation"
    return v


def classify(exc: BaseException | None) -> str:
    if exc is None:
        return "success"
    if isinstance(exc, ArmorError):
        return "armor failure"
    if isinstance(exc, HeaderMACError):
        return "HMAC failure"
    if isinstance(exc, IdentityError):
        return "no match"
    if isinstance(exc, FormatError):
        return "header failure"
    if isinstance(exc, IntegrityError | TruncatedError):
        return "payload failure"
    raise AssertionError(f"unexpected exception type {type(exc).__name__}: {exc}") from exc


def run(v: Vector, armor: bool | None) -> tuple[str, bytes, BaseException | None]:
    out = io.BytesIO()
    exc: BaseException | None = None
    try:
        n = decrypt_stream(io.BytesIO(v.file), v.identities, out, armor=armor)
        assert n == len(out.getvalue())
    except (FormatError, IdentityError, IntegrityError, TruncatedError) as e:
        exc = e
    return classify(exc), out.getvalue(), exc


NAMES = sorted(p.name for p in VECTORS.iterdir()) if VECTORS.is_dir() else []


def test_all_vectors_present() -> None:
    assert len(NAMES) == EXPECTED_COUNT


@pytest.mark.parametrize("name", NAMES)
def test_vector(name: str) -> None:
    v = load_vector(VECTORS / name)
    # Like age's own testkit runner, tell the decoder when the vector is armored.
    outcome, released, exc = run(v, armor=v.armored)
    assert outcome == v.expect, f"expected {v.expect}, got {outcome}: {exc!r}"

    if v.expect in ("success", "payload failure"):
        assert v.payload is not None
        assert hashlib.sha256(released).hexdigest() == v.payload, (
            f"released {len(released)} bytes whose hash differs from the vector's"
        )
    elif v.expect != "armor failure":
        # Header-level failures happen before any plaintext exists.
        assert released == b""
    if isinstance(exc, TruncatedError):
        assert exc.authenticated_bytes == len(released)
    if exc is not None:
        assert exc.args[0] == exc.message and exc.message == exc.message.strip()
        assert not exc.message.endswith(".")


@pytest.mark.parametrize("name", NAMES)
def test_vector_autodetected_armor(name: str) -> None:
    """decrypt_stream's default (armor detected from the first bytes) gives the same result."""
    v = load_vector(VECTORS / name)
    outcome, released, exc = run(v, armor=None)
    if name in NOT_AUTODETECTABLE:
        assert outcome == "header failure" and isinstance(exc, FormatError)
        assert exc.message == "not an age file"
        return
    assert outcome == v.expect, f"expected {v.expect}, got {outcome}: {exc!r}"
    if v.payload is not None and v.expect != "armor failure":
        assert hashlib.sha256(released).hexdigest() == v.payload


# Vectors with a well-formed binary header (armored ones are about the armor).
HEADER_NAMES = [n for n in NAMES if (v := load_vector(VECTORS / n)).expect != "header failure" and not v.armored]


def test_header_vectors_selected() -> None:
    assert len(HEADER_NAMES) == 50


@pytest.mark.parametrize("name", HEADER_NAMES)
def test_vector_header_reencodes_identically(name: str) -> None:
    """A header that parses re-encodes to the same bytes: the strict parser admits one encoding."""
    v = load_vector(VECTORS / name)
    header, end = parse_header_bytes(v.file)
    assert v.file[:end] == header.encode()
    assert header.mac_input == v.file[: len(header.mac_input)]
