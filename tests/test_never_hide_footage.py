"""Never hide footage (issue 9): the morning after a break-in, and exports while a clip records.

A clip left in `recording` by a recorder that died is a cut clip for every owner-side command as
long as no live recorder holds the storage's lock: `list` shows it `partial` and `export` salvages
it. A clip that a live recorder is still writing is exported up to now, or named, never skipped in
silence; decrypting it says that it is still being recorded.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests.helpers import ffprobe
from tests.support.daemon import Daemon

# An object crosses for 40 s of every 60: a clip is open for most of the test.
LONG_MOTION = "synthetic:?size=320x180&fps=15&motion=1-41&period=60"


def _camrec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "camrec", *args], capture_output=True, text=True, timeout=120)


def test_kill_9_then_copy_every_clip_is_listed_and_exported(tmp_path):
    d = Daemon(tmp_path, LONG_MOTION, pre_roll=1, post_roll=1)
    d.start()
    try:
        d.wait_for(lambda rows: any(r["state"] == "recording" and r["size"] > 100_000 for r in rows), 60,
                   "a clip with a few fragments")
    finally:
        assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    cut = [r["path"] for r in d.rows() if r["state"] == "recording"]
    assert len(cut) == 1, d.rows()
    copy = tmp_path / "copy"
    subprocess.run(["rsync", "-a", f"{d.storage}/", f"{copy}/"], check=True)

    # The store alone: no config, no camera secret.
    listed = _camrec("list", "--store", str(copy), "--json")
    assert listed.returncode == 0, listed.stderr
    states = {c["path"]: c["state"] for c in json.loads(listed.stdout)}
    assert states[cut[0]] == "partial", states

    out = tmp_path / "out"
    exported = _camrec("export", "--store", str(copy), "-i", str(d.key), "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    assert "no clips match" not in exported.stderr
    mp4 = out / (cut[0].rsplit("/", 1)[-1].removesuffix(".mp4.age") + ".mp4")
    assert ffprobe(mp4)["duration"] > 1.0
    assert f"exported {len(states)} of {len(states)} clip(s)" in exported.stderr
    # The same on the recorder's own storage while no recorder runs there.
    listed_here = _camrec("list", "-c", str(d.config), "--json")
    assert {c["path"]: c["state"] for c in json.loads(listed_here.stdout)}[cut[0]] == "partial"


def test_export_while_a_clip_records_includes_it_up_to_now(tmp_path):
    d = Daemon(tmp_path, LONG_MOTION, pre_roll=1, post_roll=1)
    d.start()
    try:
        rows = d.wait_for(lambda rows: any(r["state"] == "recording" and r["size"] > 100_000 for r in rows), 60,
                          "a clip being written")
        live = next(r["path"] for r in rows if r["state"] == "recording")
        listed = _camrec("list", "-c", str(d.config), "--json")
        states = {c["path"]: c["state"] for c in json.loads(listed.stdout)}
        assert states[live] == "recording"  # a live recorder writes it: not called cut

        out = tmp_path / "out"
        exported = _camrec("export", "-c", str(d.config), "-i", str(d.key), "-o", str(out))
        assert exported.returncode == 0, exported.stderr
        name = live.rsplit("/", 1)[-1].removesuffix(".mp4.age") + ".mp4"
        assert "still being recorded: exported up to now" in exported.stdout, exported.stdout
        assert ffprobe(out / name)["duration"] > 0.5
        # No clip of the range is left out in silence: each one is exported or named.
        for path in states:
            stem = path.rsplit("/", 1)[-1].removesuffix(".mp4.age")
            assert (out / f"{stem}.mp4").exists() or stem in exported.stderr, (path, exported.stderr)

        decrypted = _camrec("decrypt", "-i", str(d.key), str(d.storage / live), "-o", str(tmp_path / "x.mp4"))
        assert decrypted.returncode == 8, decrypted.stderr
        assert "is still being recorded" in decrypted.stderr, decrypted.stderr
        assert "truncated" not in decrypted.stderr
    finally:
        assert d.stop() == 0


def test_a_clip_that_just_started_is_named_not_hidden(tmp_path):
    """A clip a live recorder has only just opened (its age header, no video fragment yet) can't be
    exported: the summary names it instead of counting it out in silence."""
    from camrec.crypto.keys import X25519Identity
    from camrec.store.lock import RecorderLock
    from camrec.store.writer import Store

    owner = X25519Identity.generate()
    key = tmp_path / "owner.key"
    key.write_text(f"{owner}\n")
    root = tmp_path / "storage"
    store = Store(root, [owner.recipient()])
    lock = RecorderLock(root)
    lock.acquire()  # this test plays the live recorder
    try:
        clip = store.open_clip("cam", 1_790_000_000.0)
        clip.sync()
        cfg = tmp_path / "camrec.yaml"
        cfg.write_text(f"recipients: [{owner.recipient()}]\nstorage:\n  path: {root}\n"
                       "cameras:\n  cam:\n    source: 'synthetic:'\n    enabled: false\n")
        exported = _camrec("export", "-c", str(cfg), "-i", str(key), "-o", str(tmp_path / "out"))
        assert exported.returncode == 0, exported.stderr
        assert "exported 0 of 1 clip(s)" in exported.stderr
        assert f"skipped 1 clip(s) still recording, with no complete video fragment yet ({clip.rel})" \
            in exported.stderr, exported.stderr
    finally:
        lock.release()
        store.close()
