"""Durations, byte sizes and the CLI's --since/--until arguments.

Pure functions with no I/O. Every parser raises ValueError with a message meant for a person;
the config loader wraps it into a ConfigError with file:line, the CLI into a UsageError.

Conventions (documented once here, relied on by config and CLI):
- Durations: plain seconds (int/float, or a numeric string) or unit groups such as ``500ms``,
  ``3s``, ``2m``, ``1h30m``, ``1d``. ``m`` is minutes, never months. Units must appear largest
  first and at most once, so ``30m1h`` is rejected as the likely typo it is.
- Sizes: bytes as an int, or a number with a unit. Decimal units (KB, MB, GB, TB) are powers of
  1000 like disk vendors and ``df -H``; binary units (KiB, MiB, GiB, TiB) are powers of 1024 like
  ``df -h``. A bare ``G`` or ``M`` is refused because it is ambiguous between the two.
- Time arguments: ISO 8601 or a relative "that long ago" duration. Naive times are local time.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation

__all__ = ["format_duration", "parse_duration", "parse_size", "parse_time_arg"]

_DURATION_UNITS: dict[str, Decimal] = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
    "w": Decimal(7 * 86400),
}
# Largest first: the order a person writes "1h30m" in.
_UNIT_ORDER = ["w", "d", "h", "m", "s", "ms"]

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
# "ms" must be tried before "m" so that "500ms" is not read as 500 minutes and a stray "s".
_DURATION_GROUP = re.compile(rf"({_NUMBER})\s*(ms|[wdhms])", re.IGNORECASE)
_PLAIN_NUMBER = re.compile(rf"[+-]?{_NUMBER}")

_SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(rf"({_NUMBER})\s*([a-z]*)", re.IGNORECASE)

_DURATION_HELP = "use seconds (e.g. 5 or 2.5) or a duration such as 500ms, 3s, 2m, 1h30m or 1d"
_SIZE_HELP = "use bytes (e.g. 1048576) or a size such as 500MB, 20GB, 1.5TiB (KB/MB/GB/TB or KiB/MiB/GiB/TiB)"


def parse_duration(value: object) -> float:
    """Seconds as a float from an int/float or a duration string; never negative."""
    # bool is an int subclass; "enabled: yes" landing in a duration field must not become 1 s.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration, got {type(value).__name__}; {_DURATION_HELP}")
    if isinstance(value, int | float):
        return _checked_seconds(float(value), repr(value))

    text = value.strip()
    if not text:
        raise ValueError(f"empty duration; {_DURATION_HELP}")
    if _PLAIN_NUMBER.fullmatch(text):
        return _checked_seconds(float(text), repr(value))

    total = Decimal(0)
    pos = 0
    seen: list[str] = []
    compact = text.replace(" ", "")
    while pos < len(compact):
        match = _DURATION_GROUP.match(compact, pos)
        if match is None:
            raise ValueError(f"not a duration: {value!r}; {_DURATION_HELP}")
        number, unit = match.group(1), match.group(2).lower()
        if seen and _UNIT_ORDER.index(unit) <= _UNIT_ORDER.index(seen[-1]):
            raise ValueError(f"not a duration: {value!r}; write units largest first and each once (e.g. 1h30m)")
        seen.append(unit)
        total += Decimal(number) * _DURATION_UNITS[unit]
        pos = match.end()
    return _checked_seconds(float(total), repr(value))


def _checked_seconds(seconds: float, shown: str) -> float:
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"not a duration: {shown}; {_DURATION_HELP}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {shown}")
    return seconds


def format_duration(seconds: float) -> str:
    """Short human form used in messages: 0.5s, 3s, 2m, 1h30m, 1d2h. Round-trips through parse_duration."""
    if seconds < 60:
        return f"{seconds:g}s"
    parts: list[str] = []
    rest = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def parse_size(value: object) -> int:
    """Bytes as an int from an int or a size string such as "500MB" or "1.5TiB"; never negative."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a size, got {type(value).__name__}; {_SIZE_HELP}")
    if isinstance(value, float):
        # A float arrives from YAML like "size: 1.5e9"; only whole byte counts make sense.
        if not value.is_integer():
            raise ValueError(f"a size in bytes must be a whole number, got {value!r}; {_SIZE_HELP}")
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value!r}")
        return value

    text = value.strip()
    match = _SIZE.fullmatch(text)
    if match is None:
        if text.startswith("-"):
            raise ValueError(f"a size cannot be negative: {value!r}")
        raise ValueError(f"not a size: {value!r}; {_SIZE_HELP}")
    number, unit = match.group(1), match.group(2).lower()
    if unit == "":
        unit = "b"
    if unit not in _SIZE_UNITS:
        if unit in ("k", "m", "g", "t"):
            raise ValueError(
                f"ambiguous size unit in {value!r}: write {unit.upper()}B (powers of 1000) "
                f"or {unit.upper()}iB (powers of 1024)"
            )
        raise ValueError(f"unknown size unit {match.group(2)!r} in {value!r}; {_SIZE_HELP}")
    try:
        amount = Decimal(number) * _SIZE_UNITS[unit]
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise ValueError(f"not a size: {value!r}; {_SIZE_HELP}") from exc
    if amount != amount.to_integral_value():
        # "1.5B" or "0.0001KB": a fraction of a byte is surely a typo, not something to round.
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(amount)


def parse_time_arg(text: str, now: datetime) -> datetime:
    """An aware datetime from a CLI --since/--until argument.

    Accepted: ISO 8601 dates (``2024-05-01``: midnight local time), date-times with or without a
    zone (``2024-05-01T18:30``, ``2024-05-01 18:30:00+02:00``, ``...Z``; naive means local time),
    ``now``, relative durations meaning "that long before now": ``90s``, ``30m``, ``2h``,
    ``1d``, ``1h30m`` (an optional trailing ``ago`` is allowed), and the words a person types:

    - ``today``, ``yesterday``: local midnight at the start of that day;
    - a weekday (``mon``, ``monday``, … ``sun``): local midnight at the start of the most recent
      such day, today included (on a Monday, ``mon`` is this morning's midnight);
    - ``HH:MM`` or ``HH:MM:SS``: that time today, or yesterday if it is still ahead of ``now``;
    - a day word and a time (``yesterday 18:00``, ``fri 09:30``): that time on that day.

    Local midnight and local times follow the zone's rules on that day, so a day with a daylight
    saving change starts at its real midnight (23 or 25 hours before the next).
    """
    now = _aware(now)
    raw = text.strip()
    if not raw:
        raise ValueError("empty time; use an ISO 8601 date/time (2024-05-01T18:30) or a duration ago (2h)")
    lowered = raw.lower()
    if lowered == "now":
        return now

    relative = lowered.removesuffix("ago").strip()
    # A bare number is refused: "30" could mean seconds, minutes or a day of the month.
    if relative and not _PLAIN_NUMBER.fullmatch(relative) and relative[0].isdigit():
        try:
            seconds = parse_duration(relative)
        except ValueError:
            seconds = None
        if seconds is not None:
            try:
                return now - timedelta(seconds=seconds)
            except OverflowError:  # timedelta caps at ~2.7 million years; datetime at year 1
                raise ValueError(f"{text.strip()!r} reaches back before the year 1") from None

    spoken = _parse_spoken(lowered, now)
    if spoken is not None:
        return spoken
    parsed = _parse_iso(raw)
    if parsed is None:
        raise ValueError(
            f"not a time: {text!r}; use an ISO 8601 date or date-time (2024-05-01, 2024-05-01T18:30, "
            "2024-05-01T18:30:00Z), how long ago (90s, 30m, 2h, 1d), today, yesterday, a weekday (mon) "
            "or a time of day (09:30)"
        )
    return parsed


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


def _day_word(word: str, today: date) -> date | None:
    """The date a day word names, relative to `today` (None if it isn't one)."""
    if word == "today":
        return today
    if word == "yesterday":
        return today - timedelta(days=1)
    for number, name in enumerate(_WEEKDAYS):
        # "mon", "tues", "wednesday": any prefix of three letters or more
        if len(word) >= 3 and name.startswith(word):
            return today - timedelta(days=(today.weekday() - number) % 7)
    return None


def _clock_time(word: str) -> time | None:
    m = _CLOCK.fullmatch(word)
    if m is None:
        return None
    hour, minute, second = int(m[1]), int(m[2]), int(m[3] or 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"not a time of day: {word!r} (use 00:00 to 23:59)")
    return time(hour, minute, second)


def _parse_spoken(text: str, now: datetime) -> datetime | None:
    """`today`, `yesterday`, weekdays, `HH:MM[:SS]`, or a day word followed by a time; else None."""
    local_now = now.astimezone()  # day words mean the local calendar, whatever zone `now` came in
    words = text.split()
    if len(words) == 1:
        day = _day_word(words[0], local_now.date())
        if day is not None:
            return _local(day, time())
        clock = _clock_time(words[0])
        if clock is None:
            return None
        moment = _local(local_now.date(), clock)
        # A time still ahead today means the last time the clock showed it: yesterday.
        return moment if moment <= now else _local(local_now.date() - timedelta(days=1), clock)
    if len(words) == 2:
        day, clock = _day_word(words[0], local_now.date()), _clock_time(words[1])
        if day is not None and clock is not None:
            return _local(day, clock)
    return None


def _local(day: date, clock: time) -> datetime:
    # A naive local date-time made aware by the system's zone rules for that very day.
    return datetime.combine(day, clock).astimezone()


def _parse_iso(raw: str) -> datetime | None:
    # Date only: midnight at the start of that day in local time.
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        pass
    else:
        return _aware(datetime.combine(day, time()))
    try:
        # Python 3.11 accepts "Z", a space or "T" as separator, and most ISO 8601 forms.
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return _aware(moment)


def _aware(moment: datetime) -> datetime:
    # astimezone() on a naive datetime interprets it as local time, which is what a user
    # typing "--since 2024-05-01T18:00" on the recorder means.
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        return moment.astimezone()
    return moment
