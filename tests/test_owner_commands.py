"""Owner commands work where the owner is (issue 9): without camera secrets, on a store directory
alone, with the default config path, and a missing permission is a hint, not a bug."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from tests.support.daemon import Daemon

NOBODY = 65534


def _camrec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "camrec", *args], capture_output=True, text=True, timeout=120,
                          env=env)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A store recorded by a config whose second camera takes its password from ${env:FRONT_PW}."""
    tmp = tmp_path_factory.mktemp("owner")
    d = Daemon(tmp, "synthetic:?motion=1-3&period=5", pre_roll=1, post_roll=1,
               extra="  door:\n    source: rtsp://admin:${env:FRONT_PW}@127.0.0.1:9/cam\n    enabled: false\n")
    env = {**os.environ, "FRONT_PW": "s3cret-pw"}
    proc = subprocess.Popen([sys.executable, "-m", "camrec", "run", "-c", str(d.config), "--duration", "12s"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.communicate(timeout=90)[0].decode()
    assert proc.returncode == 0, out
    assert any(r["state"] == "complete" for r in d.rows()), out
    return d


def test_read_only_commands_need_no_camera_secrets(recorded, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FRONT_PW"}
    cfg = str(recorded.config)
    assert _camrec("check", "-c", cfg, env=env).returncode == 3  # check resolves them: it connects
    listed = _camrec("list", "-c", cfg, "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)
    exported = _camrec("export", "-c", cfg, "-i", str(recorded.key), "-o", str(tmp_path / "out"), env=env)
    assert exported.returncode == 0, exported.stderr
    assert list((tmp_path / "out").glob("*.mp4"))
    verified = _camrec("verify", "-c", cfg, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert _camrec("audit", "-c", cfg, env=env).returncode == 0
    status = _camrec("status", "-c", cfg, env=env)  # the recorder has stopped: exit 1, but no config error
    assert status.returncode == 1 and "not running" in status.stderr, status.stderr
    doctor = _camrec("doctor", "-c", cfg, "--skip", "cameras", "--skip", "outbound", "--json", env=env)
    assert doctor.returncode in (0, 10), doctor.stderr
    assert "FRONT_PW" not in doctor.stderr


def test_a_store_directory_alone_serves_every_owner_command(recorded, tmp_path):
    store = str(recorded.storage)
    listed = _camrec("list", "--store", store, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {c["camera"] for c in json.loads(listed.stdout)} == {"front"}
    assert _camrec("list", "--store", store, "--camera", "front").returncode == 0
    assert _camrec("verify", "--store", store).returncode == 0
    assert _camrec("audit", "--store", store).returncode == 0
    missing = _camrec("list", "--store", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "no such directory" in missing.stderr
    both = _camrec("list", "--store", store, "-c", str(recorded.config))
    assert both.returncode == 2  # one or the other


def test_the_config_path_defaults_to_camrec_config(recorded):
    env = {**os.environ, "CAMREC_CONFIG": str(recorded.config)}
    listed = _camrec("list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)
    env.pop("CAMREC_CONFIG")
    nothing = _camrec("list", env=env)
    assert nothing.returncode == 3 and "/etc/camrec/config.yaml" in nothing.stderr, nothing.stderr


def _as_nobody(argv: list[str]) -> tuple[int, str]:
    """camrec's CLI in a forked child that has dropped root for `nobody` (root reads everything, so
    only a real unprivileged process shows what an owner outside group camrec gets)."""
    from camrec.cli import main

    # Python's own library may lie where `nobody` can't read (a pyenv under /root): run the command
    # once as root first, so that every module it needs is imported before the child drops root.
    with redirect_stderr(io.StringIO()), redirect_stdout(io.StringIO()):
        main(argv)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            err = io.StringIO()
            with redirect_stderr(err), redirect_stdout(io.StringIO()):
                code = main(argv)
            os.write(w, err.getvalue().encode())
        except BaseException as exc:  # the report must reach the parent whatever happens
            os.write(w, f"child failed: {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_no_read_permission_gets_the_group_hint_not_a_bug(recorded, tmp_path, monkeypatch):
    monkeypatch.setenv("CAMREC_AUDIT_LOG", "/nonexistent/audit.jsonl")
    # The recorder's layout: the config readable by all, the store not (0750, owned by another user;
    # here it also lies under pytest's 0700 directory).
    shared = Path(f"/tmp/camrec-perm-{os.getpid()}-{time.monotonic_ns()}")
    shared.mkdir(mode=0o755)
    try:
        cfg = shared / "config.yaml"
        cfg.write_text(recorded.config.read_text())
        cfg.chmod(0o644)
        recorded.storage.chmod(0o750)
        code, err = _as_nobody(["list", "-c", str(cfg)])
        assert code == 9, err
        assert "permission denied" in err and "sudo adduser $USER camrec" in err, err
        assert "this is a bug" not in err and "Traceback" not in err
        code, err = _as_nobody(["list", "--store", str(recorded.storage)])
        assert code == 9 and "sudo adduser $USER camrec" in err, err
        cfg.chmod(0o600)  # the config itself unreadable
        code, err = _as_nobody(["list", "-c", str(cfg)])
        assert code == 3 and "permission denied" in err and "sudo adduser $USER camrec" in err, err
    finally:
        for p in shared.iterdir():
            p.unlink()
        shared.rmdir()
