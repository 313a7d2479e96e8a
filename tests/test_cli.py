"""The command line as a user meets it: exit codes, one-line errors, files it writes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from camrec.crypto.keys import X25519Identity
from tests.helpers import ffprobe
from tests.test_recorder import record


def camrec(*args: str, env: dict[str, str] | None = None, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "camrec", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **kw)


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    # A `camrec: note:` line before the error (where the audit entry went) is not part of it.
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("camrec: note: ")]
    assert lines and lines[0].startswith("camrec: error: "), proc.stderr
    assert all(line.startswith(("camrec: error: ", "camrec: hint: ")) for line in lines), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def write_config(tmp_path: Path, recipient: str, storage: Path, source: str = "rtsp://127.0.0.1:9/cam",
                 extra: str = "") -> Path:
    cfg = tmp_path / "camrec.yaml"
    cfg.write_text(f"recipients: [{recipient}]\nstorage:\n  path: {storage}\ncameras:\n  cam:\n"
                   f"    source: {source}\n    pre_roll: 2s\n    post_roll: 2s\n{extra}")
    return cfg


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A storage directory with two clips and the matching owner key and config."""
    tmp = tmp_path_factory.mktemp("recorded")
    owner, store, rows, _ = record(tmp, motion="3-5,11-13", seconds=17)
    store.close()
    key = tmp / "owner.key"
    key.write_text(f"# test owner\n{owner}\n")
    cfg = write_config(tmp, str(owner.recipient()), store.root)
    return {"owner": owner, "key": key, "config": cfg, "rows": rows, "root": store.root}


def test_keygen_writes_0600_and_refuses_to_overwrite(tmp_path):
    key = tmp_path / "id.txt"
    proc = camrec("keygen", "-o", str(key))
    assert proc.returncode == 0, proc.stderr
    recipient = proc.stdout.strip()
    assert recipient.startswith("age1") and len(recipient) == 62
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = key.read_text()
    assert f"# public key: {recipient}" in text and "AGE-SECRET-KEY-1" in text
    # the stock age tool accepts the identity and derives the same recipient
    derived = subprocess.run(["age-keygen", "-y", str(key)], capture_output=True, text=True, check=True).stdout
    assert derived.strip() == recipient
    before = key.read_bytes()
    again = camrec("keygen", "-o", str(key))
    assert_one_line_error(again, 2, "already exists")
    assert key.read_bytes() == before


def test_list_json(recorded):
    proc = camrec("list", "-c", str(recorded["config"]), "--json")
    assert proc.returncode == 0, proc.stderr
    clips = json.loads(proc.stdout)
    assert len(clips) == 2
    for clip, row in zip(clips, recorded["rows"], strict=True):
        assert clip["camera"] == "cam" and clip["path"] == row.path and clip["size"] == row.size > 0
        assert clip["start"][-6] in "+-" and "T" in clip["start"]  # ISO 8601 with an offset
        assert clip["duration"] == pytest.approx(row.duration, abs=0.01)
        assert (recorded["root"] / clip["path"]).is_file()
    text = camrec("list", "-c", str(recorded["config"]))
    assert text.returncode == 0 and text.stdout.count("complete") == 2
    none = camrec("list", "-c", str(recorded["config"]), "--since", "2000-01-01", "--until", "2000-01-02", "--json")
    assert json.loads(none.stdout) == []
    recent = camrec("list", "-c", str(recorded["config"]), "--since", "1h", "--json")
    assert len(json.loads(recent.stdout)) == 2
    # The words a person types reach the same clips (they were recorded moments ago).
    for since in ("yesterday",):  # (not "today": a run across midnight would miss them)
        spoken = camrec("list", "-c", str(recorded["config"]), "--since", since, "--json")
        assert spoken.returncode == 0, spoken.stderr
        assert len(json.loads(spoken.stdout)) == 2


def test_a_reversed_range_is_an_error_not_no_clips(recorded):
    proc = camrec("list", "-c", str(recorded["config"]), "--since", "1h", "--until", "2h")
    assert_one_line_error(proc, 2, "--since 1h is after --until 2h")


def test_export_produces_playable_mp4(recorded, tmp_path):
    out = tmp_path / "out"
    proc = camrec("export", "-c", str(recorded["config"]), "-i", str(recorded["key"]), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("*.mp4"))
    assert len(files) == 2
    assert not list(out.glob(".*"))  # no temp files left behind
    for f, row in zip(files, recorded["rows"], strict=True):
        probe = ffprobe(f)
        assert probe["codec"] == "h264" and abs(probe["duration"] - row.duration) < 0.5
        # decodes end to end without errors
        subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", str(f), "-f", "null", "-"], check=True)
    again = camrec("export", "-c", str(recorded["config"]), "-i", str(recorded["key"]), "-o", str(out))
    assert again.returncode == 0 and "skipped" in again.stderr


def test_export_with_wrong_identity(recorded, tmp_path):
    wrong = tmp_path / "wrong.key"
    wrong.write_text(str(X25519Identity.generate()) + "\n")
    out = tmp_path / "out"
    proc = camrec("export", "-c", str(recorded["config"]), "-i", str(wrong), "-o", str(out))
    assert_one_line_error(proc, 5, "no identity matched")
    assert list(out.iterdir()) == []


def test_decrypt_matches_age(recorded, tmp_path):
    clip = recorded["root"] / recorded["rows"][0].path
    out = tmp_path / "clip.mp4"
    proc = camrec("decrypt", "-i", str(recorded["key"]), str(clip), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    ref = subprocess.run(["age", "-d", "-i", str(recorded["key"]), str(clip)], capture_output=True, check=True).stdout
    assert out.read_bytes() == ref
    piped = subprocess.run([sys.executable, "-m", "camrec", "decrypt", "-i", str(recorded["key"]), str(clip)],
                           capture_output=True, check=True).stdout
    assert piped == ref


def test_decrypt_bad_inputs(recorded, tmp_path):
    not_age = tmp_path / "notes.txt"
    not_age.write_text("hello, this is not an age file\n")
    out = tmp_path / "out.mp4"
    assert_one_line_error(camrec("decrypt", "-i", str(recorded["key"]), str(not_age), "-o", str(out)), 6,
                          "not an age file")
    assert not out.exists()
    wrong = tmp_path / "wrong.key"
    wrong.write_text(str(X25519Identity.generate()) + "\n")
    clip = recorded["root"] / recorded["rows"][0].path
    assert_one_line_error(camrec("decrypt", "-i", str(wrong), str(clip), "-o", str(out)), 5, "no identity matched")
    assert not out.exists() and not list(tmp_path.glob(".out.mp4*"))
    missing = camrec("decrypt", "-i", str(tmp_path / "nope.key"), str(clip), "-o", str(out))
    assert missing.returncode == 5 and "Traceback" not in missing.stderr


def test_config_errors_are_one_line(tmp_path):
    owner = X25519Identity.generate()
    cfg = write_config(tmp_path, str(owner.recipient()), tmp_path / "s", extra="    motion:\n      treshold: 30\n")
    proc = camrec("list", "-c", str(cfg))
    assert_one_line_error(proc, 3, f"{cfg}:10", "cameras.cam.motion.treshold", "threshold")
    leaky = write_config(tmp_path, str(owner.recipient()), tmp_path / "s",
                         source="rtsp://admin:hunter22@127.0.0.1:9/cam", extra="    bogus: 1\n")
    proc = camrec("run", "-c", str(leaky))
    assert_one_line_error(proc, 3, "bogus")
    assert "hunter22" not in proc.stderr


def test_config_with_identity_is_refused(tmp_path):
    owner = X25519Identity.generate()
    cfg = write_config(tmp_path, str(owner), tmp_path / "s")
    proc = camrec("run", "-c", str(cfg))
    assert_one_line_error(proc, 3, "identity")
    assert str(owner) not in proc.stderr
    assert not (tmp_path / "s").exists()


def test_unreachable_camera(tmp_path):
    owner = X25519Identity.generate()
    # port 9 (discard) on loopback: nothing listens, the connection is refused at once
    cfg = write_config(tmp_path, str(owner.recipient()), tmp_path / "s",
                       source="rtsp://user:s3cretpw@127.0.0.1:9/cam")
    proc = camrec("check", "-c", str(cfg))
    assert_one_line_error(proc, 4, "camera 'cam'", "127.0.0.1:9")
    assert "s3cretpw" not in proc.stderr + proc.stdout


def test_usage_errors(tmp_path):
    assert_one_line_error(camrec("frobnicate"), 2)
    assert_one_line_error(camrec("list", "-c", str(tmp_path / "missing.yaml")), 3, "missing.yaml")


def test_export_with_a_passphrase_protected_identity(recorded, tmp_path):
    from camrec.crypto.scrypt import ScryptRecipient
    from camrec.crypto.stream import encrypt_bytes

    protected = tmp_path / "owner.key.age"
    protected.write_bytes(encrypt_bytes(recorded["key"].read_bytes(), [ScryptRecipient("pw", 10)], armor=True))
    pw = tmp_path / "pw"
    pw.write_text("pw\n")
    out = tmp_path / "out"
    args = ["export", "-c", str(recorded["config"]), "-i", str(protected), "-o", str(out)]
    proc = camrec(*args, "--passphrase-file", str(pw))
    assert proc.returncode == 0, proc.stderr
    assert len(list(out.glob("*.mp4"))) == 2
    pw.write_text("not pw\n")
    wrong = camrec(*args[:-1], str(tmp_path / "out2"), "--passphrase-file", str(pw))
    assert_one_line_error(wrong, 5, "incorrect passphrase", str(protected))
    # No terminal (a new session) and no --passphrase-file: a usage error, nothing exported.
    again = camrec(*args[:-1], str(tmp_path / "out2"), start_new_session=True)
    assert_one_line_error(again, 2, "no terminal", "--passphrase-file")
    assert not list((tmp_path / "out2").glob("*.mp4"))


def test_verify_end_to_end(recorded, tmp_path):
    ok = camrec("verify", "-c", str(recorded["config"]), "-i", str(recorded["key"]))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # a copy of the store with one clip's video deleted
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(recorded["root"], copy)
    cfg = write_config(tmp_path, str(recorded["owner"].recipient()), copy)
    (copy / recorded["rows"][0].path).unlink()
    bad = camrec("verify", "-c", str(cfg))
    assert bad.returncode == 7, bad.stdout + bad.stderr
    assert "missing" in bad.stdout + bad.stderr
