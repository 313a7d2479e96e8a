"""The audit log: where entries go, what they hold (never an identity), the hash chain, and
audit-before-release (no log entry, no decryption)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from camrec.cli import main
from camrec.crypto.keys import HybridIdentity, X25519Identity
from camrec.crypto.scrypt import ScryptIdentity
from camrec.errors import StorageError
from camrec.owner import audit
from camrec.store.manifest import line_hash
from tests.test_manifest import make_store
from tests.test_verify import write_config

SERVICE_UID = 4242  # the recorder's service user, which is not the user running the owner's tools


def make_live(root: Path) -> None:
    """The store as installed: it and its audit log belong to the service user (a copy made with
    rsync -a belongs to whoever copied it). Needs root to give files away."""
    if os.geteuid() != 0:
        pytest.skip("needs root to chown the store to a service user")
    os.chown(root, SERVICE_UID, -1)
    os.chown(root / audit.AUDIT_NAME, SERVICE_UID, -1)


@pytest.fixture
def store(tmp_path, monkeypatch):
    owner, store, manifest, rows = make_store(tmp_path, n=2, size=20_000)
    manifest.close()
    make_live(store.root)
    monkeypatch.setenv(audit.ENV_LOG, str(tmp_path / "user-state" / "audit.jsonl"))
    return {"owner": owner, "root": store.root, "rows": rows, "tmp": tmp_path,
            "user_log": tmp_path / "user-state" / "audit.jsonl"}


def entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_store_log_entry(store):
    owner, root, rows = store["owner"], store["root"], store["rows"]
    assert stat.S_IMODE((root / audit.AUDIT_NAME).stat().st_mode) == 0o660  # made by the daemon's Manifest
    e = audit.record("export", files=[r.path for r in rows], recipients=audit.recipients_of([owner]),
                     storage_root=root, command="camrec export -c x -i key -o out")
    assert e["seq"] == 1 and e["event"] == "export" and e["files"] == [r.path for r in rows]
    assert e["recipients"] == [str(owner.recipient())] and e["store"] == str(root.resolve())
    assert e["user"] and e["host"] and e["pid"] == os.getpid() and e["time"].endswith("Z")
    text = (root / audit.AUDIT_NAME).read_text()
    assert str(owner) not in text and "AGE-SECRET-KEY" not in text
    assert entries(root / audit.AUDIT_NAME) == [e]
    assert entries(store["user_log"]) == [e]  # the per-user log always gets the entry too


def test_store_found_from_a_file_inside_it(store, monkeypatch):
    root, row = store["root"], store["rows"][0]
    monkeypatch.chdir(root / row.path.rsplit("/", 1)[0])
    e = audit.record("decrypt", files=[row.path.rsplit("/", 1)[1]], recipients=["age1x"])
    assert e["files"] == [row.path] and (root / audit.AUDIT_NAME).exists()


def test_outside_a_store_the_user_log(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv(audit.ENV_LOG, raising=False)
    loose = tmp_path / "x.age"
    loose.write_bytes(b"age")
    e = audit.record("decrypt", files=[loose], recipients=["age1x"])
    log = tmp_path / "state" / "camrec" / audit.AUDIT_NAME
    assert entries(log) == [e] and e["files"] == [str(loose.resolve())] and "store" not in e
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    monkeypatch.setenv(audit.ENV_LOG, str(tmp_path / "elsewhere.jsonl"))
    audit.record("decrypt", files=[loose], recipients=["age1x"])
    assert len(entries(tmp_path / "elsewhere.jsonl")) == 1 and len(entries(log)) == 1


def test_recipients_never_secrets():
    x, pq = X25519Identity.generate(), HybridIdentity.generate()
    got = audit.recipients_of([x, pq, ScryptIdentity("pw")])
    assert got[0] == str(x.recipient()) and got[1] == str(pq.recipient())
    assert got[2] == "(passphrase)"


def test_chain_detects_an_edited_or_removed_entry(tmp_path):
    log = tmp_path / "audit.jsonl"
    for i in range(4):
        audit.record("export", files=[f"/x/{i}"], recipients=["age1x"], log_path=log)
    chk = audit.read(log)
    assert chk.problems == [] and chk.head == (4, line_hash(log.read_bytes().splitlines()[-1]))
    pinned = chk.head
    lines = log.read_bytes().splitlines()
    edited = json.loads(lines[1])
    edited["user"] = "someone-else"
    from camrec.store.manifest import canonical

    log.write_bytes(b"".join(x + b"\n" for x in [lines[0], canonical(edited), *lines[2:]]))
    problems = audit.read(log).problems
    assert problems and problems[0][0] == 3 and "previous-line hash" in problems[0][1]
    log.write_bytes(b"".join(x + b"\n" for x in [lines[0], *lines[2:]]))  # removed instead
    assert audit.read(log).problems[0][0] == 2
    # Dropping the newest entry leaves a valid chain: only a head saved earlier shows it.
    log.write_bytes(b"".join(x + b"\n" for x in lines[:3]))
    chk = audit.read(log, [pinned])
    assert chk.problems == [] and "not in the chain" in chk.head_problems[0]


def test_torn_tail_is_cut_by_the_next_entry(tmp_path):
    log = tmp_path / "audit.jsonl"
    audit.record("export", files=["/a"], recipients=["age1x"], log_path=log)
    with open(log, "ab") as f:
        f.write(b'{"event":"exp')
    assert audit.read(log).torn is not None and audit.read(log).problems == []
    audit.record("export", files=["/b"], recipients=["age1x"], log_path=log)
    es = entries(log)
    assert [e.get("event", e.get("kind")) for e in es] == ["export", "repair", "export"]
    assert audit.read(log).problems == []


def test_unwritable_log_fails_before_anything(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="refusing to decrypt without an audit entry"):
        audit.record("decrypt", files=["/x"], recipients=[], log_path=blocker / "audit.jsonl")
    d = tmp_path / "dir.jsonl"
    d.mkdir()
    with pytest.raises(StorageError, match="refusing to decrypt"):
        audit.record("decrypt", files=["/x"], recipients=[], log_path=d)


def test_verify_with_identity_is_audited_first(store, capsys, monkeypatch):
    """verify -i decrypts (to check), so it is audited; if the per-user log can't be written,
    verify -i fails before decrypting anything."""
    import camrec.owner.verify as v

    cfg = write_config(store["tmp"], store["owner"], store["root"])
    key = store["tmp"] / "owner.key"
    key.write_text(f"{store['owner']}\n")
    assert main(["verify", "-c", str(cfg), "-i", str(key)]) == 0
    e = entries(store["root"] / audit.AUDIT_NAME)[-1]
    assert e["event"] == "verify" and len(e["files"]) == 6 and e["recipients"] == [str(store["owner"].recipient())]
    capsys.readouterr()

    log = store["user_log"]
    log.unlink()
    log.mkdir()
    decrypted = []
    real = v._check_file
    monkeypatch.setattr(v, "_check_file", lambda r, p, h, ids: decrypted.append(ids) or real(r, p, h, ids))
    assert main(["verify", "-c", str(cfg), "-i", str(key)]) == 9
    assert "refusing to decrypt" in capsys.readouterr().err
    assert decrypted == []


def test_audit_command(store, capsys):
    root = store["root"]
    cfg = write_config(store["tmp"], store["owner"], root)
    for r in store["rows"]:
        audit.record("export", files=[r.path], recipients=["age1" + "q" * 58], storage_root=root)
    assert main(["audit", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "export" in out and store["rows"][1].path in out and "audit head 2:" in out
    assert main(["audit", "--log", str(root / audit.AUDIT_NAME), "--json", "--verify"]) == 0
    assert [e["seq"] for e in json.loads(capsys.readouterr().out)] == [1, 2]

    lines = (root / audit.AUDIT_NAME).read_bytes().splitlines()
    (root / audit.AUDIT_NAME).write_bytes(lines[1] + b"\n")  # the first entry removed
    assert main(["audit", "-c", str(cfg)]) == 0
    assert "hash chain is broken" in capsys.readouterr().err
    assert main(["audit", "-c", str(cfg), "--verify"]) == 7
    captured = capsys.readouterr()
    assert "chain-break" in captured.out and captured.err.startswith("camrec: error: the audit log")


def test_audit_command_expect_head(store, capsys):
    log = store["root"] / audit.AUDIT_NAME
    audit.record("export", files=["a"], recipients=[], storage_root=store["root"])
    head = "{}:{}".format(*audit.read(log).head)
    audit.record("export", files=["b"], recipients=[], storage_root=store["root"])
    assert main(["audit", "--log", str(log), "--verify", "--expect-head", head]) == 0
    log.write_bytes(b"")  # wiped
    assert main(["audit", "--log", str(log), "--verify", "--expect-head", head]) == 7
    assert "not in the chain" in capsys.readouterr().out
