"""One recorder per storage: an exclusive lock held by `camrec run` for as long as it records.

Two recorders on one storage would each take the other's open clips for crash-cut ones and record
every event twice. So `camrec run` takes an `flock` on `<storage>/recorder.lock` before it touches
anything, and a second one stops at once with the first one's pid and host (written into the
file). The kernel drops the lock when the process dies, however it dies, so a stale file never
blocks a restart. Owner-side commands only read; they never take this lock. `rekey` has its own
lock (on the directory itself) and works beside a recorder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import time
from pathlib import Path

from camrec.errors import StorageError

LOCK_NAME = "recorder.lock"
LOCK_MODE = 0o640
# An owner's `recorder_running()` holds a shared lock for a moment: a recorder starting just then
# waits this long before it concludes that another recorder holds the storage.
ACQUIRE_SECONDS = 0.5


class RecorderBusy(StorageError):
    """Another recorder holds the storage's lock."""


class RecorderLock:
    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock or raises RecorderBusy (another recorder) / StorageError (can't open it)."""
        try:
            # Never through a link, never blocking on a FIFO put in its place.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         LOCK_MODE)
        except OSError as exc:
            what = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
            raise StorageError(f"cannot open the recorder lock {self.path}: {what}",
                               hint="check the storage directory's owner and permissions") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StorageError(f"{self.path} is not a regular file", hint="remove it; camrec makes it again")
        if not _lock_within(fd, ACQUIRE_SECONDS):
            holder = _read_holder(fd)
            os.close(fd)
            raise RecorderBusy(f"another recorder ({holder}) is recording into {self.path.parent}",
                               hint="stop it first (sudo systemctl stop camrec), or give this one another "
                                    "storage.path") from None
        with contextlib.suppress(OSError):  # the pid is for people; the lock itself is the flock
            os.fchmod(fd, LOCK_MODE)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock; the file stays (removing it would race a new recorder)
            self._fd = None


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode("ascii", "replace").strip()
        if text.startswith("pid "):
            return text.splitlines()[0][:100]
    return "pid unknown"


def _lock_within(fd: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def recorder_running(root: Path) -> bool:
    """Whether a live recorder holds this storage's lock (owner side: read-only, never creates the
    file, never follows a link; a store copied elsewhere has no live recorder)."""
    try:
        fd = os.open(root / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # absent (an older store, or a copy without it), or a link: nobody records
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False  # we got it, so nobody holds it (closing the descriptor releases it)
    finally:
        os.close(fd)
