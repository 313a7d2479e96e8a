"""Parsers for what a client sends the API: event ids, Range headers, query parameters.

Every parser returns a value or raises ApiError with the 4xx status and message the client gets;
nothing else (a hypothesis test in tests/test_web_api.py holds them to that). They do no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from camrec.errors import UsageError
from camrec.store import layout, untrusted
from camrec.store.listing import parse_time_bound


class ApiError(Exception):
    """An answer other than success: HTTP status, a message for people, an optional hint."""

    def __init__(self, status: int, message: str, hint: str | None = None, **extra: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint
        self.extra = extra  # more fields for clients, e.g. live view's {"fallback": "mse"}

    def body(self) -> dict[str, str]:
        return {"error": self.message, **({"hint": self.hint} if self.hint else {}), **self.extra}


# --- event ids -------------------------------------------------------------------------------
#
# An event id is the clip's file stem (`front-20261203T142358.276Z`, `-N` for a retried name): the
# same in every copy of a store and across index rebuilds, unlike the index's row ids. It is
# accepted only if it is exactly a stem that layout.parse_video_name accepts, so it can never name
# anything but `<camera>/<day>/<stem>.mp4.age` and its two siblings.

MAX_ID_LENGTH = 80  # camera (32) + "-" + timestamp (20) + "-N": far below this
_ID_CHARS = re.compile(r"[A-Za-z0-9_.-]+")  # also keeps out "\n", which the stem regex's `$` allows


@dataclass(frozen=True)
class EventId:
    stem: str
    camera: str
    start: float

    @property
    def video(self) -> str:
        """The video's path relative to the store root, as the index holds it."""
        day = datetime.fromtimestamp(self.start, UTC).strftime("%Y-%m-%d")
        return f"{self.camera}/{day}/{self.stem}{layout.VIDEO_SUFFIX}"


def event_id_of(video_rel: str) -> str:
    """The id of the clip whose video is `video_rel` (a checked index path)."""
    return video_rel.rsplit("/", 1)[-1][: -len(layout.VIDEO_SUFFIX)]


def parse_event_id(text: str) -> EventId:
    unknown = ApiError(404, "no such event (an event id is a clip name like front-20261203T142358.276Z)")
    if not text or len(text) > MAX_ID_LENGTH or not _ID_CHARS.fullmatch(text):
        raise unknown
    try:
        parsed = layout.parse_video_name(text + layout.VIDEO_SUFFIX)
    except (ValueError, OverflowError):  # digits in the right places, but no real date
        parsed = None
    if parsed is None:
        raise unknown
    event = EventId(text, parsed[0], parsed[1])
    if untrusted.clip_path_problem(event.video) is not None:  # the same rule the owner's tools apply
        raise unknown
    return event


# --- Range ------------------------------------------------------------------------------------
#
# Policy (docs/web-api.md, "Range"): one byte range per request. RFC 9110 §14.2 lets a server
# ignore or reject what it does not serve; we answer 416 with a JSON reason for a malformed bytes
# range, several ranges (overlapping or not: the browser's media stack and typage never ask for
# them, and multipart answers are a needless attack surface), and a range that starts at or after
# the end of the file. A range unit other than bytes is ignored (RFC 9110: MUST ignore), so the
# whole file is sent.

MAX_RANGE_HEADER = 200
_BYTES_RANGE = re.compile(r"[ \t]*([0-9]{0,19})[ \t]*-[ \t]*([0-9]{0,19})[ \t]*")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte, inclusive, of a single `Range: bytes=…` within a file of `size` bytes;
    None to send the whole file. Raises ApiError(416)."""
    if header is None:
        return None
    if len(header) > MAX_RANGE_HEADER:
        raise ApiError(416, "Range header too long (one byte range per request)")
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        if eq and re.fullmatch(r"[ \t]*[A-Za-z0-9!#$%&'*+.^_`|~-]+[ \t]*", unit):
            return None  # another range unit: ignored, as RFC 9110 requires
        raise ApiError(416, "malformed Range header (expected bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX)")
    if "," in spec:
        raise ApiError(416, "only one byte range per request is served (no multiple or overlapping ranges)")
    m = _BYTES_RANGE.fullmatch(spec)
    if not m or (not m[1] and not m[2]):
        raise ApiError(416, "malformed Range header (expected bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX)")
    if not m[1]:  # bytes=-N: the last N bytes
        suffix = int(m[2])
        if suffix == 0 or size == 0:
            raise ApiError(416, f"range not satisfiable: the file has {size} bytes")
        return max(0, size - suffix), size - 1
    first = int(m[1])
    last = int(m[2]) if m[2] else max(first, size - 1)
    if last < first:
        raise ApiError(416, "malformed Range header: the last byte is before the first")
    if first >= size:
        raise ApiError(416, f"range not satisfiable: the file has {size} bytes")
    return first, min(last, size - 1)


# --- query parameters ---------------------------------------------------------------------------

MAX_QUERY_STRING = 2048
DEFAULT_LIMIT, MAX_LIMIT = 1000, 10000
_CAMERA = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True)
class EventQuery:
    camera: str | None
    since: float | None
    until: float | None
    limit: int


def parse_event_query(params: dict[str, list[str]], query_string_length: int = 0) -> EventQuery:
    """`/api/events?camera=&since=&until=&limit=`; each at most once. Unknown parameters are
    ignored (cache-busters); time values take the CLI's forms and get the CLI's message."""
    if query_string_length > MAX_QUERY_STRING:
        raise ApiError(414, f"query string too long (at most {MAX_QUERY_STRING} bytes)")
    one: dict[str, str] = {}
    for name in ("camera", "since", "until", "limit"):
        values = params.get(name, [])
        if len(values) > 1:
            raise ApiError(400, f"parameter {name} given {len(values)} times")
        if values:
            one[name] = values[0]
    camera = one.get("camera") or None
    if camera is not None and not _CAMERA.fullmatch(camera):
        raise ApiError(400, "bad camera name (letters, digits, _ and -, at most 32)")
    bounds: list[float | None] = []
    for name in ("since", "until"):
        text = one.get(name)
        if not text:
            bounds.append(None)
            continue
        try:
            bounds.append(parse_time_bound(text))
        except UsageError as exc:
            raise ApiError(400, exc.message, exc.hint) from None
    since, until = bounds
    if since is not None and until is not None and since > until:
        raise ApiError(400, f"--since {one['since']} is after --until {one['until']}",
                       "swap them: since is the earlier time")
    limit = DEFAULT_LIMIT
    if one.get("limit"):
        text = one["limit"]
        if not re.fullmatch(r"[0-9]{1,6}", text) or not 1 <= int(text) <= MAX_LIMIT:
            raise ApiError(400, f"bad limit (a number from 1 to {MAX_LIMIT})")
        limit = int(text)
    return EventQuery(camera, since, until, limit)
