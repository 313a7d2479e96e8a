"""Issue 8, findings 5 (config part) and 10: hostile or careless inputs around the config.

Each test performs the attack or the mistake as the review did, through the real command line
(`python -m camrec`), and asserts one clear error line, the documented exit code, no traceback
and nothing recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camrec.crypto.keys import HybridIdentity, X25519Identity

REPO = Path(__file__).resolve().parent.parent
CLASSIC = str(X25519Identity.generate().recipient())
POST_QUANTUM = str(HybridIdentity.generate().recipient())


def camrec(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RUNTIME_DIRECTORY", "NOTIFY_SOCKET")}
    return subprocess.run([sys.executable, "-m", "camrec", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[0].startswith("camrec: error: "), proc.stderr
    assert all(line.startswith(("camrec: error: ", "camrec: hint: ")) for line in lines), proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def write_config(directory: Path, recipients: str, *, storage: Path | None = None) -> Path:
    storage = storage or directory / "storage"
    path = directory / "camrec.yaml"
    path.write_text(f"{recipients}\nstorage:\n  path: {storage}\n  min_free: 0\n"
                    "cameras:\n  front:\n    source: 'synthetic:'\n")
    path.chmod(0o640)
    return path


# --- finding 5: classic and post-quantum recipients mixed ----------------------------------------


@pytest.mark.parametrize("command", [["check"], ["doctor", "--skip", "cameras"], ["run", "--duration", "3s"]])
def test_mixed_recipients_in_the_config_are_refused(tmp_path: Path, command: list[str]) -> None:
    storage = tmp_path / "storage"
    config = write_config(tmp_path, f"recipients:\n  - {CLASSIC}\n  - {POST_QUANTUM}", storage=storage)
    proc = camrec(command[0], "-c", str(config), *command[1:])
    assert_one_line_error(proc, 3, f"{config}:1: recipients: post-quantum (age1pq1…) and classic (age1…) "
                          "recipients cannot be mixed")
    assert not storage.exists()  # nothing started, nothing recorded


def test_mixed_recipients_in_a_recipients_file_are_refused(tmp_path: Path) -> None:
    keys = tmp_path / "owner.pub"
    keys.write_text(f"# owner\n{POST_QUANTUM}\n\n{CLASSIC}\n")
    config = write_config(tmp_path, f"recipients_file: {keys}")
    for command in (["check"], ["run", "--duration", "3s"], ["doctor", "--skip", "cameras"]):
        proc = camrec(command[0], "-c", str(config), *command[1:])
        assert_one_line_error(proc, 3, f"{keys}:4: recipients: post-quantum")
    assert not (tmp_path / "storage").exists()


def test_only_post_quantum_recipients_are_fine(tmp_path: Path) -> None:
    second = str(HybridIdentity.generate().recipient())
    config = write_config(tmp_path, f"recipients: [{POST_QUANTUM}, {second}]")
    proc = camrec("check", "-c", str(config))
    assert proc.returncode == 0, proc.stderr


# --- finding 10: unbounded and blocking reads ------------------------------------------------------


def test_check_dev_zero_is_refused_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = camrec("check", "-c", "/dev/zero", timeout=30)
    assert_one_line_error(proc, 3, "/dev/zero: is a device, not a config file")
    assert time.monotonic() - started < 20


def test_recipients_file_dev_zero_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, "recipients_file: /dev/zero")
    proc = camrec("check", "-c", str(config), timeout=30)
    assert_one_line_error(proc, 3, "/dev/zero: is a device, not a recipients file", f"(from {config}:1")


@pytest.mark.parametrize("which", ["config", "recipients_file"])
def test_a_fifo_is_refused_without_hanging(tmp_path: Path, which: str) -> None:
    fifo = tmp_path / "camrec.fifo"
    os.mkfifo(fifo)
    config = fifo if which == "config" else write_config(tmp_path, f"recipients_file: {fifo}")
    started = time.monotonic()
    proc = camrec("check", "-c", str(config), timeout=20)  # before the fix: blocked in open() forever
    assert time.monotonic() - started < 20
    what = "config file" if which == "config" else "recipients file"
    assert_one_line_error(proc, 3, f"{fifo}: is a FIFO, not a {what}")


def test_a_huge_regular_config_is_refused_by_the_bytes_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    proc = camrec("check", "-c", str(big))
    assert_one_line_error(proc, 3, "far too large for a config file")


# --- finding 10: --since far in the past -----------------------------------------------------------


@pytest.mark.parametrize("since", ["99999999999d", "999999999d", "9999999999999999999999999999999d"])
def test_list_since_overflow_is_a_usage_error(tmp_path: Path, since: str) -> None:
    config = write_config(tmp_path, f"recipients: [{CLASSIC}]")
    proc = camrec("list", "-c", str(config), "--since", since)
    assert_one_line_error(proc, 2, "bad time", "before the year 1")


# --- finding 10: storage or recipients writable by other local users ------------------------------


def test_world_writable_storage_is_refused_by_check_run_and_doctor(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    storage.chmod(0o777)  # the review's setup: any local user could swap clips or the index
    config = write_config(tmp_path, f"recipients: [{CLASSIC}]", storage=storage)
    for command in (["check"], ["run", "--duration", "3s"]):
        proc = camrec(command[0], "-c", str(config), *command[1:])
        assert_one_line_error(proc, 3, f"storage directory {storage}: mode 0777: world-writable", "chmod go-w")
    assert list(storage.iterdir()) == []  # run refused before creating the index or a clip

    proc = camrec("doctor", "-c", str(config), "--skip", "cameras", "--skip", "outbound")
    assert proc.returncode == 10, proc.stderr
    assert "FAIL  permissions" in proc.stdout and "mode 0777: world-writable" in proc.stdout
    assert "permissions" in proc.stderr.splitlines()[0]


def test_world_writable_recipients_file_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "owner.pub"
    keys.write_text(f"{CLASSIC}\n")
    keys.chmod(0o666)  # a local user could put their own key in it
    config = write_config(tmp_path, f"recipients_file: {keys}")
    proc = camrec("check", "-c", str(config))
    assert_one_line_error(proc, 3, f"recipients file {keys}: mode 0666: world-writable")
    proc = camrec("doctor", "-c", str(config), "--skip", "cameras", "--skip", "outbound", "--json")
    assert proc.returncode == 10
    (check,) = [c for c in json.loads(proc.stdout)["checks"] if c["name"] == "permissions"]
    assert check["status"] == "fail" and any(f"recipients file {keys}" in d for d in check["details"])

    keys.chmod(0o644)
    assert camrec("check", "-c", str(config)).returncode == 0


def test_a_recipients_file_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    keys = shared / "owner.pub"
    keys.write_text(f"{CLASSIC}\n")
    keys.chmod(0o644)
    shared.chmod(0o777)  # anyone can rename owner.pub away and write their own
    config = write_config(tmp_path, f"recipients_file: {keys}")
    proc = camrec("check", "-c", str(config))
    assert_one_line_error(proc, 3, f"recipients file {keys}: its directory {shared} has mode 0777: world-writable")
    shared.chmod(0o1777)  # the sticky bit, as /tmp has: only the owner may rename the file
    assert camrec("check", "-c", str(config)).returncode == 0
