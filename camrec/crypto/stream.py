"""The age payload: STREAM encryption in 64 KiB chunks, written and read incrementally.

Payload = 16-byte random nonce, then chunks. payload key = HKDF-SHA-256(file key,
salt=nonce, info="payload"); chunk i is ChaCha20-Poly1305 with nonce = i as 11 big-endian
bytes || 0x01 if it is the final chunk else 0x00. The final chunk may be short; it is empty
only when the whole payload is.

Writer: a chunk can only be sealed once we know whether it is the last, so AgeWriter holds
back at most one chunk of plaintext: a full chunk is sealed as soon as one more byte arrives.
A recorder killed mid-clip therefore leaves a file of complete non-final chunks (plus perhaps
a partly written one) and no final chunk.

Reader: plaintext is released one authenticated chunk at a time and never before its tag
verified. How the payload can end, and what the reader reports:
  * a valid final chunk then EOF                           -> success
  * EOF right after a non-final chunk (or no chunk at all) -> TruncatedError
  * a trailing piece shorter than a chunk that does not authenticate as the final chunk
                                                           -> TruncatedError (see below)
  * a full-size chunk that fails authentication            -> IntegrityError
  * data after the final chunk, or an empty final chunk    -> IntegrityError (after
    releasing the final chunk, as age does)
A trailing partial chunk is what a crash mid-write leaves, and it is cryptographically
indistinguishable from a damaged short final chunk, so both are reported as truncation:
"file is truncated or its last chunk is damaged". That gives an attacker nothing they could
not get by cutting the file, and the error still fails decryption. TruncatedError always
carries `authenticated_bytes`, the exact amount of plaintext released before it.

Both sides hand each chunk straight to OpenSSL through one ChaCha20Poly1305 object per file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from camrec.crypto.age import (
    FILE_KEY_SIZE,
    Header,
    Identity,
    Recipient,
    encode_header,
    hkdf_sha256,
    parse_header,
    unwrap_header,
    wrap_file_key,
)
from camrec.crypto.armor import BEGIN, ArmorReader, ArmorWriter, looks_armored
from camrec.crypto.source import ByteSource, Readable
from camrec.errors import FormatError, IntegrityError, TruncatedError

CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENC_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
NONCE_SIZE = 16
# How many encrypted chunks the reader pulls from the source per read call (~1 MiB).
_READ_BATCH = 16
_LAST = b"\x01"
_NOT_LAST = b"\x00"

TRUNCATED_HINT = (
    "the file ends before its final chunk (e.g. the recorder stopped mid-clip); "
    "everything before the cut was authenticated and released"
)
TAMPERED_HINT = "the file was altered or damaged; nothing after the last authentic chunk was released"


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    return hkdf_sha256(file_key, nonce, b"payload")


def _write_all(out: BinaryIO, data: bytes | memoryview) -> None:
    """out.write, looping on short writes (raw, unbuffered files may take less)."""
    n = out.write(data)
    if n is None or n >= len(data):
        return
    view = memoryview(data)[n:]
    while view:
        n = out.write(view)
        if n is None:
            return
        if n <= 0:
            raise OSError("write made no progress")
        view = view[n:]


def encrypted_size(plaintext_size: int, header_size: int = 0) -> int:
    """Size of an age file with plaintext_size bytes of payload (header size given)."""
    chunks = max(1, -(-plaintext_size // CHUNK_SIZE))
    return header_size + NONCE_SIZE + plaintext_size + chunks * TAG_SIZE


class AgeWriter:
    """Writes one age file incrementally to a binary file object.

    `out` needs write() and flush(). The header and payload nonce are written (and flushed)
    by the constructor. Each full 64 KiB chunk is sealed and written as soon as at least
    one more byte follows it, so at most one chunk of plaintext is ever held in memory.
    close() seals the held-back data as the final chunk and flushes; it does not close
    `out` (the caller owns it, e.g. to fsync and rename).

    As a context manager, a clean exit closes the writer; an exception leaves the file
    without a final chunk, so readers see it as truncated rather than complete.
    """

    def __init__(self, out: BinaryIO, recipients: Sequence[Recipient]) -> None:
        file_key = os.urandom(FILE_KEY_SIZE)
        header = encode_header(wrap_file_key(recipients, file_key), file_key)
        nonce = os.urandom(NONCE_SIZE)
        self._aead = ChaCha20Poly1305(payload_key(file_key, nonce))
        self._out = out
        self._counter = 0
        self._pending = bytearray()
        self._plaintext = 0
        self._closed = False
        self._failed = False
        self.header_size = len(header)
        _write_all(out, header + nonce)
        out.flush()
        self._written = len(header) + NONCE_SIZE

    @property
    def bytes_written(self) -> int:
        """Ciphertext bytes written to `out` so far, header included."""
        return self._written

    @property
    def plaintext_bytes(self) -> int:
        """Plaintext accepted by write() so far (including any held-back bytes)."""
        return self._plaintext

    @property
    def closed(self) -> bool:
        return self._closed

    def _seal(self, chunk: memoryview | bytearray, last: bool) -> None:
        # encrypt() returns a fresh bytes object, so `out` may keep a reference to what it
        # was given (some writers queue buffers) without us overwriting it later.
        nonce = self._counter.to_bytes(11, "big") + (_LAST if last else _NOT_LAST)
        ct = self._aead.encrypt(nonce, chunk, None)
        try:
            _write_all(self._out, ct)
        except BaseException:
            # A failed write leaves an unknown amount of this chunk in `out`; continuing
            # would produce garbage, so the writer refuses further use.
            self._failed = True
            raise
        self._counter += 1
        self._written += len(ct)

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError("write to a closed AgeWriter")
        if self._failed:
            raise ValueError("AgeWriter is unusable after a failed write")

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_usable()
        mv = memoryview(data).cast("B")
        n = len(mv)
        if not n:
            return 0
        self._plaintext += n
        pending = self._pending
        if pending:
            need = CHUNK_SIZE - len(pending)
            if n <= need:
                # Not enough to prove the pending chunk isn't the last: keep holding it.
                pending += mv
                return n
            pending += mv[:need]
            mv = mv[need:]
            self._seal(pending, last=False)
            pending.clear()
        # Seal every full chunk that is followed by at least one more byte; keep the rest
        # (1 .. CHUNK_SIZE bytes), which might turn out to be the final chunk.
        full = (len(mv) - 1) // CHUNK_SIZE
        for i in range(full):
            self._seal(mv[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE], last=False)
        pending += mv[full * CHUNK_SIZE :]
        return n

    def flush(self) -> None:
        """Flush `out`. Held-back plaintext (< 64 KiB + 1) stays held: it may be the last chunk."""
        self._out.flush()

    def close(self) -> None:
        """Seal the final chunk (empty only for an empty file) and flush. Idempotent."""
        if self._closed:
            return
        if self._failed:
            raise ValueError("AgeWriter is unusable after a failed write")
        self._seal(self._pending, last=True)
        self._pending = bytearray()
        self._closed = True
        self._out.flush()

    def __enter__(self) -> AgeWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()


def encrypt_bytes(data: bytes, recipients: Sequence[Recipient], *, armor: bool = False) -> bytes:
    """Encrypt a whole buffer; armor=True gives the ASCII-armored form (`age -a`)."""
    # BytesIO measured fastest here: it grows in place and getvalue() does not copy.
    buf = io.BytesIO()
    if armor:
        armorer = ArmorWriter(buf)
        w = AgeWriter(armorer, recipients)  # type: ignore[arg-type]
        w.write(data)
        w.close()
        armorer.close()
    else:
        w = AgeWriter(buf, recipients)
        w.write(data)
        w.close()
    return buf.getvalue()


# --- reading ----------------------------------------------------------------------------------


def _open(
    src: Readable | ByteSource, identities: Sequence[Identity], armor: bool | None
) -> tuple[Header, ByteSource, bytes]:
    """Parse the header, find the file key, read the nonce: returns (header, payload source, key)."""
    bs = src if isinstance(src, ByteSource) else ByteSource(src)
    if armor is None:
        armor = looks_armored(bs.peek(1024 + len(BEGIN)))
    if armor:
        bs = ByteSource(ArmorReader(bs))
    header = parse_header(bs)
    file_key = unwrap_header(header, identities)
    nonce = bs.read_exact(NONCE_SIZE)
    if len(nonce) != NONCE_SIZE:
        raise FormatError(
            "file too short: the payload nonce is missing",
            hint="the file was cut right after its header; it holds no video",
        )
    return header, bs, payload_key(file_key, nonce)


def _truncated(released: int, inside_chunk: bool) -> TruncatedError:
    what = "file is truncated or its last chunk is damaged" if inside_chunk else "file is truncated"
    return TruncatedError(f"{what} (after {released} authenticated bytes)", TRUNCATED_HINT, released)


def _iter_plaintext(src: ByteSource, key: bytes) -> Iterator[bytes]:
    """Yield authenticated plaintext chunks in order; raise (see module doc) at a bad end.

    A chunk is yielded only after its tag verified, and before anything later is looked at,
    so whatever the consumer has received when an error is raised is exactly the
    authenticated prefix.
    """
    aead = ChaCha20Poly1305(key)
    cap = _READ_BATCH * ENC_CHUNK_SIZE + 1  # +1: a chunk is non-final iff a byte follows it
    buf = bytearray(cap)
    view = memoryview(buf)
    filled = 0
    eof = False
    counter = 0
    released = 0
    while True:
        while filled < cap and not eof:
            n = src.readinto(view[filled:])
            if n:
                filled += n
            else:
                eof = True
        pos = 0
        # Every full chunk followed by at least one more byte is a non-final chunk.
        while filled - pos > ENC_CHUNK_SIZE:
            ct = view[pos : pos + ENC_CHUNK_SIZE]
            try:
                pt = aead.decrypt(counter.to_bytes(11, "big") + _NOT_LAST, ct, None)
            except InvalidTag:
                try:
                    # A full final chunk followed by more data: release it, then refuse
                    # the trailing data (age's behaviour, which the testkit pins down).
                    pt = aead.decrypt(counter.to_bytes(11, "big") + _LAST, ct, None)
                except InvalidTag:
                    raise IntegrityError(f"payload chunk {counter} failed authentication", TAMPERED_HINT) from None
                yield pt
                raise IntegrityError("trailing data after the final chunk", TAMPERED_HINT) from None
            yield pt
            released += len(pt)
            counter += 1
            pos += ENC_CHUNK_SIZE
        if not eof:
            # Keep the unprocessed tail (<= one chunk) and read more behind it.
            tail = bytes(view[pos:filled])
            view[: len(tail)] = tail
            filled = len(tail)
            continue
        # At EOF: what is left (0 .. ENC_CHUNK_SIZE bytes) must be the final chunk.
        rest = view[pos:filled]
        if not rest:
            raise _truncated(released, inside_chunk=False)
        prefix = counter.to_bytes(11, "big")
        if len(rest) == ENC_CHUNK_SIZE:
            try:
                pt = aead.decrypt(prefix + _NOT_LAST, rest, None)
            except InvalidTag:
                pass
            else:
                # A valid non-final chunk and then nothing: the file was cut at a chunk
                # boundary.
                yield pt
                released += len(pt)
                raise _truncated(released, inside_chunk=False)
            try:
                pt = aead.decrypt(prefix + _LAST, rest, None)
            except InvalidTag:
                raise IntegrityError(f"payload chunk {counter} failed authentication", TAMPERED_HINT) from None
            yield pt
            return
        if len(rest) < TAG_SIZE:
            raise _truncated(released, inside_chunk=True)
        try:
            pt = aead.decrypt(prefix + _LAST, rest, None)
        except InvalidTag:
            raise _truncated(released, inside_chunk=True) from None
        if not pt and counter:
            raise IntegrityError("the final chunk is empty", TAMPERED_HINT)
        yield pt
        return


class AgeReader(io.RawIOBase):
    """A readable file object over the plaintext of an age file, decrypted on the fly.

    The header is parsed and the file key found in the constructor (so IdentityError /
    FormatError / IntegrityError for the header surface there). Reads return plaintext
    only once its chunk authenticated; at a bad end of payload, read() first returns all
    authenticated bytes and then raises TruncatedError / IntegrityError, and keeps raising
    it on later calls (it never turns into a clean EOF). Armor is detected automatically
    unless `armor` is given. Use `chunks()` to iterate without copying.
    """

    def __init__(self, src: Readable, identities: Sequence[Identity], *, armor: bool | None = None) -> None:
        super().__init__()
        self.header, payload, key = _open(src, identities, armor)
        self._chunks = _iter_plaintext(payload, key)
        self._current = memoryview(b"")
        self._error: BaseException | None = None
        self._done = False
        self.plaintext_bytes = 0

    def readable(self) -> bool:
        return True

    def _next(self) -> bytes | None:
        if self._error is not None:
            raise self._error
        if self._done:
            return None
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._done = True
            return None
        except BaseException as e:
            self._error = e
            raise
        self.plaintext_bytes += len(chunk)
        return chunk

    def chunks(self) -> Iterator[bytes]:
        """Iterate the remaining plaintext chunk by chunk (up to 64 KiB each)."""
        if self._current:
            rest, self._current = bytes(self._current), memoryview(b"")
            yield rest
        while (chunk := self._next()) is not None:
            yield chunk

    def readinto(self, b: memoryview | bytearray) -> int:  # type: ignore[override]
        mv = memoryview(b).cast("B")
        if not self._current:
            chunk = self._next()
            if chunk is None:
                return 0
            self._current = memoryview(chunk)
        n = min(len(mv), len(self._current))
        mv[:n] = self._current[:n]
        self._current = self._current[n:]
        return n


def decrypt_stream(
    src: Readable,
    identities: Sequence[Identity],
    dst: BinaryIO,
    *,
    salvage: bool = False,
    armor: bool | None = None,
) -> int:
    """Decrypt src into dst; returns the number of plaintext bytes written.

    Raises IdentityError (no identity matches), FormatError (not an age file / malformed
    header; ArmorError for bad armor), HeaderMACError (an IntegrityError: header altered),
    IntegrityError (a chunk failed authentication: nothing from it was written) and
    TruncatedError (no final chunk: every authenticated chunk was written first; its
    `authenticated_bytes` equals what was written).

    `salvage` does not change what is written or raised: a truncated clip always yields its
    authenticated prefix followed by TruncatedError, so the caller decides whether that is
    an expected outcome (salvage) or a failure. It only adjusts the hint.
    """
    _, payload, key = _open(src, identities, armor)
    written = 0
    try:
        for chunk in _iter_plaintext(payload, key):
            _write_all(dst, chunk)
            written += len(chunk)
    except TruncatedError as e:
        if salvage:
            e.hint = f"salvaged the {written} authenticated bytes before the cut"
        raise
    return written


def decrypt_bytes(data: bytes, identities: Sequence[Identity], *, armor: bool | None = None) -> bytes:
    """Decrypt a whole age file held in memory (raises on truncation; see decrypt_stream)."""
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(data), identities, out, armor=armor)
    return out.getvalue()
