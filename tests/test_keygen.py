"""Keys and identities on the command line: `camrec keygen --pq / --passphrase`, every identity
kind for `-i`, passphrase-encrypted files, and where passphrases may (and may not) come from.

Passphrases are typed on a pseudo-terminal here, the way a person would; subprocesses that must
have *no* terminal run in a new session (no controlling terminal, so /dev/tty can't be opened).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from camrec.crypto.age import Stanza, b64encode, encode_header
from camrec.crypto.keys import HybridIdentity, X25519Identity, identity_file_text, load_identities
from camrec.crypto.scrypt import ScryptIdentity, ScryptRecipient
from camrec.crypto.stream import decrypt_bytes, encrypt_bytes
from camrec.errors import FormatError, IdentityError
from tests.helpers import on_terminal

AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")
needs_age = pytest.mark.skipif(AGE is None or AGE_KEYGEN is None, reason="needs age, age-keygen (apt-get install age)")
needs_pty = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a Linux pseudo-terminal")
CAMREC = [sys.executable, "-m", "camrec"]


def camrec(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """camrec without a controlling terminal (new session): it can never prompt."""
    return subprocess.run([*CAMREC, *args], input=stdin, capture_output=True, timeout=60, start_new_session=True)


def one_line_error(proc: subprocess.CompletedProcess[bytes], code: int, *needles: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, err)
    lines = err.strip().splitlines()
    assert lines and lines[0].startswith("camrec: error: "), err
    assert all(line.startswith(("camrec: error: ", "camrec: hint: ", "camrec: warning: ")) for line in lines), err
    for needle in needles:
        assert needle in err, err


# --- keygen --------------------------------------------------------------------------------------


def test_keygen_pq(tmp_path):
    key = tmp_path / "pq.key"
    proc = camrec("keygen", "--pq", "-o", str(key))
    assert proc.returncode == 0, proc.stderr
    recipient = proc.stdout.decode().strip()
    assert recipient.startswith("age1pq1")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = key.read_text()
    assert f"# public key: {recipient}\n" in text and "\nAGE-SECRET-KEY-PQ-1" in text
    [ident] = load_identities(key)
    assert isinstance(ident, HybridIdentity) and str(ident.recipient()) == recipient
    # A file for the PQ recipient decrypts with `camrec decrypt -i`.
    enc = tmp_path / "msg.age"
    enc.write_bytes(encrypt_bytes(b"post-quantum hello", [ident.recipient()]))
    out = camrec("decrypt", "-i", str(key), str(enc))
    assert out.returncode == 0 and out.stdout == b"post-quantum hello"
    one_line_error(camrec("keygen", "--pq", "-o", str(key)), 2, "already exists")


@needs_age
@needs_pty
def test_keygen_passphrase_file_round_trips_through_age(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery\n")
    key = tmp_path / "owner.key.age"
    proc = camrec("keygen", "--passphrase-file", str(pw), "-o", str(key))
    assert proc.returncode == 0, proc.stderr
    recipient = proc.stdout.decode().strip()
    assert recipient.startswith("age1") and stat.S_IMODE(key.stat().st_mode) == 0o600
    data = key.read_bytes()
    assert data.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n") and b"AGE-SECRET-KEY" not in data
    # `age -d` with the passphrase gives back an identity file that age-keygen -y accepts.
    plain = tmp_path / "owner.key"
    assert AGE is not None and AGE_KEYGEN is not None
    code, _ = on_terminal([AGE, "-d", "-o", str(plain), str(key)], ["correct horse battery"])
    assert code == 0
    derived = subprocess.run([AGE_KEYGEN, "-y", str(plain)], capture_output=True, text=True, check=True, timeout=30)
    assert derived.stdout.strip() == recipient
    # age also uses the protected file directly as an identity (-i), asking for its passphrase.
    enc = tmp_path / "msg.age"
    enc.write_bytes(encrypt_bytes(b"for the owner", [X25519Identity.parse(
        next(line for line in plain.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))).recipient()]))
    out = tmp_path / "msg.txt"
    code, _ = on_terminal([AGE, "-d", "-i", str(key), "-o", str(out), str(enc)], ["correct horse battery"])
    assert code == 0 and out.read_bytes() == b"for the owner"
    # And so does camrec, from the passphrase file.
    res = camrec("decrypt", "-i", str(key), "--passphrase-file", str(pw), str(enc))
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"for the owner"


@needs_pty
def test_keygen_passphrase_asks_twice_on_the_terminal(tmp_path):
    key = tmp_path / "k.age"
    code, seen = on_terminal([*CAMREC, "keygen", "--passphrase", "-o", str(key)], ["s3cret phrase", "s3cret phrase"])
    assert code == 0, seen
    assert b"s3cret" not in seen  # no echo
    assert seen.count(b"assphrase") >= 2
    [ident] = load_identities(key, lambda prompt: "s3cret phrase")
    assert str(ident.recipient()).encode() in seen
    with pytest.raises(IdentityError, match="incorrect passphrase"):
        load_identities(key, lambda prompt: "not it")

    other = tmp_path / "k2.age"
    code, seen = on_terminal([*CAMREC, "keygen", "--passphrase", "-o", str(other)], ["one thing", "another"])
    assert code == 2 and b"didn't match" in seen
    assert not other.exists()


def test_keygen_passphrase_without_a_terminal(tmp_path):
    key = tmp_path / "k.age"
    # Data on stdin is never taken for a passphrase.
    proc = camrec("keygen", "--passphrase", "-o", str(key), stdin=b"pw\npw\n")
    one_line_error(proc, 2, "no terminal", "--passphrase-file")
    assert not key.exists()
    key.write_text("precious\n")
    # An existing file is refused before anyone is asked for a passphrase.
    one_line_error(camrec("keygen", "--passphrase", "-o", str(key)), 2, "already exists")
    assert key.read_text() == "precious\n"


def test_keygen_to_stdout(tmp_path):
    proc = camrec("keygen")
    assert proc.returncode == 0
    [ident] = load_identities(_write(tmp_path / "k", proc.stdout))
    assert f"Public key: {ident.recipient()}" in proc.stderr.decode()
    pw = _write(tmp_path / "pw", b"pw\n")
    proc = camrec("keygen", "--pq", "--passphrase-file", str(pw))
    assert proc.returncode == 0 and proc.stdout.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    [ident] = load_identities(_write(tmp_path / "k.age", proc.stdout), lambda prompt: "pw")
    assert isinstance(ident, HybridIdentity)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- identities for -i -------------------------------------------------------------------------


def test_identity_file_with_comments_and_several_kinds(tmp_path):
    classic, pq = X25519Identity.generate(), HybridIdentity.generate()
    key = tmp_path / "household.key"
    key.write_text(f"# the household's keys\n\n# alice\n{classic}\n   # bob (post-quantum)\n{pq}\n")
    for ident in (classic, pq):
        enc = _write(tmp_path / "f.age", encrypt_bytes(b"to " + str(ident.recipient()).encode()[:10],
                                                       [ident.recipient()]))
        proc = camrec("decrypt", "-i", str(key), str(enc))
        assert proc.returncode == 0 and proc.stdout == b"to " + str(ident.recipient()).encode()[:10]
    # Several -i files are all tried.
    other = _write(tmp_path / "other.key", identity_file_text(X25519Identity.generate()).encode())
    enc = _write(tmp_path / "g.age", encrypt_bytes(b"x", [classic.recipient()]))
    assert camrec("decrypt", "-i", str(other), "-i", str(key), str(enc)).stdout == b"x"


@needs_age
@needs_pty
def test_identity_protected_by_age_p(tmp_path):
    """An identity file protected with `age -p -a` (age's recipe) works for `camrec decrypt -i`."""
    assert AGE is not None and AGE_KEYGEN is not None
    plain = tmp_path / "key.txt"
    subprocess.run([AGE_KEYGEN, "-o", str(plain)], check=True, capture_output=True, timeout=30)
    protected = tmp_path / "key.age"
    code, _ = on_terminal([AGE, "-p", "-a", "-o", str(protected), str(plain)], ["family pw", "family pw"])
    assert code == 0
    [ident] = load_identities(plain)
    enc = _write(tmp_path / "clip.age", encrypt_bytes(b"clip bytes", [ident.recipient()]))
    pw = _write(tmp_path / "pw", b"family pw\n")
    res = camrec("decrypt", "-i", str(protected), "--passphrase-file", str(pw), str(enc))
    assert res.returncode == 0 and res.stdout == b"clip bytes"
    out = tmp_path / "out"
    code, seen = on_terminal([*CAMREC, "decrypt", "-i", str(protected), "-o", str(out), str(enc)], ["family pw"])
    assert code == 0 and out.read_bytes() == b"clip bytes"
    assert b"for identity file" in seen
    # Without a terminal or a passphrase file: a usage error, not a hang or a read of stdin.
    one_line_error(camrec("decrypt", "-i", str(protected), str(enc), stdin=b"family pw\n"), 2, "--passphrase-file")


# --- passphrase-encrypted files ----------------------------------------------------------------


def test_decrypt_passphrase_encrypted_file(tmp_path):
    data = os.urandom(70_000)
    for armor in (False, True):
        enc = _write(tmp_path / f"p{armor}.age", encrypt_bytes(data, [ScryptRecipient("tv remote", 10)], armor=armor))
        pw = _write(tmp_path / "pw", b"tv remote\r\n")
        res = camrec("decrypt", "--passphrase-file", str(pw), str(enc))
        assert res.returncode == 0, res.stderr
        assert res.stdout == data
        out = tmp_path / f"out-{armor}"  # decrypt -o never replaces a file without --force
        res = camrec("decrypt", "--passphrase-file", str(pw), "-o", str(out), "-", stdin=enc.read_bytes())
        assert res.returncode == 0 and out.read_bytes() == data
    one_line_error(camrec("decrypt", str(enc)), 2, "no terminal")
    one_line_error(camrec("decrypt", "--passphrase-file", str(_write(tmp_path / "w", b"nope\n")), str(enc)), 5,
                   "incorrect passphrase")
    one_line_error(camrec("decrypt", "--passphrase-file", str(tmp_path / "absent"), str(enc)), 2, "absent")
    # A file for public keys with neither -i nor a passphrase: says to give -i.
    pub = _write(tmp_path / "pub.age", encrypt_bytes(b"x", [X25519Identity.generate().recipient()]))
    one_line_error(camrec("decrypt", str(pub)), 5, "no identity was given", "-i FILE")


@needs_pty
def test_decrypt_asks_for_the_passphrase_on_the_terminal(tmp_path):
    enc = _write(tmp_path / "p.age", encrypt_bytes(b"typed", [ScryptRecipient("on the tty", 10)]))
    out = tmp_path / "out"
    code, seen = on_terminal([*CAMREC, "decrypt", "-o", str(out), str(enc)], ["on the tty"])
    assert code == 0 and out.read_bytes() == b"typed"
    assert b"on the tty" not in seen


def test_hostile_work_factor_is_refused_before_asking(tmp_path):
    stanza = Stanza("scrypt", [b64encode(os.urandom(16)), "40"], os.urandom(32))
    enc = _write(tmp_path / "h.age", encode_header([stanza], os.urandom(16)) + os.urandom(100))
    t0 = time.monotonic()
    # No terminal and no passphrase file: the header check must fail first (exit 6, not 2).
    one_line_error(camrec("decrypt", str(enc)), 6, "work factor too large")
    assert time.monotonic() - t0 < 20
    with pytest.raises(FormatError, match="work factor too large"):
        decrypt_bytes(enc.read_bytes(), [ScryptIdentity("x")])


def test_household_recipients_file_in_the_config(tmp_path):
    """Several recipients (family members, a paper backup) from a commented recipients file: every
    clip opens with any one of their identities."""
    from camrec.config import load_config
    from camrec.crypto.keys import parse_recipient

    alice, bob, paper = X25519Identity.generate(), HybridIdentity.generate(), X25519Identity.generate()
    (tmp_path / "recipients.txt").write_text(f"# alice's laptop\n{alice.recipient()}\n\n"
                                             f"# paper backup, in the safe\n{paper.recipient()}\n")
    cfg = tmp_path / "camrec.yaml"
    cfg.write_text(f"recipients_file: recipients.txt\nstorage: {{path: {tmp_path / 's'}}}\n"
                   "cameras: {a: {source: 'synthetic:'}}\n")
    config = load_config(str(cfg))
    recipients = [parse_recipient(r) for r in config.recipients]
    assert [str(r) for r in recipients] == [str(alice.recipient()), str(paper.recipient())]
    enc = _write(tmp_path / "clip.age", encrypt_bytes(b"front door", recipients))
    for ident in (alice, paper):
        key = _write(tmp_path / "k", identity_file_text(ident).encode())
        assert camrec("decrypt", "-i", str(key), str(enc)).stdout == b"front door"
    key = _write(tmp_path / "k", identity_file_text(bob).encode())
    one_line_error(camrec("decrypt", "-i", str(key), str(enc)), 5, "no identity matched")
