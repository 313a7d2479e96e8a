"""Durations, sizes and --since/--until arguments: table tests at the edges of each format."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from camrec.timeparse import format_duration, parse_duration, parse_size, parse_time_arg


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (5, 5.0),
        (2.5, 2.5),
        ("5", 5.0),
        ("2.5", 2.5),
        ("3s", 3.0),
        ("500ms", 0.5),
        ("0.5s", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("1m30s", 90.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("2m500ms", 120.5),
        (" 10S ", 10.0),
        (".5s", 0.5),
    ],
)
def test_parse_duration_valid(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "empty"),
        ("3x", "not a duration"),
        ("s", "not a duration"),
        ("3 seconds", "not a duration"),
        ("30m1h", "largest first"),
        ("1m1m", "largest first"),
        ("-3s", "not a duration"),
        (-1, "negative"),
        ("-1", "negative"),
        (float("nan"), "not a duration"),
        (float("inf"), "not a duration"),
        (True, "got bool"),
        (None, "got NoneType"),
        ([3], "got list"),
    ],
)
def test_parse_duration_invalid(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_duration(value)


@pytest.mark.parametrize("seconds", [0, 0.5, 3, 59, 60, 90, 3600, 5400, 86400 + 7200])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (1048576, 1048576),
        (1.5e9, 1_500_000_000),
        ("1024", 1024),
        ("100B", 100),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("500MB", 500_000_000),
        ("500 MB", 500_000_000),
        ("20GB", 20_000_000_000),
        ("20gb", 20_000_000_000),
        ("1.5TiB", 1024**4 * 3 // 2),
        ("2TB", 2 * 1000**4),
        ("0.5GiB", 512 * 1024**2),
        ("1MiB", 1024**2),
    ],
)
def test_parse_size_valid(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("5G", "ambiguous"),
        ("5m", "ambiguous"),
        ("5PB", "unknown size unit"),
        ("lots", "not a size"),
        ("", "not a size"),
        ("-5MB", "negative"),
        (-1, "negative"),
        ("1.5B", "whole number of bytes"),
        (1.5, "whole number"),
        (True, "got bool"),
        (None, "got NoneType"),
    ],
)
def test_parse_size_invalid(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_size(value)


NOW = datetime(2024, 5, 10, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("90s", NOW - timedelta(seconds=90)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("1d", NOW - timedelta(days=1)),
        ("1h30m", NOW - timedelta(minutes=90)),
        ("2h ago", NOW - timedelta(hours=2)),
        ("2024-05-01T18:30:00Z", datetime(2024, 5, 1, 18, 30, tzinfo=UTC)),
        ("2024-05-01T18:30:00+02:00", datetime(2024, 5, 1, 16, 30, tzinfo=UTC)),
        ("2024-05-01 18:30+02:00", datetime(2024, 5, 1, 16, 30, tzinfo=UTC)),
        # Naive forms are local time, whatever zone this machine is in.
        ("2024-05-01T18:30", datetime(2024, 5, 1, 18, 30).astimezone()),
        ("2024-05-01 18:30:15", datetime(2024, 5, 1, 18, 30, 15).astimezone()),
        ("2024-05-01", datetime(2024, 5, 1).astimezone()),
    ],
)
def test_parse_time_arg_valid(text: str, expected: datetime) -> None:
    result = parse_time_arg(text, NOW)
    assert result.tzinfo is not None
    assert result == expected


@pytest.mark.parametrize("text", ["", "someday", "30", "2024-13-01", "12:0", "-2h", "2h from now"])
def test_parse_time_arg_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="time"):
        parse_time_arg(text, NOW)


def test_parse_time_arg_keeps_the_given_zone() -> None:
    plus_two = timezone(timedelta(hours=2))
    result = parse_time_arg("2024-05-01T10:00:00+02:00", NOW)
    assert result.utcoffset() == plus_two.utcoffset(None)


def test_parse_time_arg_naive_now_is_local() -> None:
    naive_now = datetime(2024, 5, 10, 12, 0, 0)
    result = parse_time_arg("1h", naive_now)
    assert result.tzinfo is not None
    assert result == naive_now.astimezone() - timedelta(hours=1)


# --- the words a person types: today, yesterday, weekdays, HH:MM (issue 9) -------------------

@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch):
    """Local time is Europe/Berlin: DST began on Sun 2026-03-29 (02:00 → 03:00) and ended on Sun
    2026-10-25 (03:00 → 02:00), so the days around them are 23 and 25 hours long."""
    import time as _time

    monkeypatch.setenv("TZ", "Europe/Berlin")
    _time.tzset()
    yield
    monkeypatch.undo()
    _time.tzset()


CEST, CET = timezone(timedelta(hours=2)), timezone(timedelta(hours=1))
MON_AFTER_SPRING = datetime(2026, 3, 30, 10, 0, tzinfo=CEST)  # a Monday, 10:00
MON_AFTER_AUTUMN = datetime(2026, 10, 26, 8, 0, tzinfo=CET)  # a Monday, 08:00


@pytest.mark.parametrize(
    ("now", "text", "expected"),
    [
        (MON_AFTER_SPRING, "today", datetime(2026, 3, 30, 0, 0, tzinfo=CEST)),
        (MON_AFTER_SPRING, "yesterday", datetime(2026, 3, 29, 0, 0, tzinfo=CET)),  # before the switch
        (MON_AFTER_SPRING, "Yesterday", datetime(2026, 3, 29, 0, 0, tzinfo=CET)),
        (MON_AFTER_SPRING, "mon", datetime(2026, 3, 30, 0, 0, tzinfo=CEST)),  # today is Monday
        (MON_AFTER_SPRING, "monday", datetime(2026, 3, 30, 0, 0, tzinfo=CEST)),
        (MON_AFTER_SPRING, "sun", datetime(2026, 3, 29, 0, 0, tzinfo=CET)),
        (MON_AFTER_SPRING, "tue", datetime(2026, 3, 24, 0, 0, tzinfo=CET)),
        (MON_AFTER_SPRING, "wednesday", datetime(2026, 3, 25, 0, 0, tzinfo=CET)),
        (MON_AFTER_SPRING, "09:30", datetime(2026, 3, 30, 9, 30, tzinfo=CEST)),
        (MON_AFTER_SPRING, "10:00", datetime(2026, 3, 30, 10, 0, tzinfo=CEST)),  # now itself: today
        (MON_AFTER_SPRING, "11:00", datetime(2026, 3, 29, 11, 0, tzinfo=CEST)),  # ahead: yesterday
        (MON_AFTER_SPRING, "01:30", datetime(2026, 3, 30, 1, 30, tzinfo=CEST)),
        (MON_AFTER_SPRING, "23:59:59", datetime(2026, 3, 29, 23, 59, 59, tzinfo=CEST)),
        (MON_AFTER_SPRING, "yesterday 01:30", datetime(2026, 3, 29, 1, 30, tzinfo=CET)),
        (MON_AFTER_SPRING, "yesterday 18:00", datetime(2026, 3, 29, 18, 0, tzinfo=CEST)),
        (MON_AFTER_SPRING, "fri 09:30", datetime(2026, 3, 27, 9, 30, tzinfo=CET)),
        (MON_AFTER_AUTUMN, "yesterday", datetime(2026, 10, 25, 0, 0, tzinfo=CEST)),  # before the switch
        (MON_AFTER_AUTUMN, "today", datetime(2026, 10, 26, 0, 0, tzinfo=CET)),
        (MON_AFTER_AUTUMN, "sat", datetime(2026, 10, 24, 0, 0, tzinfo=CEST)),
        (MON_AFTER_AUTUMN, "09:30", datetime(2026, 10, 25, 9, 30, tzinfo=CET)),  # ahead: yesterday
        # `now` given in another zone: day words still mean the local (Berlin) calendar
        (datetime(2026, 3, 29, 23, 30, tzinfo=UTC), "today", datetime(2026, 3, 30, 0, 0, tzinfo=CEST)),
    ],
)
def test_spoken_times(berlin, now: datetime, text: str, expected: datetime) -> None:
    got = parse_time_arg(text, now)
    assert got == expected, (got, expected)
    assert got.utcoffset() == expected.utcoffset()


def test_the_days_around_dst_changes_are_23_and_25_hours(berlin) -> None:
    spring = parse_time_arg("today", MON_AFTER_SPRING) - parse_time_arg("yesterday", MON_AFTER_SPRING)
    autumn = parse_time_arg("today", MON_AFTER_AUTUMN) - parse_time_arg("yesterday", MON_AFTER_AUTUMN)
    assert spring == timedelta(hours=23)
    assert autumn == timedelta(hours=25)


@pytest.mark.parametrize("text", ["24:00", "12:60", "9:5", "mo", "yesterday 25:00", "tomorrow", "fri 9"])
def test_spoken_times_invalid(berlin, text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_arg(text, MON_AFTER_SPRING)
