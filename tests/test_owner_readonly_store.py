"""Owner tools never write into a store, not even SQLite's -wal/-shm files (camrec/store/index_copy.py).

A store recorded by the real recorder code is copied with `rsync -a` twice: while its index is
still open (the copy has the -wal with the last rows, and a -shm: a copy of a live store) and after
a clean stop (the index alone). Every owner command runs on each copy through the CLI, and the
names, kinds, modes, sizes and mtimes of every entry of the store tree must be the same after.
A third case has a live recorder (another process holding the recorder lock and the index open).
Real parts: real video and age, real SQLite in real processes, real rsync, a real `web serve`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from camrec.store import layout
from camrec.store.index_copy import open_owner_index
from tests.helpers import have
from tests.test_owner_safety import camrec, owner_env
from tests.test_recorder import record
from tests.test_verify import write_config
from tests.test_web_serve import first_line

REPO = Path(__file__).resolve().parents[1]


def tree_state(root: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime) of the root and of every entry below it, links and all, none followed."""
    out = {".": _state(root)}
    for dirpath, dirs, names in os.walk(root):
        for name in dirs + names:
            full = Path(dirpath) / name
            out[full.relative_to(root).as_posix()] = _state(full)
    return out


def _state(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return st.st_mode, st.st_size, st.st_mtime_ns


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two rsync copies of one recorded store: taken while its index was open, and after it closed."""
    assert have("rsync"), "rsync is needed (README's test command installs it)"
    tmp = tmp_path_factory.mktemp("owner-readonly")
    owner, store, rows, _ = record(tmp, motion="3-5,11-13", seconds=17)
    assert len(rows) == 2 and all(r.state == "complete" for r in rows)
    live_copy, closed_copy = tmp / "copy-live", tmp / "copy-closed"
    subprocess.run(["rsync", "-a", f"{store.root}/", f"{live_copy}/"], check=True, timeout=60)
    store.close()
    subprocess.run(["rsync", "-a", f"{store.root}/", f"{closed_copy}/"], check=True, timeout=60)
    index = layout.INDEX_NAME
    assert (live_copy / f"{index}-wal").stat().st_size > 0 and (live_copy / f"{index}-shm").exists()
    assert not (closed_copy / f"{index}-wal").exists() and not (closed_copy / f"{index}-shm").exists()
    return {"tmp": tmp, "owner": owner, "rows": rows, "live-copy": live_copy, "closed-copy": closed_copy}


def _owner(tmp: Path, owner) -> tuple[Path, dict[str, str], Path]:
    home = tmp / "home"
    home.mkdir()
    key = home / "owner.key"
    key.write_text(f"{owner}\n")
    temp = tmp / "owner-tmp"  # the owner's TMPDIR: the private copies of the index go here
    temp.mkdir()
    return home, {**owner_env(home), "TMPDIR": str(temp)}, key


def _serve_events(copy: Path, env: dict[str, str]) -> list[dict]:
    proc = subprocess.Popen([sys.executable, "-m", "camrec", "web", "serve", "--store", str(copy), "--port", "0"],
                            cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", first_line(proc))
        assert m
        with urllib.request.urlopen(m[1] + "api/events", timeout=10) as r:
            return json.loads(r.read())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


@pytest.mark.parametrize("which", ["live-copy", "closed-copy"])
def test_every_owner_command_leaves_an_rsync_copy_as_it_was(stores, which, tmp_path):
    copy = tmp_path / "store"
    subprocess.run(["rsync", "-a", f"{stores[which]}/", f"{copy}/"], check=True, timeout=60)
    home, env, key = _owner(tmp_path, stores["owner"])
    cfg = write_config(home, stores["owner"], copy)
    rows = stores["rows"]
    before = tree_state(copy)

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess:
        proc = camrec(*args, env=env, cwd=home)
        assert proc.returncode == code, (args, proc.stderr)
        assert tree_state(copy) == before, f"`camrec {' '.join(args)}` changed the store"
        return proc

    run("list", "--store", str(copy))
    listed = json.loads(run("list", "--json", "-c", str(cfg)).stdout)
    # Both clips `complete`: on the live copy their last updates are only in the -wal, so it was read.
    assert [(c["path"], c["state"]) for c in listed] == [(r.path, "complete") for r in rows]
    run("export", "--store", str(copy), "-i", str(key), "-o", str(home / "clips"))
    assert len(list((home / "clips").iterdir())) == 2
    run("verify", "--store", str(copy))
    run("verify", "-c", str(cfg), "-i", str(key))
    run("decrypt", "-i", str(key), str(copy / rows[0].path), "-o", str(home / "one.mp4"))
    run("audit", "--store", str(copy))
    assert [e["path"] for e in _serve_events(copy, env)] == [r.path for r in rows]
    assert tree_state(copy) == before, "`camrec web serve --store` changed the store"
    assert not os.listdir(env["TMPDIR"]), "a private copy of the index was left behind"


WRITER = """
import sys, time
from pathlib import Path
from camrec.store import layout
from camrec.store.index import ClipIndex
from camrec.store.lock import RecorderLock
root, start = Path(sys.argv[1]), float(sys.argv[2])
lock = RecorderLock(root)
lock.acquire()
index = ClipIndex(root / layout.INDEX_NAME)
index.insert("cam", start, layout.clip_relpath("cam", start), 10)  # a clip being recorded
print("ready", flush=True)
sys.stdin.readline()
index.close()
lock.release()
"""


def test_a_live_recorders_index_is_read_in_place_without_writing_its_shm(stores, tmp_path):
    """With a recorder holding the store (another process, the same user: the case where SQLite
    could write its read marks into the -shm), the owner reads the live rows and changes nothing."""
    copy = tmp_path / "store"
    subprocess.run(["rsync", "-a", f"{stores['closed-copy']}/", f"{copy}/"], check=True, timeout=60)
    home, env, _ = _owner(tmp_path, stores["owner"])
    start = stores["rows"][1].start + 60
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(copy), str(start)], cwd=REPO, text=True,
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        before = tree_state(copy)
        assert f"{layout.INDEX_NAME}-shm" in before  # the recorder's own files
        listed = json.loads(camrec("list", "--json", "--store", str(copy), env=env, cwd=home).stdout)
        assert tree_state(copy) == before
        # The row the recorder added, in its -wal only, is there (shown `recording`: it is being written).
        assert [c["state"] for c in listed] == ["complete", "complete", "recording"]
        proc = camrec("verify", "--store", str(copy), env=env, cwd=home)
        assert tree_state(copy) == before
        assert f"checked {len(stores['rows']) + 1} clip(s)" in proc.stdout, proc.stdout  # the live row too
        index = open_owner_index(copy)
        assert index.path == copy / layout.INDEX_NAME  # in place, not a copy
        assert len(index.query()) == 3
        index.close()
        assert tree_state(copy) == before
        assert not os.listdir(env["TMPDIR"])
    finally:
        writer.communicate("\n", timeout=20)


def test_why_a_copy_sqlite_would_write_into_the_store_even_read_only(stores, tmp_path):
    """The facts the design rests on, for this SQLite: `mode=ro` makes -wal and -shm beside a closed
    index and rewrites the -shm of a copy of a live one; `immutable=1` writes nothing but ignores the
    -wal, losing the rows a recorder had not checkpointed. open_owner_index does neither."""
    closed, live = tmp_path / "closed", tmp_path / "live"
    shutil.copytree(stores["closed-copy"], closed)
    shutil.copytree(stores["live-copy"], live)
    name = layout.INDEX_NAME

    def read(root: Path, params: str) -> list[tuple[str, str]]:
        db = sqlite3.connect(f"file:{root / name}?{params}", uri=True)
        try:
            return db.execute("SELECT path, state FROM clips ORDER BY start").fetchall()
        except sqlite3.OperationalError:  # the table itself only in the -wal
            return []
        finally:
            db.close()

    before = tree_state(live)
    assert [s for _, s in read(live, "immutable=1")] != ["complete", "complete"]  # the -wal ignored
    assert tree_state(live) == before
    rows = open_owner_index(live).query()
    assert [r.state for r in rows] == ["complete", "complete"] and tree_state(live) == before
    read(live, "mode=ro")
    assert tree_state(live)[f"{name}-shm"] != before[f"{name}-shm"]

    before = tree_state(closed)
    index = open_owner_index(closed)
    assert [r.state for r in index.query()] == ["complete", "complete"]
    index.close()
    assert tree_state(closed) == before
    read(closed, "mode=ro")
    assert {f"{name}-wal", f"{name}-shm"} <= set(tree_state(closed))


def test_an_index_larger_than_the_bound_is_not_copied_and_list_uses_the_files(stores, tmp_path, monkeypatch,
                                                                               capsys):
    """A copied store's index is hostile: one too large to be camrec's is not copied into the owner's
    temporary directory; `list` then shows the clips from their files and the manifest, as for a
    damaged index, and still writes nothing into the store."""
    from camrec import cli
    from camrec.store import index_copy

    copy = tmp_path / "store"
    shutil.copytree(stores["live-copy"], copy)
    temp = tmp_path / "owner-tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr("tempfile.tempdir", None)
    size = sum((copy / n).stat().st_size for n in (layout.INDEX_NAME, f"{layout.INDEX_NAME}-wal"))
    monkeypatch.setattr(index_copy, "MAX_INDEX_BYTES", size - 1)
    before = tree_state(copy)
    assert cli.main(["list", "--json", "--store", str(copy)]) == 0
    out, err = capsys.readouterr()
    assert "larger than" in err and "listing from the clip files" in err
    assert [c["path"] for c in json.loads(out)] == [r.path for r in stores["rows"]]
    assert tree_state(copy) == before and not os.listdir(temp)
