"""What `camrec list --json` and the web API's `/api/events` say about a clip, in one place.

Both read the same index rows and must agree field for field: the CLI's JSON is a documented
interface and the web app's event list is "the fields of `camrec list --json`" plus its own. So the
row → dict code, the time-argument parsing (`--since`/`--until`, `?since=`/`?until=`) and the rule
that a `recording` row without a live recorder is shown as `partial` live here, below both.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any

from camrec.errors import UsageError
from camrec.store.lock import recorder_running

TIME_HINT = ("use ISO 8601 (2026-11-21T18:00), a span like 30m, 2h, 1d, or "
             "today, yesterday, mon, 09:30, 'yesterday 18:00'")


def iso(t: float) -> str:
    """ISO 8601 with the local UTC offset, to the millisecond."""
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


def clip_json(row: Any) -> dict[str, Any]:
    """One clip as `camrec list --json` prints it."""
    return {"camera": row.camera, "start": iso(row.start), "end": iso(row.end),
            "duration": round(row.duration, 3), "size": row.size, "path": row.path,
            "state": row.state, "thumbnail": row.thumb, "details": row.meta}


def parse_time_bound(text: str) -> float:
    """Epoch seconds of a `--since`/`--until` value; UsageError (with the CLI's message) if bad."""
    from camrec.timeparse import parse_time_arg

    try:
        return parse_time_arg(text, datetime.now().astimezone()).timestamp()
    except (ValueError, OverflowError) as exc:  # OverflowError: .timestamp() of an extreme date
        raise UsageError(f"bad time {text!r}: {exc}", hint=TIME_HINT) from None


def rows_as_cut_without_recorder(root: Path, rows: list[Any]) -> list[Any]:
    """A clip in `recording` with no live recorder on its storage (the recorder died, or this is a
    copy or a disk pulled after a break-in) is a cut clip: shown as `partial` and salvaged by
    export, never hidden until a recorder runs there again."""
    if not any(r.state == "recording" for r in rows) or recorder_running(root):
        return rows
    return [dataclasses.replace(r, state="partial") if r.state == "recording" else r for r in rows]
