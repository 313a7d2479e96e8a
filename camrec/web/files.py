"""The web state directory's private files (users, sessions, TLS key): 0600, never through a link.

Written atomically (a fresh temporary file, fsynced, renamed over the old one): a crash leaves the
old file or the new one, never half of each, and a planted symlink is replaced, not written through.
Read with O_NOFOLLOW, regular files only, size-bounded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from camrec.errors import StorageError
from camrec.store.layout import fsync_dir

PRIVATE_MODE = 0o600
DIR_MODE = 0o700


def ensure_private_dir(path: Path) -> Path:
    """Creates `path` (and its parents) 0700 if absent; refuses a symlink or a non-directory."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        st = os.lstat(path)
    except OSError as exc:
        raise StorageError(f"cannot create the web state directory {path}: {exc.strerror or exc}",
                           hint="run camrec as the service user (e.g. sudo -u camrec camrec …), or set "
                                "web.state_dir") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"the web state directory {path} is not a directory (a link?): refusing to use it")
    return path


def read_private(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it does not exist. StorageError for a link, a non-regular
    file, a file larger than `limit` or an unreadable one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(f"{path} is a symbolic link: refusing to read it") from None
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}",
                           hint="run camrec as the user that owns the web state directory") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(f"{path} is not a regular file: refusing to read it")
        if st.st_size > limit:
            raise StorageError(f"{path} is larger than {limit} bytes: not read")
        chunks = []
        remaining = limit + 1
        while remaining > 0:
            block = os.read(fd, min(remaining, 65536))
            if not block:
                break
            chunks.append(block)
            remaining -= len(block)
        data = b"".join(chunks)
        if len(data) > limit:
            raise StorageError(f"{path} is larger than {limit} bytes: not read")
        return data
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Replaces `path` with `data`, mode 0600, atomically and durably."""
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, PRIVATE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
