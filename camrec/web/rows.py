"""Reading the clip index for the web app, as hostile input and without ever writing to the store.

Inside `camrec run` the live index is opened read-only (the recorder keeps its -wal/-shm files).
In `camrec web serve --store` even a read-only SQLite connection would write into the store, so
the index is read as every owner-side command reads it (camrec/store/index_copy.py): from a
private copy, refreshed when the store's files change, or in place when a live recorder holds the
store, with its shared memory opened read-only. When the index is damaged or absent while clips
exist, the rows are computed from the clip files and the signed manifest instead, as `camrec list`
does (camrec/store/rebuild.py).
Rows whose paths are not clip paths are skipped with a log line (camrec/store/untrusted.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from camrec.errors import StorageError
from camrec.store import layout, untrusted
from camrec.store.index import ClipIndex, ClipRow, IndexDamaged
from camrec.store.index_copy import IndexCopies, live_index
from camrec.store.listing import rows_as_cut_without_recorder
from camrec.store.lock import recorder_running
from camrec.store.rebuild import RowsView, clip_rows, device_public_key

log = logging.getLogger("camrec.web")

__all__ = ["IndexReader", "query", "recorder_running", "usable"]

VISIBLE_STATES = ("recording", "complete", "partial", "missing")


class IndexReader:
    """Opens the store's rows for one request (blocking: call it from a worker thread)."""

    def __init__(self, root: Path, read_only_store: bool) -> None:
        self.root = root
        self.read_only_store = read_only_store
        self._copies = IndexCopies(root)

    def close(self) -> None:
        self._copies.close()

    def open(self) -> Any:
        """A ClipIndex (read-only) or a RowsView; the caller closes it. StorageError if unreadable."""
        untrusted.check_metadata(self.root)  # a FIFO or link in place of the index: refused
        try:
            index = self._open_index()
        except IndexDamaged as exc:
            return self._from_files(exc.message)
        if index is not None:
            try:
                index.query(states=("garbage",))  # reads the schema and a page: damage shows here
                return index
            except IndexDamaged as exc:
                index.close()
                return self._from_files(exc.message)
        if not layout.iter_video_files(self.root):
            return RowsView([])
        return self._from_files("the clip index is missing")

    def _open_index(self) -> ClipIndex | None:
        """The live index inside `camrec run`; in `web serve --store`, a private copy refreshed when
        the store's files change, or the live one read in place when a recorder holds the store
        (camrec/store/index_copy.py: nothing is written into the store either way)."""
        live = self.root / layout.INDEX_NAME
        if not self.read_only_store or live_index(self.root):
            try:
                return ClipIndex(live, readonly=True, shared_memory_readonly=self.read_only_store)
            except IndexDamaged:
                raise
            except StorageError:
                if live.exists():
                    raise
                return None
        path = self._copies.current()
        return None if path is None else ClipIndex(path, readonly=True, shown_path=live)

    def _from_files(self, why: str) -> RowsView:
        rows, _, used = clip_rows(self.root, device_public_key(self.root))
        log.warning("web: %s; listing from the clip files%s", why,
                    " and the signed manifest" if used else " (no usable manifest: no durations)")
        return RowsView(rows)


def usable(rows: list[ClipRow], root: Path) -> list[ClipRow]:
    """The rows whose paths are a clip's (others logged), `recording` shown as `partial` when no
    recorder holds the store."""
    good, _ = untrusted.checked_rows(rows, _warn_once)
    return rows_as_cut_without_recorder(root, good)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A skipped row is logged once per process, not at every page load that lists it."""
    if message not in _warned and len(_warned) < 10000:
        _warned.add(message)
        log.warning("web: %s", message.removeprefix("camrec: warning: "))


def query(reader: IndexReader, **kwargs: Any) -> list[ClipRow]:
    index = reader.open()
    try:
        rows = index.query(states=VISIBLE_STATES, **kwargs)
    finally:
        index.close()
    return usable(rows, reader.root)
