"""Safe set-up checks (issue 9): the example key, every config error at once, a missing storage,
and what `check` and `keygen` tell a homeowner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from camrec.crypto.keys import X25519Identity

EXAMPLE = "age1t4yp4xullatyw6z006rwuatceerr743hj2h6g5504wlqynhxfeaq2ejmfl"


def _camrec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "camrec", *args], capture_output=True, text=True, timeout=60)


def _config(tmp_path: Path, recipient: str, body: str | None = None) -> Path:
    storage = tmp_path / "storage"
    storage.mkdir(exist_ok=True)
    cfg = tmp_path / "camrec.yaml"
    cfg.write_text(body or f"recipients: [{recipient}]\nstorage:\n  path: {storage}\n"
                           "cameras:\n  cam:\n    source: 'synthetic:'\n")
    return cfg


def test_the_example_recipient_is_refused_by_check_and_run(tmp_path):
    cfg = _config(tmp_path, EXAMPLE)
    for command in ("check", "run"):
        proc = _camrec(command, "-c", str(cfg))
        assert proc.returncode == 3, proc.stderr
        assert "is the example key from config/camrec.example.yaml, not yours" in proc.stderr
        assert "camrec keygen" in proc.stderr
    assert not list((tmp_path / "storage").rglob("*.age"))  # nothing recorded to it


def test_check_lists_every_config_error_with_did_you_mean(tmp_path):
    owner = X25519Identity.generate()
    cfg = _config(tmp_path, "", body=(
        f"recipients: [{owner.recipient()}]\n"
        "storage:\n  paht: /tmp/x\n"                     # 1: missing `path` (misspelt) + 2: unknown key
        "cameras:\n  cam:\n    source: 'synthetic:'\n    pre_roll: soon\n"))  # 3: not a duration
    proc = _camrec("check", "-c", str(cfg))
    assert proc.returncode == 3, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("camrec: error: ")]
    assert len(errors) == 4, proc.stderr  # three problems, then the summary
    assert "storage.path: required key is missing" in proc.stderr
    assert "did you mean 'path' where you wrote 'paht'?" in proc.stderr
    assert "storage.paht: unknown key" in proc.stderr
    assert "cameras.cam.pre_roll" in proc.stderr
    assert errors[-1] == f"camrec: error: 3 errors in {cfg}"
    # Other commands still say one line, pointing at check for the rest.
    listed = _camrec("list", "-c", str(cfg))
    assert listed.returncode == 3 and "(and 2 more errors; `camrec check` lists them all)" in listed.stderr


def test_run_refuses_a_storage_path_that_does_not_exist(tmp_path):
    owner = X25519Identity.generate()
    missing = tmp_path / "usb-disk" / "clips"
    cfg = _config(tmp_path, "", body=f"recipients: [{owner.recipient()}]\nstorage:\n  path: {missing}\n"
                                     "cameras:\n  cam:\n    source: 'synthetic:'\n")
    proc = _camrec("run", "-c", str(cfg), "--duration", "2s")
    assert proc.returncode == 9, proc.stderr
    assert f"storage directory {missing} does not exist" in proc.stderr
    assert not (tmp_path / "usb-disk").exists()  # no tree made where the disk should be


def test_check_shows_the_recipients_and_the_storage(tmp_path):
    owner = X25519Identity.generate()
    cfg = _config(tmp_path, str(owner.recipient()))
    proc = _camrec("check", "-c", str(cfg))
    assert proc.returncode == 0, proc.stderr
    short = f"{str(owner.recipient())[:12]}…{str(owner.recipient())[-6:]}"
    assert f"recipient: {short}" in proc.stdout
    assert f"storage {tmp_path / 'storage'}: exists, on " in proc.stdout
    assert "GB free of" in proc.stdout
    assert "no clips yet" in proc.stdout


def test_keygen_says_what_to_do_next(tmp_path):
    proc = _camrec("keygen", "-o", str(tmp_path / "owner.key"))
    assert proc.returncode == 0, proc.stderr
    for words in ("Back up", "unreadable forever", "paper key", "under `recipients:`", "Never copy this identity"):
        assert words in proc.stderr, proc.stderr
