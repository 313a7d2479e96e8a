"""Issue 8, finding 8: a damaged, deleted or replaced index. The index is a cache of the clip files
and the signed manifest: it is rebuilt with durations, states and sidecars, `list` keeps working,
`rekey` re-keys every file of a clip by name, and `verify` stays clean."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from camrec.crypto.keys import X25519Identity, identity_file_text
from camrec.store import layout
from tests.support.daemon import Daemon
from tests.test_recorder import record

AGE = shutil.which("age")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rebuild-src")
    owner, store, rows, _ = record(tmp, motion="3-5,11-13", seconds=17)
    store.close()
    assert len(rows) == 2 and all(r.thumb and r.meta and r.state == "complete" for r in rows)
    return owner, store.root


@pytest.fixture
def setup(recorded, tmp_path):
    owner, src = recorded
    root = tmp_path / "storage"
    shutil.copytree(src, root)
    key = tmp_path / "owner.key"
    key.write_text(identity_file_text(owner))
    cfg = tmp_path / "camrec.yaml"
    cfg.write_text(f"recipients: [{owner.recipient()}]\nstorage:\n  path: {root}\n  min_free: 1MB\n"
                   "cameras:\n  cam:\n    source: 'synthetic:?motion=1-3&period=600'\n"
                   "    pre_roll: 1s\n    post_roll: 1s\n")
    return {"owner": owner, "root": root, "key": key, "cfg": cfg, "tmp": tmp_path}


def camrec(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "camrec", *args], capture_output=True, text=True, timeout=timeout)


def listing(cfg: Path) -> tuple[list[dict], str]:
    proc = camrec("list", "-c", str(cfg), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def comparable(clips: list[dict]) -> list[tuple]:
    """What must survive a rebuild. Manifest times are kept to the millisecond, so durations may
    differ by a millisecond from the ones the recorder measured."""
    return [(c["camera"], c["start"], round(c["duration"], 2), c["size"], c["path"], c["state"], c["thumbnail"],
             c["details"]) for c in clips]


def damage(index: Path, how: str) -> None:
    data = index.read_bytes()
    assert len(data) >= 8192
    if how == "garbage":
        index.write_bytes(os.urandom(len(data)))
    else:  # a torn write: the file cut in the middle of its pages
        index.write_bytes(data[: len(data) // 2 + 100])


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_damaged_index_list_falls_back_verify_hints_run_rebuilds_and_records(setup, how):
    s = setup
    index = s["root"] / layout.INDEX_NAME
    before, _ = listing(s["cfg"])
    assert [c["state"] for c in before] == ["complete", "complete"]
    damage(index, how)
    damaged_bytes = index.read_bytes()

    # Owner side, read-only: `list` reads the files and the signed manifest instead, and says so.
    fallback, err = listing(s["cfg"])
    assert comparable(fallback) == comparable(before)
    assert "camrec: warning: the clip index" in err and "is damaged" in err
    assert "camrec: hint: run `camrec index rebuild -c CONFIG`" in err
    assert index.read_bytes() == damaged_bytes  # nothing written by the owner's tools
    # `verify` refuses with one clear line and the way out, not a bare exit 9.
    proc = camrec("verify", "-c", str(s["cfg"]))
    assert proc.returncode == 9, proc.stderr
    assert proc.stderr.startswith("camrec: error: the clip index") and "is damaged" in proc.stderr
    assert "camrec: hint: run `camrec index rebuild -c CONFIG`" in proc.stderr
    assert "Traceback" not in proc.stderr

    # The recorder rebuilds at start, keeps the damaged file aside, and records.
    run = camrec("run", "-c", str(s["cfg"]), "--duration", "9s", timeout=90)
    assert run.returncode == 0, run.stderr
    assert "rebuilt the clip index" in run.stderr
    kept = [p for p in s["root"].iterdir() if p.name.startswith("index.sqlite3.damaged-")
            and not p.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 1 and kept[0].read_bytes() == damaged_bytes
    after, err = listing(s["cfg"])
    assert "warning" not in err
    assert comparable(after[:2]) == comparable(before)
    assert len(after) >= 3 and after[2]["state"] == "complete" and after[2]["thumbnail"]
    proc = camrec("verify", "-c", str(s["cfg"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 problem(s)" in proc.stdout


@pytest.mark.skipif(AGE is None, reason="needs the age binary")
def test_deleted_index_rebuild_then_rekey_reaches_thumbnails_and_details(setup):
    s = setup
    before, _ = listing(s["cfg"])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{s['root'] / layout.INDEX_NAME}{suffix}").unlink(missing_ok=True)
    proc = camrec("index", "rebuild", "-c", str(s["cfg"]))
    assert proc.returncode == 0, proc.stderr
    assert "2 clip(s) (2 complete), 2 with times and sidecars from the manifest" in proc.stderr
    after, _ = listing(s["cfg"])
    assert comparable(after) == comparable(before)
    assert camrec("verify", "-c", str(s["cfg"])).returncode == 0

    new = X25519Identity.generate()
    new_key = s["tmp"] / "new.key"
    new_key.write_text(identity_file_text(new))
    recipients = s["tmp"] / "recipients.txt"
    recipients.write_text(f"{new.recipient()}\n")
    # The index is gone again: rekey must still find every file of each clip by its name.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{s['root'] / layout.INDEX_NAME}{suffix}").unlink(missing_ok=True)
    proc = camrec("rekey", "-c", str(s["cfg"]), "-i", str(s["key"]), "--recipients", str(recipients))
    assert proc.returncode == 0, proc.stderr
    assert "re-keyed 6 file(s) of 2 clip(s)" in proc.stderr
    files = sorted(p for p in s["root"].rglob("*.age"))
    suffixes = {".".join(p.name.rsplit(".", 2)[-2:]) for p in files}
    assert len(files) == 6 and suffixes == {"mp4.age", "jpg.age", "json.age"}
    for path in files:
        old = subprocess.run([AGE, "-d", "-i", str(s["key"]), str(path)], capture_output=True, timeout=60)
        assert old.returncode != 0, f"the revoked key still opens {path.name}"
        ok = subprocess.run([AGE, "-d", "-i", str(new_key), str(path)], capture_output=True, timeout=60)
        assert ok.returncode == 0 and ok.stdout, f"the new key does not open {path.name}"
    # The rekey entries list all three files and keep the durations: a rebuild now is still exact.
    assert camrec("index", "rebuild", "-c", str(s["cfg"])).returncode == 0
    rebuilt, _ = listing(s["cfg"])
    assert [(c["path"], round(c["duration"], 2), c["thumbnail"], c["details"]) for c in rebuilt] == \
        [(c["path"], round(c["duration"], 2), c["thumbnail"], c["details"]) for c in before]
    proc = camrec("verify", "-c", str(s["cfg"]))
    assert proc.returncode == 0 and "orphan" not in proc.stdout, proc.stdout


def test_index_deleted_while_the_daemon_runs_keeps_every_clip_on_disk(tmp_path):
    d = Daemon(tmp_path, "rtsp://127.0.0.1:9/unused")
    d.config.write_text(f"recipients: [{d.owner.recipient()}]\nstorage:\n  path: {d.storage}\n  min_free: 1MB\n"
                        "cameras:\n  front:\n    source: 'synthetic:?motion=1-3,9-11&period=600'\n"
                        "    pre_roll: 1s\n    post_roll: 1s\n")
    d.start()
    try:
        first = d.wait_for(lambda rows: any(r["state"] == "complete" for r in rows), 45, "a first clip")
        index = d.storage / layout.INDEX_NAME
        for suffix in ("", "-wal", "-shm"):  # what `rm index.sqlite3*` does
            Path(f"{index}{suffix}").unlink(missing_ok=True)
        rows = d.wait_for(lambda rows: sum(r["state"] == "complete" for r in rows) >= 2, 45,
                          "the second clip in an index on disk")
        assert d.stop(signal.SIGTERM) == 0
    finally:
        d.close()
    assert first[0]["path"] in {r["path"] for r in rows}
    assert "was removed outside camrec" in d.log.read_text()
    assert "Traceback" not in d.log.read_text()


@pytest.mark.skipif(AGE is None, reason="needs the age binary")
def test_rekey_finds_sidecars_by_name_when_the_index_does_not_list_them(setup):
    """What an index rebuilt from file names alone (or adopted rows before this fix) looks like:
    rows without thumbnail or details. The revoked key must still lose every file of the clip."""
    import sqlite3

    s = setup
    with sqlite3.connect(s["root"] / layout.INDEX_NAME) as db:
        db.execute("UPDATE clips SET thumb = NULL, meta = NULL, state = 'partial', end = start")
    db.close()
    new = X25519Identity.generate()
    new_key = s["tmp"] / "new.key"
    new_key.write_text(identity_file_text(new))
    recipients = s["tmp"] / "recipients.txt"
    recipients.write_text(f"{new.recipient()}\n")
    proc = camrec("rekey", "-c", str(s["cfg"]), "-i", str(s["key"]), "--recipients", str(recipients))
    assert proc.returncode == 0, proc.stderr
    assert "re-keyed 6 file(s) of 2 clip(s)" in proc.stderr
    for path in sorted(s["root"].rglob("*.age")):
        old = subprocess.run([AGE, "-d", "-i", str(s["key"]), str(path)], capture_output=True, timeout=60)
        assert old.returncode != 0, f"the revoked key still opens {path.name}"
        assert subprocess.run([AGE, "-d", "-i", str(new_key), str(path)], capture_output=True,
                              timeout=60).returncode == 0
    # The rekey entries list the sidecars and keep the recorded durations (not the row's 0 s).
    proc = camrec("verify", "-c", str(s["cfg"]))
    assert proc.returncode == 0 and "orphan" not in proc.stdout, proc.stdout
    for suffix in ("", "-wal", "-shm"):
        Path(f"{s['root'] / layout.INDEX_NAME}{suffix}").unlink(missing_ok=True)
    assert camrec("index", "rebuild", "-c", str(s["cfg"])).returncode == 0
    rebuilt, _ = listing(s["cfg"])
    assert all(c["duration"] > 3 and c["thumbnail"] and c["details"] and c["state"] == "complete" for c in rebuilt)


def test_recorder_start_with_a_deleted_index_rebuilds_instead_of_adopting_partials(setup):
    from camrec.store.writer import Store

    s = setup
    before, _ = listing(s["cfg"])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{s['root'] / layout.INDEX_NAME}{suffix}").unlink(missing_ok=True)
    store = Store(s["root"], [s["owner"].recipient()])
    try:
        assert store.index.rebuilt is not None
        counts = store.reconcile()
    finally:
        store.close()
    assert counts["adopted"] == 0 and counts["recorded"] == 0
    after, _ = listing(s["cfg"])
    assert comparable(after) == comparable(before)
    assert camrec("verify", "-c", str(s["cfg"])).returncode == 0


def test_rebuild_finishes_only_deletions_the_device_signed(setup):
    """A clip whose newest signed entry is `delete` (a crash between the entry and the unlink) is
    deleted at start; a forged `delete` line (no valid signature) deletes nothing."""
    from camrec.store.retention import Doomed
    from camrec.store.writer import Store

    s = setup
    root = s["root"]
    store = Store(root, [s["owner"].recipient()])
    signed, forged = store.index.query()
    live = {c.path: c for c in store.manifest.live_clips()}
    # The signed entry, then a crash before the unlink: the files stay.
    store.manifest.record_deleted([Doomed(live[signed.path], {"reason": "budget", "max_size": 0, "total": 1})])
    store.close()
    with open(root / "manifest.jsonl", "ab") as f:
        f.write(json.dumps({"v": 1, "kind": "delete", "camera": forged.camera, "clip": forged.path,
                            "reason": "retention", "seq": 99, "key": "0" * 16, "sig": "AAAA"}).encode() + b"\n")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{root / layout.INDEX_NAME}{suffix}").unlink(missing_ok=True)
    store = Store(root, [s["owner"].recipient()])
    try:
        states = {r.path: r.state for r in store.index.query()}
        assert states == {signed.path: "garbage", forged.path: "complete"}
        store.reconcile()
        assert [r.path for r in store.index.query()] == [forged.path]
    finally:
        store.close()
    assert not any((root / layout.sibling(signed.path, sfx)).exists() for sfx in layout.CLIP_SUFFIXES)
    assert all((root / layout.sibling(forged.path, sfx)).exists() for sfx in layout.CLIP_SUFFIXES)
