"""`camrec bench web --quick`: the web benchmark runs end to end with tiny sizes, so it can't rot.

Not a timed test: it checks that every measurement is made and is plausible (positive, the
browser's download has the clip's size, the server's CPU was read from /proc), not how fast."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is not installed"),
    pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed"),
]


@pytest.mark.parametrize("tls", [False, True], ids=["web-serve-store", "recorder-https"])
def test_bench_web_quick_measures_everything(tmp_path: Path, tls: bool) -> None:
    pytest.importorskip("playwright.sync_api")
    args = ["--tls"] if tls else []
    done = subprocess.run([sys.executable, "-m", "camrec", "bench", "web", "--quick", "--json", "--dir", str(tmp_path),
                           *args], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert ("TLS" in result["server"]) == tls
    assert result["page_load_ms"]["camera_list"] > 0 and result["page_load_ms"]["bare_static_file"] > 0
    assert result["decrypt"]["bytes"] == 1_000_000
    assert result["decrypt"]["browser_mb_per_s"] > 0 and result["decrypt"]["python_mb_per_s"] > 0
    assert result["first_frame_ms"]["long_clip"] > 0 and result["first_frame_ms"]["short_clip"] > 0
    assert result["first_frame_ms"]["long_clip_bytes"] > 10_000  # a real video clip was written and played
    assert result["server_cpu"]["cpu_seconds"] >= 0 and result["server_cpu"]["streamed_in_seconds"] > 0
    assert list(tmp_path.iterdir()) == []  # the temporary store is gone
    text = subprocess.run([sys.executable, "-m", "camrec", "bench", "web", "--help"], capture_output=True,
                          text=True, cwd=ROOT).stdout
    assert "--quick" in text and "--size" in text
