"""Digests of clip files, as the manifest records them: the whole file, and its age *payload*.

An age file is a header (recipient stanzas, then a `--- MAC` line) followed by the payload (the
nonce and the encrypted chunks). A re-key rewrites only the header, so the payload digest is what
ties a re-keyed clip to the clip that was recorded: `camrec verify` flags a `rekey` entry whose
payload digests differ from the clip's earlier entry (docs/tamper-evidence.md §3). It needs no key:
the header ends at the first line that starts with `--- `.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

_HASH_BUF = 1 << 20
# A header larger than this is not one camrec wrote (a few recipients take a few hundred bytes):
# such a file has no payload digest, and verify reports it as altered when one was recorded.
HEADER_LIMIT = 1 << 20


@dataclass(frozen=True)
class FileDigest:
    path: str  # relative to the storage root, '/' separators
    size: int
    sha256: str
    payload: str | None = None  # SHA-256 of the bytes after the header's MAC line

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.payload is not None:
            out["payload"] = self.payload
        return out


class Digester:
    """SHA-256 of everything fed, and of the age payload, in one pass."""

    def __init__(self) -> None:
        self._whole = hashlib.sha256()
        self._payload: Any = None  # a sha256 once the header's end was seen
        self._head = bytearray()  # header bytes so far (bounded by HEADER_LIMIT)
        self._mac = -1  # where the MAC line starts in _head, once seen
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self._whole.update(view)
        self.size += len(view)
        if self._payload is not None:
            self._payload.update(view)
        elif len(self._head) <= HEADER_LIMIT:
            start = max(0, len(self._head) - 4)
            self._head += view
            if self._mac < 0:
                self._mac = self._head.find(b"\n--- ", start)
            end = self._head.find(b"\n", self._mac + 1) if self._mac >= 0 else -1
            if end >= 0:
                self._payload = hashlib.sha256(self._head[end + 1:])
                self._head = bytearray()

    def sha256(self) -> str:
        return self._whole.hexdigest()

    def payload(self) -> str | None:
        return self._payload.hexdigest() if self._payload is not None else None


def digest_file(path: Path, rel: str) -> FileDigest:
    """A file's FileDigest (size, SHA-256, payload SHA-256), streamed through one 1 MiB buffer."""
    d = Digester()
    buf = memoryview(bytearray(_HASH_BUF))
    # Never through a link, never blocking on a FIFO planted under a clip's name (issue 8).
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    os.set_blocking(fd, True)
    with open(fd, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            d.update(buf[:n])
    return FileDigest(rel, d.size, d.sha256(), d.payload())


def hash_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file."""
    d = digest_file(path, "")
    return d.size, d.sha256


class HashingFile:
    """Wraps the raw clip file handed to AgeWriter and hashes exactly the bytes the OS accepted.

    Optional: with it, the store can give `record_closed` the video digest without reading the
    file back at close. It hashes inside write() because AgeWriter reuses its buffer afterwards.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._digester = Digester()

    @property
    def size(self) -> int:
        return self._digester.size

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = self._raw.write(data)
        n = len(data) if n is None else n
        self._digester.update(memoryview(data).cast("B")[:n])
        return n

    def flush(self) -> None:
        self._raw.flush()

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()

    def digest(self, path: str) -> FileDigest:
        return FileDigest(path, self.size, self._digester.sha256(), self._digester.payload())
