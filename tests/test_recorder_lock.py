"""One recorder per storage: a second `camrec run` on a locked storage fails at once and touches
nothing of the first one's (issue 9). Owner-side commands keep working beside the recorder."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

from tests.support.daemon import Daemon


def _snapshot(d: Daemon) -> dict[str, tuple[str, str]]:
    """Each clip's state and (for closed clips) the SHA-256 of its video file."""
    out = {}
    for row in d.rows():
        digest = ""
        if row["state"] == "complete":
            digest = hashlib.sha256((d.storage / row["path"]).read_bytes()).hexdigest()
        out[row["path"]] = (row["state"], digest)
    return out


def test_a_second_recorder_on_a_locked_storage_fails_at_once(tmp_path):
    first = Daemon(tmp_path, "synthetic:?motion=1-4&period=5", pre_roll=1, post_roll=1)
    first.start()
    try:
        first.wait_for(lambda rows: any(r["state"] == "complete" for r in rows), 60, "a complete clip")
        status_before = first.status()
        before = _snapshot(first)
        t0 = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "camrec", "run", "-c", str(first.config)],
                                capture_output=True, text=True, timeout=30)
        elapsed = time.monotonic() - t0
        assert second.returncode == 9, second.stderr
        assert elapsed < 2 + 1.5, elapsed  # (interpreter start-up included)
        assert f"camrec: error: another recorder (pid {first.pid} on " in second.stderr, second.stderr
        assert f"is recording into {first.storage}" in second.stderr
        assert "Traceback" not in second.stderr
        # Nothing of the first recorder's changed: no clip marked cut, no second copy of an event.
        after = _snapshot(first)
        for path, (state, digest) in before.items():
            if state == "complete":
                assert after[path] == (state, digest), path
            else:
                assert after[path][0] in ("recording", "complete"), (path, after[path])
        assert not any(p.endswith(("-1.mp4.age", "-2.mp4.age")) for p in after), sorted(after)
        assert first.status().get("pid") == status_before.get("pid") == first.pid
        # Owner-side commands that only read work beside the recorder.
        listed = first.cli("list", "-c", str(first.config), "--json")
        assert listed.returncode == 0, listed.stderr
        verified = first.cli("verify", "-c", str(first.config))
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        assert first.stop() == 0
        first.close()
    # The lock dies with its holder: a new recorder starts at once afterwards.
    again = subprocess.run([sys.executable, "-m", "camrec", "run", "-c", str(first.config), "--duration", "1s"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
