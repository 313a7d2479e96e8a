"""Issue 8, finding 1 (last bullet): the daemon never opens, follows or writes through a FIFO, a
socket, a device or a symlink planted in the store. Each test plants one, as a compromised recorder
account or a local user in the service group could, and checks nothing outside the root is touched."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from camrec.crypto.keys import X25519Identity
from camrec.errors import StorageError
from camrec.store import layout
from camrec.store.writer import Store
from tests.support.daemon import Daemon

OLD_DAY = "2020-01-01"


def _clip(camera: str, second: int, suffix: str = layout.VIDEO_SUFFIX) -> str:
    return f"{camera}/{OLD_DAY}/{camera}-20200101T0000{second:02d}.000Z{suffix}"


def synthetic_daemon(tmp: Path, cameras: tuple[str, ...]) -> Daemon:
    d = Daemon(tmp, "rtsp://127.0.0.1:9/unused")
    cams = "".join(f"  {name}:\n    source: 'synthetic:?motion=1-3&period=600'\n    pre_roll: 1s\n"
                   f"    post_roll: 1s\n" for name in cameras)
    d.config.write_text(f"recipients: [{d.owner.recipient()}]\nstorage:\n  path: {d.storage}\n"
                        f"  min_free: 1MB\ncameras:\n{cams}")
    return d


def _snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_fifo_symlinks_and_a_symlinked_camera_dir_in_a_running_daemon(tmp_path):
    d = synthetic_daemon(tmp_path, ("front", "back"))
    root = d.storage
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_bytes(b"the owner's file, not a clip\n")
    before = _snapshot(secret)
    # A FIFO named like a clip: open() on it blocked start-up forever, deaf to SIGTERM.
    fifo = root / _clip("front", 1)
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    # Symlinks named like a clip and its sidecars, pointing at a file outside the store.
    links = [root / _clip("front", 2, s) for s in layout.CLIP_SUFFIXES]
    for link in links:
        link.symlink_to(secret)
    # A camera directory that is a symlink: clips would have been written outside the root.
    (root / "back").symlink_to(outside, target_is_directory=True)

    t0 = time.monotonic()
    d.start()
    try:
        deadline = time.monotonic() + 10
        while "recording 2 camera(s)" not in d.log.read_text():
            assert time.monotonic() < deadline, d.log.read_text()
            assert d.proc is not None and d.proc.poll() is None, d.log.read_text()
            time.sleep(0.1)
        started = time.monotonic() - t0
        assert started < 8, started
        d.wait_for(lambda rows: any(r["camera"] == "front" and r["state"] == "complete" for r in rows), 45,
                   "a complete clip of the healthy camera")
        time.sleep(1.0)  # `back` has had motion too by now, and tried to open its clip
        back = d.status()["cameras"]["back"]
        assert "refusing to write camera back's clips" in (back["storage_error"] or ""), back
        assert d.status()["cameras"]["front"]["storage_error"] is None
        t1 = time.monotonic()
        assert d.stop(signal.SIGTERM) == 0
        assert time.monotonic() - t1 < 20
    finally:
        d.close()
    log = d.log.read_text()
    assert "Traceback" not in log
    # Nothing was written outside the root, the outside file is untouched.
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert _snapshot(secret) == before
    # The symlinked camera was refused, loudly, with its path and what to do.
    assert re.search(r"back is a symbolic link, not a directory: refusing to write camera back's clips", log), log
    # The planted entries are logged once each, never adopted, never deleted, never followed.
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert all(os.path.islink(link) for link in links)
    for rel in (_clip("front", 1), *(_clip("front", 2, s) for s in layout.CLIP_SUFFIXES)):
        assert log.count(f"storage: {rel} is ") == 1, log
    paths = {r["path"] for r in d.rows()}
    assert not paths & {_clip("front", 1), _clip("front", 2)}
    assert all(p.startswith("front/") for p in paths)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "storage", [X25519Identity.generate().recipient()])
    yield s
    s.close()


def test_symlinked_day_directory_is_not_written_through(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    start = 1_700_000_000.0
    day = Path(layout.clip_relpath("cam", start)).parent
    (store.root / day.parent).mkdir()
    (store.root / day).symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError, match="is a symbolic link, not a directory: refusing to write camera cam"):
        store.open_clip("cam", start)
    assert list(outside.iterdir()) == []


def test_garbage_row_under_a_symlinked_camera_dir_deletes_nothing_outside(store, tmp_path):
    """A tampered index row (state garbage) whose camera directory was swapped for a link to the
    owner's files: start-up finishes "deletions", but never through the link."""
    outside = tmp_path / "outside"
    (outside / OLD_DAY).mkdir(parents=True)
    victim = outside / OLD_DAY / Path(_clip("cam", 3)).name
    victim.write_bytes(b"not camrec's\n")
    (store.root / "cam").symlink_to(outside, target_is_directory=True)
    store.index.insert("cam", 1_577_836_803.0, _clip("cam", 3), 13, state="garbage")
    store.reconcile()
    assert victim.read_bytes() == b"not camrec's\n"
    # A FIFO in a clip's place is not deleted by retention either (nor opened to hash it).
    (store.root / "cam").unlink()
    fifo = store.root / _clip("cam", 4)
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    store.index.insert("cam", 1_577_836_804.0, _clip("cam", 4), 0, state="garbage")
    store.reconcile()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_index_that_is_a_symlink_is_kept_aside_not_followed(tmp_path):
    root = tmp_path / "storage"
    root.mkdir()
    target = tmp_path / "elsewhere.sqlite3"
    db = sqlite3.connect(target)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    before = _snapshot(target)
    (root / layout.INDEX_NAME).symlink_to(target)
    s = Store(root, [X25519Identity.generate().recipient()])
    s.close()
    assert _snapshot(target) == before
    assert (root / layout.INDEX_NAME).is_file() and not (root / layout.INDEX_NAME).is_symlink()
    kept = [p for p in root.iterdir() if p.name.startswith(layout.INDEX_NAME + ".damaged-")]
    assert len(kept) == 1 and kept[0].is_symlink()


def _finishes(fn, seconds: float = 10.0) -> None:
    done = threading.Event()

    def run() -> None:
        fn()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(seconds), "blocked (a FIFO was opened)"


def test_fifo_at_an_open_clips_sidecar_names_neither_blocks_nor_is_removed(store):
    clip = store.open_clip("cam", 1_700_000_000.0)
    clip.write(b"\0" * 100_000, 1_700_000_001.0)
    fifos = [store.root / layout.sibling(clip.rel, s) for s in (layout.THUMB_SUFFIX, layout.META_SUFFIX)]
    for fifo in fifos:
        os.mkfifo(fifo)
    # Aborting hashes whatever sidecars exist for the manifest's `partial` entry.
    _finishes(clip.abort)
    assert all(stat.S_ISFIFO(os.lstat(f).st_mode) for f in fifos)
    other = store.open_clip("cam", 1_700_000_010.0)
    other.write(b"\0" * 100_000, 1_700_000_011.0)
    for s in (layout.THUMB_SUFFIX, layout.META_SUFFIX):
        os.mkfifo(store.root / layout.sibling(other.rel, s))
    # Closing writes the sidecars with O_EXCL: the planted names are skipped, the clip is kept.
    row = other.close(1_700_000_012.0, thumbnail=b"jpeg", details=b"{}")
    assert row.state == "complete" and row.thumb is None and row.meta is None
