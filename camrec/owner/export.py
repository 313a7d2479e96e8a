"""Owner-side export: select clips → decrypt (streaming) → remux to a plain, playable MP4.

Decryption runs in a thread that writes plaintext into a pipe; PyAV demuxes from the other end, so
a clip is never held whole in memory and plaintext only ever lands in the owner's chosen output,
written to a temporary name and renamed into place (no half-written .mp4 is ever visible).
A clip cut short by a crash (no final age chunk) is exported up to its last complete fragment:
the decrypted stream passes through `FragmentGate`, which hands the demuxer only whole top-level
MP4 boxes and each `moof` only together with its `mdat`, so what FFmpeg sees always ends at a
fragment boundary. Without it, a fragment whose `mdat` was cut would reach the output as packets
pointing past the end of the data (FFmpeg then either errors or writes damaged frames).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import av

from camrec.crypto.stream import decrypt_stream
from camrec.errors import CamrecError, FormatError, StorageError, TruncatedError
from camrec.store.layout import fsync_dir

log = logging.getLogger(__name__)


class _PipeReader:
    """Read-only, non-seekable view of a pipe for PyAV (no `seek`: FFmpeg then reads straight through)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)


class FragmentGate:
    """A write-only filter that passes on complete MP4 boxes only, holding `moof` until its `mdat`.

    Box sizes are read from the (authenticated) plaintext itself; an incomplete box at the end is
    held back and dropped by close(). Anything that does not look like MP4 boxes (a size field
    smaller than the box header, or size 0, "to the end of the file") switches the gate to
    pass-through, so the demuxer reports the problem rather than the gate hiding it.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._buf = bytearray()
        self._passthrough = False
        self.dropped = 0  # bytes of an incomplete trailing fragment that close() discarded

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if self._passthrough:
            self._out.write(data)
            return n
        buf = self._buf
        buf += data
        pos = release = 0
        while len(buf) - pos >= 8:
            size = int.from_bytes(buf[pos : pos + 4], "big")
            header = 8
            if size == 1:  # 64-bit "largesize" follows the type
                if len(buf) - pos < 16:
                    break
                size, header = int.from_bytes(buf[pos + 8 : pos + 16], "big"), 16
            if size < header:
                self._passthrough = True
                release = len(buf)
                break
            if len(buf) - pos < size:
                break
            kind = bytes(buf[pos + 4 : pos + 8])
            pos += size
            # A fragment is complete when its mdat is; every other box stands alone.
            if kind != b"moof":
                release = pos
        if release:
            self._out.write(buf[:release])
            del buf[:release]
        return n

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self.dropped = len(self._buf)
        self._buf = bytearray()
        self._out.close()


class OutputError(StorageError):
    """The output (not the clip) can't be written: every further clip would fail the same way."""


class _DecryptThread(threading.Thread):
    def __init__(self, src: Path, identities: Sequence[Any], out: BinaryIO, src_file: BinaryIO | None) -> None:
        super().__init__(daemon=True, name="decrypt")
        self.src, self.identities, self.out, self.src_file = src, identities, out, src_file
        self.error: BaseException | None = None
        self.plaintext_bytes = 0

    def run(self) -> None:
        gate = FragmentGate(self.out)
        try:
            with self.src_file if self.src_file is not None else open(self.src, "rb") as f:
                self.plaintext_bytes = decrypt_stream(f, self.identities, gate)  # type: ignore[arg-type]
        except TruncatedError as exc:
            self.plaintext_bytes = exc.authenticated_bytes
            self.error = exc
        except BrokenPipeError:
            pass  # the demuxer stopped reading (it failed; its error is reported instead)
        except BaseException as exc:
            self.error = exc
        finally:
            with contextlib.suppress(OSError):
                gate.close()


@dataclass
class RemuxResult:
    packets: int
    duration: float
    truncated: bool


def create_private(path: Path) -> int:
    """Creates `path` for plaintext: new (O_EXCL, so never a file or link already there) and 0600
    whatever the umask. Raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


def remux_encrypted(src: Path, identities: Sequence[Any], dest: Path, *,
                    src_file: BinaryIO | None = None) -> RemuxResult:
    """Decrypts the age-encrypted fMP4 `src` and writes a standard MP4 at `dest` atomically.

    `src_file`: `src` already opened (the owner's tools open store files without following links,
    camrec/store/untrusted.py); it is closed here. `dest` is replaced, never written through:
    whether an existing `dest` may be replaced is the caller's decision.
    Raises OutputError when the output can't be written.
    """
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        # Made here, 0600, before FFmpeg opens it by name (FFmpeg would create it with the umask).
        os.close(create_private(tmp))
    except OSError as exc:
        if src_file is not None:
            src_file.close()
        raise OutputError(f"cannot write to {dest.parent}: {exc.strerror or exc}",
                          hint="nothing was exported; choose a writable output directory with -o") from None
    r_fd, w_fd = os.pipe()
    reader = os.fdopen(r_fd, "rb")
    decrypt = _DecryptThread(src, identities, os.fdopen(w_fd, "wb"), src_file)
    decrypt.start()
    result = RemuxResult(0, 0.0, False)
    demux_error: Exception | None = None
    try:
        try:
            result = _remux(_PipeReader(reader), tmp)
        except (av.error.FFmpegError, ValueError, StopIteration) as exc:
            demux_error = exc
        finally:
            reader.close()  # unblocks the decrypt thread if the demuxer gave up early
            decrypt.join()
        err = decrypt.error
        if isinstance(err, TruncatedError):
            result.truncated = True
        elif isinstance(err, CamrecError):
            raise err
        elif err is not None:
            raise StorageError(f"cannot read {src}: {err}")
        if result.packets == 0:
            if result.truncated:
                raise TruncatedError(f"{src.name}: cut short by a crash before its first complete video fragment; "
                                     "there is no video to export", hint="nothing was written")
            if demux_error is not None:
                raise FormatError(f"{src.name}: decrypted, but it is not a video clip ({demux_error})")
            raise FormatError(f"{src.name}: no video in this clip")
        try:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except OSError as exc:
            raise OutputError(f"cannot write {dest}: {exc.strerror or exc}") from None
        with contextlib.suppress(OSError):
            fsync_dir(dest.parent)
        return result
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _remux(reader: _PipeReader, tmp: Path) -> RemuxResult:
    packets = 0
    first: int | None = None
    last_end = 0
    with av.open(reader, "r", format="mp4") as inp:
        if not inp.streams.video:
            raise ValueError("no video stream")
        in_stream = inp.streams.video[0]
        try:
            out = av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"})
        except OSError as exc:  # PyAV's errno errors are OSErrors: the output, not the clip
            raise OutputError(f"cannot write {tmp.parent}: {exc.strerror or exc}") from None
        with out:
            out_stream = out.add_stream_from_template(in_stream)
            try:
                for packet in inp.demux(in_stream):
                    if packet.dts is None:  # demuxer flush packet
                        continue
                    if first is None:
                        first = packet.pts
                    last_end = max(last_end, (packet.pts or 0) + (packet.duration or 0))
                    packet.stream = out_stream
                    try:
                        out.mux(packet)
                    except OSError as exc:  # disk full, I/O error: not a damaged clip
                        raise OutputError(f"cannot write {tmp.parent}: {exc.strerror or exc}") from None
                    packets += 1
            except (av.error.FFmpegError, ValueError):
                # A truncated last fragment: keep everything before it.
                if packets == 0:
                    raise
            tb = in_stream.time_base or 0
            duration = float((last_end - (first or 0)) * tb) if packets else 0.0
    return RemuxResult(packets, duration, False)
