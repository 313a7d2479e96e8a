"""What `camrec check` tells the owner about the set-up beyond "valid": whose keys the clips go to,
and where they land (exists, which disk, free space, how many days fit at the current rate).

The recipients are shown in a short form (`age1abcd…wxyz`) so that the owner can compare them with
the public key `camrec keygen` printed. The storage report catches the classic mistakes of a Pi
install: a USB disk that is not mounted (the path then lies on the SD card's root file system), or a
disk that holds only a few days of clips.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from camrec.errors import CamrecError

RATE_WINDOW_DAYS = 7


def short_recipient(recipient: str) -> str:
    return f"{recipient[:12]}…{recipient[-6:]}" if len(recipient) > 24 else recipient


def mount_point(path: Path) -> Path:
    """The directory on which the file system holding `path` is mounted."""
    path = path.resolve()
    device = os.stat(path).st_dev
    while path.parent != path and os.stat(path.parent).st_dev == device:
        path = path.parent
    return path


def clip_rate(root: Path, now: float) -> float | None:
    """Bytes of clips per day over the last week (or since the first clip), from the index."""
    from camrec.store.index_copy import open_owner_index

    try:
        index = open_owner_index(root)  # writes nothing there (`camrec check` may run as root)
    except CamrecError:
        return None
    try:
        rows = index.query(since=now - RATE_WINDOW_DAYS * 86400)
    except CamrecError:
        return None
    finally:
        index.close()
    if not rows:
        return None
    span_days = max((now - min(r.start for r in rows)) / 86400, 1 / 24)  # at least an hour
    return sum(r.size for r in rows) / span_days


def storage_lines(config: Any, now: float | None = None) -> list[str]:
    st = config.storage
    path = Path(st.path)
    if not path.exists():
        return [f"storage {path}: does not exist (camrec run refuses it, except the default /var/lib/camrec)"]
    lines = []
    mount = mount_point(path)
    on_root = os.stat(path).st_dev == os.stat("/").st_dev
    where = "on the root file system (the SD card on a Pi)" if on_root else f"on the disk mounted at {mount}"
    usage = shutil.disk_usage(path)
    lines.append(f"storage {path}: exists, {where}, {usage.free / 1e9:.1f} GB free of {usage.total / 1e9:.1f} GB")
    rate = clip_rate(path, time.time() if now is None else now)
    usable = max(0, usage.free - st.min_free)
    if rate is None:
        lines.append("storage: no clips yet, so no recording rate to estimate from")
    else:
        days = usable / rate if rate > 0 else float("inf")
        lines.append(f"storage: {rate / 1e9:.2f} GB of clips a day lately; the free space above min_free holds "
                     f"about {days:.0f} more day(s) (retention_days: {st.retention_days:g})")
    return lines
