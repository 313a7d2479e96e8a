"""Where clip files live: <storage>/<camera>/<YYYY-MM-DD>/<camera>-<YYYYmmddTHHMMSS.fffZ>.mp4.age

Names use UTC so that daylight-saving changes can neither reorder nor collide clips. Each clip has
up to three age files sharing one stem: the video, a JPEG thumbnail, and the event details (JSON).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

VIDEO_SUFFIX = ".mp4.age"
THUMB_SUFFIX = ".jpg.age"
META_SUFFIX = ".json.age"
CLIP_SUFFIXES = (VIDEO_SUFFIX, THUMB_SUFFIX, META_SUFFIX)
INDEX_NAME = "index.sqlite3"

_STEM_RE = re.compile(r"^(?P<camera>[A-Za-z0-9_-]{1,32})-(?P<ts>\d{8}T\d{6}\.\d{3}Z)(?:-(?P<n>\d+))?$")


def fsync_dir(path: Path) -> None:
    """Makes a directory's entries (new, renamed, removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clip_stem(camera: str, start: float) -> str:
    dt = datetime.fromtimestamp(start, UTC)
    return f"{camera}-{dt:%Y%m%dT%H%M%S}.{dt.microsecond // 1000:03d}Z"


def clip_relpath(camera: str, start: float, suffix: str = VIDEO_SUFFIX, attempt: int = 0) -> str:
    """Path relative to the storage root, always with '/' separators (it is stored in the index)."""
    dt = datetime.fromtimestamp(start, UTC)
    stem = clip_stem(camera, start) + (f"-{attempt}" if attempt else "")
    return f"{camera}/{dt:%Y-%m-%d}/{stem}{suffix}"


def sibling(relpath: str, suffix: str) -> str:
    """The thumbnail/details path that belongs to a video path."""
    assert relpath.endswith(VIDEO_SUFFIX)
    return relpath[: -len(VIDEO_SUFFIX)] + suffix


def parse_video_name(name: str) -> tuple[str, float] | None:
    """(camera, start epoch seconds) from a video file name, or None if it isn't one of ours."""
    if not name.endswith(VIDEO_SUFFIX):
        return None
    m = _STEM_RE.match(name[: -len(VIDEO_SUFFIX)])
    if not m:
        return None
    dt = datetime.strptime(m["ts"], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
    return m["camera"], dt.timestamp()


def iter_video_files(root: Path) -> list[str]:
    """Relative paths of every clip video file under the storage root."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if parse_video_name(name):
                found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(found)
