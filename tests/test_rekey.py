"""`camrec rekey`: new headers for new recipients, payload bytes untouched, one file at a time."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from camrec import cli
from camrec.crypto.age import b64encode, parse_header_bytes
from camrec.crypto.keys import HybridIdentity, X25519Identity, identity_file_text
from camrec.crypto.scrypt import ScryptRecipient
from camrec.crypto.stream import decrypt_bytes, encrypt_bytes
from camrec.errors import IdentityError, StorageError
from camrec.owner.rekey import TMP_SUFFIX, rekey_file, storage_lock
from camrec.store.index import ClipIndex
from tests.test_recorder import record

AGE = shutil.which("age")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rekey-src")
    owner, store, rows, _ = record(tmp, motion="3-5,11-13", seconds=17)
    store.close()
    assert len(rows) == 2 and all(r.thumb and r.meta for r in rows)
    return owner, store.root


@pytest.fixture
def setup(recorded, tmp_path):
    """A private copy of the store, the old key, two new keys and a recipients file for them."""
    owner, src_root = recorded
    root = tmp_path / "storage"
    shutil.copytree(src_root, root)
    old_key = tmp_path / "old.key"
    old_key.write_text(identity_file_text(owner))
    alice, paper = X25519Identity.generate(), X25519Identity.generate()
    new_key = tmp_path / "alice.key"
    new_key.write_text(identity_file_text(alice))
    recipients = tmp_path / "new-recipients.txt"
    recipients.write_text(f"# the household after Bob moved out\n{alice.recipient()}  \n\n"
                          f"# paper backup in the safe\n{paper.recipient()}\n")
    cfg = tmp_path / "camrec.yaml"
    cfg.write_text(f"recipients: [{owner.recipient()}]\nstorage:\n  path: {root}\n"
                   "cameras:\n  cam:\n    source: rtsp://127.0.0.1:9/cam\n")
    return {"owner": owner, "alice": alice, "paper": paper, "root": root, "old_key": old_key, "new_key": new_key,
            "recipients": recipients, "cfg": cfg, "tmp": tmp_path}


def clip_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.age"))}


def rows(root: Path):
    index = ClipIndex(root / "index.sqlite3", readonly=True)
    try:
        return index.query()
    finally:
        index.close()


def rekey(capsys, s, *extra: str) -> tuple[int, str]:
    code = cli.main(["rekey", "-c", str(s["cfg"]), "-i", str(s["old_key"]), "--recipients", str(s["recipients"]),
                     *extra])
    return code, capsys.readouterr().err


def test_rekey_rewrites_only_the_header(setup):
    s = setup
    before = clip_files(s["root"])
    assert len(before) == 6
    modes = {rel: (s["root"] / rel).stat().st_mode for rel in before}
    proc = subprocess.run([sys.executable, "-m", "camrec", "rekey", "-c", str(s["cfg"]), "-i", str(s["old_key"]),
                           "--recipients", str(s["recipients"])], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "re-keyed 6 file(s) of 2 clip(s) for 2 recipient(s)" in proc.stderr
    assert "camrec: hint: clips recorded from now on still go to the recipients in" in proc.stderr
    after = clip_files(s["root"])
    assert after.keys() == before.keys()
    for rel, old in before.items():
        new = after[rel]
        _, old_len = parse_header_bytes(old)
        _, new_len = parse_header_bytes(new)
        assert new[new_len:] == old[old_len:], f"{rel}: payload changed"
        assert new[:new_len].count(b"\n-> X25519 ") == 2
        plain = decrypt_bytes(old, [s["owner"]])
        assert decrypt_bytes(new, [s["alice"]]) == plain == decrypt_bytes(new, [s["paper"]])
        with pytest.raises(IdentityError):
            decrypt_bytes(new, [s["owner"]])
        assert (s["root"] / rel).stat().st_mode == modes[rel]
    assert not list(s["root"].rglob("*" + TMP_SUFFIX))
    for row in rows(s["root"]):
        assert row.size == sum((s["root"] / rel).stat().st_size for rel in (row.path, row.thumb, row.meta))
    # The signed manifest got a `rekey` entry per clip, so `camrec verify` finds nothing altered.
    kinds = [json.loads(line)["kind"] for line in (s["root"] / "manifest.jsonl").read_text().splitlines()]
    assert kinds.count("rekey") == 2
    assert cli.main(["verify", "-c", str(s["cfg"])]) == 0
    if AGE is not None:  # the stock tool reads the re-keyed clip with the new key
        video = s["root"] / rows(s["root"])[0].path
        out = subprocess.run([AGE, "-d", "-i", str(s["new_key"]), str(video)], capture_output=True, timeout=60)
        assert out.returncode == 0 and out.stdout == decrypt_bytes(before[rows(s["root"])[0].path], [s["owner"]])
        old = subprocess.run([AGE, "-d", "-i", str(s["old_key"]), str(video)], capture_output=True, timeout=60)
        assert old.returncode != 0


def test_dry_run_changes_nothing(setup, capsys):
    before = clip_files(setup["root"])
    code, err = rekey(capsys, setup, "--dry-run")
    assert code == 0 and "would re-key 6 file(s)" in err
    assert clip_files(setup["root"]) == before


@pytest.mark.parametrize(("content", "needle"), [
    ("# nobody\n\n", "no recipients"),
    ("age1notakey\n", "line 1"),
    ("AGE-SECRET-KEY-1QQQQ\n", "private key"),
])
def test_bad_recipients_are_refused(setup, capsys, content, needle):
    before = clip_files(setup["root"])
    setup["recipients"].write_text(content)
    code, err = rekey(capsys, setup)
    assert code == 5 and needle in err
    assert clip_files(setup["root"]) == before


def test_mixing_pq_and_classic_is_refused(setup, capsys):
    before = clip_files(setup["root"])
    setup["recipients"].write_text(f"{X25519Identity.generate().recipient()}\n{HybridIdentity.generate().recipient()}\n")
    code, err = rekey(capsys, setup)
    assert code == 5 and "post-quantum" in err
    assert clip_files(setup["root"]) == before


def test_wrong_identity_stops_at_once(setup, capsys):
    before = clip_files(setup["root"])
    setup["old_key"].write_text(identity_file_text(X25519Identity.generate()))
    code, err = rekey(capsys, setup)
    assert code == 5 and "no identity matched" in err and "-i OLD -i NEW" in err
    assert err.count("camrec: error:") == 1
    assert clip_files(setup["root"]) == before


def test_a_failing_file_is_left_untouched(setup, capsys):
    root = setup["root"]
    second = rows(root)[1]
    damaged = root / second.thumb
    data = damaged.read_bytes()
    header, header_len = parse_header_bytes(data)
    # A well-formed header whose MAC doesn't match (an altered header).
    wrong_mac = bytes(b ^ 0xFF for b in header.mac)
    damaged.write_bytes(header.mac_input + b" " + b64encode(wrong_mac).encode() + b"\n" + data[header_len:])
    before = clip_files(root)
    code, err = rekey(capsys, setup)
    assert code == 7 and "header" in err and second.thumb in err
    assert "re-keyed 5 file(s)" in err and "1 file(s) failed" in err
    after = clip_files(root)
    assert after[second.thumb] == before[second.thumb]
    assert sum(after[k] != before[k] for k in before) == 5
    assert not list(root.rglob("*" + TMP_SUFFIX))
    # The damaged file's digest is never signed into the manifest as good.
    assert "not recorded in the manifest" in err
    entries = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    assert [e["clip"] for e in entries if e["kind"] == "rekey"] == [rows(root)[0].path]


def test_recording_clips_are_skipped(setup, capsys):
    """A clip a live recorder is writing is left alone; without a live recorder on the storage the
    same row is a clip cut by a crash, and it is re-keyed like any other (issue 9)."""
    from camrec.store.lock import RecorderLock

    root = setup["root"]
    first = rows(root)[0]
    index = ClipIndex(root / "index.sqlite3")
    index.update(first.id, state="recording")
    index.close()
    before = clip_files(root)
    live = RecorderLock(root)
    live.acquire()  # this test plays the running recorder
    try:
        code, err = rekey(capsys, setup)
    finally:
        live.release()
    assert code == 0 and "re-keyed 3 file(s) of 1 clip(s)" in err and "1 clip(s) skipped" in err
    after = clip_files(root)
    for rel in (first.path, first.thumb, first.meta):
        assert after[rel] == before[rel]
    # The recorder is gone: the row is a cut clip now (the other clip is already re-keyed: both keys).
    code, err = rekey(capsys, setup, "-i", str(setup["new_key"]))
    assert code == 0 and "skipped" not in err, err
    assert all(clip_files(root)[rel] != before[rel] for rel in (first.path, first.thumb, first.meta))


def test_to_post_quantum_with_a_passphrase_protected_identity(setup, capsys):
    s = setup
    pq = HybridIdentity.generate()
    s["recipients"].write_text(f"# post-quantum from now on\n{pq.recipient()}\n")
    # The current identity is itself protected by a passphrase; scripts give it in a file.
    protected = s["tmp"] / "old.key.age"
    protected.write_bytes(encrypt_bytes(s["old_key"].read_bytes(), [ScryptRecipient("pw", 10)], armor=True))
    s["old_key"] = protected
    pw = s["tmp"] / "pw"
    pw.write_text("pw\n")
    before = clip_files(s["root"])
    code, err = rekey(capsys, s, "--passphrase-file", str(pw))
    assert code == 0, err
    assert "none of the identities" in err  # the owner is not among the new recipients: warned
    for rel, data in clip_files(s["root"]).items():
        assert b"-> mlkem768x25519 " in data[:200]
        assert decrypt_bytes(data, [pq]) == decrypt_bytes(before[rel], [s["owner"]])
    # Export with the new post-quantum identity.
    pq_key = s["tmp"] / "pq.key"
    pq_key.write_text(identity_file_text(pq))
    out = s["tmp"] / "out"
    assert cli.main(["export", "-c", str(s["cfg"]), "-i", str(pq_key), "-o", str(out)]) == 0
    assert len(list(out.glob("*.mp4"))) == 2


def test_interrupted_run_resumes_with_both_identities(setup, capsys):
    s = setup
    first = rows(s["root"])[0]
    rekey_file(s["root"] / first.path, [s["owner"]], [s["alice"].recipient()])
    # Only the old key: the already re-keyed file is the first one seen, so the run stops.
    code, err = rekey(capsys, s)
    assert code == 5 and "-i OLD -i NEW" in err
    code = cli.main(["rekey", "-c", str(s["cfg"]), "-i", str(s["old_key"]), "-i", str(s["new_key"]),
                     "--recipients", str(s["recipients"])])
    assert code == 0
    for data in clip_files(s["root"]).values():
        decrypt_bytes(data, [s["paper"]])


def test_failure_while_writing_leaves_the_original(setup, monkeypatch):
    s = setup
    video = s["root"] / rows(s["root"])[0].path
    before = video.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("camrec.owner.rekey.os.fsync", broken_fsync)
    with pytest.raises(StorageError, match="Input/output error"):
        rekey_file(video, [s["owner"]], [s["alice"].recipient()])
    assert video.read_bytes() == before
    assert not video.with_name(video.name + TMP_SUFFIX).exists()


def test_stale_temporary_file_and_lock(setup, capsys):
    s = setup
    video = s["root"] / rows(s["root"])[0].path
    stale = video.with_name(video.name + TMP_SUFFIX)
    stale.write_bytes(b"left by a killed rekey")
    with pytest.raises(StorageError, match="already exists"):
        rekey_file(video, [s["owner"]], [s["alice"].recipient()])
    # The command holds the storage lock, so it knows the leftover is dead and removes it.
    with storage_lock(s["root"]):
        fd = os.open(s["root"], os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        with pytest.raises(StorageError, match="another rekey"), storage_lock(s["root"]):
            pass
    code, err = rekey(capsys, s)
    assert code == 0, err
    assert not stale.exists()
