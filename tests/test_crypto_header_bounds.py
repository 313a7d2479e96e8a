"""Issue 8, finding 10: a hostile header is bounded while it is parsed, not after.

The review's attack: an 18 MB header of tiny stanzas ("-> a" and an empty body line) made the
parser build ~3 million stanza objects, 0.5 GB and 11-17 s, before saying "header too large".
Now the stanza count and the header size are checked before each stanza is built, so the
same file is refused after reading 256 stanzas, in milliseconds and with no memory to speak of.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from camrec.crypto.age import MAX_HEADER, MAX_STANZAS, Stanza, encode_header, parse_header, parse_header_bytes
from camrec.crypto.keys import HybridIdentity, X25519Identity, identity_file_text
from camrec.crypto.source import ByteSource
from camrec.errors import FormatError

VERSION = b"age-encryption.org/v1\n"
MAC_LINE = b"--- " + b"A" * 43 + b"\n"
TINY_STANZA = b"-> a\n\n"


def tiny_stanza_header(path: Path, size: int = 18_000_000) -> Path:
    with path.open("wb") as out:
        out.write(VERSION)
        chunk = TINY_STANZA * 100_000
        for _ in range(size // len(chunk)):
            out.write(chunk)
        out.write(MAC_LINE + b"payload")
    return path


def test_eighteen_megabytes_of_tiny_stanzas_are_refused_early(tmp_path: Path) -> None:
    hostile = tiny_stanza_header(tmp_path / "hostile.age")
    assert hostile.stat().st_size > 17_000_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with hostile.open("rb") as f, pytest.raises(FormatError, match="too many recipient stanzas"):
            parse_header(ByteSource(f))
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Before the fix: 11-17 s and ~0.5 GB. The bounds leave room for a slow, shared machine.
    assert elapsed < 1.0, elapsed
    assert peak < 4 << 20, peak


def test_the_hostile_file_through_camrec_decrypt(tmp_path: Path) -> None:
    hostile = tiny_stanza_header(tmp_path / "hostile.age")
    key = tmp_path / "owner.key"
    key.write_text(identity_file_text(X25519Identity.generate()))
    key.chmod(0o600)
    out = tmp_path / "out.mp4"
    proc = subprocess.run([sys.executable, "-m", "camrec", "decrypt", "-i", str(key), str(hostile), "-o", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == FormatError.exit_code, proc.stderr
    assert proc.stderr.startswith("camrec: error: ") and "too many recipient stanzas" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_one_giant_stanza_is_refused_at_the_size_bound() -> None:
    body_line = b"A" * 64 + b"\n"
    data = VERSION + b"-> X25519 " + b"B" * 43 + b"\n" + body_line * ((MAX_HEADER // 65) + 10) + b"\n" + MAC_LINE
    with pytest.raises(FormatError, match="header too large"):
        parse_header_bytes(data)
    giant_argument = VERSION + b"-> a " + b"C" * (MAX_HEADER + 10) + b"\n\n" + MAC_LINE
    with pytest.raises(FormatError, match="header too large"):
        parse_header_bytes(giant_argument)


def test_the_bounds_leave_room_for_every_real_header() -> None:
    file_key = os.urandom(16)
    # As many post-quantum recipients as the stanza bound allows (each stanza ~1.6 KB) parse fine.
    pq = HybridIdentity.generate().recipient().wrap(file_key)[0]
    header, _ = parse_header_bytes(encode_header([pq] * MAX_STANZAS, file_key))
    assert len(header.stanzas) == MAX_STANZAS
    with pytest.raises(FormatError, match="too many recipient stanzas"):
        parse_header_bytes(encode_header([Stanza("a")] * (MAX_STANZAS + 1), file_key))


def test_bounds_are_checked_on_the_stream_not_on_a_preloaded_buffer() -> None:
    # The parser never reads further than the bound: what remains of the source is untouched.
    data = VERSION + TINY_STANZA * (MAX_STANZAS + 1000) + MAC_LINE
    stream = io.BytesIO(data)
    with pytest.raises(FormatError):
        parse_header(ByteSource(stream))
    assert stream.tell() < len(VERSION) + len(TINY_STANZA) * (MAX_STANZAS + 1) + 256 * 1024
