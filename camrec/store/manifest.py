"""The tamper-evident manifest: every closed clip's digests, in an append-only, hash-chained,
Ed25519-signed JSON-lines file (`<storage>/manifest.jsonl`). Format and guarantees: docs/tamper-evidence.md.

One line per entry, encoded canonically (sorted keys, no spaces, ASCII). Each entry carries its
sequence number, the SHA-256 of the previous line (`prev`) and a signature by the device key over
the canonical encoding of everything else, so removing, reordering, editing or inserting a line
breaks the chain somewhere a verifier can point at.

Appends are crash-safe: a whole batch of lines goes out in one write() and is fsynced before the
call returns, under an flock so several writers (the daemon, an owner's re-key, `camrec export`'s
audit log, which reuses `ChainWriter`) never interleave. A power cut can only leave a torn *last*
line (a prefix, or zeros on ext4); the next writer cuts it off and appends a `repair` entry saying
how many bytes it removed, so a torn tail is never mistaken for tampering with earlier lines.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from camrec.errors import StorageError
from camrec.sources.base import Clock, SystemClock
from camrec.store import layout
from camrec.store.index import ClipRow
from camrec.store.layout import fsync_dir

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
KEY_NAME = "device-signing.key"
PUB_NAME = "device-signing.pub"
VERSION = 1
GENESIS = "0" * 64
# Domain separation: a manifest signature can never be replayed as a signature over anything else.
SIG_CONTEXT = b"camrec-manifest-v1\n"
CLIP_KINDS = ("clip", "partial", "rekey")
KINDS = (*CLIP_KINDS, "delete", "repair")
_HASH_BUF = 1 << 20
_READ_BUF = 1 << 20


# --- encoding ---------------------------------------------------------------------------------


def canonical(obj: Any) -> bytes:
    """The one byte encoding that is signed and hashed: sorted keys, no whitespace, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def line_hash(line: bytes) -> str:
    """SHA-256 of a line without its newline: what the next entry's `prev` holds, and the head."""
    return hashlib.sha256(line).hexdigest()


def utc_iso(t: float) -> str:
    """Times are strings, not floats: a string re-encodes identically in any JSON implementation."""
    dt = datetime.fromtimestamp(t, UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class FileDigest:
    path: str  # relative to the storage root, '/' separators
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def hash_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, streamed through one reused 1 MiB buffer."""
    h = hashlib.sha256()
    size = 0
    buf = memoryview(bytearray(_HASH_BUF))
    # Never through a link, never blocking on a FIFO planted under a clip's name (issue 8).
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    os.set_blocking(fd, True)
    with open(fd, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(buf[:n])
            size += n
    return size, h.hexdigest()


class HashingFile:
    """Wraps the raw clip file handed to AgeWriter and hashes exactly the bytes the OS accepted.

    Optional: with it, the store can give `record_closed` the video digest without reading the
    file back at close. It hashes inside write() because AgeWriter reuses its buffer afterwards.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = self._raw.write(data)
        n = len(data) if n is None else n
        self._sha.update(memoryview(data).cast("B")[:n])
        self.size += n
        return n

    def flush(self) -> None:
        self._raw.flush()

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()

    def digest(self, path: str) -> FileDigest:
        return FileDigest(path, self.size, self._sha.hexdigest())


# --- the device key -------------------------------------------------------------------------


def key_id(public: Ed25519PublicKey) -> str:
    """A short, stable name for a device key: the first 16 hex digits of SHA-256(raw key)."""
    return hashlib.sha256(public.public_bytes_raw()).hexdigest()[:16]


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Creates `path` with `data` atomically and never over an existing file; False if it exists.

    Written under a temporary name and hard-linked into place, so a crash can leave a stray
    temporary file but never an empty or half-written key under the real name.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # exact mode whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    except OSError:
        tmp.unlink()  # e.g. a full disk: leave no empty key file behind
        raise
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    fsync_dir(path.parent)
    return True


def load_or_create_signing_key(root: Path) -> Ed25519PrivateKey:
    """The device signing key, generated on first use (0600) with its public half beside it.

    Refuses to make a new key when a manifest already exists without one: silently starting a
    new key would make every earlier entry look forged (`unknown key`) to `camrec verify`.
    """
    key_path, pub_path = root / KEY_NAME, root / PUB_NAME
    try:
        if not key_path.exists():
            if (root / MANIFEST_NAME).exists() and (root / MANIFEST_NAME).stat().st_size:
                raise StorageError(
                    f"{key_path} is missing but {root / MANIFEST_NAME} exists",
                    hint=f"restore the device key from a backup, or move {MANIFEST_NAME} away to start a new chain")
            new = Ed25519PrivateKey.generate()
            pem = new.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            if _write_new(key_path, pem, 0o600):
                log.info("created the device signing key %s (key id %s)", key_path, key_id(new.public_key()))
        data = key_path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot create or read the device signing key {key_path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError:
        raise StorageError(f"{key_path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise StorageError(f"{key_path} is not an Ed25519 private key")
    pem_pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        # Written only when absent: a start on a full disk must not need space for it.
        if (pub_path.exists() or not _write_new(pub_path, pem_pub, 0o644)) and pub_path.read_bytes() != pem_pub:
            raise StorageError(f"{pub_path} does not belong to {key_path}",
                               hint="someone replaced one of them; check both against your saved key id")
    except OSError as exc:
        raise StorageError(f"cannot write {pub_path}: {exc.strerror or exc}") from None
    return key


# --- appending ------------------------------------------------------------------------------


class ChainFileRefused(StorageError):
    """The chain file is not one camrec may write: a link, not a regular file, or not the
    owner a subclass requires (see ChainWriter._refusal)."""


class ChainWriter:
    """Appends entries to a hash-chained JSON-lines file; safe against crashes and other writers.

    `append(build)` takes the file lock, catches up with lines other writers added (each is
    passed to `on_line`), cuts off a torn last line left by a crash, then calls `build()` for the
    entry bodies to add: deciding under the lock lets callers skip entries that already exist.
    """

    def __init__(self, path: Path, *, mode: int, sign: Callable[[bytes], str] | None = None,
                 key: str | None = None, on_line: Callable[[dict[str, Any] | None], None] | None = None,
                 on_reset: Callable[[], None] | None = None) -> None:
        self.path = path
        self._mode = mode
        self._sign = sign
        self._key = key
        self._on_line = on_line
        self._on_reset = on_reset
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._end = 0  # bytes of the file already parsed
        self.seq = 0
        self.prev = GENESIS

    # Subclasses (the audit logs) tighten what an opened file must be, and may forbid creating it.
    create_missing = True

    def _refusal(self, st: os.stat_result) -> str | None:
        """Why the opened file must not be written (None: it may). Only a regular file is:
        a FIFO would block or swallow entries, and a device is nobody's log."""
        return None if stat.S_ISREG(st.st_mode) else "not a regular file"

    def _open(self) -> int:
        if self._fd is not None and not self._same_file(self._fd):
            # Replaced or removed behind our back (it is a file anyone with access can move):
            # appending to the old inode would write into a file nobody will ever read.
            log.warning("%s was replaced or removed outside camrec; continuing with what is there now", self.path)
            os.close(self._fd)
            self._fd = None
            self._reset()
        if self._fd is None:
            # Never through a link (O_NOFOLLOW): whoever can write the directory could point the
            # name at a file of the writer's (a ~/.bashrc) and have lines appended to it or, by
            # the torn-tail repair, truncated. O_NONBLOCK: a FIFO in its place can't hang open().
            flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
            created = False
            try:
                try:  # O_EXCL: `created` is true only for a file this writer made
                    fd = os.open(self.path, flags | (os.O_CREAT | os.O_EXCL if self.create_missing else 0), self._mode)
                    created = self.create_missing
                except FileExistsError:
                    fd = os.open(self.path, flags)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise ChainFileRefused(f"{self.path} is a symbolic link: not written through") from None
                if exc.errno == errno.ENOENT and not self.create_missing:
                    raise ChainFileRefused(f"{self.path} does not exist") from None
                raise
            reason = self._refusal(os.fstat(fd))
            if reason is not None:
                os.close(fd)
                raise ChainFileRefused(f"{self.path}: {reason}: not written")
            os.set_blocking(fd, True)
            if created:
                with contextlib.suppress(OSError):  # exact mode whatever the umask
                    os.fchmod(fd, self._mode)
                fsync_dir(self.path.parent)
            self._fd = fd
        return self._fd

    def _same_file(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        own = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)

    def _reset(self) -> None:
        self._end, self.seq, self.prev = 0, 0, GENESIS
        if self._on_reset is not None:
            self._on_reset()

    def _catch_up(self, fd: int) -> dict[str, Any] | None:
        """Parses lines appended since we last looked; cuts a torn tail. Returns a repair entry body."""
        size = os.fstat(fd).st_size
        if size < self._end:  # shrank under us: someone cut it; chain onto what is there now
            log.warning("%s shrank from %d to %d bytes outside camrec", self.path, self._end, size)
            self._reset()
        pos = self._end
        rest = b""
        while pos < size:
            block = os.pread(fd, min(_READ_BUF, size - pos), pos)
            if not block:
                break
            pos += len(block)
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                self._take(line)
                self._end += len(line) + 1
        if not rest:
            return None
        # Only a crash leaves an unterminated last line (writers append whole lines under the lock).
        # Cutting it changes the file: checked again on this very descriptor right before.
        if (reason := self._refusal(os.fstat(fd))) is not None:
            raise ChainFileRefused(f"{self.path}: {reason}: its torn last line is not cut")
        os.ftruncate(fd, self._end)
        os.fsync(fd)
        log.warning("%s: removed a torn last line (%d bytes) left by a crash", self.path, len(rest))
        return {"kind": "repair", "torn_bytes": len(rest), "torn_sha256": hashlib.sha256(rest).hexdigest()}

    def _take(self, line: bytes) -> None:
        entry = parse_line(line)
        seq = entry.get("seq") if entry else None
        self.seq = seq if isinstance(seq, int) else self.seq + 1
        self.prev = line_hash(line)
        if self._on_line is not None:
            self._on_line(entry)

    def _encode(self, body: Mapping[str, Any], now: float) -> tuple[bytes, dict[str, Any]]:
        entry = {"v": VERSION, **body, "seq": self.seq + 1, "time": utc_iso(now), "prev": self.prev}
        if self._sign is not None:
            entry["key"] = self._key
            entry["sig"] = self._sign(SIG_CONTEXT + canonical(entry))
        line = canonical(entry)
        self.seq += 1
        self.prev = line_hash(line)
        return line, entry

    def append(self, build: Callable[[], Sequence[Mapping[str, Any]]], now: float) -> list[dict[str, Any]]:
        """Appends what `build()` returns (plus a repair entry if a torn tail was cut); fsynced."""
        with self._lock:
            try:
                fd = self._open()
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    return self._append_locked(fd, build, now)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError as exc:
                raise StorageError(f"cannot append to {self.path}: {exc.strerror or exc}") from None

    def _append_locked(self, fd: int, build: Callable[[], Sequence[Mapping[str, Any]]],
                       now: float) -> list[dict[str, Any]]:
        repair = self._catch_up(fd)
        bodies: list[Mapping[str, Any]] = [repair] if repair else []
        bodies.extend(build())
        if not bodies:
            return []
        seq, prev = self.seq, self.prev
        encoded = [self._encode(b, now) for b in bodies]
        data = memoryview(b"".join(line + b"\n" for line, _ in encoded))
        try:
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except OSError:
            # Whatever reached the file is parsed (or cut, if torn) by the next catch-up.
            self.seq, self.prev = seq, prev
            raise
        for line, entry in encoded:
            self._end += len(line) + 1
            if self._on_line is not None:
                self._on_line(entry)
        return [entry for _, entry in encoded]

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return entry if isinstance(entry, dict) else None


# --- reading and checking a chain -------------------------------------------------------------


@dataclass
class ChainLine:
    lineno: int
    raw: bytes
    hash: str
    entry: dict[str, Any] | None
    trusted: bool  # well-formed, and (for a signed chain) signed by the trusted key


@dataclass
class ChainCheck:
    count: int = 0  # complete lines
    head: tuple[int, str] = (0, GENESIS)  # (seq, line hash) of the last complete line
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line number, what is wrong)
    torn: bytes | None = None  # an unterminated last line (a crash, or an append in progress)
    head_problems: list[str] = field(default_factory=list)  # pinned heads the chain doesn't hold
    lines: list[ChainLine] = field(default_factory=list)  # only when read with keep=True


def read_chain(path: Path, *, public_key: Ed25519PublicKey | None = None, signed: bool = True,
               entry_problem: Callable[[dict[str, Any]], str | None] | None = None,
               heads: Iterable[tuple[int, str]] = (), on_line: Callable[[ChainLine], None] | None = None,
               keep: bool = True) -> ChainCheck:
    """Reads and checks a whole chain file (a missing file is an empty chain), line by line.

    Links (seq, prev) and signatures are checked independently: an authentic line that follows
    a removed one is still trusted for its content, and the break is reported where it is.
    With keep=False lines are only passed to `on_line`, so memory doesn't grow with the chain.
    """
    chk = ChainCheck()
    pins = {seq: want for seq, want in heads}
    found: dict[int, str] = {}
    want_key = key_id(public_key) if public_key is not None else None
    prev, expect_seq = GENESIS, 1
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; a missing file is an empty chain
    except FileNotFoundError:
        f = None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        for n, raw in enumerate(f or (), 1):
            if not raw.endswith(b"\n"):
                chk.torn = raw
                break
            raw = raw[:-1]
            h = line_hash(raw)
            entry = parse_line(raw)
            problems: list[str] = []
            if entry is None:
                problems.append("not a JSON object (forged or corrupted line)")
            else:
                problems.extend(_line_problems(entry, raw, prev, expect_seq, signed, public_key, want_key))
                if entry_problem is not None and (p := entry_problem(entry)):
                    problems.append(p)
            link_only = all(p.startswith(("sequence", "previous-line hash")) for p in problems)
            line = ChainLine(n, raw, h, entry, trusted=entry is not None and link_only)
            chk.problems.extend((n, p) for p in problems)
            seq = entry.get("seq") if entry else None
            seq = seq if isinstance(seq, int) else expect_seq
            if seq in pins:
                found.setdefault(seq, h)
            chk.count, chk.head = n, (seq, h)
            expect_seq, prev = seq + 1, h
            if on_line is not None:
                on_line(line)
            if keep:
                chk.lines.append(line)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        if f is not None:
            f.close()
    for seq, want in pins.items():
        have = found.get(seq)
        if have is None:
            chk.head_problems.append(
                f"pinned head {seq}:{want[:16]}… is not in the chain (it ends at {chk.head[0]}): "
                "entries were removed or the chain was rewritten")
        elif not have.startswith(want):
            chk.head_problems.append(f"pinned head {seq}:{want[:16]}… does not match entry {seq} ({have[:16]}…): "
                                     "the chain was rewritten up to there")
    return chk


def _line_problems(entry: dict[str, Any], raw: bytes, prev: str, expect_seq: int, signed: bool,
                   public_key: Ed25519PublicKey | None, want_key: str | None) -> list[str]:
    problems = []
    seq = entry.get("seq")
    if entry.get("v") != VERSION:
        problems.append(f"unknown format version {entry.get('v')!r}")
    if canonical(entry) != raw:
        problems.append("not canonically encoded (edited by hand?)")
    if not isinstance(seq, int) or seq != expect_seq:
        problems.append(f"sequence {seq!r} where {expect_seq} was expected (line removed, inserted or reordered)")
    if entry.get("prev") != prev:
        problems.append("previous-line hash does not match (line removed, inserted or reordered before it)")
    if signed:
        body = {k: v for k, v in entry.items() if k != "sig"}
        if public_key is None:
            problems.append("no device public key to check the signature with")
        elif entry.get("key") != want_key:
            problems.append(f"signed by unknown key {entry.get('key')!r} (the device key is {want_key})")
        elif not _signature_ok(public_key, entry.get("sig"), SIG_CONTEXT + canonical(body)):
            problems.append("bad signature (the line was edited or forged)")
    return problems


def _signature_ok(public_key: Ed25519PublicKey, sig: object, message: bytes) -> bool:
    if not isinstance(sig, str):
        return False
    try:
        public_key.verify(base64.b64decode(sig, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- the manifest ---------------------------------------------------------------------------


class Manifest:
    """The store's writer side: thread-safe; one per Store (other processes may append too)."""

    def __init__(self, root: Path, *, clock: Clock | None = None) -> None:
        self.root = root
        self.path = root / MANIFEST_NAME
        self.clock = clock or SystemClock()
        self._key = load_or_create_signing_key(root)
        self.key_id = key_id(self._key.public_key())
        self._latest: dict[str, dict[str, Any]] = {}  # clip video path -> its newest entry
        self._writer = ChainWriter(self.path, mode=0o640, sign=self._sign, key=self.key_id, on_line=self._track,
                                   on_reset=self._latest.clear)
        # Start-up: read the chain, and cut (and record) a torn tail that a power cut left.
        self._writer.append(list, self.clock.time())
        from camrec.audit import prepare_store_log  # (audit builds on this module)

        prepare_store_log(root)

    def _sign(self, message: bytes) -> str:
        return base64.b64encode(self._key.sign(message)).decode()

    def _track(self, entry: dict[str, Any] | None) -> None:
        if entry and isinstance(entry.get("clip"), str) and entry.get("kind") in (*CLIP_KINDS, "delete"):
            # A deleted clip is remembered by a stub only: memory follows the live clips.
            self._latest[entry["clip"]] = (entry if entry["kind"] != "delete"
                                           else {"kind": "delete", "seq": entry.get("seq")})

    def head(self) -> tuple[int, str]:
        return self._writer.seq, self._writer.prev

    def latest(self, video: str) -> dict[str, Any] | None:
        """The newest entry about a clip (None: never recorded)."""
        return self._latest.get(video)

    def digests(self, video: str, files: Sequence[str] | None = None,
                known: Mapping[str, FileDigest] | None = None) -> list[FileDigest]:
        """Digests of a clip's files (default: the video and whichever sidecars exist)."""
        if files is None:
            files = [video] + [s for s in (layout.sibling(video, layout.THUMB_SUFFIX),
                                           layout.sibling(video, layout.META_SUFFIX)) if (self.root / s).exists()]
        out = []
        for rel in files:
            path = self.root / rel
            try:
                pre = (known or {}).get(rel)
                if pre is not None and path.stat().st_size == pre.size:
                    out.append(pre)
                    continue
                size, sha = hash_file(path)
            except OSError as exc:
                raise StorageError(f"cannot hash {path}: {exc.strerror or exc}") from None
            out.append(FileDigest(rel, size, sha))
        return out

    def record_closed(self, camera: str, video: str, *, start: float, end: float, kind: str = "clip",
                      files: Sequence[str] | None = None, known: Mapping[str, FileDigest] | None = None,
                      recovered: bool = False) -> dict[str, Any] | None:
        """Records a finished clip (`clip`), a cut one (`partial`) or a re-encrypted one (`rekey`).

        Hashing happens before the lock, so cameras closing at once hash in parallel. Idempotent:
        nothing is written if the newest entry already says the same (returns None then).
        """
        if kind not in CLIP_KINDS:
            raise ValueError(f"not a clip entry kind: {kind}")
        digests = [d.to_json() for d in self.digests(video, files, known)]
        body: dict[str, Any] = {"kind": kind, "camera": camera, "clip": video, "start": utc_iso(start),
                                "end": utc_iso(end), "files": digests}
        if recovered:
            body["recovered"] = True

        def build() -> list[dict[str, Any]]:
            last = self._latest.get(video)
            if last is not None and last.get("kind") == kind and last.get("files") == digests:
                return []
            return [body]

        entries = self._writer.append(build, self.clock.time())
        return entries[-1] if entries and entries[-1].get("clip") == video else None

    def record_row(self, row: ClipRow, *, kind: str | None = None, recovered: bool = False) -> dict[str, Any] | None:
        """record_closed for an index row; the kind follows the row's state unless given."""
        files = [f for f in (row.path, row.thumb, row.meta) if f and (self.root / f).exists()]
        return self.record_closed(row.camera, row.path, start=row.start, end=row.end,
                                  kind=kind or ("partial" if row.state == "partial" else "clip"),
                                  files=files or [row.path], recovered=recovered)

    def record_deleted(self, rows: Iterable[ClipRow], *, reason: str = "retention") -> list[dict[str, Any]]:
        """One `delete` entry per clip, all in one write + fsync; clips already deleted are skipped."""
        rows = list(rows)

        def build() -> list[dict[str, Any]]:
            seen: set[str] = set()
            out = []
            for row in rows:
                last = self._latest.get(row.path)
                if row.path in seen or (last is not None and last.get("kind") == "delete"):
                    continue
                seen.add(row.path)
                out.append({"kind": "delete", "camera": row.camera, "clip": row.path, "reason": reason})
            return out

        return [e for e in self._writer.append(build, self.clock.time()) if e.get("kind") == "delete"]

    def reconcile(self, rows: Iterable[ClipRow]) -> dict[str, int]:
        """Start-up: records every complete/partial clip that has no entry (crash before its entry,
        a torn last line, or a store older than the manifest). Returns {"recorded": n}."""
        n = 0
        for row in rows:
            if row.state in ("complete", "partial") and row.path not in self._latest:
                try:
                    self.record_row(row, recovered=True)
                except StorageError as exc:
                    if (self.root / row.path).exists():
                        raise
                    log.debug("%s: skipped: %s", row.path, exc.message)  # vanished meanwhile
                    continue
                n += 1
        if n:
            log.warning("manifest: recorded %d clip(s) that had no entry (after a crash or an upgrade)", n)
        return {"recorded": n}

    def close(self) -> None:
        self._writer.close()
