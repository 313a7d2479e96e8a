"""A store is hostile input to the owner's tools (issue 8, finding 1).

The recorder side can write anything into the store: replace `audit.jsonl` by a symlink, add index
rows with any path, put links, FIFOs and escape sequences where clips should be. The owner copies
the store with `rsync -a` and runs `camrec export/verify/list/audit/decrypt` on the copy. None of
that may write outside the store, follow a link out of it, hang, or print raw control characters.
Real parts: a recorded store (real video, real age, real SQLite), real rsync, real bash.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from camrec.cli import main
from camrec.errors import StorageError
from camrec.owner import audit
from camrec.store import layout
from camrec.store.manifest import ChainWriter, Manifest
from camrec.store.untrusted import UnsafeFileError, clip_path_problem, open_file
from tests.helpers import have
from tests.test_audit import SERVICE_UID, make_live
from tests.test_manifest import make_store
from tests.test_recorder import record
from tests.test_verify import write_config

REPO = Path(__file__).resolve().parents[1]
ESC = "\x1b"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A real store: two clips of real video, recorded through the real Store and manifest."""
    tmp = tmp_path_factory.mktemp("recorded")
    owner, store, rows, _ = record(tmp, motion="3-5,11-13", seconds=17)
    store.close()
    assert len(rows) == 2
    return {"owner": owner, "root": store.root, "rows": rows}


def owner_env(home: Path) -> dict[str, str]:
    """The owner's environment: their HOME (so the per-user audit log is theirs), this worktree's camrec."""
    env = {k: v for k, v in os.environ.items() if k not in (audit.ENV_LOG, "XDG_STATE_HOME")}
    return {**env, "HOME": str(home), "PYTHONPATH": str(REPO)}


def camrec(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "camrec", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def add_row(root: Path, path: str, start: float, camera: str = "cam") -> None:
    """What the recorder side can do without any key: write the plaintext SQLite index."""
    db = sqlite3.connect(root / "index.sqlite3")
    with db:
        db.execute("INSERT INTO clips (camera, start, end, size, path, thumb, meta, state) "
                   "VALUES (?, ?, ?, 1000, ?, NULL, NULL, 'complete')", (camera, start, start + 5, path))
    db.close()


def test_symlinked_audit_log_and_hostile_row_in_an_rsync_copy(recorded, tmp_path):
    """The attack of finding 1, exactly: audit.jsonl -> ../.bashrc plus an index row holding a
    command substitution, the store copied with `rsync -a`, `camrec export` run by the owner."""
    assert have("rsync"), "rsync is needed (README's test command installs it)"
    home = tmp_path / "home"
    home.mkdir()
    bashrc = home / ".bashrc"
    bashrc.write_text("# the owner's shell start-up\nexport PS1='$ '\n")
    before = bashrc.read_bytes()
    key = home / "owner.key"
    key.write_text(f"{recorded['owner']}\n")
    # The recorder side (no key needed).
    live = tmp_path / "recorder" / "storage"
    shutil.copytree(recorded["root"], live, symlinks=True)
    (live / "audit.jsonl").unlink()
    os.symlink("../.bashrc", live / "audit.jsonl")
    hostile = f"cam/2025-11-21/$(touch PWNED){ESC}[31m.mp4.age"
    add_row(live, hostile, recorded["rows"][0].start + 1)
    # The owner copies the store, as the README says, and exports from the copy.
    copy = home / "camrec-copy"
    subprocess.run(["rsync", "-a", f"{live}/", f"{copy}/"], check=True, timeout=60)
    assert os.readlink(copy / "audit.jsonl") == "../.bashrc" and (copy / "audit.jsonl").resolve() == bashrc
    cfg = write_config(home, recorded["owner"], copy)
    env = owner_env(home)
    out = home / "clips"

    proc = camrec("export", "-c", str(cfg), "-i", str(key), "-o", str(out), env=env, cwd=home)

    # Exit 7 (integrity): the valid clips are exported, the altered index is reported.
    assert proc.returncode == 7, proc.stderr
    assert bashrc.read_bytes() == before
    exported = sorted(out.iterdir())
    assert [p.name for p in exported] == [r.path.rsplit("/", 1)[1][: -len(".age")] for r in recorded["rows"]]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in exported)
    assert ESC not in proc.stderr + proc.stdout
    assert "index row" in proc.stderr and "$(touch PWNED)\\x1b[31m" in proc.stderr
    assert "camrec: error: 1 index row(s) skipped" in proc.stderr
    # The entry went to the owner's own log (0600), with the store named in it; a note says so.
    user_log = home / ".local" / "state" / "camrec" / "audit.jsonl"
    [entry] = [json.loads(line) for line in user_log.read_bytes().splitlines()]
    assert entry["event"] == "export" and entry["store"] == str(copy)
    assert entry["files"] == [r.path for r in recorded["rows"]]
    assert stat.S_IMODE(user_log.stat().st_mode) == 0o600
    assert f"audit entry written to {user_log} only" in proc.stderr

    # verify -i and decrypt (the other commands that write an audit entry) on the same copy.
    proc = camrec("verify", "-c", str(cfg), "-i", str(key), env=env, cwd=home)
    assert proc.returncode == 7 and "unsafe-file       audit.jsonl: a symbolic link to '../.bashrc'" in proc.stdout
    assert ESC not in proc.stdout + proc.stderr and "$(touch PWNED)\\x1b[31m" in proc.stdout
    clip = copy / recorded["rows"][0].path
    proc = camrec("decrypt", "-i", str(key), str(clip), "-o", str(home / "one.mp4"), env=env, cwd=home)
    assert proc.returncode == 0, proc.stderr
    assert bashrc.read_bytes() == before
    assert [json.loads(x)["event"] for x in user_log.read_bytes().splitlines()] == ["export", "verify", "decrypt"]

    # The owner's next shell: nothing in .bashrc runs anything.
    subprocess.run(["bash", "-c", "source ~/.bashrc"], env=env, cwd=home, check=True, timeout=30)
    assert not list(tmp_path.rglob("PWNED")) and not (REPO / "PWNED").exists()


def test_store_log_written_only_when_live(tmp_path, monkeypatch, capsys):
    """The store's audit.jsonl gets a copy of the entry only on the live store: root and log owned
    by the (other) service user, a regular file with one link. Links, FIFOs, hard links and a log
    of another owner are left alone, without hanging, and the note says where the entry went."""
    _, store, manifest, rows = make_store(tmp_path, n=1, size=5_000)
    manifest.close()
    root = store.root
    user_log = tmp_path / "me" / "audit.jsonl"
    monkeypatch.setenv(audit.ENV_LOG, str(user_log))
    log = root / audit.AUDIT_NAME

    def record() -> None:
        audit.record("export", files=[rows[0].path], recipients=["age1x"], storage_root=root)

    def user_entries() -> int:
        return len(user_log.read_bytes().splitlines())

    record()  # the store belongs to us: a copy
    assert log.read_bytes() == b"" and user_entries() == 1
    assert "the store belongs to you, so it is a copy" in capsys.readouterr().err
    make_live(root)
    record()
    assert len(log.read_bytes().splitlines()) == 1 and user_entries() == 2
    assert capsys.readouterr().err == ""

    victim = tmp_path / "victim"  # a file the service user could point the log at
    victim.write_bytes(b"precious\n")
    os.chown(victim, SERVICE_UID, -1)
    log.unlink()
    os.symlink(victim, log)
    record()
    assert victim.read_bytes() == b"precious\n" and "is a symbolic link" in capsys.readouterr().err
    log.unlink()
    os.link(victim, log)  # a hard link: same owner, but two names
    record()
    assert victim.read_bytes() == b"precious\n" and "several hard links" in capsys.readouterr().err
    log.unlink()
    os.mkfifo(log)
    os.chown(log, SERVICE_UID, -1)
    t = threading.Thread(target=record, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "a FIFO as the store's audit log hangs the owner's command"
    assert "not a regular file" in capsys.readouterr().err
    log.unlink()
    log.write_bytes(b"")
    os.chown(log, SERVICE_UID + 1, -1)  # someone else's file in the service user's store
    record()
    assert log.read_bytes() == b"" and "not by the store's owner" in capsys.readouterr().err
    assert user_entries() == 6  # the owner's own log has every entry


def test_per_user_log_never_written_through_a_link_or_into_anothers_file(tmp_path):
    """The per-user log refuses a symlink (also when its target ends in a torn line, which the
    repair would otherwise truncate), another user's file and a hard link: no entry, no decryption."""
    target = tmp_path / "bashrc"
    target.write_bytes(b'echo hi\n{"torn')
    before = target.read_bytes()
    link = tmp_path / "audit.jsonl"
    os.symlink(target, link)
    with pytest.raises(StorageError, match="refusing to decrypt"):
        audit.record("decrypt", files=["/x"], recipients=[], log_path=link)
    assert target.read_bytes() == before
    link.unlink()
    os.link(target, link)
    with pytest.raises(StorageError, match="refusing to decrypt"):
        audit.record("decrypt", files=["/x"], recipients=[], log_path=link)
    assert target.read_bytes() == before
    if os.geteuid() == 0:
        link.unlink()
        link.write_bytes(b"")
        os.chown(link, SERVICE_UID, -1)
        with pytest.raises(StorageError, match="refusing to decrypt"):
            audit.record("decrypt", files=["/x"], recipients=[], log_path=link)
        assert link.read_bytes() == b""


def test_daemon_chain_writer_refuses_a_symlinked_or_fifo_manifest(tmp_path):
    """ChainWriter itself (the daemon's manifest writer too) never appends through a link or to a FIFO."""
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep\n{")
    root = tmp_path / "store"
    root.mkdir()
    Manifest(root).close()  # the device key and an empty manifest, as after a first start
    (root / "manifest.jsonl").unlink()
    os.symlink(target, root / "manifest.jsonl")
    with pytest.raises(StorageError, match="symbolic link"):
        Manifest(root)
    assert target.read_bytes() == b"keep\n{"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = ChainWriter(fifo, mode=0o600)
    with pytest.raises(StorageError, match="not a regular file"):
        writer.append(lambda: [{"kind": "x"}], 0.0)
    writer.close()


def test_clip_path_pattern():
    assert clip_path_problem("cam/2025-11-21/cam-20251121T044000.000Z.mp4.age") is None
    assert clip_path_problem("cam/2025-11-21/cam-20251121T044000.000Z-2.mp4.age") is None
    for bad in ("cam/2025-11-22/cam-20251121T044000.000Z.mp4.age",  # the wrong day
                "other/2025-11-21/cam-20251121T044000.000Z.mp4.age",  # the wrong camera
                "cam/2025-11-21/cam-20251121T044000.000Z\n.mp4.age",
                "cam/2025-13-21/cam-20251321T044000.000Z.mp4.age",  # no such month
                "../cam/2025-11-21/cam-20251121T044000.000Z.mp4.age", "/etc/passwd",
                "cam/2025-11-21/../../x/cam-20251121T044000.000Z.mp4.age",
                "cam/2025-11-21/cam-20251121T044000.000Z.jpg.age", 42, None):
        assert clip_path_problem(bad) is not None, bad


def test_links_fifos_and_linked_directories_in_the_store_are_never_followed(recorded, tmp_path):
    """A clip file replaced by a symlink to a readable clip outside the store, a FIFO named like a
    clip and a camera directory linked out of the store: export reads none of them (and doesn't
    hang), verify reports each one, and the valid clip is still exported."""
    home = tmp_path / "home"
    home.mkdir()
    key = home / "owner.key"
    key.write_text(f"{recorded['owner']}\n")
    root = tmp_path / "storage"
    shutil.copytree(recorded["root"], root, symlinks=True)
    first, second = recorded["rows"]
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(root / first.path, outside / "clip.mp4.age")  # a clip the owner's key opens
    (root / first.path).unlink()
    os.symlink(outside / "clip.mp4.age", root / first.path)
    # A FIFO named like a clip, with its own index row.
    fifo_rel = layout.clip_relpath("cam", second.start + 0.5)
    os.mkfifo(root / fifo_rel)
    add_row(root, fifo_rel, second.start + 0.5)
    # Another camera whose directory is a link out of the store, holding a clip the key opens.
    linked_rel = layout.clip_relpath("cam2", first.start)
    (outside / linked_rel).parent.mkdir(parents=True)
    shutil.copy(outside / "clip.mp4.age", outside / linked_rel)
    os.symlink(outside / "cam2", root / "cam2")
    add_row(root, linked_rel, first.start, camera="cam2")
    cfg = write_config(home, recorded["owner"], root)
    env = owner_env(home)

    proc = camrec("export", "-c", str(cfg), "-i", str(key), "-o", str(home / "out"), env=env, cwd=home,
                  timeout=60)
    assert proc.returncode == 7, proc.stderr
    assert [p.name for p in (home / "out").iterdir()] == [second.path.rsplit("/", 1)[1][: -len(".age")]]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("camrec: error: ")]
    assert errors[:3] == [f"camrec: error: {first.path}: a symbolic link or non-directory in its path: not followed "
                          "out of the store",
                          f"camrec: error: {linked_rel}: a symbolic link or non-directory in its path: not followed "
                          "out of the store",
                          f"camrec: error: {fifo_rel}: a FIFO, not a regular file: not read"]

    with pytest.raises(UnsafeFileError):
        open_file(root, first.path)
    proc = camrec("verify", "-c", str(cfg), "-i", str(key), env=env, cwd=home, timeout=60)
    assert proc.returncode == 7
    unsafe = sorted(line.split()[1].rstrip(":") for line in proc.stdout.splitlines() if line.startswith("unsafe-file"))
    assert unsafe == sorted([first.path, fifo_rel, "cam2"])
    [entry] = [json.loads(x) for x in (home / ".local/state/camrec/audit.jsonl").read_bytes().splitlines()[1:]]
    assert entry["event"] == "verify" and first.path not in entry["files"] and second.path in entry["files"]


def test_list_verify_and_audit_escape_control_characters(tmp_path, monkeypatch, capsys):
    """An ANSI escape sequence (and a bidi override) in the index, in a file name the verify report
    names, and in the audit log reaches the terminal escaped, never raw."""
    owner, store, manifest, rows = make_store(tmp_path, n=1, size=5_000)
    manifest.close()
    root = store.root
    cfg = write_config(tmp_path, owner, root)
    evil = f"{ESC}]0;owned{chr(7)}{ESC}[2J\u202e"
    db = sqlite3.connect(root / "index.sqlite3")
    with db:
        db.execute("UPDATE clips SET camera = ?", (f"cam{evil}",))
    db.close()
    add_row(root, f"cam/{evil}.mp4.age", rows[0].start + 1)

    assert main(["list", "-c", str(cfg)]) == 0
    out = capsys.readouterr()
    assert ESC not in out.out + out.err and "\u202e" not in out.out + out.err
    assert "cam\\x1b]0;owned\\x07\\x1b[2J\\u202e" in out.out and "index row" in out.err

    assert main(["verify", "-c", str(cfg)]) == 7
    out = capsys.readouterr()
    assert ESC not in out.out + out.err and "cam/\\x1b]0;owned" in out.out

    log = tmp_path / "audit.jsonl"
    writer = ChainWriter(log, mode=0o600)
    writer.append(lambda: [{"event": f"export{evil}", "user": evil, "host": "h", "files": [evil],
                            "recipients": [evil]}], 0.0)
    writer.close()
    assert ESC.encode() not in log.read_bytes()  # JSON escapes it on disk; the terminal is the risk
    assert main(["audit", "--log", str(log)]) == 0
    out = capsys.readouterr()
    assert ESC not in out.out + out.err and "\u202e" not in out.out and "export\\x1b]0;owned" in out.out
    # A symlink given as the log is not read.
    link = tmp_path / "link.jsonl"
    os.symlink(log, link)
    assert main(["audit", "--log", str(link)]) == 9
    assert "is a symbolic link" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["index.sqlite3", "manifest.jsonl", "device-signing.pub"])
def test_fifo_or_link_for_the_index_or_manifest_is_refused_without_hanging(tmp_path, name):
    """SQLite and the chain reader open these by name: a FIFO there would hang `list`/`verify`
    (and a link would have them read a file outside the store). Refused at once, exit 7."""
    owner, store, manifest, _ = make_store(tmp_path, n=1, size=5_000)
    manifest.close()
    store.close()
    home = tmp_path / "home"
    home.mkdir()
    (store.root / name).unlink()
    os.mkfifo(store.root / name)
    cfg = write_config(home, owner, store.root)
    for command in ("list", "verify"):
        proc = camrec(command, "-c", str(cfg), env=owner_env(home), cwd=home, timeout=60)
        assert proc.returncode == 7, proc.stderr
        assert f"{name} is a FIFO, not a regular file: not read" in proc.stderr
    (store.root / name).unlink()
    os.symlink(tmp_path / "elsewhere", store.root / name)
    proc = camrec("verify", "-c", str(cfg), env=owner_env(home), cwd=home, timeout=60)
    assert proc.returncode == 7 and f"{name} is a symbolic link" in proc.stderr


def test_rekey_never_rewrites_a_file_through_a_link(tmp_path, monkeypatch, capsys):
    """A thumbnail replaced by a link to an age file outside the store (one the key opens): rekey
    leaves the link and its target alone, re-keys the rest, and exits 7."""
    owner, store, manifest, rows = make_store(tmp_path, n=1, size=5_000)
    manifest.close()
    store.close()
    root, row = store.root, rows[0]
    outside = tmp_path / "outside.jpg.age"
    shutil.copy(root / row.thumb, outside)
    before = outside.read_bytes()
    (root / row.thumb).unlink()
    os.symlink(outside, root / row.thumb)
    key = tmp_path / "owner.key"
    key.write_text(f"{owner}\n")
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"{owner.recipient()}\n")
    video_before = (root / row.path).read_bytes()
    monkeypatch.setenv(audit.ENV_LOG, str(tmp_path / "state" / "audit.jsonl"))
    cfg = write_config(tmp_path, owner, root)
    assert main(["rekey", "-c", str(cfg), "-i", str(key), "--recipients", str(recipients)]) == 7
    err = capsys.readouterr().err
    assert f"camrec: error: {row.thumb}: a symbolic link or non-directory in its path" in err
    assert outside.read_bytes() == before and os.readlink(root / row.thumb) == str(outside)
    assert (root / row.path).read_bytes() != video_before  # the video itself was re-keyed
