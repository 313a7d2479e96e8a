"""Property/fuzz tests over the header parser and the STREAM reader.

Valid files of every kind (X25519 with one and several recipients, post-quantum, passphrase,
armored) are mutated, truncated and extended. Whatever happens, decryption must
  * fail only with camrec's own errors (never another exception: no crash),
  * finish within the deadline (no hang, no unbounded work),
  * release only whole authenticated chunks: a chunk-aligned prefix of the real plaintext, or
    all of it when the file still decrypts.
Hostile scrypt work factors are refused without deriving anything.

The default run is bounded (a few seconds); `pytest --long` runs many more examples.
"""

from __future__ import annotations

import io
import os
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camrec.crypto.age import Stanza, b64encode, encode_header, parse_header_bytes
from camrec.crypto.armor import ArmorReader, armor_bytes
from camrec.crypto.keys import HybridIdentity, X25519Identity
from camrec.crypto.scrypt import ScryptIdentity, ScryptRecipient
from camrec.crypto.source import ByteSource
from camrec.crypto.stream import CHUNK_SIZE, AgeReader, decrypt_stream, encrypt_bytes
from camrec.errors import CamrecError, FormatError

FAST = settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=2000, deadline=5000, suppress_health_check=[HealthCheck.too_slow])

X1, X2 = X25519Identity.generate(), X25519Identity.generate()
PQ = HybridIdentity.generate()
DATA = random.Random(1).randbytes(3 * CHUNK_SIZE + 123)
SMALL = random.Random(2).randbytes(1000)
# A low cap for mutated passphrase files: a mutation may raise the work factor, and the test is
# about robustness, not about spending seconds in scrypt (the cap itself is tested below).
SCRYPT_ID = ScryptIdentity("fuzz", max_work_factor=12)
IDENTITIES = [X1, X2, PQ, SCRYPT_ID]

FILES = {
    "x25519": (encrypt_bytes(DATA, [X1.recipient()]), DATA),
    "two-recipients": (encrypt_bytes(SMALL, [X2.recipient(), X1.recipient()]), SMALL),
    "pq": (encrypt_bytes(SMALL, [PQ.recipient()]), SMALL),
    "scrypt": (encrypt_bytes(SMALL, [ScryptRecipient("fuzz", work_factor=4)]), SMALL),
    "empty": (encrypt_bytes(b"", [X1.recipient()]), b""),
    "armored": (encrypt_bytes(DATA[: CHUNK_SIZE + 5], [X1.recipient()], armor=True), DATA[: CHUNK_SIZE + 5]),
}

EDIT = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1 << 30), st.integers(0, 255)),
    st.tuples(st.just("flip"), st.integers(0, 1 << 30), st.integers(0, 7)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 30), st.binary(min_size=1, max_size=20)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 30), st.integers(1, 100)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 30), st.just(0)),
    st.tuples(st.just("extend"), st.just(0), st.binary(min_size=1, max_size=200)),
)


def apply(data: bytes, edits: list[tuple]) -> bytes:
    b = bytearray(data)
    for kind, pos, arg in edits:
        p = pos % (len(b) + 1)
        if kind == "set" and p < len(b):
            b[p] = arg
        elif kind == "flip" and p < len(b):
            b[p] ^= 1 << arg
        elif kind == "insert":
            b[p:p] = arg
        elif kind == "delete":
            del b[p : p + arg]
        elif kind == "truncate":
            del b[p:]
        elif kind == "extend":
            b += arg
    return bytes(b)


def check_release(data: bytes, original: bytes) -> tuple[bytes, BaseException | None]:
    """Decrypt `data`; assert the invariants; return what was released and the error."""
    out = io.BytesIO()
    error: BaseException | None = None
    try:
        n = decrypt_stream(io.BytesIO(data), IDENTITIES, out)
        assert n == len(out.getvalue())
    except CamrecError as e:  # anything else propagates and fails the test
        error = e
    released = out.getvalue()
    if error is None:
        assert released == original
    else:
        assert original.startswith(released)
        assert len(released) % CHUNK_SIZE == 0 or released == original
    return released, error


@pytest.mark.parametrize("kind", sorted(FILES))
@FAST
@given(edits=st.lists(EDIT, min_size=1, max_size=4))
def test_mutated_files_fail_cleanly(kind: str, edits: list[tuple]) -> None:
    data, original = FILES[kind]
    check_release(apply(data, edits), original)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(FILES))
@LONG
@given(edits=st.lists(EDIT, min_size=1, max_size=8))
def test_mutated_files_fail_cleanly_long(kind: str, edits: list[tuple]) -> None:
    data, original = FILES[kind]
    check_release(apply(data, edits), original)


@FAST
@given(cut=st.integers(0, len(FILES["x25519"][0])), extra=st.binary(max_size=CHUNK_SIZE + 40))
def test_truncated_and_extended_files(cut: int, extra: bytes) -> None:
    data, original = FILES["x25519"]
    released, error = check_release(data[:cut] + extra, original)
    if not extra and cut < len(data):
        assert error is not None
    if cut == len(data) and extra:
        # Data after the final chunk is refused. (Here the final chunk is short, so with the
        # extra bytes it no longer authenticates and is not released either; age does the same.)
        assert error is not None and released == original[: 3 * CHUNK_SIZE]


@FAST
@given(payload=st.binary(max_size=3 * CHUNK_SIZE), split=st.integers(1, 100_000))
def test_random_payload_after_a_valid_header_releases_nothing(payload: bytes, split: int) -> None:
    """Garbage where the chunks should be never authenticates: nothing is released."""
    data, _ = FILES["x25519"]
    _, header_len = parse_header_bytes(data)
    out = io.BytesIO()
    with pytest.raises(CamrecError):
        decrypt_stream(io.BytesIO(data[: header_len + 16] + payload), [X1], out)
    assert out.getvalue() == b""


@FAST
@given(edits=st.lists(EDIT, min_size=1, max_size=3), reads=st.lists(st.integers(1, 200_000), min_size=1, max_size=20))
def test_reader_object_agrees_with_decrypt_stream(edits: list[tuple], reads: list[int]) -> None:
    data, original = FILES["x25519"]
    bad = apply(data, edits)
    expected, error = check_release(bad, original)
    got = bytearray()
    try:
        reader = AgeReader(io.BytesIO(bad), IDENTITIES)
        i = 0
        while chunk := reader.read(reads[i % len(reads)]):
            got += chunk
            i += 1
    except CamrecError as e:
        assert error is not None and type(e) is type(error)
    else:
        assert error is None
    assert bytes(got) == expected


LINE = st.one_of(
    st.just(b"age-encryption.org/v1"),
    st.builds(lambda a: b"-> " + a, st.binary(max_size=60)),
    st.builds(lambda a: b"--- " + a, st.binary(max_size=50)),
    st.sampled_from([b"-> X25519", b"-> scrypt AAAAAAAAAAAAAAAAAAAAAA 99999999999999999999", b"---", b"", b"->",
                     b"-> mlkem768x25519 " + b"A" * 1500, b"A" * 64, b"A" * 65, b"-----BEGIN AGE ENCRYPTED FILE-----"]),
    st.binary(max_size=80),
)


@FAST
@given(lines=st.lists(LINE, max_size=12), eol=st.sampled_from([b"\n", b"\r\n", b""]))
def test_header_parser_on_line_soup(lines: list[bytes], eol: bytes) -> None:
    """Plausible and implausible header lines in any order: a header or a FormatError, nothing else."""
    raw = b"age-encryption.org/v1\n" + eol.join(lines) + eol
    try:
        header, end = parse_header_bytes(raw)
    except FormatError:
        return
    assert header.encode() == raw[:end]


@FAST
@given(edits=st.lists(EDIT, min_size=1, max_size=4))
def test_armor_reader_fails_cleanly(edits: list[tuple]) -> None:
    """Armor is not authenticated (the age file inside is), but it is strict: what decodes is the
    one canonical armoring of its content, up to surrounding whitespace and CRLF line ends."""
    armored = armor_bytes(b"x" * 500)
    mutated = apply(armored, edits)
    try:
        decoded = ArmorReader(ByteSource(io.BytesIO(mutated))).read()
    except FormatError:
        return
    assert armor_bytes(decoded) == mutated.replace(b"\r\n", b"\n").strip() + b"\n"


# --- hostile scrypt work factors ----------------------------------------------------------------


@pytest.mark.parametrize("work_factor", ["23", "30", "64", "255", "999", "9223372036854775818", "9" * 5000])
def test_hostile_scrypt_work_factor_is_refused_quickly(work_factor: str) -> None:
    stanza = Stanza("scrypt", [b64encode(os.urandom(16)), work_factor], os.urandom(32))
    data = encode_header([stanza], os.urandom(16)) + os.urandom(64)
    t0 = time.monotonic()
    with pytest.raises(FormatError, match="work factor too large"):
        decrypt_stream(io.BytesIO(data), [ScryptIdentity("any")], io.BytesIO())
    assert time.monotonic() - t0 < 1.0  # refused before deriving anything


def test_work_factor_cap_is_age_s() -> None:
    """22 is accepted (what age allows), so files from age with a high but legal factor open."""
    stanza = Stanza("scrypt", [b64encode(bytes(16)), "22"], bytes(31))  # wrong body size: fails after the cap
    with pytest.raises(FormatError, match="wrapped file key"):
        ScryptIdentity("p").unwrap([stanza])
