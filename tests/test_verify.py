"""`camrec verify`: every kind of damage the acceptance criteria name, and what must not be flagged.

Each test starts from a clean store (real Store writer, real age encryption, real SQLite, real
manifest), damages it the way an attacker or a power cut would, and checks the findings.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from camrec.cli import main
from camrec.crypto.keys import X25519Identity
from camrec.crypto.stream import CHUNK_SIZE
from camrec.owner.verify import verify_store
from camrec.store import layout
from camrec.store.manifest import (
    KEY_NAME,
    MANIFEST_NAME,
    PUB_NAME,
    SIG_CONTEXT,
    Manifest,
    canonical,
    key_id,
    line_hash,
)
from tests.test_manifest import T0, make_store, write_clip


@pytest.fixture
def clean(tmp_path):
    owner, store, manifest, rows = make_store(tmp_path, n=4)
    return {"owner": owner, "store": store, "manifest": manifest, "rows": rows, "root": store.root,
            "tmp": tmp_path}


def kinds(report) -> list[tuple[str, str | None]]:
    return sorted((f.kind, f.path) for f in report.findings)


def problems(report) -> list[tuple[str, str | None]]:
    return sorted((f.kind, f.path) for f in report.problems)


def edit_lines(root: Path, fn) -> None:
    lines = (root / MANIFEST_NAME).read_bytes().splitlines()
    (root / MANIFEST_NAME).write_bytes(b"".join(line + b"\n" for line in fn(lines)))


def signed_line(entry: dict, key: Ed25519PrivateKey) -> bytes:
    """What someone holding `key` can produce: a well-formed, correctly signed line."""
    body = {k: v for k, v in entry.items() if k != "sig"}
    body["key"] = key_id(key.public_key())
    body["sig"] = base64.b64encode(key.sign(SIG_CONTEXT + canonical(body))).decode()
    return canonical(body)


def device_key(root: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key((root / KEY_NAME).read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def test_clean_store_passes(clean):
    report = verify_store(clean["root"], identities=[clean["owner"]])
    assert report.ok and report.findings == []
    assert (report.clips, report.files, report.decrypted, report.entries) == (4, 12, 12, 4)
    assert report.bytes_hashed == sum(r.size for r in clean["rows"])
    assert report.head == clean["manifest"].head()


def test_deleted_clip_is_missing(clean):
    row = clean["rows"][1]
    for rel in (row.path, row.thumb, row.meta):
        os.unlink(clean["root"] / rel)
    assert problems(verify_store(clean["root"])) == sorted(("missing", p) for p in (row.path, row.thumb, row.meta))


@pytest.mark.parametrize("which", ["path", "thumb", "meta"])
def test_modified_byte_is_altered(clean, which):
    rel = getattr(clean["rows"][2], which)
    path = clean["root"] / rel
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = verify_store(clean["root"])
    assert problems(report) == [("altered", rel)]
    assert "same size" in report.problems[0].detail


def test_truncated_clip(clean):
    rel = clean["rows"][0].path
    path = clean["root"] / rel
    size = path.stat().st_size
    os.truncate(path, size - 1000)
    report = verify_store(clean["root"])
    assert problems(report) == [("truncated", rel)]
    assert f"{size - 1000} of the {size} bytes" in report.problems[0].detail


def test_appended_bytes_are_altered(clean):
    rel = clean["rows"][3].meta
    with open(clean["root"] / rel, "ab") as f:
        f.write(b"more")
    report = verify_store(clean["root"])
    assert problems(report) == [("altered", rel)] and "bytes where" in report.problems[0].detail


def test_forged_line_edited_field(clean):
    """The attacker swaps a clip and edits its digest in the manifest, but can't re-sign."""
    row = clean["rows"][1]
    path = clean["root"] / row.path
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    new_sha = hashlib.sha256(bytes(data)).hexdigest()

    def forge(lines):
        e = json.loads(lines[1])
        e["files"][0]["sha256"] = new_sha
        lines[1] = canonical(e)
        return lines

    edit_lines(clean["root"], forge)
    report = verify_store(clean["root"])
    breaks = [f for f in report.problems if f.kind == "chain-break"]
    assert (breaks[0].path, "bad signature" in breaks[0].detail) == (f"{MANIFEST_NAME}:2", True)
    assert any(f.path == f"{MANIFEST_NAME}:3" and "previous-line hash" in f.detail for f in breaks)
    # The forged entry is not trusted, so the swapped clip's files are unaccounted for.
    assert ("unrecorded", row.path) in problems(report)


def test_forged_line_resigned_with_another_key(clean):
    intruder = Ed25519PrivateKey.generate()

    def forge(lines):
        e = json.loads(lines[2])
        e["end"] = "2030-01-01T00:00:00.000Z"
        lines[2] = signed_line(e, intruder)
        return lines

    edit_lines(clean["root"], forge)
    report = verify_store(clean["root"])
    assert any(f.kind == "chain-break" and f.path == f"{MANIFEST_NAME}:3" and "unknown key" in f.detail
               for f in report.problems)


def test_line_removed_from_the_middle(clean):
    edit_lines(clean["root"], lambda lines: lines[:1] + lines[2:])
    report = verify_store(clean["root"])
    breaks = [f for f in report.problems if f.kind == "chain-break"]
    assert breaks and breaks[0].path == f"{MANIFEST_NAME}:2" and "sequence 3 where 2" in breaks[0].detail
    # the clip whose entry went is now unaccounted for
    assert ("unrecorded", clean["rows"][1].path) in problems(report)


def test_lines_reordered(clean):
    edit_lines(clean["root"], lambda lines: [lines[0], lines[2], lines[1], lines[3]])
    report = verify_store(clean["root"])
    # content still authentic; and camrec time (`ct`) now goes backwards between the swapped lines
    assert {f.kind for f in report.problems} == {"chain-break", "bad-time"}
    assert f"{MANIFEST_NAME}:2" in {f.path for f in report.problems}


def test_line_removed_and_clip_deleted_with_the_stolen_key_needs_a_pinned_head(clean):
    """A thief with the device key rewrites the chain without clip 2 and deletes its files.
    The signatures all check out; only a head the owner saved earlier shows the rewrite."""
    root = clean["root"]
    pinned = clean["manifest"].head()
    early = (2, line_hash((root / MANIFEST_NAME).read_bytes().splitlines()[1]))
    key = device_key(root)
    row = clean["rows"][1]
    for rel in (row.path, row.thumb, row.meta):
        os.unlink(root / rel)
    clean["store"].index.delete(row.id)

    def rewrite(lines):
        out, prev = [], "0" * 64
        for n, line in enumerate(lines[:1] + lines[2:], 1):
            e = json.loads(line)
            e["seq"], e["prev"] = n, prev
            out.append(signed_line(e, key))
            prev = line_hash(out[-1])
        return out

    edit_lines(root, rewrite)
    assert verify_store(root).ok  # what the chain alone can't show
    report = verify_store(root, heads=[pinned])
    assert [f.kind for f in report.problems] == ["head-mismatch"]
    assert "not in the chain" in report.problems[0].detail
    # an earlier head is caught too: the rewrite changed every line from the removed one on
    report = verify_store(root, heads=[early])
    assert [f.kind for f in report.problems] == ["head-mismatch"] and "does not match" in report.problems[0].detail
    # while a head from before the removed entry still matches: the prefix up to it is intact
    first = (1, line_hash((root / MANIFEST_NAME).read_bytes().splitlines()[0]))
    assert verify_store(root, heads=[first]).ok


def test_whole_chain_re_signed_with_a_new_key_and_public_key_replaced(clean):
    root = clean["root"]
    seq, h = clean["manifest"].head()
    intruder = Ed25519PrivateKey.generate()

    def rewrite(lines):
        out, prev = [], "0" * 64
        for line in lines:
            e = json.loads(line)
            e["prev"] = prev
            out.append(signed_line(e, intruder))
            prev = line_hash(out[-1])
        return out

    edit_lines(root, rewrite)
    assert any("unknown key" in f.detail for f in verify_store(root).problems)
    pub = intruder.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    saved_pub = root.parent / "device.pub"
    shutil.copy(root / PUB_NAME, saved_pub)
    (root / PUB_NAME).write_bytes(pub)
    assert verify_store(root).ok
    assert [f.kind for f in verify_store(root, heads=[(seq, h)]).problems] == ["head-mismatch"]
    assert any("unknown key" in f.detail for f in verify_store(root, device_key=saved_pub).problems)


def test_orphan_files(clean):
    root, row = clean["root"], clean["rows"][0]
    planted = layout.clip_relpath("cam", T0 + 3600)
    (root / planted).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / row.path, root / planted)
    extra_thumb = layout.sibling(clean["rows"][3].path, layout.THUMB_SUFFIX).replace(".jpg.age", "-x.jpg.age")
    shutil.copy(root / row.thumb, root / extra_thumb)  # not a clip name: ignored
    stray = root / "notes.txt"
    stray.write_text("not ours")
    assert problems(verify_store(root)) == [("orphan", planted)]


def test_retention_deletions_are_not_reported(tmp_path):
    from tests.test_tamper_attacks import DAY, recorded_store

    s = recorded_store(tmp_path, days_ago=45)  # four clips, 45 to 42 days ago on a simulated clock
    s["clock"].advance(40 * DAY)  # camrec ran 44 days in all: two clips are more than 40 days old
    # I4 as the store does it: the signed delete entries, then rows `garbage`, unlink, drop the rows.
    doomed = s["store"].apply_retention(retention_days=42.5, max_size=None, min_free=0)
    assert len(doomed) == 2
    report = verify_store(s["root"], retention_days=42.5)
    assert report.ok and report.findings == []
    assert all(not (s["root"] / r.path).exists() for r in doomed)


def test_deleted_present_during_retention_is_a_notice(clean):
    from camrec.store.retention import Doomed

    oldest = min(clean["manifest"].live_clips(), key=lambda c: c.seq)
    clean["manifest"].record_deleted([Doomed(oldest, {"reason": "low-space", "free": 1, "min_free": 2})])
    report = verify_store(clean["root"])  # recorded; the unlink has not happened yet
    assert report.ok and {f.kind for f in report.findings} == {"deleted-present"}


def test_torn_last_line_is_reported_not_a_chain_break_then_repaired(clean):
    root = clean["root"]
    clean["manifest"].close()
    partial_line = (root / MANIFEST_NAME).read_bytes().splitlines()[-1][:57]
    with open(root / MANIFEST_NAME, "ab") as f:
        f.write(partial_line)
    report = verify_store(root)
    assert report.ok and kinds(report) == [("torn-tail", MANIFEST_NAME)]
    Manifest(root)  # the daemon's start-up cuts it and records a repair entry
    report = verify_store(root)
    assert report.ok and report.findings == [] and report.entries == 5


def test_recording_clip_is_not_flagged(clean):
    clip = clean["store"].open_clip("cam", T0 + 7200)
    clip.write(os.urandom(300_000), T0 + 7210)
    clip.sync()
    report = verify_store(clean["root"], identities=[clean["owner"]])
    assert report.ok and kinds(report) == [("recording", clip.rel)]
    clip.close(T0 + 7215)  # the store writes the manifest entry before it marks the row complete
    assert verify_store(clean["root"]).findings == []
    # A row that is complete but has no entry (a crash between the two) is reported.
    row = clean["store"].index.query()[-1]
    entries = (clean["root"] / "manifest.jsonl").read_bytes().splitlines(keepends=True)
    (clean["root"] / "manifest.jsonl").write_bytes(b"".join(entries[:-1]))
    assert ("unrecorded", row.path) in problems(verify_store(clean["root"]))


def test_a_recording_row_does_not_hide_a_recorded_clip(clean):
    """Setting a row back to `recording` (index is unsigned) must not hide a deleted clip."""
    row = clean["rows"][0]
    clean["store"].index.update(row.id, state="recording")
    os.unlink(clean["root"] / row.path)
    assert ("missing", row.path) in problems(verify_store(clean["root"]))


def test_unrecorded_index_rows_and_unindexed_entries(clean):
    store, root = clean["store"], clean["root"]
    ghost = store.index.insert("cam", T0 + 9000, layout.clip_relpath("cam", T0 + 9000), 123, state="missing")
    assert ghost
    row = clean["rows"][3]
    store.index.delete(row.id)
    report = verify_store(root)
    assert problems(report) == [("unrecorded", layout.clip_relpath("cam", T0 + 9000))]
    assert ("unindexed", row.path) in kinds(report)


def test_missing_manifest(clean):
    os.unlink(clean["root"] / MANIFEST_NAME)
    report = verify_store(clean["root"])
    assert ("chain-break", MANIFEST_NAME) in problems(report)
    assert sum(f.kind == "unrecorded" for f in report.problems) == 12


def test_with_identity_corrupted_payload_is_undecryptable(clean):
    """A payload damaged before it was recorded (digest matches): only decryption can tell."""
    root, manifest, store = clean["root"], clean["manifest"], clean["store"]
    clip = store.open_clip("cam", T0 + 5000)
    clip.write(os.urandom(3 * CHUNK_SIZE), T0 + 5010)
    clip.sync()  # two chunks are on disk; damage the second before the clip closes and is recorded
    with open(clip.path, "r+b") as f:
        f.seek(-CHUNK_SIZE, os.SEEK_END)
        byte = f.read(1)
        f.seek(-CHUNK_SIZE, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0x80]))
    row = clip.close(T0 + 5010)
    manifest.record_row(row)  # (already recorded by the store at close: nothing new)
    assert verify_store(root).ok
    report = verify_store(root, identities=[clean["owner"]])
    assert problems(report) == [("undecryptable", row.path)]
    assert "failed authentication" in report.problems[0].detail


def test_with_identity_partial_clip_is_a_notice_but_a_cut_complete_clip_a_problem(clean):
    root, store, manifest, owner = clean["root"], clean["store"], clean["manifest"], clean["owner"]
    cut = store.open_clip("cam", T0 + 6000)
    cut.write(os.urandom(4 * CHUNK_SIZE), T0 + 6005)
    cut.sync()
    cut._file.close()  # power cut
    store.reconcile()
    manifest.reconcile(store.index.query())
    report = verify_store(root, identities=[owner])
    assert report.ok and kinds(report) == [("partial", cut.rel)]
    # the same cut file, recorded as a complete clip, is a problem
    manifest.record_closed("cam", cut.rel, start=T0 + 6000, end=T0 + 6005)
    store.index.update(store.index.query(states=("partial",))[0].id, state="complete")
    assert problems(verify_store(root, identities=[owner])) == [("truncated-payload", cut.rel)]


def test_with_wrong_identity_everything_is_undecryptable(clean):
    report = verify_store(clean["root"], identities=[X25519Identity.generate()])
    assert len(report.problems) == 12 and {f.kind for f in report.problems} == {"undecryptable"}
    assert "no identity matches" in report.problems[0].detail


def test_quick_mode_checks_sizes_only(clean):
    root, rows = clean["root"], clean["rows"]
    path = root / rows[0].path
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    os.truncate(root / rows[1].path, 500)
    report = verify_store(root, quick=True)
    assert problems(report) == [("truncated", rows[1].path)] and report.bytes_hashed == 0


def test_a_changing_store_is_looked_at_twice(clean, monkeypatch):
    """A clip that closes between verify's reads is not reported."""
    import camrec.owner.verify as v

    root, store, manifest = clean["root"], clean["store"], clean["manifest"]
    real = v._snapshot
    calls = []

    def snapshot(*a, **kw):
        snap = real(*a, **kw)
        if not calls:  # right after the first look, the daemon closes and records a new clip
            row = write_clip(store, T0 + 8000, 1000)
            manifest.record_row(row)
            snap.files.update({r: os.stat(root / r) for r in (row.path, row.thumb, row.meta)})
            snap.by_clip[row.path] = [row.path, row.thumb, row.meta]
        calls.append(1)
        return snap

    monkeypatch.setattr(v, "_snapshot", snapshot)
    report = verify_store(root)
    assert report.ok and len(calls) == 2


# --- the command ------------------------------------------------------------------------------


def write_config(tmp: Path, owner: X25519Identity, root: Path) -> Path:
    cfg = tmp / "camrec.yaml"
    cfg.write_text(f"recipients: [{owner.recipient()}]\nstorage:\n  path: {root}\n"
                   "cameras:\n  cam:\n    source: rtsp://127.0.0.1:9/cam\n")
    return cfg


def test_cli_clean_then_damaged(clean, capsys):
    cfg = write_config(clean["tmp"], clean["owner"], clean["root"])
    heads = clean["tmp"] / "heads.txt"
    assert main(["verify", "-c", str(cfg), "--save-head", str(heads)]) == 0
    out = capsys.readouterr().out
    seq, h = clean["manifest"].head()
    assert f"manifest head {seq}:{h}" in out and "0 problem(s)" in out
    assert heads.read_text().startswith(f"{seq}:{h}  # ")
    assert main(["verify", "-c", str(cfg), "--expect-head", str(heads), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and doc["manifest"]["head"] == f"{seq}:{h}" and doc["checked"]["clips"] == 4

    os.unlink(clean["root"] / clean["rows"][0].path)
    assert main(["verify", "-c", str(cfg), "--json"]) == 7
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert not doc["ok"] and doc["problems"][0]["kind"] == "missing"
    assert captured.err.startswith("camrec: error: 1 problem(s) in ")
    assert main(["verify", "-c", str(cfg)]) == 7
    assert capsys.readouterr().out.startswith("missing ")


def test_cli_usage_errors_are_one_line(clean, capsys):
    cfg = write_config(clean["tmp"], clean["owner"], clean["root"])
    assert main(["verify", "-c", str(cfg), "--expect-head", "12:zz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("camrec: error: --expect-head") and "Traceback" not in err
    os.unlink(clean["root"] / PUB_NAME)
    assert main(["verify", "-c", str(cfg)]) == 9
    assert "device-signing.pub is missing" in capsys.readouterr().err


def test_verify_time_for_many_clips(tmp_path, capsys):
    """Figures for the report: verify of N small clips (index, chain, hashing all files)."""
    n = 300
    _, store, _, _ = make_store(tmp_path, n=n, size=20_000)
    t = time.perf_counter()
    report = verify_store(store.root)
    elapsed = time.perf_counter() - t
    t = time.perf_counter()
    quick = verify_store(store.root, quick=True)
    quick_elapsed = time.perf_counter() - t
    with capsys.disabled():
        print(f"\nverify: {n} clips / {report.files} files / {report.bytes_hashed / 1e6:.1f} MB in {elapsed:.2f} s "
              f"({quick_elapsed:.2f} s --quick)")
    assert report.ok and quick.ok and report.clips == n
