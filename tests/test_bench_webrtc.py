"""`camrec bench webrtc --quick`: the live-view benchmark runs end to end, so it can't rot.

Not a timed test: it checks that every measurement is made and is plausible (the viewer decoded
frames carrying the camera's time stamp, its first frame came from the hub's cached GOP, the CPU
was read), not how fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_webrtc_quick_measures_everything() -> None:
    done = subprocess.run([sys.executable, "-m", "camrec", "bench", "webrtc", "--quick", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["camera"].startswith("480x270@15")
    cpu = result["server_cpu"]
    assert cpu["with_viewers_percent"] > 0 and cpu["process_with_viewers_percent"] > 0
    assert result["first_frame"]["ms_after_offer"] > 0
    assert result["first_frame"]["age_at_join_ms"] > 0  # captured before the join: the cached GOP
    assert result["latency_ms"]["frames"] > 10 and result["latency_ms"]["median"] > 0
    assert result["sent"][0]["packets_sent"] > 10 and result["frames_decoded"][0] > 10
