"""Header encoding/parsing and armor, below the level of whole files."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from camrec.crypto.age import (
    Stanza,
    b64decode,
    b64encode,
    encode_header,
    header_mac,
    parse_header,
    parse_header_bytes,
)
from camrec.crypto.armor import ArmorError, ArmorReader, ArmorWriter, armor_bytes
from camrec.crypto.source import ByteSource
from camrec.errors import FormatError

ARG = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80)
STANZA = st.builds(Stanza, ARG, st.lists(ARG, max_size=4), st.binary(max_size=300))


@given(st.lists(STANZA, min_size=1, max_size=5), st.binary(min_size=16, max_size=16), st.binary(max_size=50))
def test_header_round_trip(stanzas: list[Stanza], file_key: bytes, rest: bytes) -> None:
    raw = encode_header(stanzas, file_key)
    header, end = parse_header_bytes(raw + rest)
    assert end == len(raw)
    assert header.stanzas == stanzas
    assert header.mac == header_mac(file_key, header.mac_input)
    assert header.encode() == raw
    # The payload starts exactly after the header, even when read through a ByteSource.
    src = ByteSource(io.BytesIO(raw + rest))
    parse_header(src)
    assert src.read() == rest


VALID = encode_header([Stanza("X25519", ["abc"], bytes(40)), Stanza("t", [], bytes(48))], bytes(16))


@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_headers_fail_only_with_format_error(edits: list[tuple[int, int]]) -> None:
    data = bytearray(VALID)
    for pos, value in edits:
        data[pos] = value
    try:
        header, end = parse_header_bytes(bytes(data))
    except FormatError:
        return
    # Whatever still parses is canonical: it re-encodes to exactly the bytes that were read.
    assert header.encode() == bytes(data[:end])


@given(st.binary(max_size=300))
def test_random_bytes_fail_only_with_format_error(data: bytes) -> None:
    with pytest.raises(FormatError):
        parse_header_bytes(data)


@pytest.mark.parametrize(("size", "lines"), [(0, 1), (1, 1), (47, 1), (48, 2), (49, 2), (96, 3)])
def test_stanza_body_always_ends_with_a_short_line(size: int, lines: int) -> None:
    encoded = Stanza("t", ["a"], bytes(size)).encode().decode()
    body_lines = encoded.split("\n")[1:-1]
    assert len(body_lines) == lines
    assert all(len(line) == 64 for line in body_lines[:-1]) and len(body_lines[-1]) < 64


def test_invalid_stanza_arguments_are_not_encoded() -> None:
    for bad in (Stanza("", []), Stanza("a b", []), Stanza("t", [""]), Stanza("t", ["é"])):
        with pytest.raises(ValueError):
            bad.encode()


@pytest.mark.parametrize("bad", ["AA==", "AB", "A", "AAA=", "AA A", "AA\n", "AA\r", "-_"])
def test_b64decode_is_strict(bad: str) -> None:
    with pytest.raises(ValueError):
        b64decode(bad)


@given(st.binary(max_size=100))
def test_b64_round_trip(data: bytes) -> None:
    assert b64decode(b64encode(data)) == data


def test_unsupported_version_and_garbage() -> None:
    with pytest.raises(FormatError, match="unsupported age format version"):
        parse_header_bytes(b"age-encryption.org/v2\n-> X\n\n--- x\n")
    with pytest.raises(FormatError, match="not an age file"):
        parse_header_bytes(b"\x00" * 10_000)
    with pytest.raises(FormatError, match="CR LF"):
        parse_header_bytes(b"age-encryption.org/v1\r\n")


@given(st.binary(max_size=500), st.lists(st.integers(1, 100), max_size=10))
def test_armor_writer_matches_armor_bytes(data: bytes, splits: list[int]) -> None:
    out = io.BytesIO()
    w = ArmorWriter(out)
    pos = 0
    for s in splits:
        w.write(data[pos : pos + s])
        pos += s
    w.write(data[pos:])
    w.close()
    assert out.getvalue() == armor_bytes(data)
    assert ArmorReader(io.BytesIO(out.getvalue())).read() == data


def test_armor_reader_rejects_trailing_garbage_after_delivering_data() -> None:
    r = ArmorReader(io.BytesIO(armor_bytes(b"hello") + b"junk\n"))
    assert r.read(5) == b"hello"
    with pytest.raises(ArmorError, match="trailing data"):
        r.read(1)
    with pytest.raises(ArmorError):  # and keeps failing
        r.read(1)
