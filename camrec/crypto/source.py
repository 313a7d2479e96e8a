"""A small buffered reader over any binary file-like object.

The header parser needs lines and peeks; the payload reader needs bulk `readinto` without
extra copies. `io.BufferedReader` would need a raw stream, and callers hand us BytesIO,
sockets' makefile() objects, our own ArmorReader... so this wraps anything with `read()`
(and uses `readinto()` when present). Bytes read ahead for a line are handed out first by
later reads, so nothing is lost between header and payload.
"""

from __future__ import annotations

from typing import Protocol


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


_READ_SIZE = 1 << 16


class ByteSource:
    """Buffered view of `src` with peek / read_line / read_exact / readinto."""

    def __init__(self, src: Readable) -> None:
        self._src = src
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self._readinto = getattr(src, "readinto", None)

    def _fill(self, want: int) -> None:
        """Make at least `want` bytes available in the buffer, or hit EOF."""
        while len(self._buf) - self._pos < want and not self._eof:
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            chunk = self._src.read(max(_READ_SIZE, want - len(self._buf)))
            if not chunk:
                self._eof = True
            else:
                self._buf += chunk

    def peek(self, n: int) -> bytes:
        """Up to n bytes without consuming them (fewer only at EOF)."""
        self._fill(n)
        return bytes(self._buf[self._pos : self._pos + n])

    def read_line(self, limit: int) -> bytes:
        """One line including its b'\\n'; at EOF the partial last line (maybe b'').

        Reads at most `limit` bytes: a longer line comes back without its newline, which
        the caller treats as malformed. This bounds memory on garbage input.
        """
        start = self._pos
        scanned = 0
        while True:
            idx = self._buf.find(b"\n", start + scanned, start + limit)
            if idx >= 0:
                line = bytes(self._buf[start : idx + 1])
                self._pos = idx + 1
                return line
            scanned = len(self._buf) - start
            if scanned >= limit or self._eof:
                end = min(len(self._buf), start + limit)
                line = bytes(self._buf[start:end])
                self._pos = end
                return line
            self._fill(scanned + 1)
            start = self._pos  # _fill may have compacted the buffer

    def read_exact(self, n: int) -> bytes:
        """n bytes, or fewer only if the source ends first."""
        self._fill(n)
        out = bytes(self._buf[self._pos : self._pos + n])
        self._pos += len(out)
        return out

    def readinto(self, b: memoryview) -> int:
        """Like RawIOBase.readinto: buffered bytes first, then straight from the source."""
        if self._pos < len(self._buf):
            n = min(len(b), len(self._buf) - self._pos)
            b[:n] = self._buf[self._pos : self._pos + n]
            self._pos += n
            if self._pos == len(self._buf):
                self._buf.clear()
                self._pos = 0
            return n
        if self._eof or not len(b):
            return 0
        if self._readinto is not None:
            got = self._readinto(b)
            n = 0 if got is None else int(got)
        else:
            chunk = self._src.read(len(b))
            n = len(chunk)
            b[:n] = chunk
        if n == 0:
            self._eof = True
        return n

    def read(self, n: int = -1) -> bytes:
        """File-like read, so a ByteSource can itself feed another reader."""
        if n < 0:
            parts = [self.read_exact(len(self._buf) - self._pos)]
            while chunk := self._src.read(_READ_SIZE):
                parts.append(chunk)
            self._eof = True
            return b"".join(parts)
        if self._pos < len(self._buf):
            return self.read_exact(min(n, len(self._buf) - self._pos))
        if self._eof or n == 0:
            return b""
        chunk = self._src.read(n)
        if not chunk:
            self._eof = True
        return chunk
