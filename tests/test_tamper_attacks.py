"""Issue 8, finding 2: a pinned chain head must protect the clips recorded before the pin.

Each attack is performed as the review did it, against a real store (real Store writer, age
encryption, SQLite, signed manifest), and judged by the real `camrec verify --expect-head HEAD -i KEY`
(exit 7 = problems found). docs/tamper-evidence.md §1 states what a pinned head protects against
the device key holder and against someone with file access only; these tests are those sentences:
  * key holder: (a) a signed `delete` entry for a clip retention wouldn't delete yet, files removed;
    (b) a clip's files replaced by another clip's, with a signed `rekey` entry;
  * file access only: (c) `UPDATE clips SET state='garbage'`, then a daemon start-up;
    (d) a row's `end` set to 2020, then retention.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from camrec.cli import main
from camrec.crypto.keys import X25519Identity, identity_file_text
from camrec.store import layout
from camrec.store.manifest import MANIFEST_NAME, line_hash, utc_iso
from camrec.store.writer import Store
from tests.test_manifest import write_clip
from tests.test_verify import device_key, signed_line, write_config

DAY = 86400.0


class SimClock:
    """A simulated clock: the test sets monotonic time; wall time = monotonic + offset (a step)."""

    def __init__(self, wall: float) -> None:
        self.mono = 1000.0
        self.offset = wall - self.mono

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.mono + self.offset

    def advance(self, seconds: float) -> None:
        self.mono += seconds


def recorded_store(tmp_path: Path, *, days_ago: float, n: int = 4):
    """n clips, one a day, recorded by a Store whose clock started `days_ago` days before now."""
    owner = X25519Identity.generate()
    clock = SimClock(time.time() - days_ago * DAY)
    store = Store(tmp_path / "storage", [owner.recipient()], clock=clock)
    rows = []
    for _ in range(n):
        rows.append(write_clip(store, clock.time()))
        clock.advance(DAY)
    key = tmp_path / "owner.txt"
    key.write_text(identity_file_text(owner))
    return {"owner": owner, "clock": clock, "store": store, "root": store.root, "rows": rows, "key": key,
            "config": write_config(tmp_path, owner, store.root), "tmp": tmp_path}


@pytest.fixture
def pinned(tmp_path, capsys):
    """Clips from 10 to 7 days ago (retention: 30 days), and the head the owner pinned then."""
    s = recorded_store(tmp_path, days_ago=10)
    heads = tmp_path / "heads.txt"
    assert main(["verify", "-c", str(s["config"]), "-i", str(s["key"]), "--save-head", str(heads)]) == 0
    capsys.readouterr()
    s["heads"] = heads
    return s


def verify(s, capsys) -> tuple[int, dict]:
    """`camrec verify --expect-head HEAD -i KEY --json`: (exit code, report)."""
    code = main(["verify", "-c", str(s["config"]), "--expect-head", str(s["heads"]), "-i", str(s["key"]), "--json"])
    return code, json.loads(capsys.readouterr().out)


def found(doc: dict) -> set[tuple[str, str]]:
    return {(p["kind"], p["path"]) for p in doc["problems"]}


def append_signed(root: Path, body: dict) -> None:
    """What the device key holder can do: append a well-formed, correctly signed, chained line."""
    last = (root / MANIFEST_NAME).read_bytes().splitlines()[-1]
    prev = json.loads(last)
    entry = {"v": 1, **body, "seq": prev["seq"] + 1, "time": utc_iso(time.time()), "prev": line_hash(last)}
    with open(root / MANIFEST_NAME, "ab") as f:
        f.write(signed_line(entry, device_key(root)) + b"\n")


def remove_files(root: Path, row) -> None:
    for rel in (row.path, row.thumb, row.meta):
        os.unlink(root / rel)


def entries(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / MANIFEST_NAME).read_bytes().splitlines()]


def newest_ct(root: Path) -> int:
    return max(e["ct"] for e in entries(root) if "ct" in e)


def first_entry(root: Path, clip: str) -> dict:
    return next(e for e in entries(root) if e.get("clip") == clip)


# --- (a) a signed delete entry for a clip retention would not delete yet ------------------------------


@pytest.mark.parametrize("forgery", ["like-an-old-release", "honest-time", "time-pushed-ahead",
                                     "retention-shortened", "budget-not-oldest"])
def test_a_signed_delete_of_an_unexpired_clip_is_flagged(pinned, capsys, forgery):
    root, victim = pinned["root"], pinned["rows"][1]  # 9 days old; retention keeps 30
    born = first_entry(root, victim.path)["ct"]
    body = {"kind": "delete", "camera": "cam", "clip": victim.path}
    if forgery == "like-an-old-release":
        body["reason"] = "retention"  # no camrec time, no numbers
    elif forgery == "honest-time":
        body |= {"reason": "age", "retention_days": 30, "age_s": 31 * DAY, "ct": newest_ct(root) + 1000}
    elif forgery == "time-pushed-ahead":  # claims 31 days on camrec's clock: that is in the future
        body |= {"reason": "age", "retention_days": 30, "age_s": 31 * DAY, "ct": born + int(31 * DAY * 1000)}
    elif forgery == "retention-shortened":  # 9 days old, "retention 5 days"
        body |= {"reason": "age", "retention_days": 5, "age_s": 9 * DAY, "ct": newest_ct(root) + 1000}
    else:  # "the disk was full": but an older clip (rows[0]) is kept
        body |= {"reason": "budget", "max_size": 1, "total": 10**9, "ct": newest_ct(root) + 1000}
    append_signed(root, body)
    remove_files(root, victim)
    code, doc = verify(pinned, capsys)
    assert code == 7 and not doc["ok"]
    assert ("bad-delete", victim.path) in found(doc) or ("bad-time", victim.path) in found(doc)
    assert not any(p["kind"] == "head-mismatch" for p in doc["problems"])  # the pin itself still holds


def test_the_oldest_clip_deleted_for_budget_is_what_a_key_holder_can_still_do(pinned, capsys):
    """The documented limit: budget pressure is not recorded anywhere the key holder can't write."""
    root, oldest = pinned["root"], pinned["rows"][0]
    append_signed(root, {"kind": "delete", "camera": "cam", "clip": oldest.path, "reason": "budget",
                         "max_size": 10**12, "total": 10**13, "ct": newest_ct(root) + 1000})
    remove_files(root, oldest)
    code, doc = verify(pinned, capsys)
    assert code == 0 and doc["ok"]


# --- (b) a clip's files replaced by another clip's, with a signed rekey entry --------------------------


@pytest.mark.parametrize("payload", ["of-the-new-files", "copied-from-the-old-entry", "left-out"])
def test_b_files_replaced_with_a_signed_rekey_entry_are_flagged(pinned, capsys, payload):
    root, old, other = pinned["root"], pinned["rows"][0], pinned["rows"][2]
    recorded = {f["path"]: f for f in first_entry(root, old.path)["files"]}
    for src, dst in ((other.path, old.path), (other.thumb, old.thumb), (other.meta, old.meta)):
        shutil.copyfile(root / src, root / dst)
    files = []
    for f in first_entry(root, other.path)["files"]:  # the other clip's digests, under the old clip's names
        rel = next(layout.sibling(old.path, sfx) for sfx in layout.CLIP_SUFFIXES if f["path"].endswith(sfx))
        entry = {"path": rel, "size": f["size"], "sha256": f["sha256"]}
        if payload == "of-the-new-files":
            entry["payload"] = f["payload"]
        elif payload == "copied-from-the-old-entry":
            entry["payload"] = recorded[rel]["payload"]
        files.append(entry)
    old_entry = first_entry(root, old.path)
    append_signed(root, {"kind": "rekey", "camera": "cam", "clip": old.path, "start": old_entry["start"],
                         "end": old_entry["end"], "files": files, "ct": newest_ct(root) + 1000})
    code, doc = verify(pinned, capsys)
    assert code == 7
    expected = {("replaced", old.path)} if payload != "copied-from-the-old-entry" else \
        {("altered", rel) for rel in (old.path, old.thumb, old.meta)}
    assert expected <= found(doc), doc["problems"]


def test_a_real_rekey_keeps_the_payload_and_verifies(pinned, capsys):
    new_owner = X25519Identity.generate()
    new_key = pinned["tmp"] / "new.txt"
    new_key.write_text(identity_file_text(new_owner))
    recipients = pinned["tmp"] / "recipients.txt"
    recipients.write_text(f"{new_owner.recipient()}\n")
    assert main(["rekey", "-c", str(pinned["config"]), "-i", str(pinned["key"]),
                 "--recipients", str(recipients)]) == 0
    capsys.readouterr()
    rekeys = [e for e in entries(pinned["root"]) if e["kind"] == "rekey"]
    assert len(rekeys) == 4 and all("payload" in f for e in rekeys for f in e["files"])
    pinned["key"] = new_key
    code, doc = verify(pinned, capsys)
    assert code == 0 and doc["ok"], doc["problems"]


# --- (c) and (d): the unsigned index edited; the daemon must not sign what it didn't decide ----------


def index_sql(root: Path, sql: str, *args) -> None:
    with sqlite3.connect(root / layout.INDEX_NAME) as db:
        db.execute(sql, args)


def restart(s) -> Store:
    """The daemon's start-up, as Daemon.recover does it: reconcile, then retention (30 days)."""
    s["store"].close()
    store = Store(s["root"], [s["owner"].recipient()], clock=s["clock"])
    store.reconcile()
    store.apply_retention(retention_days=30, max_size=None, min_free=0)
    s["store"] = store
    return store


def test_c_rows_set_to_garbage_in_the_index_are_restored_not_deleted(pinned, capsys, caplog):
    root = pinned["root"]
    before = (root / MANIFEST_NAME).read_bytes()
    index_sql(root, "UPDATE clips SET state='garbage'")
    with caplog.at_level(logging.WARNING):
        store = restart(pinned)
    assert all((root / r.path).exists() and (root / r.thumb).exists() for r in pinned["rows"])
    assert {r.state for r in store.index.query()} == {"complete"}
    assert "never deleted it: kept" in caplog.text
    assert not [e for e in entries(root) if e["kind"] == "delete"]
    assert (root / MANIFEST_NAME).read_bytes().startswith(before)
    code, doc = verify(pinned, capsys)
    assert code == 0 and doc["ok"], doc["problems"]


def test_c_with_an_unsigned_delete_line_appended_too(pinned, capsys):
    """File access only: a forged (unsigned) `delete` line must not count as the signed decision."""
    root, victim = pinned["root"], pinned["rows"][1]
    last = (root / MANIFEST_NAME).read_bytes().splitlines()[-1]
    forged = {"v": 1, "kind": "delete", "camera": "cam", "clip": victim.path, "reason": "retention",
              "seq": json.loads(last)["seq"] + 1, "prev": line_hash(last), "time": utc_iso(time.time())}
    with open(root / MANIFEST_NAME, "ab") as f:
        f.write(json.dumps(forged, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    index_sql(root, "UPDATE clips SET state='garbage' WHERE path=?", victim.path)
    restart(pinned)
    assert (root / victim.path).exists()
    code, doc = verify(pinned, capsys)
    assert code == 7 and {p["kind"] for p in doc["problems"]} == {"chain-break"}  # only the forged line


def test_d_a_row_ending_in_2020_is_not_deleted_by_retention(pinned, capsys):
    root, victim = pinned["root"], pinned["rows"][1]
    index_sql(root, "UPDATE clips SET \"end\"=?, start=? WHERE path=?", 1_577_836_800.0, 1_577_836_000.0,
              victim.path)
    deleted = pinned["store"].apply_retention(retention_days=30, max_size=None, min_free=0)
    assert deleted == [] and (root / victim.path).exists()
    restart(pinned)
    assert (root / victim.path).exists()
    assert not [e for e in entries(root) if e["kind"] == "delete"]
    code, doc = verify(pinned, capsys)
    assert code == 0 and doc["ok"], doc["problems"]


def test_retention_by_age_is_recorded_with_its_reason_and_verifies(tmp_path, capsys):
    """The legitimate case: clips older than the retention go, each with a checkable reason."""
    s = recorded_store(tmp_path, days_ago=40)
    s["clock"].advance(30.5 * DAY - 4 * DAY)  # camrec ran on: the first clip is 30.5 days old, the next 29.5
    s["heads"] = tmp_path / "none.txt"
    s["heads"].write_text("")
    deleted = s["store"].apply_retention(retention_days=30, max_size=None, min_free=0)
    assert [d.path for d in deleted] == [s["rows"][0].path]
    (delete,) = [e for e in entries(s["root"]) if e["kind"] == "delete"]
    assert delete["reason"] == "age" and delete["retention_days"] == 30 and delete["age_s"] > 30 * DAY
    code, doc = verify(s, capsys)
    assert code == 0 and doc["ok"], doc["problems"]
    # the same deletion judged against an owner who configured 60 days: flagged
    assert main(["verify", "-c", str(s["config"]), "--retention-days", "60", "--json"]) == 7
    assert {p["kind"] for p in json.loads(capsys.readouterr().out)["problems"]} == {"bad-delete"}


def test_a_crash_after_the_signed_delete_entry_is_finished_at_start_up(pinned, capsys):
    """M2: the signed `delete` entry comes first; a crash before the rows change is finished later."""
    from camrec.store.retention import Doomed

    root, oldest = pinned["root"], pinned["rows"][0]
    live = min(pinned["store"].manifest.live_clips(), key=lambda c: c.seq)
    pinned["store"].manifest.record_deleted([Doomed(live, {"reason": "low-space", "free": 1, "min_free": 2})])
    store = restart(pinned)  # (the rows were never marked `garbage`: the process died first)
    assert not (root / oldest.path).exists() and not (root / oldest.meta).exists()
    assert oldest.path not in {r.path for r in store.index.query()}
    assert all((root / r.path).exists() for r in pinned["rows"][1:])
    code, doc = verify(pinned, capsys)
    assert code == 0 and doc["ok"] and doc["notices"] == [], doc


def test_payload_digest_is_the_bytes_after_the_header(pinned):
    """Defined without any key: SHA-256 of everything after the header's `--- MAC` line."""
    import hashlib

    from camrec.store.digest import Digester, digest_file

    path = pinned["root"] / pinned["rows"][0].path
    data = path.read_bytes()
    header_end = data.index(b"\n", data.index(b"\n--- ") + 1) + 1
    want = hashlib.sha256(data[header_end:]).hexdigest()
    assert digest_file(path, "x").payload == want
    for step in (1, 7, 4096):  # however the bytes arrive
        d = Digester()
        for i in range(0, len(data), step):
            d.update(data[i:i + step])
        assert d.payload() == want and d.sha256() == hashlib.sha256(data).hexdigest()
    assert first_entry(pinned["root"], pinned["rows"][0].path)["files"][0]["payload"] == want


def test_d_a_row_claiming_a_huge_clip_being_written_forces_no_budget_deletion(pinned, capsys):
    """File access only: the index's `size` is not trusted either (the budget counts real bytes)."""
    root, victim = pinned["root"], pinned["rows"][3]
    total = sum((root / p).stat().st_size for r in pinned["rows"] for p in (r.path, r.thumb, r.meta))
    index_sql(root, "UPDATE clips SET state='recording', size=? WHERE path=?", 10**12, victim.path)
    assert pinned["store"].apply_retention(retention_days=30, max_size=total + 1000, min_free=0) == []
    assert all((root / r.path).exists() for r in pinned["rows"])
    code, doc = verify(pinned, capsys)
    assert code == 0 and doc["ok"], doc["problems"]


def test_a_manifest_from_before_camrec_time_still_verifies_and_continues(tmp_path, capsys):
    """Entries without `ct` and payload digests (as older releases wrote them) are accepted as they are;
    the daemon then continues the chain in the new format."""
    s = recorded_store(tmp_path, days_ago=10, n=3)
    root = s["root"]
    s["store"].close()
    key, out, prev = device_key(root), [], "0" * 64
    for line in (root / MANIFEST_NAME).read_bytes().splitlines():
        e = json.loads(line)
        e.pop("ct", None)
        for f in e.get("files", []):
            f.pop("payload", None)
        if e["kind"] == "clock":
            continue
        e["seq"], e["prev"] = len(out) + 1, prev
        out.append(signed_line(e, key))
        prev = line_hash(out[-1])
    oldest = json.loads(out[0])["clip"]
    out.append(signed_line({"v": 1, "kind": "delete", "camera": "cam", "clip": oldest, "reason": "retention",
                            "seq": len(out) + 1, "prev": prev, "time": utc_iso(time.time())}, key))
    (root / MANIFEST_NAME).write_bytes(b"".join(line + b"\n" for line in out))
    for rel in (s["rows"][0].path, s["rows"][0].thumb, s["rows"][0].meta):
        os.unlink(root / rel)
    index_sql(root, "DELETE FROM clips WHERE path=?", oldest)
    s["heads"] = tmp_path / "heads.txt"
    s["heads"].write_text("")
    code, doc = verify(s, capsys)
    assert code == 0 and doc["ok"], doc["problems"]
    store = Store(root, [s["owner"].recipient()], clock=s["clock"])  # the upgraded daemon
    store.reconcile()
    write_clip(store, s["clock"].time())
    deleted = store.apply_retention(retention_days=30, max_size=1, min_free=0)  # budget: oldest first
    assert len(deleted) == 3 and all(e.get("ct") for e in entries(root)[len(out):])
    code, doc = verify(s, capsys)
    assert code == 0 and doc["ok"], doc["problems"]
    # but after entries with camrec time, one in the old format is a forgery
    append_signed(root, {"kind": "delete", "camera": "cam", "clip": "cam/x/cam-20251121T044000.000Z.mp4.age",
                         "reason": "retention"})
    code, doc = verify(s, capsys)
    assert code == 7 and {p["kind"] for p in doc["problems"]} == {"bad-time"}


def test_retention_days_option_is_checked(pinned, capsys):
    assert main(["verify", "-c", str(pinned["config"]), "--retention-days", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("camrec: error: --retention-days 0") and "Traceback" not in err


def test_an_unsigned_line_with_a_far_camrec_time_ages_nothing(pinned, capsys):
    """File access only: a line claiming camrec time 40 days on must not make every clip look old."""
    root = pinned["root"]
    last = (root / MANIFEST_NAME).read_bytes().splitlines()[-1]
    forged = {"v": 1, "kind": "clock", "ct": newest_ct(root) + int(40 * DAY * 1000),
              "seq": json.loads(last)["seq"] + 1, "prev": line_hash(last), "time": utc_iso(time.time())}
    with open(root / MANIFEST_NAME, "ab") as f:
        f.write(json.dumps(forged, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    store = restart(pinned)
    assert store.manifest.camtime.now() < time.time()
    assert all((root / r.path).exists() for r in pinned["rows"])
    code, doc = verify(pinned, capsys)
    assert code == 7 and {p["kind"] for p in doc["problems"]} == {"chain-break"}  # the forged line only


def test_an_unsigned_delete_line_hides_no_clip_from_budget_retention(pinned, capsys, caplog):
    """File access only: a forged `delete` for the oldest clip must not make the daemon skip it and
    delete a newer one for space instead."""
    root, rows = pinned["root"], pinned["rows"]
    last = (root / MANIFEST_NAME).read_bytes().splitlines()[-1]
    forged = {"v": 1, "kind": "delete", "camera": "cam", "clip": rows[0].path, "reason": "budget", "max_size": 1,
              "total": 2, "ct": newest_ct(root) + 1, "seq": json.loads(last)["seq"] + 1, "prev": line_hash(last),
              "time": utc_iso(time.time()), "key": json.loads(last)["key"], "sig": json.loads(last)["sig"]}
    with open(root / MANIFEST_NAME, "ab") as f:
        f.write(json.dumps(forged, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    sizes = [sum((root / p).stat().st_size for p in (r.path, r.thumb, r.meta)) for r in rows]
    with caplog.at_level(logging.WARNING):
        store = restart(pinned)
        deleted = store.apply_retention(retention_days=30, max_size=sum(sizes) - sizes[0], min_free=0)
    assert "using only the signed lines" in caplog.text
    assert [d.path for d in deleted] == [rows[0].path]  # the oldest, as the signed records say
    assert all((root / r.path).exists() for r in rows[1:])
    code, doc = verify(pinned, capsys)
    assert code == 7 and {p["kind"] for p in doc["problems"]} == {"chain-break"}  # only the forged line


def test_a_sidecar_dropped_with_a_signed_re_entry_is_flagged(pinned, capsys):
    """Key holder: the thumbnail removed and the clip recorded again without it."""
    root, row = pinned["root"], pinned["rows"][1]
    e = first_entry(root, row.path)
    os.unlink(root / row.thumb)
    append_signed(root, {"kind": "clip", "camera": "cam", "clip": row.path, "start": e["start"], "end": e["end"],
                         "files": [f for f in e["files"] if f["path"] != row.thumb], "ct": newest_ct(root) + 1})
    code, doc = verify(pinned, capsys)
    assert code == 7 and ("replaced", row.path) in found(doc)


@pytest.mark.parametrize(("days_old", "flagged"), [(29.95, False), (29.5, True)])
def test_a_key_holder_can_age_a_clip_by_at_most_two_hours(tmp_path, capsys, days_old, flagged):
    """The documented limit: an age deletion passes only for clips retention_days − 2 h old in real time."""
    s = recorded_store(tmp_path, days_ago=days_old, n=2)
    s["heads"] = tmp_path / "heads.txt"
    assert main(["verify", "-c", str(s["config"]), "--save-head", str(s["heads"])]) == 0
    capsys.readouterr()
    victim = s["rows"][0]
    born = first_entry(s["root"], victim.path)["ct"]
    append_signed(s["root"], {"kind": "delete", "camera": "cam", "clip": victim.path, "reason": "age",
                              "retention_days": 30, "age_s": 30 * DAY, "ct": born + int(30 * DAY * 1000) + 1000})
    remove_files(s["root"], victim)
    code, doc = verify(s, capsys)
    assert (code == 7) is flagged
    assert (("bad-time", victim.path) in found(doc)) is flagged


@pytest.mark.parametrize("when", ["daemon-stopped", "daemon-running"])
def test_a_forged_line_stays_untrusted_after_the_daemon_signs_lines_after_it(pinned, capsys, when):
    """The daemon chains its signed lines onto whatever is in the file; its signature must not then
    vouch for a forged line before it at the next start-up (it records a signed `forged` marker)."""
    root, rows = pinned["root"], pinned["rows"]
    if when == "daemon-stopped":
        pinned["store"].close()
    last = (root / MANIFEST_NAME).read_bytes().splitlines()[-1]
    forged = {"v": 1, "kind": "delete", "camera": "cam", "clip": rows[0].path, "reason": "budget", "max_size": 1,
              "total": 2, "ct": newest_ct(root) + 1, "seq": json.loads(last)["seq"] + 1, "prev": line_hash(last),
              "time": utc_iso(time.time())}
    with open(root / MANIFEST_NAME, "ab") as f:
        f.write(json.dumps(forged, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    if when == "daemon-stopped":
        pinned["store"] = Store(root, [pinned["owner"].recipient()], clock=pinned["clock"])
    write_clip(pinned["store"], pinned["clock"].time())  # signed lines now follow the forged one
    markers = [e for e in entries(root) if e.get("forged")]
    assert [m["forged"] for m in markers] == [[forged["seq"]]]
    store = restart(pinned)
    assert rows[0].path in {c.path for c in store.manifest.live_clips()}
    sizes = [sum((root / p).stat().st_size for p in (r.path, r.thumb, r.meta)) for r in rows]
    deleted = store.apply_retention(retention_days=30, max_size=sum(sizes), min_free=0)  # the new clip is extra
    assert [d.path for d in deleted] == [rows[0].path]
    assert len([e for e in entries(root) if e.get("forged")]) == 1  # recorded once
    code, doc = verify(pinned, capsys)
    assert code == 7 and {p["kind"] for p in doc["problems"]} == {"chain-break"}
