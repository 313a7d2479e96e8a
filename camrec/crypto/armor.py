"""ASCII armor for age files: strict PEM, type "AGE ENCRYPTED FILE", 64 columns.

Armor is malleable unless parsed strictly, so (like age) the reader accepts only: optional
whitespace before the BEGIN line and after the END line (at most 1 KiB each), LF or CRLF
line ends, full 64-column lines of canonical padded base64 except a shorter last one, and
nothing else: no headers, no blank lines, no checksum, no spaces inside the block.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import BinaryIO

from camrec.crypto.source import ByteSource
from camrec.errors import FormatError

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS = 64
BYTES_PER_LINE = 48
_MAX_WHITESPACE = 1024
_LINE_LIMIT = 2 * _MAX_WHITESPACE  # long enough for any legal line; longer ones are errors
_PADDED_B64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE = b" \t\r\n\x0b\x0c"


class ArmorError(FormatError):
    """The ASCII armor around an age file is malformed."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(
            f"invalid armor: {message}",
            hint or "the armored file was altered or damaged (only whitespace may surround it)",
        )


def looks_armored(prefix: bytes) -> bool:
    """True if prefix (the first bytes of a file) looks like PEM armor.

    Any "-----" start after optional whitespace counts, not just the exact BEGIN line, so
    that a mangled or foreign PEM block is reported as bad armor rather than as "not an age
    file". (A binary age file always starts with "age-encryption.org/".)
    """
    return prefix.lstrip(_WHITESPACE).startswith(b"-----")


def _decode_line(line: bytes) -> bytes:
    if len(line) % 4 or not _PADDED_B64.fullmatch(line):
        raise ArmorError("invalid base64 line")
    try:
        data = base64.b64decode(line, validate=True)
    except binascii.Error:
        raise ArmorError("invalid base64 line") from None
    if base64.b64encode(data) != line:
        raise ArmorError("non-canonical base64")
    return data


class ArmorReader:
    """Decodes an armored age file incrementally; a file-like object with read()/readinto()."""

    def __init__(self, src: ByteSource | BinaryIO) -> None:
        self._src = src if isinstance(src, ByteSource) else ByteSource(src)
        self._started = False
        self._done = False
        self._error: ArmorError | None = None
        self._pending = memoryview(b"")

    def _line(self) -> bytes:
        raw = self._src.read_line(_LINE_LIMIT)
        if not raw:
            raise ArmorError("unexpected end of file")
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return raw

    def _finish(self) -> None:
        """After the END line: only a bounded amount of whitespace may follow."""
        self._done = True
        rest = self._src.read_exact(_MAX_WHITESPACE)
        if rest.strip(_WHITESPACE):
            self._error = ArmorError("trailing data after the armored file")
        elif len(rest) == _MAX_WHITESPACE:
            self._error = ArmorError("too much trailing whitespace")

    def _next_block(self) -> bytes:
        if not self._started:
            skipped = 0
            while True:
                line = self._line()
                if not line.strip(_WHITESPACE):
                    skipped += len(line) + 1
                    if skipped > _MAX_WHITESPACE:
                        raise ArmorError("too much leading whitespace")
                    continue
                if line != BEGIN:
                    raise ArmorError("first line is not '-----BEGIN AGE ENCRYPTED FILE-----'")
                self._started = True
                break
        line = self._line()
        if line == END:
            self._finish()
            return b""
        if not line:
            raise ArmorError("empty line in armored data")
        if len(line) > COLUMNS:
            raise ArmorError("line longer than 64 columns")
        data = _decode_line(line)
        if len(data) < BYTES_PER_LINE:
            # A short line is the last one: the END line must follow immediately.
            if self._line() != END:
                raise ArmorError("a short line must be followed by the END line")
            self._finish()
        return data

    def _refill(self) -> bool:
        """Load the next decoded line into _pending; False at the end of the armored data."""
        while not self._pending:
            if self._error is not None:
                # Deferred so the bytes decoded before a trailing-garbage error are still
                # delivered first, as age does; the error then surfaces on the next read.
                raise self._error
            if self._done:
                return False
            try:
                self._pending = memoryview(self._next_block())
            except ArmorError as e:
                self._error = e
                raise
        return True

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while (n < 0 or len(out) < n) and self._refill():
            take = len(self._pending) if n < 0 else min(n - len(out), len(self._pending))
            out += self._pending[:take]
            self._pending = self._pending[take:]
        return bytes(out)

    def readinto(self, b: memoryview | bytearray) -> int:
        mv = memoryview(b).cast("B")
        got = 0
        while got < len(mv) and self._refill():
            take = min(len(mv) - got, len(self._pending))
            mv[got : got + take] = self._pending[:take]
            self._pending = self._pending[take:]
            got += take
        return got


def armor_bytes(data: bytes) -> bytes:
    """Armor a complete age file (what `age -a` writes)."""
    b64 = base64.b64encode(data)
    lines = [b64[i : i + COLUMNS] for i in range(0, len(b64), COLUMNS)]
    return b"\n".join([BEGIN, *lines, END]) + b"\n"


class ArmorWriter:
    """Armors a stream as it is written: wrap the output file with it, then give it to AgeWriter."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._carry = bytearray()
        self._closed = False
        out.write(BEGIN + b"\n")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("write to a closed ArmorWriter")
        self._carry += data
        full = len(self._carry) // BYTES_PER_LINE * BYTES_PER_LINE
        if full:
            b64 = base64.b64encode(self._carry[:full])
            del self._carry[:full]
            self._out.write(b"".join(b64[i : i + COLUMNS] + b"\n" for i in range(0, len(b64), COLUMNS)))
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        """Writes the last line and the END line; does not close the underlying file."""
        if self._closed:
            return
        self._closed = True
        tail = base64.b64encode(self._carry) + b"\n" if self._carry else b""
        self._out.write(tail + END + b"\n")
        self._out.flush()
