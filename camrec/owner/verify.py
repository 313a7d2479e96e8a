"""`camrec verify`: the files on disk, the index and the signed manifest, checked against each other.

Read-only: it never repairs anything (the daemon does that at start-up). The rules, with the
reasons, are in docs/tamper-evidence.md; in short, for every clip (a video path):
  * the newest trusted manifest entry (`clip`/`partial`/`rekey`) lists the files and digests it
    must have: each one absent is `missing`, shorter `truncated`, different `altered`;
  * a `delete` entry makes absence legitimate (files still present: `deleted-present`, a notice);
  * a file no entry accounts for is `orphan` (`unrecorded` if the index knows the clip);
  * files of a clip whose index row is `recording` and that has no entry yet are being written:
    skipped. A row in `recording` never hides a clip that *has* an entry (the daemon writes the
    entry before marking the row complete, so such files are already final).
Races with a running daemon (a clip closing or retention deleting between our reads) could
look like problems, so suspicious clips are looked at a second time with fresh reads before
anything is reported.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from camrec.errors import CamrecError, IdentityError, StorageError, TruncatedError, UsageError
from camrec.owner.verify_history import HISTORY_PROBLEMS, History
from camrec.store import layout, untrusted
from camrec.store.digest import Digester
from camrec.store.entries import clip_entry_problem
from camrec.store.index import ClipRow
from camrec.store.index_copy import open_owner_index
from camrec.store.manifest import (
    CLIP_KINDS,
    GENESIS,
    MANIFEST_NAME,
    PUB_NAME,
    ChainCheck,
    ChainLine,
    key_id,
    read_chain,
)

PROBLEMS = ("missing", "altered", "truncated", "orphan", "unrecorded", "unreadable", "chain-break",
            "head-mismatch", "undecryptable", "truncated-payload", "unsafe-file", *HISTORY_PROBLEMS)
NOTICES = ("torn-tail", "recording", "deleted-present", "unindexed", "partial")
_BUF = 1 << 20


@dataclass(frozen=True)
class Finding:
    kind: str
    path: str | None
    detail: str

    @property
    def problem(self) -> bool:
        return self.kind in PROBLEMS

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "detail": self.detail}


@dataclass
class VerifyReport:
    root: Path
    findings: list[Finding] = field(default_factory=list)
    clips: int = 0
    files: int = 0
    bytes_hashed: int = 0
    decrypted: int = 0
    seconds: float = 0.0
    entries: int = 0
    head: tuple[int, str] = (0, GENESIS)
    key: str | None = None

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.problem]

    @property
    def notices(self) -> list[Finding]:
        return [f for f in self.findings if not f.problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "storage": str(self.root),
                "manifest": {"entries": self.entries, "head": f"{self.head[0]}:{self.head[1]}", "key": self.key},
                "checked": {"clips": self.clips, "files": self.files, "bytes_hashed": self.bytes_hashed,
                            "decrypted": self.decrypted, "seconds": round(self.seconds, 3)},
                "problems": [f.to_json() for f in self.problems],
                "notices": [f.to_json() for f in self.notices]}


# --- manifest entries and pinned heads --------------------------------------------------------


_HEAD_RE = re.compile(r"^(\d+):([0-9a-f]{16,64})$")


def parse_heads(values: Sequence[str]) -> list[tuple[int, str]]:
    """`SEQ:HASH` values, or files of such lines (as `--save-head` writes them; `#` comments).

    A hash prefix of 16+ hex digits is accepted: short enough to copy by hand, far too long to forge.
    """
    heads: list[tuple[int, str]] = []
    for value in values:
        m = _HEAD_RE.match(value.strip().lower())
        if m:
            heads.append((int(m[1]), m[2]))
            continue
        try:
            text = Path(value).read_text()
        except OSError as exc:
            raise UsageError(f"--expect-head {value!r} is neither SEQ:HASH nor a readable file ({exc.strerror})",
                             hint="use the 'manifest head SEQ:HASH' that camrec verify printed") from None
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            m = _HEAD_RE.match(line.split()[0].lower())
            if not m:
                raise UsageError(f"{value}:{n}: expected SEQ:HASH")
            heads.append((int(m[1]), m[2]))
    return heads


# --- one consistent-enough look at the store --------------------------------------------------


def video_of(rel: str) -> str | None:
    """The clip (video path) a file belongs to, or None if it is not a clip file of ours."""
    for suffix in layout.CLIP_SUFFIXES:
        if rel.endswith(suffix):
            video = rel[: -len(suffix)] + layout.VIDEO_SUFFIX
            return video if layout.parse_video_name(video.rsplit("/", 1)[-1]) else None
    return None


@dataclass
class _Snapshot:
    files: dict[str, os.stat_result]
    by_clip: dict[str, list[str]]
    rows: dict[str, ClipRow]
    chain: ChainCheck
    expected: dict[str, dict[str, Any]]  # clip -> newest trusted clip/partial/rekey entry
    deleted: dict[str, dict[str, Any]]  # clip -> its delete entry, when that is the newest
    history: History  # deletions, re-keys and camrec time judged along the chain
    unsafe: list[Finding] = field(default_factory=list)  # links, FIFOs, devices: never opened


def _snapshot(root: Path, public_key: Ed25519PublicKey | None, heads: Sequence[tuple[int, str]],
              history: History) -> _Snapshot:
    # Files first, index second, manifest last: a clip closing meanwhile then shows up as a row
    # in `recording` or with its entry, never as a file that neither accounts for.
    files: dict[str, os.stat_result] = {}
    by_clip: dict[str, list[str]] = {}
    unsafe: list[Finding] = []
    # lstat, and os.walk does not descend into linked directories: nothing in the store is followed.
    for dirpath, dirs, names in os.walk(root):
        for name in [*dirs, *names]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                unsafe.append(_unsafe_finding(rel, full, st))
                continue
            video = video_of(rel) if stat.S_ISREG(st.st_mode) else None
            if video is None:
                continue
            files[rel] = st
            by_clip.setdefault(video, []).append(rel)
    for rels in by_clip.values():
        rels.sort(key=_suffix_order)
    rows: dict[str, ClipRow] = {}
    if (root / layout.INDEX_NAME).exists():
        index = open_owner_index(root)  # a private copy, or the live one in place: nothing written
        try:
            rows = {r.path: r for r in index.query()}
        finally:
            index.close()
    expected: dict[str, dict[str, Any]] = {}
    deleted: dict[str, dict[str, Any]] = {}

    def take(line: ChainLine) -> None:
        entry = line.entry
        if not line.trusted or entry is None:
            return
        history.take(entry)
        if entry["kind"] in CLIP_KINDS:
            expected[entry["clip"]] = entry
            deleted.pop(entry["clip"], None)
        elif entry["kind"] == "delete":
            deleted[entry["clip"]] = {"seq": entry["seq"]}
            expected.pop(entry["clip"], None)

    # Streamed: memory follows the clips that exist, not the length of the chain's history.
    chain = read_chain(root / MANIFEST_NAME, public_key=public_key, entry_problem=clip_entry_problem,
                       heads=heads, on_line=take, keep=False)
    return _Snapshot(files, by_clip, rows, chain, expected, deleted, history, unsafe)


def _unsafe_finding(rel: str, full: str, st: os.stat_result) -> Finding:
    """A symlink, FIFO, socket or device in the store: camrec never makes one, and following it
    (or opening it) could read outside the store or hang."""
    what = untrusted.kind_of(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        with contextlib.suppress(OSError):
            what += f" to {os.readlink(full)!r}"
    return Finding("unsafe-file", rel, f"{what}, where camrec only writes regular files and directories: "
                   "not followed or read")


# --- reading files ----------------------------------------------------------------------------


@dataclass
class _FileResult:
    size: int
    sha256: str | None
    decrypt: tuple[str, str] | None = None  # (finding kind, detail) when decryption failed
    error: str | None = None  # the file could not be read
    payload: str | None = None  # SHA-256 of the age payload (the bytes after the header), when hashed


class _Tee:
    """Hands the file to the age reader while hashing every byte it reads."""

    def __init__(self, f: Any, sha: Any) -> None:
        self._f, self._sha, self.size = f, sha, 0

    def readinto(self, b: Any) -> int:
        n = self._f.readinto(b) or 0
        if self._sha is not None:
            self._sha.update(memoryview(b)[:n])
        self.size += n
        return n

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if self._sha is not None:
            self._sha.update(data)
        self.size += len(data)
        return bytes(data)


class _Discard:
    def write(self, b: Any) -> int:
        return len(b)

    def flush(self) -> None:
        pass


def _check_file(root: Path, rel: str, hash_it: bool, identities: Sequence[Any] | None) -> _FileResult:
    """One pass over a file: its SHA-256, and (with identities) a full authenticated decryption.
    Opened from the store root without following any link (camrec/store/untrusted.py)."""
    from camrec.crypto.stream import decrypt_stream

    sha = Digester() if hash_it else None
    decrypt: tuple[str, str] | None = None
    try:
        with os.fdopen(untrusted.open_file(root, rel), "rb", buffering=0) as f:
            tee = _Tee(f, sha)
            if identities:
                try:
                    decrypt_stream(tee, identities, _Discard())  # type: ignore[arg-type]
                except TruncatedError as exc:
                    decrypt = ("truncated-payload", f"{exc.message}")
                except IdentityError as exc:
                    decrypt = ("undecryptable", f"no identity matches ({exc.message})")
                except CamrecError as exc:
                    decrypt = ("undecryptable", exc.message)
            if sha is not None:  # the rest, if decryption stopped early (or didn't run)
                buf = memoryview(bytearray(_BUF))
                while tee.readinto(buf):
                    pass
    except untrusted.UnsafeFileError as exc:  # swapped for a link or FIFO since the walk
        return _FileResult(0, None, None, exc.message)
    except PermissionError as exc:
        raise StorageError(f"cannot read {root / rel}: {exc.strerror}",
                           hint="run as the storage owner or a member of its group") from None
    except OSError as exc:
        return _FileResult(0, None, None, exc.strerror or str(exc))
    return _FileResult(tee.size, sha.sha256() if sha else None, decrypt,
                       payload=sha.payload() if sha else None)


# --- judging ----------------------------------------------------------------------------------


@dataclass
class _Plan:
    hash_it: bool = False
    decrypt: bool = False


def _plan(key: str, snap: _Snapshot, quick: bool, decrypting: bool) -> dict[str, _Plan]:
    entry, row = snap.expected.get(key), snap.rows.get(key)
    plans: dict[str, _Plan] = {}
    if entry is not None:
        for f in entry["files"]:
            st = snap.files.get(f["path"])
            if st is not None:
                plans[f["path"]] = _Plan(hash_it=not quick and st.st_size == f["size"], decrypt=decrypting)
    if decrypting and key not in snap.deleted and not (entry is None and row is not None and row.state == "recording"):
        for rel in snap.by_clip.get(key, []):
            plans.setdefault(rel, _Plan(decrypt=True))
    return plans


def _suffix_order(rel: str) -> tuple[int, str]:
    """Video first, then thumbnail, then details: the order a clip's files are listed in."""
    return next((i for i, s in enumerate(layout.CLIP_SUFFIXES) if rel.endswith(s)), 9), rel


def _judge(key: str, snap: _Snapshot, results: dict[str, _FileResult]) -> list[Finding]:
    out: list[Finding] = []
    entry, row = snap.expected.get(key), snap.rows.get(key)
    on_disk = snap.by_clip.get(key, [])
    listed: set[str] = set()
    if entry is not None:
        where = f"manifest entry {entry['seq']} ({entry['kind']})"
        for f in entry["files"]:
            rel, size = f["path"], f["size"]
            listed.add(rel)
            st, res = snap.files.get(rel), results.get(rel)
            if st is None:
                out.append(Finding("missing", rel, f"gone, but recorded in {where} and never deleted"))
            elif res is not None and res.error:
                out.append(Finding("unreadable", rel, res.error))
            elif st.st_size < size:
                out.append(Finding("truncated", rel, f"{st.st_size} of the {size} bytes recorded in {where}"))
            elif st.st_size != size:
                out.append(Finding("altered", rel, f"{st.st_size} bytes where {where} recorded {size}"))
            elif res is not None and res.sha256 is not None and res.sha256 != f["sha256"]:
                out.append(Finding("altered", rel, f"SHA-256 differs from {where} (same size, {size} bytes)"))
            elif res is not None and res.sha256 is not None and f.get("payload", res.payload) != res.payload:
                out.append(Finding("altered", rel, f"its age payload differs from the payload digest in {where}"))
        if row is None:
            out.append(Finding("unindexed", key, f"in {where} but not in the index (files checked)"))
    elif key in snap.deleted:
        seq = snap.deleted[key]["seq"]
        for rel in on_disk:
            listed.add(rel)
            out.append(Finding("deleted-present", rel, f"deleted by manifest entry {seq} but still on disk "
                               "(the daemon finishes deletions at start-up)"))
    extra = [rel for rel in on_disk if rel not in listed]
    if extra and entry is None and row is not None and row.state == "recording":
        out.append(Finding("recording", key, "being written (index state `recording`): not checked"))
        extra = []
    for rel in extra:
        if entry is not None:
            out.append(Finding("orphan", rel, f"not listed in manifest entry {entry['seq']} of its clip"))
        elif row is not None and row.state != "garbage":
            out.append(Finding("unrecorded", rel, f"in the index (state {row.state}) but never in the manifest"))
        else:
            out.append(Finding("orphan", rel, "no manifest entry and no index row"))
    if (not on_disk and entry is None and key not in snap.deleted and row is not None
            and row.state in ("complete", "partial", "missing")):
        out.append(Finding("unrecorded", key, f"the index lists it (state {row.state}) but the manifest never did"))
    cut_expected = (entry is not None and entry["kind"] == "partial") or (row is not None and row.state == "partial")
    for rel in on_disk:
        res = results.get(rel)
        if res is None or res.decrypt is None:
            continue
        kind, detail = res.decrypt
        if kind == "truncated-payload" and cut_expected:
            out.append(Finding("partial", rel, f"cut short by a stop, as recorded: {detail}"))
        else:
            out.append(Finding(kind, rel, detail))
    return out


def _chain_findings(snap: _Snapshot, root: Path) -> list[Finding]:
    out: list[Finding] = []
    if not snap.chain.count and not (root / MANIFEST_NAME).exists() and (snap.files or (root / PUB_NAME).exists()):
        out.append(Finding("chain-break", MANIFEST_NAME, "the manifest is missing"))
    # One finding per line; runs of consecutive lines with the same problems (e.g. a whole chain
    # under an unknown key) are reported once, as a line range.
    per_line: dict[int, list[str]] = {}
    for n, detail in snap.chain.problems:
        per_line.setdefault(n, []).append(detail)
    runs: list[tuple[int, int, str]] = []
    for n, details in per_line.items():
        detail = "; ".join(details)
        if runs and runs[-1][2] == detail and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n, detail)
        else:
            runs.append((n, n, detail))
    for first, last, detail in runs:
        where = f"{MANIFEST_NAME}:{first}" + (f"-{last}" if last != first else "")
        out.append(Finding("chain-break", where, detail))
    if snap.chain.torn is not None:
        out.append(Finding("torn-tail", MANIFEST_NAME, f"an unfinished last line ({len(snap.chain.torn)} bytes): a "
                           "power cut or an append in progress; the daemon cuts it at start-up"))
    out.extend(Finding("head-mismatch", MANIFEST_NAME, p) for p in snap.chain.head_problems)
    return out


# --- the whole check --------------------------------------------------------------------------


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read the device public key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise StorageError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise StorageError(f"{path} is not an Ed25519 public key")
    return key


def trusted_public_key(root: Path, device_key: Path | None = None) -> Ed25519PublicKey | None:
    """The key entries must be signed with: the one given, else the store's own public key file."""
    if device_key is not None:
        return load_public_key(device_key)
    pub = root / PUB_NAME
    if pub.exists():
        return load_public_key(pub)
    manifest = root / MANIFEST_NAME
    if manifest.exists() and manifest.stat().st_size:
        raise StorageError(f"{pub} is missing, so the manifest's signatures can't be checked",
                           hint="pass the device public key you saved with --device-key FILE")
    return None


def verify_store(root: Path, *, identities: Sequence[Any] | None = None, heads: Sequence[tuple[int, str]] = (),
                 device_key: Path | None = None, quick: bool = False, workers: int | None = None,
                 retention_days: float | None = None, max_size: int | None = None,
                 before_decrypt: Callable[[list[str]], None] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Checks a store. `before_decrypt(files)` runs once before any file is decrypted (the audit
    entry); `progress(done_bytes, total_bytes)` after each file read. `retention_days`/`max_size`:
    the owner's retention, which deletions are checked against (verify_history.py)."""
    t0 = time.perf_counter()
    if not root.is_dir():
        raise StorageError(f"storage directory {root} does not exist")
    untrusted.check_metadata(root)  # what is read by name below must be a regular file (or absent)
    public_key = trusted_public_key(root, device_key)
    decrypting = bool(identities)
    cache: dict[tuple[Any, ...], _FileResult] = {}
    report = VerifyReport(root, key=key_id(public_key) if public_key else None)
    pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1))

    def check(snap: _Snapshot, keys: list[str], announce: bool) -> tuple[dict[str, list[Finding]], int, int]:
        plans = {rel: p for k in keys for rel, p in _plan(k, snap, quick, decrypting).items()}
        todo = {}
        for rel, p in plans.items():
            st = snap.files[rel]
            ck = (rel, st.st_size, st.st_mtime_ns, st.st_ino, p.hash_it, p.decrypt)
            if ck not in cache:
                todo[ck] = p
        if announce and before_decrypt is not None and decrypting:
            before_decrypt(sorted(rel for rel, p in plans.items() if p.decrypt))
        total = sum(ck[1] for ck in todo)
        done = 0
        futures = {ck: pool.submit(_check_file, root, ck[0], p.hash_it, identities if p.decrypt else None)
                   for ck, p in todo.items()}
        for ck, fut in futures.items():
            cache[ck] = fut.result()
            done += ck[1]
            if progress is not None:
                progress(done, total)
        results = {}
        for rel, p in plans.items():
            st = snap.files[rel]
            results[rel] = cache[(rel, st.st_size, st.st_mtime_ns, st.st_ino, p.hash_it, p.decrypt)]
        hashed = sum(ck[1] for ck, p in todo.items() if p.hash_it)
        decrypted = sum(1 for p in todo.values() if p.decrypt)
        return {k: _judge(k, snap, results) for k in keys}, hashed, decrypted

    try:
        def history() -> History:
            return History(retention_days=retention_days, max_size=max_size, now=time.time())

        snap = _snapshot(root, public_key, heads, history())
        keys = sorted(set(snap.expected) | set(snap.by_clip) | set(snap.rows) | set(snap.deleted))
        by_key, report.bytes_hashed, report.decrypted = check(snap, keys, announce=True)
        suspects = [k for k, found in by_key.items() if any(f.problem for f in found)]
        if suspects:
            # A second look with fresh reads: a running daemon may have closed, recorded or
            # deleted a clip between our reads. Unchanged files are not read again.
            snap = _snapshot(root, public_key, heads, history())
            again, hashed, decrypted = check(snap, suspects, announce=False)
            by_key.update(again)
            report.bytes_hashed += hashed
            report.decrypted += decrypted
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    report.findings = (_chain_findings(snap, root) + snap.unsafe + [Finding(*f) for f in snap.history.findings]
                       + [f for k in keys for f in by_key[k]])
    report.clips = len(keys)
    report.files = len(snap.files)
    report.entries = snap.chain.count
    report.head = snap.chain.head
    report.seconds = time.perf_counter() - t0
    return report
