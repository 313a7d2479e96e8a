"""Interoperability with the real `age` / `age-keygen` binaries (Debian package `age`).

Files go both ways at the STREAM boundary sizes and a few MB, written in one call and in
many small ones; keys go both ways; armor goes both ways; and for truncated files our
released prefix is compared with what `age -d` prints before it fails.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from camrec.crypto.keys import (
    ScryptRecipient,
    X25519Identity,
    identity_file_text,
    load_identities,
    parse_recipient,
    scrypt_identity,
)
from camrec.crypto.stream import CHUNK_SIZE, AgeReader, AgeWriter, decrypt_bytes, decrypt_stream, encrypt_bytes
from camrec.errors import TruncatedError
from tests.helpers import on_terminal

AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")
pytestmark = pytest.mark.skipif(
    AGE is None or AGE_KEYGEN is None,
    reason="the `age` and `age-keygen` binaries are not on PATH (Debian: apt-get install age)",
)

SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * 1024 * 1024 + 11]
ARMORED_SIZE = CHUNK_SIZE + 5


def data_of(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def age(*args: str, stdin: bytes = b"", check: bool = True) -> subprocess.CompletedProcess[bytes]:
    assert AGE is not None
    return subprocess.run([AGE, *args], input=stdin, capture_output=True, check=check, timeout=60)


@pytest.fixture(scope="module")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key file written by age-keygen."""
    assert AGE_KEYGEN is not None
    path = tmp_path_factory.mktemp("keys") / "age-key.txt"
    subprocess.run([AGE_KEYGEN, "-o", str(path)], check=True, capture_output=True, timeout=30)
    return path


@pytest.fixture(scope="module")
def our_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[X25519Identity, Path]:
    """A key file written by us (what `camrec keygen` writes)."""
    ident = X25519Identity.generate()
    path = tmp_path_factory.mktemp("keys") / "camrec-key.txt"
    path.write_text(identity_file_text(ident))
    return ident, path


def test_we_read_age_keygen_files(age_key: Path) -> None:
    [ident] = load_identities(age_key)
    text = age_key.read_text()
    public = next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("# public key: "))
    assert str(ident.recipient()) == public
    assert str(ident) in text
    assert AGE_KEYGEN is not None
    derived = subprocess.run([AGE_KEYGEN, "-y", str(age_key)], capture_output=True, check=True, timeout=30)
    assert parse_recipient(derived.stdout.decode()) == ident.recipient()


def test_age_keygen_reads_our_files(our_key: tuple[X25519Identity, Path]) -> None:
    ident, path = our_key
    assert AGE_KEYGEN is not None
    out = subprocess.run([AGE_KEYGEN, "-y", str(path)], capture_output=True, check=True, timeout=30)
    assert out.stdout.decode().strip() == str(ident.recipient())


@pytest.mark.parametrize("size", SIZES)
def test_age_encrypts_we_decrypt(size: int, age_key: Path, tmp_path: Path) -> None:
    data = data_of(size)
    [ident] = load_identities(age_key)
    src = tmp_path / "plain"
    src.write_bytes(data)
    enc = tmp_path / "plain.age"
    age("-r", str(ident.recipient()), "-o", str(enc), str(src))
    assert decrypt_bytes(enc.read_bytes(), [ident]) == data
    with open(enc, "rb") as f:
        assert b"".join(AgeReader(f, [ident]).chunks()) == data


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", ["one write", "small writes"])
def test_we_encrypt_age_decrypts(size: int, mode: str, our_key: tuple[X25519Identity, Path], tmp_path: Path) -> None:
    ident, key_path = our_key
    data = data_of(size)
    enc = tmp_path / "clip.age"
    with open(enc, "wb") as f:
        w = AgeWriter(f, [ident.recipient()])
        if mode == "one write":
            w.write(data)
        else:
            rng = random.Random(size)
            pos = 0
            while pos < size:  # video-packet-like writes of 1 B .. 20 KB
                step = rng.randint(1, 20000)
                w.write(data[pos : pos + step])
                pos += step
        w.close()
        assert w.bytes_written == f.tell()
    out = age("-d", "-i", str(key_path), str(enc))
    assert out.stdout == data
    assert out.stderr == b""


def test_multiple_recipients_both_ways(age_key: Path, our_key: tuple[X25519Identity, Path], tmp_path: Path) -> None:
    [theirs] = load_identities(age_key)
    ours, our_path = our_key
    data = data_of(100_000)
    enc = tmp_path / "two.age"
    enc.write_bytes(encrypt_bytes(data, [theirs.recipient(), ours.recipient()]))
    assert age("-d", "-i", str(age_key), str(enc)).stdout == data
    assert age("-d", "-i", str(our_path), str(enc)).stdout == data
    age_enc = age("-r", str(theirs.recipient()), "-r", str(ours.recipient()), stdin=data).stdout
    assert decrypt_bytes(age_enc, [ours]) == data == decrypt_bytes(age_enc, [theirs])


def test_armor_both_ways(our_key: tuple[X25519Identity, Path], tmp_path: Path) -> None:
    ident, key_path = our_key
    data = data_of(CHUNK_SIZE + 1000)
    armored = age("-a", "-r", str(ident.recipient()), stdin=data).stdout
    assert armored.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    assert decrypt_bytes(armored, [ident]) == data  # detected automatically
    ours = tmp_path / "ours.age"
    ours.write_bytes(encrypt_bytes(data, [ident.recipient()], armor=True))
    assert age("-d", "-i", str(key_path), str(ours)).stdout == data


def test_no_match_agrees_with_age(our_key: tuple[X25519Identity, Path], tmp_path: Path) -> None:
    _, key_path = our_key
    other = X25519Identity.generate()
    enc = tmp_path / "other.age"
    enc.write_bytes(encrypt_bytes(b"x" * 1000, [other.recipient()]))
    res = age("-d", "-i", str(key_path), str(enc), check=False)
    assert res.returncode != 0 and b"no identity matched" in res.stderr


@pytest.mark.parametrize("cut_back", [1, 17, 1000, CHUNK_SIZE + 16, CHUNK_SIZE + 16 + 5000])
def test_truncated_file_prefix_matches_age(cut_back: int, age_key: Path, tmp_path: Path) -> None:
    """For a cut file, we release exactly what `age -d` prints before it fails."""
    [ident] = load_identities(age_key)
    data = data_of(4 * CHUNK_SIZE + 777)
    full = age("-r", str(ident.recipient()), stdin=data).stdout
    cut = tmp_path / "cut.age"
    cut.write_bytes(full[:-cut_back])
    res = age("-d", "-i", str(age_key), str(cut), check=False)
    assert res.returncode != 0
    out = io.BytesIO()
    with open(cut, "rb") as f, pytest.raises(TruncatedError) as ei:
        decrypt_stream(f, [ident], out, salvage=True)
    assert out.getvalue() == res.stdout
    assert ei.value.authenticated_bytes == len(res.stdout)
    assert data.startswith(out.getvalue())


def age_on_a_terminal(args: list[str], passphrase: str) -> int:
    """Run age on a pseudo-terminal (it reads passphrases only from a TTY), answering every
    passphrase prompt (at most a confirmation) with `passphrase`; returns the exit status."""
    assert AGE is not None
    return on_terminal([AGE, *args], [passphrase] * 2)[0]


needs_pty = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a Linux pseudo-terminal")


@needs_pty
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", ["one write", "small writes"])
def test_we_encrypt_with_passphrase_age_decrypts(size: int, mode: str, tmp_path: Path) -> None:
    data = data_of(size)
    ours = tmp_path / "ours.age"
    with open(ours, "wb") as f:
        # A low work factor keeps the test fast; age accepts any factor up to 2^22.
        w = AgeWriter(f, [ScryptRecipient("tv remote", work_factor=10)])
        if mode == "one write":
            w.write(data)
        else:
            for pos in range(0, size, 4099):
                w.write(data[pos : pos + 4099])
        w.close()
    out = tmp_path / "out"
    assert age_on_a_terminal(["-d", "-o", str(out), str(ours)], "tv remote") == 0
    # age opens -o lazily, at its first plaintext byte: an empty plaintext creates no file.
    assert (out.read_bytes() if out.exists() else b"") == data


@pytest.fixture(scope="module")
def age_passphrase_files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """`age -p` output for every size. age 1.1 always uses scrypt work factor 2^18 (about a
    second here), so the files are made concurrently, each on its own pseudo-terminal."""
    from concurrent.futures import ThreadPoolExecutor

    tmp = tmp_path_factory.mktemp("age-p")

    def make(size: int) -> tuple[int, Path]:
        # A negative size stands for the armored file (`age -p -a`) of -size bytes.
        plain, enc = tmp / f"{size}.plain", tmp / f"{size}.age"
        plain.write_bytes(data_of(abs(size)))
        armor = ["-a"] if size < 0 else []
        assert age_on_a_terminal(["-p", *armor, "-o", str(enc), str(plain)], "tv remote") == 0
        return size, enc

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(make, [*SIZES, -ARMORED_SIZE]))


@needs_pty
@pytest.mark.parametrize("size", SIZES)
def test_age_encrypts_with_passphrase_we_decrypt(size: int, age_passphrase_files: dict[int, Path]) -> None:
    theirs = age_passphrase_files[size].read_bytes()
    assert b"-> scrypt " in theirs[:200]
    assert decrypt_bytes(theirs, [scrypt_identity("tv remote")]) == data_of(size)


@needs_pty
def test_age_armored_passphrase_file_via_the_cli(age_passphrase_files: dict[int, Path], tmp_path: Path) -> None:
    """`age -p -a` output through `camrec decrypt --passphrase-file` (armor detected by itself)."""
    theirs = age_passphrase_files[-ARMORED_SIZE]
    assert theirs.read_bytes().startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    pw = tmp_path / "pw"
    pw.write_text("tv remote\n")
    out = subprocess.run([sys.executable, "-m", "camrec", "decrypt", "--passphrase-file", str(pw), str(theirs)],
                         capture_output=True, timeout=60, start_new_session=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == data_of(ARMORED_SIZE)


def test_bench_crypto_smoke(tmp_path: Path) -> None:
    """`camrec bench crypto` runs both tools on the same file and reports both ratios."""
    import json

    out = subprocess.run([sys.executable, "-m", "camrec", "bench", "crypto", "--size", "2MB", "--repeat", "3",
                          "--dir", str(tmp_path), "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["size"] == 2_000_000 and set(result["ratio"]) == {"encrypt", "decrypt"}
    assert all(v > 0 for v in result["mb_per_s"].values())
    assert list(tmp_path.iterdir()) == []  # its files are cleaned up
