"""Re-keying: give existing clips a new set of recipients by rewriting only their age header.

An age file's payload is encrypted under a key derived from the file key; the header only wraps
that file key for each recipient (and MACs itself with it). So with an identity that opens the
header, the file key can be wrapped anew for other recipients and a new header written in front
of the *unchanged* payload bytes: no video is decrypted or re-encrypted, and the cost is a copy
of the file (a reflink where the filesystem supports copy_file_range sharing).

What this does and doesn't protect (README "Re-keying"): after a rekey, the old identity cannot
open the new files. Someone who kept copies of the old files, or noted their file keys, still
can: the file key and payload are unchanged. Against that, clips must be re-encrypted (decrypt
and encrypt anew), which a recorder without the identity can't do either.

Per file, atomically: write `<file>.rekey.tmp` (O_EXCL, same mode), copy the payload, fsync,
rename over the original, fsync the directory. A failure leaves the original untouched; the
temporary file is removed.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from camrec.crypto.age import (
    FILE_KEY_SIZE,
    Identity,
    Recipient,
    encode_header,
    parse_header,
    unwrap_header,
    wrap_file_key,
)
from camrec.crypto.armor import BEGIN
from camrec.crypto.source import ByteSource
from camrec.errors import FormatError, StorageError
from camrec.store.layout import fsync_dir

TMP_SUFFIX = ".rekey.tmp"
_COPY_SIZE = 8 << 20


@dataclass(frozen=True)
class RekeyResult:
    path: Path
    old_header: int  # bytes
    new_header: int

    @property
    def size_change(self) -> int:
        return self.new_header - self.old_header


@contextlib.contextmanager
def storage_lock(root: Path) -> Iterator[None]:
    """An exclusive lock that keeps two rekeys off one storage directory (flock on the directory
    itself: no lock file, so nothing but age files and the index lives under the root)."""
    import fcntl

    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StorageError(f"another rekey is running on {root}") from None
        yield
    finally:
        os.close(fd)


def check_recipients(recipients: Sequence[Recipient]) -> None:
    """Raise IdentityError now if these recipients can't share a file (empty, PQ mixed with classic)."""
    wrap_file_key(recipients, bytes(FILE_KEY_SIZE))


def _copy_rest(src: int, dst: int, offset: int, size: int) -> None:
    """Copy src[offset:size] to the end of dst, in the kernel where possible."""
    out = os.lseek(dst, 0, os.SEEK_CUR)
    left = size - offset
    use_range = hasattr(os, "copy_file_range")
    while left > 0:
        n = 0
        if use_range:
            try:
                n = os.copy_file_range(src, dst, min(left, 1 << 30), offset, out)
            except OSError:
                use_range = False  # e.g. EXDEV or an old kernel: fall back to read/write
                continue
        else:
            data = os.pread(src, min(left, _COPY_SIZE), offset)
            view = memoryview(data)
            while view:
                view = view[os.write(dst, view) :]
            n = len(data)
        if n <= 0:
            raise StorageError("the file shrank while it was being re-keyed")
        offset += n
        out += n
        left -= n
    os.lseek(dst, out, os.SEEK_SET)


def rekey_file(path: Path, identities: Sequence[Identity], recipients: Sequence[Recipient], *,
               dry_run: bool = False, remove_stale_tmp: bool = False) -> RekeyResult:
    """Rewrite path's header for `recipients`, keeping its payload byte for byte.

    Raises IdentityError (no identity opens it), FormatError (not a binary age file),
    HeaderMACError (the header was altered) and StorageError; the file is then unchanged.
    With dry_run, everything up to writing is done (the header is opened and a new one built).
    remove_stale_tmp: a leftover `<file>.rekey.tmp` is deleted rather than refused; only for a
    caller that knows no other rekey runs (it holds the storage lock, see `storage_lock`).
    """
    try:
        # Never through a link, and a FIFO can't block the open (store files are hostile input).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise StorageError(f"cannot open {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(f"{path} is not a regular file: not re-keyed")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
            src = ByteSource(f)
            if src.peek(len(BEGIN)) == BEGIN:
                # Clips are binary; re-armoring would need the payload decoded and re-encoded.
                raise FormatError(f"{path.name} is ASCII-armored; only binary age files are re-keyed")
            header = parse_header(src)
        old_len = len(header.encode())
        if st.st_size < old_len:  # parse_header already refuses this; kept for clarity
            raise FormatError(f"{path.name}: truncated header")
        file_key = unwrap_header(header, identities)
        new_header = encode_header(wrap_file_key(recipients, file_key), file_key)
        result = RekeyResult(path, old_len, len(new_header))
        if dry_run:
            return result
        if remove_stale_tmp:
            with contextlib.suppress(FileNotFoundError):
                path.with_name(path.name + TMP_SUFFIX).unlink()
        _replace(path, fd, st, old_len, new_header)
        return result
    finally:
        os.close(fd)


def _replace(path: Path, fd: int, st: os.stat_result, old_len: int, new_header: bytes) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, st.st_mode & 0o777)
    except FileExistsError:
        raise StorageError(f"{tmp} already exists", hint="another rekey is running, or an earlier one "
                           "was killed: if none is running, delete the .rekey.tmp file") from None
    except OSError as exc:
        raise StorageError(f"cannot create {tmp}: {exc.strerror}") from None
    done = False
    try:
        with contextlib.suppress(PermissionError):
            os.fchown(out, st.st_uid, st.st_gid)  # keeps the service user's group when run as root
        view = memoryview(new_header)
        while view:
            view = view[os.write(out, view) :]
        _copy_rest(fd, out, old_len, st.st_size)
        now = os.fstat(fd)
        if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            raise StorageError(f"{path} changed while it was being re-keyed", hint="is the recorder writing it?")
        if os.fstat(out).st_size != st.st_size - old_len + len(new_header):
            raise StorageError(f"short copy while re-keying {path}")
        # Keep the times: backups and `ls -t` keep seeing the clip's original age.
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.fsync(out)
        os.close(out)
        out = -1
        # Retention may have deleted the clip meanwhile: don't bring it back (the window left
        # between this check and the rename is microseconds).
        try:
            current = os.stat(path)
        except FileNotFoundError:
            raise StorageError(f"{path} was deleted while it was being re-keyed") from None
        if (current.st_dev, current.st_ino) != (st.st_dev, st.st_ino):
            raise StorageError(f"{path} was replaced while it was being re-keyed")
        os.replace(tmp, path)
        done = True
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"cannot re-key {path}: {exc.strerror or exc}") from None
    finally:
        if out >= 0:
            os.close(out)
        if not done:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
