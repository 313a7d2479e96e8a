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

Speed (see `camrec bench crypto`): both sides hand each chunk straight to OpenSSL through one
ChaCha20Poly1305 object per file, sealing/opening with encrypt_into/decrypt_into into one
reused batch buffer of up to 16 chunks, which then goes out in a single write(). Per 64 KiB
chunk that leaves one OpenSSL call and no Python-level allocation or copy; per ~1 MiB, one
read and one write system call. decrypt_into writes plaintext into the buffer *before* the tag
is checked, so a chunk's bytes count as released only once its call returned; a failed
chunk's region is wiped and never handed to the caller.
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
# Chunks per batch: the reader pulls this many encrypted chunks per read call and the writer
# seals up to this many into one write() (~1 MiB: large enough to amortise the system calls,
# small enough to stay in the CPU cache next to the input).
_BATCH = 16
_LAST = b"\x01"
_NOT_LAST = b"\x00"

TRUNCATED_HINT = (
    "the file ends before its final chunk (e.g. the recorder stopped mid-clip); "
    "everything before the cut was authenticated and released"
)
TAMPERED_HINT = "the file was altered or damaged; nothing after the last authentic chunk was released"


class PayloadTruncatedError(TruncatedError):
    """TruncatedError with where the cut is: the file ends without its final chunk.

    `authenticated_bytes` (plaintext released) and `ciphertext_offset` (where in the age file,
    after any armor is removed, the authenticated part ends: header + nonce + whole chunks)
    let a salvage report the cut precisely; `chunks` counts the authenticated chunks.
    """

    def __init__(self, message: str, hint: str | None, authenticated_bytes: int, ciphertext_offset: int,
                 chunks: int, inside_chunk: bool) -> None:
        super().__init__(message, hint, authenticated_bytes)
        self.ciphertext_offset = ciphertext_offset
        self.chunks = chunks
        # True when a piece of a chunk follows the authenticated part: a write cut short, or
        # a damaged short final chunk (the two can't be told apart, see the module doc).
        self.inside_chunk = inside_chunk


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

    `out` needs write() and flush(); like every io object, it must not keep a reference to the
    buffer it is given once write() returns (the writer reuses that buffer). The header and
    payload nonce are written (and flushed) by the constructor. Each full 64 KiB chunk is
    sealed and written as soon as at least one more byte follows it, so at most one chunk of
    plaintext is ever held in memory. close() seals the held-back data as the final chunk and
    flushes; it does not close `out` (the caller owns it, e.g. to fsync and rename).

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
        # Allocated on the first sealed chunk: small files (thumbnails) never need one.
        self._batch: memoryview | None = None
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

    def _emit(self, data: memoryview | bytes) -> None:
        try:
            _write_all(self._out, data)
        except BaseException:
            # A failed write leaves an unknown amount of ciphertext in `out`; continuing
            # would produce garbage, so the writer refuses further use.
            self._failed = True
            raise
        self._written += len(data)

    def _seal_full(self, mv: memoryview) -> None:
        """Seal mv (a whole number of full, non-final chunks) in batches, one write per batch."""
        # Sized by use: the recorder seals one chunk at a time and keeps a one-chunk buffer per
        # open clip; large writes (exports, benchmarks) grow it to a full batch once.
        want = min(len(mv) // CHUNK_SIZE, _BATCH) * ENC_CHUNK_SIZE
        if self._batch is None or len(self._batch) < want:
            self._batch = memoryview(bytearray(want))
        batch, aead = self._batch, self._aead
        for start in range(0, len(mv), _BATCH * CHUNK_SIZE):
            part = mv[start : start + _BATCH * CHUNK_SIZE]
            n = len(part) // CHUNK_SIZE
            for i in range(n):
                nonce = (self._counter + i).to_bytes(11, "big") + _NOT_LAST
                aead.encrypt_into(nonce, part[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE], None,
                                  batch[i * ENC_CHUNK_SIZE : (i + 1) * ENC_CHUNK_SIZE])
            self._emit(batch[: n * ENC_CHUNK_SIZE])
            self._counter += n

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
            self._seal_full(memoryview(pending))
            pending.clear()
        # Seal every full chunk that is followed by at least one more byte; keep the rest
        # (1 .. CHUNK_SIZE bytes), which might turn out to be the final chunk.
        full = (len(mv) - 1) // CHUNK_SIZE
        if full:
            self._seal_full(mv[: full * CHUNK_SIZE])
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
        nonce = self._counter.to_bytes(11, "big") + _LAST
        self._emit(self._aead.encrypt(nonce, self._pending, None))
        self._counter += 1
        self._pending = bytearray()
        self._batch = None
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


def _truncated(released: int, chunks: int, payload_start: int, inside_chunk: bool) -> PayloadTruncatedError:
    what = "file is truncated or its last chunk is damaged" if inside_chunk else "file is truncated"
    offset = payload_start + chunks * ENC_CHUNK_SIZE
    return PayloadTruncatedError(
        f"{what} (after {released} authenticated bytes, at byte {offset} of the file)",
        TRUNCATED_HINT, released, offset, chunks, inside_chunk,
    )


def _iter_plaintext(src: ByteSource, key: bytes, payload_start: int) -> Iterator[memoryview]:
    """Yield authenticated plaintext in order; raise (see module doc) at a bad end.

    Each item is one or more whole chunks, as a view into a buffer that is reused: it is valid
    only until the next item is requested. Plaintext is yielded only after its tag verified,
    and before anything later is looked at, so whatever the consumer has received when an
    error is raised is exactly the authenticated prefix. `payload_start` (header + nonce
    size) only serves to report where a cut is.
    """
    aead = ChaCha20Poly1305(key)
    cap = _BATCH * ENC_CHUNK_SIZE + 1  # +1: a chunk is non-final iff a byte follows it
    view = memoryview(bytearray(cap))
    plain = memoryview(bytearray(_BATCH * CHUNK_SIZE))
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
        done = 0  # plaintext bytes of this batch that authenticated
        error: IntegrityError | None = None
        # Every full chunk followed by at least one more byte is a non-final chunk.
        while filled - pos > ENC_CHUNK_SIZE:
            ct = view[pos : pos + ENC_CHUNK_SIZE]
            out = plain[done : done + CHUNK_SIZE]
            prefix = counter.to_bytes(11, "big")
            try:
                aead.decrypt_into(prefix + _NOT_LAST, ct, None, out)
            except InvalidTag:
                try:
                    # A full final chunk followed by more data: release it, then refuse
                    # the trailing data (age's behaviour, which the testkit pins down).
                    aead.decrypt_into(prefix + _LAST, ct, None, out)
                except InvalidTag:
                    out[:] = bytes(CHUNK_SIZE)  # decrypt_into wrote unauthenticated bytes here
                    error = IntegrityError(f"payload chunk {counter} failed authentication", TAMPERED_HINT)
                else:
                    done += CHUNK_SIZE
                    error = IntegrityError("trailing data after the final chunk", TAMPERED_HINT)
                break
            done += CHUNK_SIZE
            counter += 1
            pos += ENC_CHUNK_SIZE
        if done:
            yield plain[:done]
            released += done
        if error is not None:
            raise error
        if not eof:
            # Keep the unprocessed tail (<= one chunk; one byte when the batch was full) and
            # read more behind it.
            tail = bytes(view[pos:filled])
            view[: len(tail)] = tail
            filled = len(tail)
            continue
        # At EOF: what is left (0 .. ENC_CHUNK_SIZE bytes) must be the final chunk.
        rest = view[pos:filled]
        if not rest:
            raise _truncated(released, counter, payload_start, inside_chunk=False)
        prefix = counter.to_bytes(11, "big")
        if len(rest) == ENC_CHUNK_SIZE:
            try:
                pt = aead.decrypt(prefix + _NOT_LAST, rest, None)
            except InvalidTag:
                pass
            else:
                # A valid non-final chunk and then nothing: the file was cut at a chunk
                # boundary.
                yield memoryview(pt)
                released += len(pt)
                raise _truncated(released, counter + 1, payload_start, inside_chunk=False)
            try:
                pt = aead.decrypt(prefix + _LAST, rest, None)
            except InvalidTag:
                raise IntegrityError(f"payload chunk {counter} failed authentication", TAMPERED_HINT) from None
            yield memoryview(pt)
            return
        if len(rest) < TAG_SIZE:
            raise _truncated(released, counter, payload_start, inside_chunk=True)
        try:
            pt = aead.decrypt(prefix + _LAST, rest, None)
        except InvalidTag:
            raise _truncated(released, counter, payload_start, inside_chunk=True) from None
        if not pt and counter:
            raise IntegrityError("the final chunk is empty", TAMPERED_HINT)
        yield memoryview(pt)
        return


class AgeReader(io.RawIOBase):
    """A readable file object over the plaintext of an age file, decrypted on the fly.

    The header is parsed and the file key found in the constructor (so IdentityError /
    FormatError / IntegrityError for the header surface there). Reads return plaintext
    only once its chunk authenticated; at a bad end of payload, read() first returns all
    authenticated bytes and then raises TruncatedError / IntegrityError, and keeps raising
    it on later calls (it never turns into a clean EOF). Armor is detected automatically
    unless `armor` is given. Use `chunks()` to iterate chunk by chunk.
    """

    def __init__(self, src: Readable, identities: Sequence[Identity], *, armor: bool | None = None) -> None:
        super().__init__()
        self.header, payload, key = _open(src, identities, armor)
        self._batches = _iter_plaintext(payload, key, len(self.header.encode()) + NONCE_SIZE)
        # Views into the generator's reused buffer: the current chunk and the rest of its
        # batch, both consumed completely before the next batch is requested (which is
        # what keeps them valid).
        self._current = memoryview(b"")
        self._batch = memoryview(b"")
        self._error: BaseException | None = None
        self._done = False
        self.plaintext_bytes = 0

    def readable(self) -> bool:
        return True

    def _next(self) -> memoryview | None:
        """The next authenticated chunk (a view), or None at a clean end."""
        if self._batch:
            chunk, self._batch = self._batch[:CHUNK_SIZE], self._batch[CHUNK_SIZE:]
            return chunk
        if self._error is not None:
            raise self._error
        if self._done:
            return None
        try:
            batch = next(self._batches)
        except StopIteration:
            self._done = True
            return None
        except BaseException as e:
            self._error = e
            raise
        self.plaintext_bytes += len(batch)
        chunk, self._batch = batch[:CHUNK_SIZE], batch[CHUNK_SIZE:]
        return chunk

    def chunks(self) -> Iterator[bytes]:
        """Iterate the remaining plaintext chunk by chunk (up to 64 KiB each, as new bytes)."""
        if self._current:
            rest, self._current = bytes(self._current), memoryview(b"")
            yield rest
        while (chunk := self._next()) is not None:
            yield bytes(chunk)

    def readinto(self, b: memoryview | bytearray) -> int:  # type: ignore[override]
        # Like a raw stream, a read returns at most the rest of the current chunk.
        mv = memoryview(b).cast("B")
        if not self._current:
            chunk = self._next()
            if chunk is None:
                return 0
            self._current = chunk
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
    header, or cut inside the header or nonce; ArmorError for bad armor), HeaderMACError (an
    IntegrityError: header altered), IntegrityError (a chunk failed authentication: nothing
    from it was written) and PayloadTruncatedError, a TruncatedError (no final chunk: every
    authenticated chunk was written first; its `authenticated_bytes` equals what was written
    and its `ciphertext_offset` says where in the file the authenticated part ends).

    `salvage` does not change what is written or raised: a truncated clip always yields its
    authenticated prefix followed by TruncatedError, so the caller decides whether that is
    an expected outcome (salvage) or a failure. It only adjusts the hint.

    `dst` gets up to ~1 MiB per write() and must not keep a reference to the buffer.
    """
    header, payload, key = _open(src, identities, armor)
    written = 0
    try:
        for batch in _iter_plaintext(payload, key, len(header.encode()) + NONCE_SIZE):
            _write_all(dst, batch)
            written += len(batch)
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
