from __future__ import annotations

from camrec.store.index import ClipRow
from camrec.store.retention import plan_retention

DAY = 86400.0


def row(i: int, start: float, size: int = 100, state: str = "complete") -> ClipRow:
    return ClipRow(i, "cam", start, start + 60, size, f"cam/x/{i}.mp4.age", None, None, state)


def ids(rows):
    return [r.id for r in rows]


def test_by_age_oldest_first():
    now = 100 * DAY
    clips = [row(1, now - 40 * DAY), row(2, now - 31 * DAY), row(3, now - 29 * DAY)]
    assert ids(plan_retention(clips, now=now, retention_days=30, max_size=None, free_bytes=None, min_free=0)) == [1, 2]


def test_by_size_budget_includes_the_open_clip():
    now = 10 * DAY
    clips = [row(3, now - 10), row(1, now - 300), row(2, now - 200), row(4, now, 150, "recording")]
    # 450 bytes in all; a budget of 260 needs the two oldest finished clips gone, never the open one
    doomed = plan_retention(clips, now=now, retention_days=30, max_size=260, free_bytes=None, min_free=0)
    assert ids(doomed) == [1, 2]


def test_free_space_floor():
    now = 10 * DAY
    clips = [row(1, now - 300, 500), row(2, now - 200, 500), row(3, now - 100, 500)]
    doomed = plan_retention(clips, now=now, retention_days=30, max_size=None, free_bytes=700, min_free=1600)
    assert ids(doomed) == [1, 2]


def test_nothing_to_do_and_never_the_recording_clip():
    now = 10 * DAY
    clips = [row(1, now - 90 * DAY, state="recording")]
    assert plan_retention(clips, now=now, retention_days=30, max_size=1, free_bytes=0, min_free=10) == []
