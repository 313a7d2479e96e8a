"""`camrec web serve --store COPY`: a real subprocess on a free loopback port over a copied store.

It lists events, hands out a clip's exact ciphertext, audits the fetch in the owner's per-user
log, and leaves the store byte for byte (and name for name) as it found it. Any host that is not
a loopback address is refused with exit code 2 and one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from camrec.cli import main
from camrec.owner import audit
from tests.test_manifest import make_store

ROOT = Path(__file__).resolve().parent.parent


def tree_digest(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry under root: its mode and, for files, a SHA-256 of its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
        out[path.relative_to(root).as_posix()] = (st.st_mode, digest)
    return out


def camrec(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "camrec", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def first_line(proc: subprocess.Popen[str], timeout: float = 20) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no URL printed"
    return proc.stdout.readline()


def test_serve_a_copied_store_read_only(tmp_path, capsys):
    _, store, manifest, rows = make_store(tmp_path, n=2)
    manifest.close()
    store.close()
    copy = tmp_path / "copy"
    shutil.copytree(store.root, copy, symlinks=True)
    before = tree_digest(copy)
    log = tmp_path / "owner-audit.jsonl"
    env = {**os.environ, audit.ENV_LOG: str(log)}
    proc = camrec("web", "serve", "--store", str(copy), "--port", "0", env=env)
    try:
        line = first_line(proc)
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert m, line
        base = m[1]
        with urllib.request.urlopen(base + "api/events", timeout=10) as r:
            events = json.loads(r.read())
        assert [e["path"] for e in events] == [row.path for row in rows]
        with urllib.request.urlopen(f"{base}api/clips/{events[1]['id']}/video", timeout=10) as r:
            data = r.read()
        assert data == (copy / rows[1].path).read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0
    assert tree_digest(copy) == before  # nothing written, created or removed in the store
    check = audit.read(log)
    assert not check.problems
    entries = [line.entry for line in check.lines if line.entry and line.entry.get("event") == "web-fetch"]
    assert [(e["files"], e["client"], e["file_kind"], e["web_user"]) for e in entries] == [
        ([rows[1].path], "127.0.0.1", "video", "local")]
    capsys.readouterr()
    assert main(["audit", "--log", str(log)]) == 0  # `camrec audit` shows it
    shown = [line for line in capsys.readouterr().out.splitlines() if "web-fetch" in line]
    assert len(shown) == 1 and rows[1].path in shown[0]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "localhost", "example.org"])
def test_a_non_loopback_host_is_refused(tmp_path, host):
    (tmp_path / "store").mkdir()
    proc = camrec("web", "serve", "--store", str(tmp_path / "store"), "--host", host, "--port", "0",
                  env=dict(os.environ))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert len(err.splitlines()) == 1 and "refusing to serve a store beyond this machine" in err
    assert out == ""
