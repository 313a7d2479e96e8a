"""`camrec bench live --quick`: the live-view benchmark runs end to end, so it can't rot.

Not a timed test: it checks that every measurement is made and is plausible (the recorder and the
web thread used CPU, viewers of both kinds got frames carrying the camera's time stamp, the
first WebRTC frame came from the hub's cached GOP, chromium played H.264 at the camera's size),
not how fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.web_browser import CHROMIUM

ROOT = Path(__file__).resolve().parent.parent


def run_bench(*extra: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "camrec", "bench", "live", "--quick", "--json", *extra],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def plausible_percent(value: float | None) -> bool:
    # Per-viewer costs are differences of two noisy readings: small negatives happen on a busy box.
    return value is not None and -50 < value < 100


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")
def test_bench_live_quick_measures_everything() -> None:
    r = run_bench()
    assert r["camera"].startswith("480x270@15")
    phases = r["threads_percent"]
    assert set(phases) == {"camera_only", "baseline", "webrtc", "mse", "chromium_webrtc", "chromium_mse"}
    for phase in phases.values():
        assert set(phase) == {"camera", "recorder", "detector", "web", "process"}
        assert phase["camera"] > 0 and phase["process"] > 0
    assert phases["camera_only"]["recorder"] == phases["camera_only"]["detector"] == 0.0
    # The recording baseline: the recorder and the detector worked in the same run, and the
    # recorder recorded (motion all the time) without losing a packet to the viewers.
    rec = r["recording_percent"]
    assert rec["recorder"] > 0 and rec["detector"] > 0 and plausible_percent(rec["total"])
    assert r["recorder"]["clips_written"] >= 1 and r["recorder"]["packets_dropped"] == 0
    assert r["recorder"]["storage_error"] is None
    assert phases["webrtc"]["web"] > 0 and phases["mse"]["web"] > 0
    for key, value in r["per_viewer_percent"].items():
        assert plausible_percent(value), (key, value)
    # aiortc viewers through WHEP: frames decoded, their stamps read, the first one from the cache.
    a = r["aiortc"]
    assert a["viewers_without_a_frame"] == 0 and a["frames_decoded"] > 20
    assert a["first_frame_ms"] > 0 and a["first_age_ms"] > 0
    assert a["capture_to_decode_ms"]["samples"] > 10 and a["capture_to_decode_ms"]["median"] > 0
    # MSE WebSocket viewers: the MIME type, then media segments (one per frame).
    assert r["mse_python"]["mime"].startswith('video/mp4; codecs="avc1.')
    assert all(n > 20 for n in r["mse_python"]["segments"]) and r["mse_python"]["first_segment_ms"] > 0
    # Chromium, both ways: H.264 at the camera's width, a first frame, stamps read on a canvas.
    for kind in ("webrtc", "mse"):
        c = r["chromium"][kind]
        assert c["width"] == 480, (kind, c)
        assert "h264" in c["codec"].lower() or "avc1" in c["codec"], (kind, c)
        assert c["first_frame_ms"] > 0 and c["first_age_ms"] is not None, (kind, c)
        assert c["frames_decoded"] > 20 and c["latency_ms"]["samples"] > 10, (kind, c)
        assert 0 < c["latency_ms"]["median"] <= c["latency_ms"]["p95"] < 10_000, (kind, c)
    # The WebRTC viewer started from the cached keyframe: its first frame predates the join.
    assert r["chromium"]["webrtc"]["first_age_ms"] > 0
    # Every session went through the registry: audited at its start and its end.
    sessions = r["live_sessions"]
    assert sessions["started"] == len(sessions["ended"]) == 2 * r["viewers"] + 2
    assert {e["kind"] for e in sessions["ended"]} == {"webrtc", "mse"}
    assert all(e["packets"] > 0 for e in sessions["ended"])
