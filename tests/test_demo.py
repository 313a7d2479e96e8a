"""`camrec demo` (README command 1) records, exports and ends with the next steps and where its files are."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ffprobe


def test_demo_records_exports_and_says_what_next(tmp_path):
    base = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "camrec", "demo", "--dir", str(base), "--duration", "8s"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mp4s = sorted((base / "export").glob("*.mp4"))
    assert mp4s and ffprobe(mp4s[0])["duration"] > 1
    out = proc.stdout
    assert "Next:" in out
    assert f"play {mp4s[0]} with any video player" in out
    assert f"camrec list -c {base / 'camrec.yaml'}" in out
    assert "Install on a Raspberry Pi" in out
    assert f"the demo's files stay in {base}" in out
    listed = subprocess.run([sys.executable, "-m", "camrec", "list", "--store", str(base / "storage")],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout.count("complete") == len(mp4s), listed.stdout
