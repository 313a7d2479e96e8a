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
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from camrec.clock import Clock, SystemClock
from camrec.errors import StorageError
from camrec.store import layout
from camrec.store.camtime import TICK, CamrecTime, entry_ct, parse_utc
from camrec.store.devicekey import KEY_NAME as KEY_NAME  # (the device key's names, re-exported)
from camrec.store.devicekey import MANIFEST_NAME, key_id, load_or_create_signing_key
from camrec.store.devicekey import PUB_NAME as PUB_NAME
from camrec.store.digest import FileDigest, digest_file
from camrec.store.digest import HashingFile as HashingFile  # (re-exported)
from camrec.store.digest import hash_file as hash_file  # (re-exported)
from camrec.store.index import ClipRow
from camrec.store.layout import fsync_dir
from camrec.store.retention import Doomed, LiveClip

log = logging.getLogger(__name__)

VERSION = 1
GENESIS = "0" * 64
# Domain separation: a manifest signature can never be replayed as a signature over anything else.
SIG_CONTEXT = b"camrec-manifest-v1\n"
CLIP_KINDS = ("clip", "partial", "rekey")
KINDS = (*CLIP_KINDS, "delete", "repair", "clock")
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
    """The store's writer side: thread-safe; one per Store (other processes may append too).

    What the daemon acts on (retention's clip list and ages, camrec time) comes only from lines
    signed by its own key: the file is writable by anyone with file access, so an unsigned line
    appended there must never make the daemon delete, or age, anything (docs/storage.md).
    """

    def __init__(self, root: Path, *, clock: Clock | None = None) -> None:
        self.root = root
        self.path = root / MANIFEST_NAME
        self.clock = clock or SystemClock()
        self._key = load_or_create_signing_key(root)
        self._public = self._key.public_key()
        self.key_id = key_id(self._public)
        self.camtime = CamrecTime(self.clock)
        self._latest: dict[str, dict[str, Any]] = {}  # clip video path -> its newest entry
        self._born: dict[str, dict[str, Any]] = {}  # live clip -> its first entry (age and order)
        self._top: dict[str, Any] | None = None  # (start-up) the entry with the largest camrec time
        self._legacy: dict[str, Any] | None = None  # (start-up) the last entry, when it has no camrec time
        self._link, self._next_seq, self._intact = GENESIS, 1, True  # (start-up) are all lines chained?
        self._last: dict[str, Any] | None = None  # (start-up) the last line
        self._tainted = False  # (start-up) a signed marker says lines were forged: check every line
        self._forged: set[int] = set()  # unsigned lines seen and not yet recorded in a marker
        self._loaded = False
        self._writer = ChainWriter(self.path, mode=0o640, sign=self._sign, key=self.key_id, on_line=self._track,
                                   on_reset=self._forget)
        # Start-up: read the chain, and cut (and record) a torn tail that a power cut left.
        self._writer.append(list, self.clock.time())
        self._authenticate()
        self._loaded = True
        self._start_camtime()
        if self._forged:
            self._append(list)
        layout.prepare_store_log(root)

    def _sign(self, message: bytes) -> str:
        return base64.b64encode(self._key.sign(message)).decode()

    def signed(self, entry: dict[str, Any]) -> bool:
        """True if `entry` carries a valid signature by this device key."""
        body = {k: v for k, v in entry.items() if k != "sig"}
        return entry.get("key") == self.key_id and _signature_ok(self._public, entry.get("sig"),
                                                                 SIG_CONTEXT + canonical(body))

    def _forget(self) -> None:
        self._latest.clear()
        self._born.clear()

    def _track(self, entry: dict[str, Any] | None) -> None:
        """Every line the writer reads or appends. What the daemon acts on must be signed with its
        key: at start-up the whole chain is authenticated at once (_authenticate), after that each
        new line on its own (another writer's, or ours)."""
        if not self._loaded:
            if entry is None or entry.get("prev") != self._link or entry.get("seq") != self._next_seq:
                self._intact = False
            seq = entry.get("seq") if entry else None
            self._link, self._last = self._writer.prev, entry  # (the writer has hashed this line by now)
            self._next_seq = (seq if isinstance(seq, int) else self._next_seq) + 1
            self._tainted = self._tainted or bool(entry and entry.get("forged"))
        elif entry is not None and not self.signed(entry):
            log.warning("%s: ignoring a line not signed by the device key (seq %r)", self.path, entry.get("seq"))
            self._forged.add(entry["seq"] if isinstance(entry.get("seq"), int) else -1)
            return
        if entry:
            self._apply(entry)

    def _authenticate(self) -> None:
        """One signature check for the whole chain: if every line links to the one before it and
        the last line is signed, every line is as camrec wrote it (each line's `prev` hashes the
        line before, up to the signed last one, and camrec never appends after a line it didn't
        check without a signed `forged` marker saying so). Otherwise (lines edited, inserted, or
        appended without the key, now or ever) only the signed lines are used, checked one by one."""
        if self._intact and not self._tainted and (self._last is None or self.signed(self._last)):
            return
        log.warning("%s: the chain was edited or has lines not signed by the device key: using only the "
                    "signed lines (run camrec verify)", self.path)
        self._forget()
        self._top = self._legacy = None

        marked: set[int] = set()
        forged: set[int] = set()

        def take(line: ChainLine) -> None:
            if line.trusted and line.entry is not None:
                self._apply(line.entry)
                marked.update(n for n in line.entry.get("forged") or () if isinstance(n, int))
            elif not line.trusted:
                seq = line.entry.get("seq") if line.entry else None
                forged.add(seq if isinstance(seq, int) else -line.lineno)

        read_chain(self.path, public_key=self._public, on_line=take, keep=False)
        self._forged |= forged - marked

    def _apply(self, entry: dict[str, Any]) -> None:
        ct = entry_ct(entry)
        if not self._loaded:
            if ct is not None and (self._top is None or ct > (entry_ct(self._top) or 0.0)):
                self._top = entry
            self._legacy = entry if ct is None else None
        elif ct is not None:
            self.camtime.observe(ct)
        clip = entry.get("clip")
        if isinstance(clip, str) and entry.get("kind") in (*CLIP_KINDS, "delete"):
            if entry["kind"] == "delete":
                # A deleted clip is remembered by a stub only: memory follows the live clips.
                self._latest[clip] = {"kind": "delete", "seq": entry.get("seq")}
                self._born.pop(clip, None)
            else:
                self._latest[clip] = entry
                self._born.setdefault(clip, entry)

    def _start_camtime(self) -> None:
        """camrec time continues from the largest signed `ct` (or, in an older manifest, entry time)."""
        if self._top is not None:
            self.camtime.observe(entry_ct(self._top) or 0.0)
        elif self._legacy is not None:  # a manifest written before camrec time: its last entry's time
            self.camtime.observe(parse_utc(self._legacy.get("time")) or 0.0)
        self._top = self._legacy = self._last = None
        self.camtime.start()

    def _append(self, build: Callable[[], Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
        """Appends under the chain lock; first, a signed `forged` marker when lines not signed by
        the device key were found (at start-up, or caught up just now): a later start-up must not
        take our signature after them as vouching for them (see _authenticate)."""

        def marked() -> list[Mapping[str, Any]]:
            bodies = list(build())
            if self._forged:
                bodies.insert(0, {"kind": "clock", "ct": self._ct(), "forged": sorted(self._forged)})
            return bodies

        entries = self._writer.append(marked, self.clock.time())
        for e in entries:
            self._forged.difference_update(e.get("forged") or ())
        return entries

    def _ct(self) -> int:
        """camrec time for a new entry, in integer milliseconds (integers re-encode identically)."""
        return int(self.camtime.now() * 1000)

    def head(self) -> tuple[int, str]:
        return self._writer.seq, self._writer.prev

    def latest(self, video: str) -> dict[str, Any] | None:
        """The newest entry about a clip (None: never recorded)."""
        return self._latest.get(video)

    def live_clips(self) -> list[LiveClip]:
        """The clips the manifest holds and hasn't deleted (from signed entries: see _track)."""
        out = []
        for clip, born in list(self._born.items()):
            if not safe_clip_path(clip):
                continue  # (signed, but not a clip's path: never deleted)
            # Sizes from the signed first entry too (a re-key changes a header by a few bytes only).
            files = born.get("files")
            size = sum(f["size"] for f in files if isinstance(f, dict) and isinstance(f.get("size"), int)) \
                if isinstance(files, list) else 0
            end_ct = entry_ct(born)
            if end_ct is None:  # an entry written before camrec time existed: its signed end
                end_ct = parse_utc(born.get("end")) or parse_utc(born.get("time")) or 0.0
            out.append(LiveClip(clip, str(born.get("camera")), int(born.get("seq") or 0), end_ct, size))
        return out

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
                if pre is not None and pre.payload is not None and path.stat().st_size == pre.size:
                    out.append(pre)
                    continue
                out.append(digest_file(path, rel))
            except OSError as exc:
                raise StorageError(f"cannot hash {path}: {exc.strerror or exc}") from None
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
            return [{**body, "ct": self._ct()}]

        entries = self._append(build)
        return entries[-1] if entries and entries[-1].get("clip") == video else None

    def record_row(self, row: ClipRow, *, kind: str | None = None, recovered: bool = False) -> dict[str, Any] | None:
        """record_closed for an index row; the kind follows the row's state unless given."""
        files = [f for f in (row.path, row.thumb, row.meta) if f and (self.root / f).exists()]
        return self.record_closed(row.camera, row.path, start=row.start, end=row.end,
                                  kind=kind or ("partial" if row.state == "partial" else "clip"),
                                  files=files or [row.path], recovered=recovered)

    def record_deleted(self, doomed: Iterable[Doomed]) -> list[dict[str, Any]]:
        """One `delete` entry per clip, with retention's reason, all in one write + fsync, in the
        order given (oldest first: verify checks budget deletions by it); deleted clips are skipped."""
        doomed = list(doomed)

        def build() -> list[dict[str, Any]]:
            seen: set[str] = set()
            out = []
            ct = self._ct()
            for d in doomed:
                last = self._latest.get(d.clip.path)
                if d.clip.path in seen or last is None or last.get("kind") == "delete":
                    continue
                seen.add(d.clip.path)
                out.append({**d.why, "kind": "delete", "camera": d.clip.camera, "clip": d.clip.path, "ct": ct})
            return out

        return [e for e in self._append(build) if e.get("kind") == "delete"]

    def tick(self) -> None:
        """Writes a `clock` entry when the newest recorded camrec time is TICK old: a restart then
        continues camrec time from at most that far back (camrec/store/camtime.py)."""

        def due() -> bool:
            last = self.camtime.recorded
            return last is None or self.camtime.now() - last >= TICK

        if due():
            self._append(lambda: [{"kind": "clock", "ct": self._ct()}] if due() else [])

    def signed_deletions(self, clips: Iterable[str]) -> set[str]:
        """Which of `clips` the signed manifest deleted (its newest entry about them is a `delete`)."""
        return {c for c in clips if (self._latest.get(c) or {}).get("kind") == "delete"}

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


def safe_clip_path(p: str) -> bool:
    """A relative path inside the store that ends in a clip video's name (nothing else is deleted)."""
    parts = p.split("/")
    return (not p.startswith("/") and ".." not in parts and "\\" not in p and "" not in parts
            and layout.parse_video_name(parts[-1]) is not None)
