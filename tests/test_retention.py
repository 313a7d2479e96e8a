from __future__ import annotations

from camrec.store.retention import LiveClip, plan_retention

DAY = 86400.0


def clip(seq: int, end_ct: float, size: int = 100) -> LiveClip:
    return LiveClip(f"cam/x/{seq}.mp4.age", "cam", seq, end_ct, size)


def seqs(doomed):
    return [d.clip.seq for d in doomed]


def test_by_age_oldest_first_with_the_reason():
    now = 100 * DAY
    clips = [clip(3, now - 29 * DAY), clip(1, now - 40 * DAY), clip(2, now - 31 * DAY)]
    doomed = plan_retention(clips, now_ct=now, retention_days=30, max_size=None, free_bytes=None, min_free=0)
    assert seqs(doomed) == [1, 2]
    assert doomed[0].why == {"reason": "age", "retention_days": 30, "age_s": 40 * DAY}


def test_by_size_budget_counts_the_clip_being_written():
    now = 10 * DAY
    clips = [clip(3, now - 10), clip(1, now - 300), clip(2, now - 200)]
    # 300 bytes recorded + 150 being written; a budget of 260 needs the two oldest gone
    doomed = plan_retention(clips, now_ct=now, retention_days=30, max_size=260, in_progress=150,
                            free_bytes=None, min_free=0)
    assert seqs(doomed) == [1, 2]
    assert [d.why for d in doomed] == [{"reason": "budget", "max_size": 260, "total": 450},
                                       {"reason": "budget", "max_size": 260, "total": 350}]


def test_free_space_floor():
    now = 10 * DAY
    clips = [clip(1, now - 300, 500), clip(2, now - 200, 500), clip(3, now - 100, 500)]
    doomed = plan_retention(clips, now_ct=now, retention_days=30, max_size=None, free_bytes=700, min_free=1600)
    assert seqs(doomed) == [1, 2]
    assert doomed[1].why == {"reason": "low-space", "free": 1200, "min_free": 1600}


def test_budget_goes_by_manifest_order_not_by_age():
    """Oldest first means: first into the manifest (what `camrec verify` can check)."""
    now = 10 * DAY
    clips = [clip(1, now - 100), clip(2, now - 300)]
    doomed = plan_retention(clips, now_ct=now, retention_days=30, max_size=150, free_bytes=None, min_free=0)
    assert seqs(doomed) == [1]


def test_nothing_to_do():
    assert plan_retention([], now_ct=DAY, retention_days=30, max_size=1, free_bytes=0, min_free=10) == []
