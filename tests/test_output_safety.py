"""What the owner's tools write (issue 8, findings 7, 9 and 10c).

- `decrypt -o` and `export` never replace an existing output without --force, and never (even
  with --force) an identity file or an input, also when the output is a link to one;
- plaintext outputs are 0600 whatever the umask;
- `rekey` is audited like a decrypt, before the first file key is unwrapped;
- an export into a read-only directory is one storage error (exit 9), not a "not a video clip"
  per clip.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from camrec.cli import main
from camrec.crypto.keys import X25519Identity
from camrec.owner import audit
from camrec.owner import rekey as rekey_module
from tests.test_manifest import make_store
from tests.test_owner_safety import recorded  # noqa: F401 - the module-scoped recorded store
from tests.test_verify import write_config

REPO = Path(__file__).resolve().parents[1]


def camrec(*args: str, umask: int = 0o022) -> subprocess.CompletedProcess:
    """The CLI under the usual umask (022: files 0644 unless camrec sets the mode itself)."""
    return subprocess.run([sys.executable, "-m", "camrec", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, preexec_fn=lambda: os.umask(umask))


@pytest.fixture
def owner_files(recorded, tmp_path):  # noqa: F811 - pytest fixture injection
    key = tmp_path / "key.txt"
    key.write_text(f"# the owner's only key\n{recorded['owner']}\n")
    clip = tmp_path / "clip.mp4.age"
    shutil.copy(recorded["root"] / recorded["rows"][0].path, clip)
    return key, clip


def test_decrypt_never_overwrites_the_identity_or_the_input(owner_files, tmp_path):
    key, clip = owner_files
    key_before, clip_before = key.read_bytes(), clip.read_bytes()
    link_to_key = tmp_path / "innocent.mp4"
    os.symlink(key, link_to_key)
    hard_link_to_clip = tmp_path / "also-innocent.mp4"
    os.link(clip, hard_link_to_clip)
    for out in (key, clip, link_to_key, hard_link_to_clip):
        for force in ([], ["--force"]):
            proc = camrec("decrypt", "-i", str(key), str(clip), "-o", str(out), *force)
            assert proc.returncode == 2, (out, force, proc.stderr)
            assert "refusing to write" in proc.stderr and "not even with --force" in proc.stderr
            assert key.read_bytes() == key_before and clip.read_bytes() == clip_before
    assert os.readlink(link_to_key) == str(key)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_decrypt_replaces_an_existing_output_only_with_force_and_writes_0600(owner_files, tmp_path):
    key, clip = owner_files
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"an earlier file the owner keeps")
    proc = camrec("decrypt", "-i", str(key), str(clip), "-o", str(out))
    assert proc.returncode == 2 and "already exists" in proc.stderr and "--force" in proc.stderr
    assert out.read_bytes() == b"an earlier file the owner keeps"
    proc = camrec("decrypt", "-i", str(key), str(clip), "-o", str(out), "--force")
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[4:8] == b"ftyp" and stat.S_IMODE(out.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh.mp4"
    assert camrec("decrypt", "-i", str(key), str(clip), "-o", str(fresh), umask=0).returncode == 0
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600  # even with umask 0


def test_export_never_writes_through_a_link_to_the_identity_and_outputs_0600(recorded, tmp_path):  # noqa: F811
    key = tmp_path / "key.txt"
    key.write_text(f"{recorded['owner']}\n")
    before = key.read_bytes()
    cfg = write_config(tmp_path, recorded["owner"], recorded["root"])
    out = tmp_path / "out"
    out.mkdir()
    first, second = (r.path.rsplit("/", 1)[1][: -len(".age")] for r in recorded["rows"])
    os.symlink(key, out / first)  # an output name that leads to the key
    (out / second).write_bytes(b"kept")
    proc = camrec("export", "-c", str(cfg), "-i", str(key), "-o", str(out))
    assert proc.returncode == 0 and proc.stderr.count("exists, skipped") == 2
    assert key.read_bytes() == before and (out / second).read_bytes() == b"kept"
    proc = camrec("export", "-c", str(cfg), "-i", str(key), "-o", str(out), "--force")
    assert proc.returncode == 2 and "refusing to write" in proc.stderr and "identity file" in proc.stderr
    assert key.read_bytes() == before and os.readlink(out / first) == str(key)
    assert (out / second).read_bytes()[4:8] == b"ftyp"  # --force replaced the ordinary file
    assert stat.S_IMODE((out / second).stat().st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == sorted([first, second])  # no temporary files left


def test_export_refuses_to_write_plaintext_into_the_store(recorded, tmp_path):  # noqa: F811
    key = tmp_path / "key.txt"
    key.write_text(f"{recorded['owner']}\n")
    cfg = write_config(tmp_path, recorded["owner"], recorded["root"])
    day = recorded["root"] / recorded["rows"][0].path.rsplit("/", 1)[0]
    before = sorted(p.name for p in day.iterdir())
    proc = camrec("export", "-c", str(cfg), "-i", str(key), "-o", str(day))
    assert proc.returncode == 2 and "refusing to export into the storage directory" in proc.stderr
    assert sorted(p.name for p in day.iterdir()) == before


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory on a read-only filesystem (a tmpfs mounted ro): what root can't write either."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a read-only tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield d
    subprocess.run(["umount", str(d)], check=True)


def test_export_into_a_read_only_directory_is_one_storage_error(recorded, tmp_path, read_only_dir):  # noqa: F811
    key = tmp_path / "key.txt"
    key.write_text(f"{recorded['owner']}\n")
    cfg = write_config(tmp_path, recorded["owner"], recorded["root"])
    user_log = Path(os.environ[audit.ENV_LOG])
    entries_before = user_log.read_bytes().count(b"\n") if user_log.exists() else 0
    proc = camrec("export", "-c", str(cfg), "-i", str(key), "-o", str(read_only_dir))
    assert proc.returncode == 9, proc.stderr
    assert proc.stderr.splitlines() == [f"camrec: error: cannot write to {read_only_dir}: Read-only file system",
                                        "camrec: hint: nothing was exported; choose a writable output directory "
                                        "with -o"]
    assert "not a video clip" not in proc.stderr and list(read_only_dir.iterdir()) == []
    # Nothing was decrypted, so nothing was audited either.
    assert (user_log.read_bytes().count(b"\n") if user_log.exists() else 0) == entries_before


def test_rekey_is_audited_before_any_file_key_is_unwrapped(tmp_path, monkeypatch, capsys):
    owner, store, manifest, rows = make_store(tmp_path, n=2, size=5_000)
    manifest.close()
    store.close()
    root = store.root
    cfg = write_config(tmp_path, owner, root)
    key = tmp_path / "owner.key"
    key.write_text(f"{owner}\n")
    new = X25519Identity.generate()
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"{owner.recipient()}\n{new.recipient()}\n")
    user_log = tmp_path / "state" / "audit.jsonl"
    monkeypatch.setenv(audit.ENV_LOG, str(user_log))
    files = [rel for r in rows for rel in (r.path, r.thumb, r.meta)]
    before = {rel: (root / rel).read_bytes() for rel in files}

    # The per-user log can't be written: rekey refuses before opening a single header.
    user_log.parent.mkdir()
    user_log.mkdir()
    unwrapped: list[bool] = []
    real_unwrap = rekey_module.unwrap_header

    def watching_unwrap(*args, **kwargs):
        logged = user_log.is_file() and b'"event":"rekey"' in user_log.read_bytes()
        unwrapped.append(logged)
        return real_unwrap(*args, **kwargs)

    monkeypatch.setattr(rekey_module, "unwrap_header", watching_unwrap)
    assert main(["rekey", "-c", str(cfg), "-i", str(key), "--recipients", str(recipients)]) == 9
    assert "refusing to decrypt without an audit entry" in capsys.readouterr().err
    assert unwrapped == [] and all((root / rel).read_bytes() == data for rel, data in before.items())

    user_log.rmdir()
    assert main(["rekey", "-c", str(cfg), "-i", str(key), "--recipients", str(recipients)]) == 0
    assert unwrapped == [True] * len(files)  # the entry existed before the first unwrap
    [entry] = [json.loads(line) for line in user_log.read_bytes().splitlines()]
    assert entry["event"] == "rekey" and entry["files"] == files
    assert entry["recipients"] == [str(owner.recipient())] and entry["store"] == str(root.resolve())
    assert all((root / rel).read_bytes() != data for rel, data in before.items())  # re-keyed after that
