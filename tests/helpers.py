"""Small shared helpers for camrec's tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

# Byte patterns that must never appear in a file under the storage directory: MP4 box types and
# the JPEG start-of-image/JFIF markers. Encrypted data contains any 4-byte pattern with odds of
# ~size/2^32, so the check is done on the box/marker patterns that are long enough to be telling.
PLAINTEXT_MARKERS = (b"ftypiso", b"ftypmp4", b"moov", b"moof", b"mdat", b"mvhd", b"avcC", b"\xff\xd8\xff\xe0", b"JFIF",
                     b"\xff\xd8\xff\xdb")


# Files at the top of a storage directory that are not clips: the index (and its WAL files), the
# daemon's status, the tamper-evidence manifest with its signing key, and the audit log. None holds
# video, images or motion details.
STORE_METADATA = {"index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm", "status.json", "manifest.jsonl",
                  "device-signing.key", "device-signing.pub", "audit.jsonl", "recorder.lock"}


def stored_files(root: Path) -> list[Path]:
    """Every clip file under a storage directory; fails on any unexpected top-level file."""
    top = {p.name for p in root.iterdir() if p.is_file()}
    assert top <= STORE_METADATA, top - STORE_METADATA
    return sorted(p for p in root.rglob("*") if p.is_file() and p.parent != root)


def plaintext_markers_in(path: Path) -> list[str]:
    data = path.read_bytes()
    return [m.decode("latin-1") for m in PLAINTEXT_MARKERS if m in data]


def ffprobe(path: Path) -> dict:
    """Format and first video stream facts of a media file, read by the real ffprobe."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_entries",
         "format=duration,format_name:stream=codec_name,width,height,nb_read_packets",
         "-select_streams", "v:0", "-of", "json", str(path)],
        check=True, capture_output=True, text=True).stdout
    info = json.loads(out)
    stream = info["streams"][0]
    return {"duration": float(info["format"]["duration"]), "format": info["format"]["format_name"],
            "codec": stream["codec_name"], "width": stream["width"], "height": stream["height"],
            "packets": int(stream["nb_read_packets"])}


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


def on_terminal(argv: list[str], answers: list[str], timeout: float = 60) -> tuple[int, bytes]:
    """Run argv on a pseudo-terminal, typing the next answer at each passphrase prompt.

    Returns the exit status and everything the program wrote to the terminal.
    """
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # child
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    seen = b""
    answered = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            try:
                got = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not got:
                break
            seen += got
            prompts = seen.lower().count(b"passphrase") - seen.lower().count(b"camrec: ")
            if prompts > answered and answered < len(answers):
                os.write(fd, answers[answered].encode() + b"\n")
                answered += 1
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen
