"""Issue 8, finding 3: a wall clock stepped 31 days ahead must not make retention wipe the store.

A simulated clock (camrec.sources.base.Clock) drives a real Store: clips are aged on camrec's own
clock (camrec/store/camtime.py), which the step doesn't move. The step shows up as a warning and
as `clock_suspect` in the daemon's status document; budget deletion still frees space, and
`camrec verify` accepts what retention did.
"""

from __future__ import annotations

import json
import logging

import pytest

from camrec.cli import main
from camrec.config import load_config
from camrec.owner.verify import verify_store
from camrec.service.daemon import Daemon
from camrec.store.camtime import TOLERANCE
from camrec.store.writer import Store
from tests.test_tamper_attacks import DAY, entries, recorded_store


@pytest.fixture
def stepped(tmp_path, caplog):
    s = recorded_store(tmp_path, days_ago=20)  # four clips, 20 to 17 days old; retention 30 days
    s["clock"].offset += 31 * DAY  # NTP (unauthenticated) steps the wall clock 31 days ahead
    return s


def test_a_forward_step_deletes_nothing_by_age_and_is_flagged(stepped, caplog):
    store, root, rows = stepped["store"], stepped["root"], stepped["rows"]
    with caplog.at_level(logging.WARNING):
        assert store.apply_retention(retention_days=30, max_size=None, min_free=0) == []
        assert store.apply_retention(retention_days=30, max_size=None, min_free=0) == []
    assert all((root / r.path).exists() for r in rows)
    suspect = store.manifest.camtime.last_suspect
    assert suspect is not None and abs(suspect - 31 * DAY) < 60
    assert caplog.text.count("ahead of camrec's own clock") == 1  # warned once, not every 10 s

    # a restart under the stepped clock: camrec time continues from the manifest, not the wall
    store.close()
    with caplog.at_level(logging.WARNING):
        again = Store(root, [stepped["owner"].recipient()], clock=stepped["clock"])
        again.reconcile()
        assert again.apply_retention(retention_days=30, max_size=None, min_free=0) == []
    assert all((root / r.path).exists() for r in rows)
    assert again.manifest.camtime.last_suspect is not None
    assert not [e for e in entries(root) if e["kind"] == "delete"]
    again.close()


def test_the_status_document_carries_the_flag(stepped, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    stepped["store"].close()
    cfg = tmp_path / "daemon.yaml"
    cfg.write_text(f"recipients: [{stepped['owner'].recipient()}]\nstorage:\n  path: {stepped['root']}\n"
                   "  retention_days: 30\n  min_free: 0\n"
                   "cameras:\n  cam:\n    source: synthetic:?motion=0-6&period=6\n")
    daemon = Daemon(load_config(cfg), clock=stepped["clock"])
    try:
        daemon.recover(daemon.open_store())  # reconcile + retention, as at start-up
        daemon.write_status()
        doc = json.loads((stepped["root"] / "status.json").read_text())
    finally:
        if daemon.store is not None:
            daemon.store.close()
    # 31 days of step plus the day since the last entry, less what a start-up may catch up
    assert doc["clock_suspect"] is not None and 31 * DAY - TOLERANCE <= doc["clock_suspect"] <= 32 * DAY
    assert main(["status", "-c", str(cfg)]) == 4  # (the camera isn't running in this test)
    assert "days ahead of camrec's own clock" in capsys.readouterr().out
    assert all((stepped["root"] / r.path).exists() for r in stepped["rows"])


def test_budget_deletion_still_frees_space_under_a_stepped_clock(stepped):
    store, root, rows = stepped["store"], stepped["root"], stepped["rows"]
    sizes = [sum((root / p).stat().st_size for p in (r.path, r.thumb, r.meta)) for r in rows]
    deleted = store.apply_retention(retention_days=30, max_size=sum(sizes) - sizes[0], min_free=0)
    assert [d.path for d in deleted] == [rows[0].path]  # the oldest, for the budget
    assert not (root / rows[0].path).exists() and not (root / rows[0].thumb).exists()
    assert all((root / r.path).exists() for r in rows[1:])
    (delete,) = [e for e in entries(root) if e["kind"] == "delete"]
    assert delete["reason"] == "budget" and delete["total"] == sum(sizes)
    report = verify_store(root, retention_days=30)
    assert report.ok, report.problems


def test_age_deletion_resumes_as_camrec_keeps_running(tmp_path):
    """Not simply switched off: time that camrec really ran still ages clips."""
    s = recorded_store(tmp_path, days_ago=40)
    s["clock"].offset += 31 * DAY  # stepped, and then camrec runs for 26.5 real days
    s["clock"].advance(26.5 * DAY)  # first clip: 4 + 26.5 = 30.5 days on camrec's clock, the next 29.5
    deleted = s["store"].apply_retention(retention_days=30, max_size=None, min_free=0)
    assert [d.path for d in deleted] == [s["rows"][0].path]
    assert verify_store(s["root"], retention_days=30).ok
