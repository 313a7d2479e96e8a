"""STREAM payload: incremental writing, chunk boundaries, truncation and tampering."""

from __future__ import annotations

import io
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from camrec.crypto.age import HeaderMACError, parse_header_bytes
from camrec.crypto.keys import X25519Identity
from camrec.crypto.stream import (
    CHUNK_SIZE,
    ENC_CHUNK_SIZE,
    NONCE_SIZE,
    AgeReader,
    AgeWriter,
    decrypt_bytes,
    decrypt_stream,
    encrypt_bytes,
    encrypted_size,
)
from camrec.errors import FormatError, IdentityError, IntegrityError, TruncatedError

SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE + 17]

IDENTITY = X25519Identity.generate()
RECIPIENTS = [IDENTITY.recipient()]


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def encrypt_in_pieces(data: bytes, pieces: list[int]) -> tuple[bytes, AgeWriter]:
    out = io.BytesIO()
    w = AgeWriter(out, RECIPIENTS)
    pos = 0
    for p in pieces:
        w.write(data[pos : pos + p])
        pos += p
    w.write(data[pos:])
    w.close()
    return out.getvalue(), w


def payload_start(ct: bytes) -> int:
    """Offset of the first chunk (after header and nonce)."""
    _, end = parse_header_bytes(ct)
    return end + NONCE_SIZE


def decrypt_partial(ct: bytes) -> tuple[bytes, BaseException | None]:
    out = io.BytesIO()
    try:
        decrypt_stream(io.BytesIO(ct), [IDENTITY], out)
    except (FormatError, IdentityError, IntegrityError, TruncatedError) as e:
        return out.getvalue(), e
    return out.getvalue(), None


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_one_write(size: int) -> None:
    data = payload(size)
    ct = encrypt_bytes(data, RECIPIENTS)
    assert len(ct) == encrypted_size(size, payload_start(ct) - NONCE_SIZE)
    assert decrypt_bytes(ct, [IDENTITY]) == data


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_small_writes(size: int) -> None:
    data = payload(size, seed=size)
    rng = random.Random(size)
    pieces = [rng.randint(0, 5000) for _ in range(size // 2500 + 3)]
    ct, w = encrypt_in_pieces(data, pieces)
    assert w.plaintext_bytes == size and w.bytes_written == len(ct)
    assert decrypt_bytes(ct, [IDENTITY]) == data


def test_chunk_layout_matches_age() -> None:
    """Full chunks, then one short (or full) final chunk; an empty file is one empty chunk."""
    for size, chunks in [(0, 1), (1, 1), (CHUNK_SIZE, 1), (CHUNK_SIZE + 1, 2), (2 * CHUNK_SIZE, 2)]:
        ct = encrypt_bytes(payload(size), RECIPIENTS)
        body = len(ct) - payload_start(ct)
        assert body == size + 16 * chunks


def test_writer_holds_back_at_most_one_chunk() -> None:
    out = io.BytesIO()
    w = AgeWriter(out, RECIPIENTS)
    header_len = w.bytes_written
    assert len(out.getvalue()) == header_len  # header and nonce are written immediately
    w.write(b"x" * CHUNK_SIZE)
    assert w.bytes_written == header_len  # might be the last chunk: held back
    w.write(b"y")
    assert w.bytes_written == header_len + ENC_CHUNK_SIZE == len(out.getvalue())
    w.write(b"z" * (5 * CHUNK_SIZE))
    # 1 + 5 * CHUNK bytes after the first chunk: 5 chunks are provably not last.
    assert w.bytes_written == header_len + 6 * ENC_CHUNK_SIZE == len(out.getvalue())
    assert w.plaintext_bytes == 6 * CHUNK_SIZE + 1
    w.close()
    assert w.bytes_written == len(out.getvalue()) == header_len + 6 * ENC_CHUNK_SIZE + 1 + 16
    assert decrypt_bytes(out.getvalue(), [IDENTITY]) == b"x" * CHUNK_SIZE + b"y" + b"z" * (5 * CHUNK_SIZE)


def test_writer_close_is_idempotent_and_final() -> None:
    out = io.BytesIO()
    w = AgeWriter(out, RECIPIENTS)
    w.write(b"abc")
    w.close()
    w.close()
    assert w.closed
    with pytest.raises(ValueError):
        w.write(b"more")
    assert not out.closed  # the caller owns the file


def test_writer_accepts_any_buffer() -> None:
    import array

    arr = array.array("I", range(1000))
    out = io.BytesIO()
    with AgeWriter(out, RECIPIENTS) as w:
        w.write(arr)
        w.write(bytearray(b"tail"))
        w.write(memoryview(b"0123456789")[2:5])
    assert decrypt_bytes(out.getvalue(), [IDENTITY]) == arr.tobytes() + b"tail" + b"234"


def test_context_manager_exception_leaves_file_truncated() -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError), AgeWriter(out, RECIPIENTS) as w:
        w.write(payload(3 * CHUNK_SIZE + 5))
        raise RuntimeError("camera vanished")
    released, exc = decrypt_partial(out.getvalue())
    assert isinstance(exc, TruncatedError)
    # Three full chunks were sealed (the fourth, partial, was still held back).
    assert released == payload(3 * CHUNK_SIZE + 5)[: 3 * CHUNK_SIZE]
    assert exc.authenticated_bytes == 3 * CHUNK_SIZE


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(0, 4 * CHUNK_SIZE + 3),
    cuts=st.lists(st.integers(0, 4 * CHUNK_SIZE + 3), max_size=8),
)
def test_round_trip_any_split(size: int, cuts: list[int]) -> None:
    data = payload(size, seed=7)
    points = sorted({min(c, size) for c in cuts})
    pieces = [b - a for a, b in zip([0, *points], points, strict=False)]
    ct, _ = encrypt_in_pieces(data, pieces)
    assert decrypt_bytes(ct, [IDENTITY]) == data


def test_each_file_has_fresh_keys() -> None:
    a = encrypt_bytes(b"same", RECIPIENTS)
    b = encrypt_bytes(b"same", RECIPIENTS)
    assert a != b and a[-20:] != b[-20:]


# --- readers ---------------------------------------------------------------------------------


class ReadOnly:
    """A source with read() only (no readinto), like some wrapped streams."""

    def __init__(self, data: bytes, step: int) -> None:
        self._f = io.BytesIO(data)
        self._step = step

    def read(self, n: int = -1) -> bytes:
        return self._f.read(self._step if n < 0 else min(n, self._step))


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_decrypt_from_trickling_source(step: int) -> None:
    data = payload(2 * CHUNK_SIZE + 99, seed=step)
    ct = encrypt_bytes(data, RECIPIENTS)
    out = io.BytesIO()
    assert decrypt_stream(ReadOnly(ct, step), [IDENTITY], out) == len(data)
    assert out.getvalue() == data


def test_decrypt_from_unbuffered_file(tmp_path) -> None:
    data = payload(5 * CHUNK_SIZE + 1)
    path = tmp_path / "clip.age"
    with open(path, "wb", buffering=0) as raw:
        w = AgeWriter(raw, RECIPIENTS)
        w.write(data)
        w.close()
    with open(path, "rb", buffering=0) as src, open(tmp_path / "out", "wb", buffering=0) as dst:
        assert decrypt_stream(src, [IDENTITY], dst) == len(data)
    assert (tmp_path / "out").read_bytes() == data


def test_age_reader_reads_and_iterates() -> None:
    data = payload(3 * CHUNK_SIZE + 1000)
    ct = encrypt_bytes(data, RECIPIENTS)
    r = AgeReader(io.BytesIO(ct), [IDENTITY])
    assert r.read(10) == data[:10]
    # A raw stream: a read returns at most the rest of the current chunk.
    assert r.read(CHUNK_SIZE) == data[10:CHUNK_SIZE]
    assert r.read(5) == data[CHUNK_SIZE : CHUNK_SIZE + 5]
    assert b"".join(r.chunks()) == data[CHUNK_SIZE + 5 :]
    assert r.read() == b""
    assert io.BufferedReader(AgeReader(io.BytesIO(ct), [IDENTITY])).read() == data
    assert [len(c) for c in AgeReader(io.BytesIO(ct), [IDENTITY]).chunks()] == [CHUNK_SIZE] * 3 + [1000]


def test_age_reader_error_is_sticky() -> None:
    data = payload(2 * CHUNK_SIZE + 5)
    ct = encrypt_bytes(data, RECIPIENTS)
    cut = ct[: payload_start(ct) + ENC_CHUNK_SIZE]
    r = AgeReader(io.BytesIO(cut), [IDENTITY])
    got = bytearray()
    with pytest.raises(TruncatedError):
        while chunk := r.read(1000):
            got += chunk
    assert bytes(got) == data[:CHUNK_SIZE]
    for _ in range(2):  # never turns into a clean EOF
        with pytest.raises(TruncatedError):
            r.read(1)


# --- truncation ------------------------------------------------------------------------------

TRUNC_DATA = payload(4 * CHUNK_SIZE + 1234, seed=99)
TRUNC_CT = encrypt_bytes(TRUNC_DATA, RECIPIENTS)
TRUNC_START = payload_start(TRUNC_CT)


CUTS = [
    (chunks, extra)
    for chunks in range(5)
    for extra in (0, 1, 15, 16, 17, 1000, ENC_CHUNK_SIZE - 1)
    if TRUNC_START + chunks * ENC_CHUNK_SIZE + extra < len(TRUNC_CT)
]


@pytest.mark.parametrize(("chunks", "extra"), CUTS)
def test_truncated_file_releases_authenticated_prefix(chunks: int, extra: int) -> None:
    cut = TRUNC_START + chunks * ENC_CHUNK_SIZE + extra
    released, exc = decrypt_partial(TRUNC_CT[:cut])
    assert isinstance(exc, TruncatedError), exc
    assert released == TRUNC_DATA[: chunks * CHUNK_SIZE]
    assert exc.authenticated_bytes == len(released)
    assert exc.message.startswith("file is truncated")
    assert exc.exit_code == 8


@pytest.mark.parametrize("salvage", [False, True])
def test_truncated_same_result_with_or_without_salvage(salvage: bool) -> None:
    out = io.BytesIO()
    with pytest.raises(TruncatedError) as ei:
        decrypt_stream(io.BytesIO(TRUNC_CT[:-1]), [IDENTITY], out, salvage=salvage)
    assert out.getvalue() == TRUNC_DATA[: 4 * CHUNK_SIZE]
    assert ei.value.authenticated_bytes == 4 * CHUNK_SIZE


def test_cut_in_header_or_nonce_is_a_format_error() -> None:
    for cut in (0, 10, TRUNC_START - NONCE_SIZE - 5, TRUNC_START - NONCE_SIZE, TRUNC_START - 1):
        released, exc = decrypt_partial(TRUNC_CT[:cut])
        assert isinstance(exc, FormatError) and released == b"", (cut, exc)


def test_cut_anywhere_in_a_small_file() -> None:
    data = payload(CHUNK_SIZE + 40, seed=3)
    ct = encrypt_bytes(data, RECIPIENTS)
    start = payload_start(ct)
    # Every byte near the interesting offsets, and a stride through the rest.
    near = [start, start + 16, start + ENC_CHUNK_SIZE, start + ENC_CHUNK_SIZE + 16, len(ct)]
    cuts = {c for p in near for c in range(p - 20, p + 20)} | set(range(start, len(ct), 251))
    for cut in sorted(c for c in cuts if start <= c < len(ct)):
        released, exc = decrypt_partial(ct[:cut])
        assert isinstance(exc, TruncatedError)
        expected = data[:CHUNK_SIZE] if cut >= start + ENC_CHUNK_SIZE else b""
        assert released == expected and exc.authenticated_bytes == len(expected)
    assert decrypt_partial(ct) == (data, None)


# --- tampering -------------------------------------------------------------------------------


def flip(data: bytes, pos: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize("chunk", [0, 1, 3])
@pytest.mark.parametrize("where", [0, 5000, ENC_CHUNK_SIZE - 1])
def test_tampered_chunk_is_not_released(chunk: int, where: int) -> None:
    bad = flip(TRUNC_CT, TRUNC_START + chunk * ENC_CHUNK_SIZE + where)
    released, exc = decrypt_partial(bad)
    assert type(exc) is IntegrityError, exc
    assert released == TRUNC_DATA[: chunk * CHUNK_SIZE]
    assert exc.exit_code == 7


def test_tampered_short_final_chunk_fails() -> None:
    # Indistinguishable from a cut inside the last chunk, hence reported as truncation;
    # either way the damaged chunk is withheld and decryption fails.
    released, exc = decrypt_partial(flip(TRUNC_CT, len(TRUNC_CT) - 3))
    assert isinstance(exc, TruncatedError) and "damaged" in exc.message
    assert released == TRUNC_DATA[: 4 * CHUNK_SIZE]


def test_tampered_full_final_chunk_fails() -> None:
    data = payload(2 * CHUNK_SIZE)
    ct = encrypt_bytes(data, RECIPIENTS)
    released, exc = decrypt_partial(flip(ct, len(ct) - 100))
    assert type(exc) is IntegrityError
    assert released == data[:CHUNK_SIZE]


SMALL_DATA = payload(2 * CHUNK_SIZE + 300, seed=5)
SMALL_CT = encrypt_bytes(SMALL_DATA, RECIPIENTS)


@settings(max_examples=150, deadline=None)
@given(pos=st.integers(0, len(SMALL_CT) - 1), bit=st.integers(0, 7), cut=st.integers(0, 3 * ENC_CHUNK_SIZE))
def test_any_damage_releases_only_whole_authentic_chunks(pos: int, bit: int, cut: int) -> None:
    """Flip any bit and maybe cut the file: decryption fails with one of our errors, and what
    was released is always a whole-chunk prefix of the original plaintext."""
    bad = bytearray(SMALL_CT)
    bad[pos] ^= 1 << bit
    bad = bad[: max(0, len(bad) - cut)]
    released, exc = decrypt_partial(bytes(bad))
    assert exc is not None
    assert SMALL_DATA.startswith(released)
    assert len(released) % CHUNK_SIZE == 0


def test_swapped_chunks_fail() -> None:
    s = TRUNC_START
    c0, c1 = TRUNC_CT[s : s + ENC_CHUNK_SIZE], TRUNC_CT[s + ENC_CHUNK_SIZE : s + 2 * ENC_CHUNK_SIZE]
    bad = TRUNC_CT[:s] + c1 + c0 + TRUNC_CT[s + 2 * ENC_CHUNK_SIZE :]
    released, exc = decrypt_partial(bad)
    assert type(exc) is IntegrityError and released == b""


def test_data_after_final_chunk_fails() -> None:
    data = payload(CHUNK_SIZE)  # a full-size final chunk
    ct = encrypt_bytes(data, RECIPIENTS)
    released, exc = decrypt_partial(ct + b"x")
    assert type(exc) is IntegrityError and "trailing" in exc.message
    assert released == data  # released like age does, then refused


def test_tampered_header_mac_releases_nothing() -> None:
    _, end = parse_header_bytes(TRUNC_CT)
    mac_pos = end - 5  # inside the base64 MAC
    # The key is random per run: pick a letter that surely differs (1 run in 64 had "A" already).
    new = b"A" if TRUNC_CT[mac_pos : mac_pos + 1] != b"A" else b"B"
    released, exc = decrypt_partial(TRUNC_CT[:mac_pos] + new + TRUNC_CT[mac_pos + 1 :])
    assert isinstance(exc, HeaderMACError | FormatError) and released == b""
    # Changing the nonce changes the payload key: every chunk fails, nothing released.
    released, exc = decrypt_partial(flip(TRUNC_CT, end))
    assert type(exc) is IntegrityError and released == b""


def test_tampered_stanza_is_no_match() -> None:
    header, _ = parse_header_bytes(TRUNC_CT)
    # Third character of the stanza's body line (the wrapped file key).
    body_pos = header.mac_input.index(b"\n", len(b"age-encryption.org/v1\n")) + 3
    new = b"B" if TRUNC_CT[body_pos : body_pos + 1] != b"B" else b"C"
    bad = TRUNC_CT[:body_pos] + new + TRUNC_CT[body_pos + 1 :]
    released, exc = decrypt_partial(bad)
    assert isinstance(exc, IdentityError | FormatError) and released == b""


def test_header_mac_covers_the_header() -> None:
    """Re-signing is impossible without the file key: a reordered header fails the MAC."""
    other = X25519Identity.generate()
    ct = encrypt_bytes(b"hello", [IDENTITY.recipient(), other.recipient()])
    header, _ = parse_header_bytes(ct)
    lines = header.mac_input.split(b"\n")
    swapped = b"\n".join([lines[0], lines[3], lines[4], lines[1], lines[2], lines[5]])
    bad = swapped + ct[len(header.mac_input) :]
    with pytest.raises(HeaderMACError) as ei:
        decrypt_bytes(bad, [IDENTITY])
    assert ei.value.message == "bad header mac"
    assert decrypt_bytes(ct, [other]) == b"hello"


def test_wrong_identity_and_not_age() -> None:
    with pytest.raises(IdentityError) as ei:
        decrypt_bytes(TRUNC_CT, [X25519Identity.generate()])
    assert ei.value.message == "no identity matched any of the file's recipients" and ei.value.hint
    with pytest.raises(FormatError) as ef:
        decrypt_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(100), [IDENTITY])
    assert ef.value.message == "not an age file" and ef.value.hint
    with pytest.raises(FormatError) as ef:
        decrypt_bytes(b"", [IDENTITY])
    assert ef.value.message == "not an age file"


def test_armored_round_trip() -> None:
    data = payload(CHUNK_SIZE + 3)
    ct = encrypt_bytes(data, RECIPIENTS, armor=True)
    assert ct.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
    assert ct.endswith(b"-----END AGE ENCRYPTED FILE-----\n")
    assert max(len(line) for line in ct.split(b"\n")) <= 64
    assert decrypt_bytes(ct, [IDENTITY]) == data
    assert decrypt_bytes(b"\r\n \t\n" + ct.replace(b"\n", b"\r\n") + b"\n  ", [IDENTITY]) == data
