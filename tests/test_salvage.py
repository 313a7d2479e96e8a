"""Clips cut by a crash: `camrec decrypt [--salvage]` and `camrec export` on every kind of cut.

A recorded clip is cut at every chunk boundary (and a few bytes either side) and inside chunks.
Each cut must either decrypt fully (no cut) or give exactly its authenticated prefix, with the
documented exit codes: 6 when the cut is inside the header or nonce, 8 when the final chunk is
missing; 7 when a chunk fails authentication. Nothing of a failed chunk is ever written.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys

import pytest

from camrec import cli
from camrec.crypto.age import parse_header_bytes
from camrec.crypto.stream import CHUNK_SIZE, ENC_CHUNK_SIZE, NONCE_SIZE, decrypt_bytes
from camrec.owner.export import FragmentGate, remux_encrypted
from camrec.store.index import ClipIndex
from tests.helpers import ffprobe
from tests.test_recorder import record

AGE = shutil.which("age")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """One recorded clip (a real fragmented MP4 inside), its plaintext, key file and layout."""
    tmp = tmp_path_factory.mktemp("salvage")
    owner, store, rows, _ = record(tmp, motion="3-9", seconds=14)
    store.close()
    key = tmp / "owner.key"
    key.write_text(f"# owner\n{owner}\n")
    path = store.root / rows[0].path
    ct = path.read_bytes()
    _, header_len = parse_header_bytes(ct)
    plain = decrypt_bytes(ct, [owner])
    assert len(plain) % CHUNK_SIZE, "the test wants a short final chunk"
    return {"owner": owner, "key": key, "ct": ct, "plain": plain, "start": header_len + NONCE_SIZE,
            "root": store.root, "row": rows[0], "tmp": tmp}


def cut_offsets(clip: dict) -> list[int]:
    """Every chunk boundary ±0/1/15/16/17, inside the header and nonce, and random points inside chunks."""
    start, size = clip["start"], len(clip["ct"])
    chunks = -(-(size - start) // ENC_CHUNK_SIZE)
    cuts = {0, 1, 21, start - NONCE_SIZE - 1, start - NONCE_SIZE, start - 1, size - 1, size}
    for k in range(chunks + 1):
        boundary = start + k * ENC_CHUNK_SIZE
        cuts |= {boundary + d for d in (-17, -16, -15, -1, 0, 1, 15, 16, 17)}
    rng = random.Random(3)
    cuts |= {rng.randrange(start, size) for _ in range(30)}
    return sorted(c for c in cuts if 0 <= c <= size)


def expected(clip: dict, cut: int) -> tuple[int, bytes | None, int | None]:
    """(exit code, plaintext released, ciphertext offset of the cut) for a file cut at `cut`."""
    start, size = clip["start"], len(clip["ct"])
    if cut == size:
        return 0, clip["plain"], None
    if cut < start:
        return 6, None, None
    whole = (cut - start) // ENC_CHUNK_SIZE
    return 8, clip["plain"][: whole * CHUNK_SIZE], start + whole * ENC_CHUNK_SIZE


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    return code, capsys.readouterr().err


def test_every_cut_decrypts_fully_or_to_its_authenticated_prefix(clip, tmp_path, capsys):
    cut_file = tmp_path / "cut.mp4.age"
    for cut in cut_offsets(clip):
        code, prefix, offset = expected(clip, cut)
        cut_file.write_bytes(clip["ct"][:cut])
        for salvage in (False, True):
            out = tmp_path / f"out-{salvage}.mp4"
            out.unlink(missing_ok=True)
            argv = ["decrypt", "-i", str(clip["key"]), "-o", str(out), str(cut_file)]
            got, err = run_cli(capsys, *([*argv, "--salvage"] if salvage else argv))
            assert got == code, (cut, salvage, err)
            assert not list(tmp_path.glob(".out-*")), "temporary file left behind"
            if code == 0:
                assert out.read_bytes() == clip["plain"] and err == ""
            elif code == 6:
                assert not out.exists() and "camrec: error: " in err
            elif salvage:
                assert out.read_bytes() == prefix, cut
                assert f"after {len(prefix)} authenticated bytes" in err and f"byte {offset} of the file" in err
                assert "truncated" in err and "salvaged them to" in err
            else:
                assert not out.exists(), cut
                assert "truncated" in err and "--salvage" in err


def test_cut_to_stdout_releases_the_prefix_then_fails(clip, tmp_path):
    """Like `age -d`: the authenticated prefix goes to stdout, then exit code 8."""
    start = clip["start"]
    for cut in (start + 3 * ENC_CHUNK_SIZE, start + 5 * ENC_CHUNK_SIZE + 100):
        cut_file = tmp_path / "cut.age"
        cut_file.write_bytes(clip["ct"][:cut])
        proc = subprocess.run([sys.executable, "-m", "camrec", "decrypt", "-i", str(clip["key"]), str(cut_file)],
                              capture_output=True, timeout=60)
        code, prefix, _ = expected(clip, cut)
        assert proc.returncode == code == 8
        assert proc.stdout == prefix
        assert b"written to standard output" in proc.stderr and b"Traceback" not in proc.stderr
        if AGE is not None:  # the stock tool prints the same prefix before it fails
            ref = subprocess.run([AGE, "-d", "-i", str(clip["key"]), str(cut_file)], capture_output=True, timeout=60)
            assert ref.returncode != 0 and ref.stdout == proc.stdout


@pytest.mark.parametrize("salvage", [False, True])
def test_tampered_chunk_is_never_written(clip, tmp_path, capsys, salvage):
    start = clip["start"]
    bad = bytearray(clip["ct"])
    bad[start + 2 * ENC_CHUNK_SIZE + 1000] ^= 0x40
    bad_file = tmp_path / "bad.age"
    bad_file.write_bytes(bad)
    out = tmp_path / "out.mp4"
    argv = ["decrypt", "-i", str(clip["key"]), "-o", str(out), str(bad_file)] + (["--salvage"] if salvage else [])
    code, err = run_cli(capsys, *argv)
    assert code == 7 and "failed authentication" in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    # To stdout, only the chunks before the damaged one come out.
    proc = subprocess.run([sys.executable, "-m", "camrec", "decrypt", "-i", str(clip["key"]), str(bad_file)],
                          capture_output=True, timeout=60)
    assert proc.returncode == 7 and proc.stdout == clip["plain"][: 2 * CHUNK_SIZE]


# --- export ------------------------------------------------------------------------------------


def top_level_boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    boxes, pos = [], 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        boxes.append((data[pos + 4 : pos + 8], pos, size))
        pos += size
    return boxes


def last_fragment_end(plain: bytes, available: int) -> int:
    """End of the last complete moof+mdat pair within the first `available` plaintext bytes."""
    end = 0
    for kind, pos, size in top_level_boxes(plain):
        if pos + size > available:
            break
        if kind != b"moof":
            end = pos + size
    return end


def test_export_of_cut_clips_is_playable_up_to_the_last_complete_fragment(clip, tmp_path):
    start, ct, plain = clip["start"], clip["ct"], clip["plain"]
    chunks = (len(ct) - start) // ENC_CHUNK_SIZE
    cuts = [start + k * ENC_CHUNK_SIZE for k in (2, chunks // 2, chunks - 1)] + [len(ct) - 1, start + 5 * ENC_CHUNK_SIZE
                                                                                 + 777]
    full = tmp_path / "full.mp4"
    assert not remux_encrypted(clip["root"] / clip["row"].path, [clip["owner"]], full).truncated
    full_probe = ffprobe(full)
    for cut in cuts:
        src = tmp_path / "cut.mp4.age"
        src.write_bytes(ct[:cut])
        out = tmp_path / f"cut-{cut}.mp4"
        result = remux_encrypted(src, [clip["owner"]], out)
        assert result.truncated
        # Reference: the same plaintext prefix, cut by hand at its last complete fragment.
        _, prefix, _ = expected(clip, cut)
        ref = tmp_path / "ref.mp4"
        ref.write_bytes(plain[: last_fragment_end(plain, len(prefix))])
        probe, ref_probe = ffprobe(out), ffprobe(ref)
        assert probe["packets"] == ref_probe["packets"] == result.packets > 0, cut
        assert probe["packets"] < full_probe["packets"]
        # The export decodes end to end without a single error.
        subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", str(out), "-f", "null", "-"], check=True,
                       capture_output=True, timeout=60)


def test_cli_export_of_a_partial_clip(clip, tmp_path):
    root = tmp_path / "storage"
    shutil.copytree(clip["root"], root)
    row = clip["row"]
    video = root / row.path
    video.write_bytes(clip["ct"][: clip["start"] + 9 * ENC_CHUNK_SIZE + 5])
    index = ClipIndex(root / "index.sqlite3")
    index.update(row.id, state="partial", size=video.stat().st_size)
    index.close()
    cfg = tmp_path / "camrec.yaml"
    cfg.write_text(f"recipients: [{clip['owner'].recipient()}]\nstorage:\n  path: {root}\n"
                   "cameras:\n  cam:\n    source: rtsp://127.0.0.1:9/cam\n")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "camrec", "export", "-c", str(cfg), "-i", str(clip["key"]),
                           "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "cut short by a crash" in proc.stdout
    [mp4] = out.glob("*.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", str(mp4), "-f", "null", "-"], check=True,
                   capture_output=True, timeout=60)


def test_export_of_a_clip_cut_before_its_first_fragment(clip, tmp_path):
    src = tmp_path / "cut.mp4.age"
    src.write_bytes(clip["ct"][: clip["start"] + ENC_CHUNK_SIZE])  # ftyp + moov only
    from camrec.errors import TruncatedError

    with pytest.raises(TruncatedError, match="before its first complete video fragment"):
        remux_encrypted(src, [clip["owner"]], tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, b) -> int:
        self.data += b
        return len(b)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("step", [1, 7, 1000, 65536])
def test_fragment_gate_releases_whole_fragments_only(clip, step):
    plain = clip["plain"]
    # Byte-by-byte writes are slow in Python: those only over the first fragments.
    sizes = (len(plain), len(plain) - 1, 100_000, 763 + 100, 20) if step > 100 else (150_000, 100_000, 863, 20)
    for available in sizes:
        sink = Sink()
        gate = FragmentGate(sink)  # type: ignore[arg-type]
        for pos in range(0, available, step):
            gate.write(plain[pos : min(pos + step, available)])
        gate.close()
        assert bytes(sink.data) == plain[: last_fragment_end(plain, available)]
        assert gate.dropped == available - len(sink.data) and sink.closed


def test_fragment_gate_passes_non_mp4_through():
    sink = Sink()
    gate = FragmentGate(sink)  # type: ignore[arg-type]
    gate.write(b"\x00\x00\x00\x03junk and more")  # size 3 < 8: not boxes
    gate.write(b" tail")
    gate.close()
    assert bytes(sink.data) == b"\x00\x00\x00\x03junk and more tail"
