"""The manifest writer: device key, entries, idempotence, crash-safe appends, concurrent writers.

Real files in tmp dirs: the real Store writes clips (real age encryption, real SQLite) and the
tests call the manifest API the way the store does once it is wired in.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from camrec.crypto.keys import X25519Identity
from camrec.crypto.stream import AgeWriter
from camrec.errors import StorageError, UsageError
from camrec.owner.verify import clip_entry_problem, parse_heads, trusted_public_key
from camrec.store.manifest import (
    GENESIS,
    KEY_NAME,
    MANIFEST_NAME,
    PUB_NAME,
    HashingFile,
    Manifest,
    canonical,
    hash_file,
    line_hash,
    read_chain,
)
from camrec.store.writer import Store

T0 = 1_763_700_000.0  # 2025-11-21


def write_clip(store: Store, start: float, size: int = 200_000, *, camera: str = "cam",
               sidecars: bool = True):
    """A finished clip written through the real Store (random bytes stand in for the fMP4)."""
    clip = store.open_clip(camera, start)
    data = os.urandom(size)
    half = size // 2
    clip.write(data[:half], start + 5)
    clip.write(data[half:], start + 10)
    return clip.close(start + 10, thumbnail=b"\xff\xd8\xff" + os.urandom(300) if sidecars else None,
                      details=json.dumps({"camera": camera}).encode() if sidecars else None)


def make_store(tmp_path: Path, n: int = 3, size: int = 200_000):
    """(owner identity, Store, Manifest, rows): n clips, each recorded in the manifest at close."""
    owner = X25519Identity.generate()
    store = Store(tmp_path / "storage", [owner.recipient()])
    manifest = Manifest(store.root)
    rows = []
    for i in range(n):
        row = write_clip(store, T0 + 60 * i, size)
        manifest.record_row(row)
        rows.append(row)
    return owner, store, manifest, rows


def lines_of(root: Path) -> list[bytes]:
    return (root / MANIFEST_NAME).read_bytes().splitlines()


def chain(root: Path, heads=()):
    return read_chain(root / MANIFEST_NAME, public_key=trusted_public_key(root), entry_problem=clip_entry_problem,
                      heads=heads)


def test_device_key_created_once_0600_and_reused(tmp_path):
    root = tmp_path / "s"
    root.mkdir()
    m1 = Manifest(root)
    assert stat.S_IMODE((root / KEY_NAME).stat().st_mode) == 0o600
    assert (root / PUB_NAME).read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert b"PRIVATE" not in (root / PUB_NAME).read_bytes()
    key_before = (root / KEY_NAME).read_bytes()
    m1.close()
    m2 = Manifest(root)
    assert m2.key_id == m1.key_id and (root / KEY_NAME).read_bytes() == key_before
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_refuses_a_new_key_for_an_existing_chain_and_a_mismatched_public_key(tmp_path):
    _, store, manifest, _ = make_store(tmp_path, n=1)
    manifest.close()
    (store.root / KEY_NAME).rename(store.root / "saved.key")
    with pytest.raises(StorageError, match="is missing but"):
        Manifest(store.root)
    (store.root / "saved.key").rename(store.root / KEY_NAME)
    (store.root / PUB_NAME).write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    with pytest.raises(StorageError, match="does not belong"):
        Manifest(store.root)


def test_clip_entry_lists_every_file_with_size_and_digest(tmp_path):
    _, store, _, rows = make_store(tmp_path, n=2)
    entries = [json.loads(line) for line in lines_of(store.root)]
    assert [e["seq"] for e in entries] == [1, 2]
    assert entries[0]["prev"] == GENESIS and entries[1]["prev"] == line_hash(lines_of(store.root)[0])
    e, row = entries[0], rows[0]
    assert (e["kind"], e["camera"], e["clip"]) == ("clip", "cam", row.path)
    assert e["start"] == "2025-11-21T04:40:00.000Z" and e["end"] == "2025-11-21T04:40:10.000Z"
    assert [f["path"] for f in e["files"]] == [row.path, row.thumb, row.meta]
    for f in e["files"]:
        assert (f["size"], f["sha256"]) == hash_file(store.root / f["path"])
    assert sum(f["size"] for f in e["files"]) == row.size
    # canonical: what is on disk is exactly the canonical encoding, so signatures cover it all
    assert all(canonical(json.loads(line)) == line for line in lines_of(store.root))
    assert chain(store.root).problems == []


def test_recording_is_idempotent(tmp_path):
    _, store, manifest, rows = make_store(tmp_path, n=1)
    assert manifest.record_row(rows[0]) is None  # the same clip again: nothing new
    assert len(lines_of(store.root)) == 1
    again = manifest.record_row(rows[0], kind="partial")  # a different statement is recorded
    assert again is not None and again["kind"] == "partial"


def test_delete_entries_batch_and_skip_repeats(tmp_path):
    _, _, manifest, rows = make_store(tmp_path, n=3)
    from camrec.store.retention import Doomed

    doomed = [Doomed(c, {"reason": "budget", "max_size": 1, "total": 2}) for c in manifest.live_clips()[:2]]
    out = manifest.record_deleted(doomed)
    assert [e["kind"] for e in out] == ["delete", "delete"] and [e["seq"] for e in out] == [4, 5]
    assert [e["reason"] for e in out] == ["budget", "budget"] and all(isinstance(e["ct"], int) for e in out)
    assert manifest.record_deleted(doomed) == []
    assert manifest.latest(rows[0].path)["kind"] == "delete"
    assert manifest.latest(rows[2].path)["kind"] == "clip"


def test_reconcile_records_clips_without_entries_once(tmp_path):
    owner = X25519Identity.generate()
    store = Store(tmp_path / "s", [owner.recipient()])
    done = write_clip(store, T0)
    cut = store.open_clip("cam", T0 + 60)
    cut.write(os.urandom(150_000), T0 + 65)
    cut.sync()
    cut._file.close()  # the daemon died here
    counts = store.reconcile()
    # The finished clip got its entry when it closed; start-up recovery records the cut one.
    assert counts["partial"] == 1 and counts["recorded"] == 1
    manifest = Manifest(store.root)
    assert manifest.latest(done.path)["kind"] == "clip" and not manifest.latest(done.path).get("recovered")
    partial = manifest.latest(cut.rel)
    assert partial["kind"] == "partial" and partial["recovered"]
    assert manifest.reconcile(store.index.query()) == {"recorded": 0}


@pytest.mark.parametrize("tail", [b'{"v":1,"seq":9,"kind":"cl', b"\0" * 512], ids=["prefix", "zeros"])
def test_torn_last_line_is_cut_and_recorded_not_a_chain_break(tmp_path, tail):
    _, store, manifest, _ = make_store(tmp_path, n=2)
    manifest.close()
    good = (store.root / MANIFEST_NAME).read_bytes()
    with open(store.root / MANIFEST_NAME, "ab") as f:  # what a power cut mid-append leaves
        f.write(tail)
    chk = chain(store.root)
    assert chk.problems == [] and chk.torn == tail
    m = Manifest(store.root)  # start-up
    data = (store.root / MANIFEST_NAME).read_bytes()
    assert data.startswith(good) and data.endswith(b"\n")
    repair = json.loads(data.splitlines()[-1])
    assert repair["kind"] == "repair" and repair["torn_bytes"] == len(tail) and repair["seq"] == 3
    assert chain(store.root).problems == [] and chain(store.root).torn is None
    assert m.head() == (3, line_hash(data.splitlines()[-1]))


def test_a_replaced_manifest_is_not_written_into_the_void(tmp_path):
    """Moving the manifest away must not leave the daemon appending to an unlinked file."""
    _, store, manifest, _ = make_store(tmp_path, n=2)
    (store.root / MANIFEST_NAME).rename(tmp_path / "moved.jsonl")
    row = write_clip(store, T0 + 600)
    manifest.record_row(row)
    (entry,) = [json.loads(line) for line in lines_of(store.root)]
    assert (entry["seq"], entry["clip"]) == (1, row.path)
    # ... which verify then shows: the two earlier clips are no longer accounted for
    from camrec.owner.verify import verify_store

    assert sorted({f.kind for f in verify_store(store.root).problems}) == ["unrecorded"]


def test_concurrent_writers_keep_one_chain(tmp_path):
    """Two Manifest objects (daemon + an owner's re-key) and several closing threads each."""
    _, store, _, _ = make_store(tmp_path, n=0)
    rows = [write_clip(store, T0 + 60 * i, 20_000) for i in range(24)]
    writers = [Manifest(store.root), Manifest(store.root)]
    threads = [threading.Thread(target=lambda k=k: [writers[k % 2].record_row(r) for r in rows[k::6]])
               for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    chk = chain(store.root)
    assert chk.problems == [] and [line.entry["seq"] for line in chk.lines] == list(range(1, 25))
    assert writers[0].record_row(rows[0]) is None  # caught up with the other writer's lines


def test_append_failure_is_a_storage_error(tmp_path):
    _, store, manifest, rows = make_store(tmp_path, n=1)
    os.unlink(store.root / rows[0].thumb)
    with pytest.raises(StorageError, match="cannot hash"):
        manifest.record_closed("cam", rows[0].path, start=T0, end=T0 + 1, files=[rows[0].thumb])
    assert len(lines_of(store.root)) == 1


def test_hashing_file_matches_the_file_on_disk(tmp_path):
    owner = X25519Identity.generate()
    path = tmp_path / "x.age"
    with open(path, "wb", buffering=0) as raw:
        hf = HashingFile(raw)
        w = AgeWriter(hf, [owner.recipient()])  # type: ignore[arg-type]
        for _ in range(40):
            w.write(os.urandom(50_000))
        w.close()
    d = hf.digest("x.age")
    assert (d.size, d.sha256) == hash_file(path)


def test_known_digest_used_only_when_the_size_matches(tmp_path):
    _, store, manifest, rows = make_store(tmp_path, n=1)
    row = rows[0]
    real = hash_file(store.root / row.path)
    from camrec.store.manifest import FileDigest

    fake = FileDigest(row.path, real[0], "ab" * 32, "cd" * 32)
    assert manifest.digests(row.path, [row.path], {row.path: fake})[0].sha256 == "ab" * 32
    no_payload = FileDigest(row.path, real[0], "ab" * 32)  # the payload digest is recorded too: hashed
    assert manifest.digests(row.path, [row.path], {row.path: no_payload})[0].sha256 == real[1]
    wrong_size = FileDigest(row.path, real[0] + 1, "ab" * 32, "cd" * 32)
    assert manifest.digests(row.path, [row.path], {row.path: wrong_size})[0].sha256 == real[1]


def test_heads_parse_and_check(tmp_path):
    _, store, manifest, _ = make_store(tmp_path, n=2)
    seq, h = manifest.head()
    heads_file = tmp_path / "heads"
    heads_file.write_text(f"# saved heads\n1:{line_hash(lines_of(store.root)[0])}  # first\n\n")
    assert parse_heads([f"{seq}:{h}", f"{seq}:{h[:16].upper()}", str(heads_file)]) == [
        (2, h), (2, h[:16]), (1, line_hash(lines_of(store.root)[0]))]
    assert chain(store.root, parse_heads([f"{seq}:{h}", str(heads_file)])).head_problems == []
    assert "not in the chain" in chain(store.root, [(7, h)]).head_problems[0]
    assert "does not match" in chain(store.root, [(1, h)]).head_problems[0]
    with pytest.raises(UsageError):
        parse_heads(["nonsense"])


def test_hash_throughput(tmp_path, capsys):
    """Measures what `record_closed` costs per MB at clip close (file in the page cache, as it is
    right after writing). Printed with -s; the floor only catches a pathological regression."""
    path = tmp_path / "big"
    size = 64 * 1024 * 1024
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    hash_file(path)  # warm
    t = time.perf_counter()
    hash_file(path)
    rate = size / 1e6 / (time.perf_counter() - t)
    with capsys.disabled():
        print(f"\nSHA-256 of a cached 64 MiB clip file: {rate:.0f} MB/s")
    assert rate > 30

