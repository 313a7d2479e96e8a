"""The record path without threads: synthetic camera → detector → recorder → encrypted store.

Packets are produced faster than real time and handed to the recorder and the detector in one
thread, so the test is fast and deterministic; the daemon's threads are covered by the CLI tests.
"""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from camrec.crypto.keys import X25519Identity
from camrec.crypto.stream import decrypt_bytes
from camrec.errors import IdentityError
from camrec.motion.detector import DefaultMotionParams
from camrec.motion.worker import DetectionWorker
from camrec.record.recorder import Recorder
from camrec.sources import SystemClock
from camrec.sources.synthetic import SyntheticSource
from camrec.store.writer import Store
from tests.helpers import ffprobe, plaintext_markers_in, stored_files

FPS = 15


def record(tmp_path: Path, motion: str, seconds: float, pre: float = 2.0, post: float = 2.0,
           max_clip: float = 300.0):
    owner = X25519Identity.generate()
    clock = SystemClock()
    store = Store(tmp_path / "storage", [owner.recipient()], clock=clock)
    settings = SimpleNamespace(pre_roll=pre, post_roll=post, max_clip=max_clip, motion=DefaultMotionParams())
    rec = Recorder("cam", settings, store, clock)
    det = DetectionWorker("cam", settings.motion, rec._on_motion, threading.Event())
    src = SyntheticSource(f"synthetic:?motion={motion}&period=600&realtime=0&gop=1", clock=clock)
    src.open()
    first = None
    for _ in range(int(seconds * FPS)):
        p = src.read()
        assert p is not None
        first = p.arrival if first is None else first
        rec._on_packet(p)
        det.feed(p)
    rec._close_clip("test over")
    rows = store.index.query()
    return owner, store, rows, first


def test_clips_only_around_motion_with_pre_roll(tmp_path):
    owner, store, rows, _ = record(tmp_path, motion="5-8,15-17", seconds=25, pre=2, post=2)
    assert len(rows) == 2
    assert all(r.state == "complete" for r in rows)
    durations = [r.duration for r in rows]
    # event 1: motion 5-8 s → clip from ≤ 3 s (keyframe at or before) to ~10 s (+ detection lag)
    assert 6.5 <= durations[0] <= 9.5, durations
    assert 4.5 <= durations[1] <= 7.5, durations
    gap = rows[1].start - rows[0].start
    assert 9.0 <= gap <= 13.0  # second clip starts ~2 s before 15 s, i.e. ~10 s after the first
    for r in rows:
        assert r.thumb and r.meta
        video = decrypt_bytes((store.root / r.path).read_bytes(), [owner])
        assert video[4:8] == b"ftyp"
        mp4 = tmp_path / "clip.mp4"
        mp4.write_bytes(video)
        probe = ffprobe(mp4)
        assert probe["codec"] == "h264" and (probe["width"], probe["height"]) == (640, 360)
        assert abs(probe["duration"] - r.duration) < 0.5
        assert probe["packets"] == pytest.approx(r.duration * FPS, abs=3)
        thumb = decrypt_bytes((store.root / r.thumb).read_bytes(), [owner])
        assert thumb[:3] == b"\xff\xd8\xff"
        details = json.loads(decrypt_bytes((store.root / r.meta).read_bytes(), [owner]))
        assert details["camera"] == "cam" and details["motion"]
        assert all(0 <= m["t"] <= r.duration + 0.5 for m in details["motion"])


def test_first_motion_is_preceded_by_pre_roll(tmp_path):
    owner, store, rows, _ = record(tmp_path, motion="6-9", seconds=16, pre=3, post=1)
    (row,) = rows
    details = json.loads(decrypt_bytes((store.root / row.meta).read_bytes(), [owner]))
    first_motion = min(m["t"] for m in details["motion"])
    assert first_motion >= 3.0 - 1e-6  # the clip starts at the keyframe at or before 3 s pre-roll
    assert first_motion <= 3.0 + 1.0 + 0.5  # ≤ one GOP more, plus detector hysteresis


def test_nothing_recorded_without_motion(tmp_path):
    _, store, rows, _ = record(tmp_path, motion="", seconds=12)
    assert rows == []
    assert list((store.root).glob("cam/*/*")) == []


def test_long_event_splits_at_max_clip(tmp_path):
    # back-to-back crossings: motion never stops from 2 s on
    _, _, rows, _ = record(tmp_path, motion="2-8,8-14,14-20,20-26,26-32,32-38", seconds=36, pre=1, post=1,
                           max_clip=10)
    assert len(rows) >= 3
    for a, b in itertools.pairwise(rows):
        assert b.start >= a.end - 0.05  # contiguous, never overlapping
        assert b.start - a.end < 0.2
    assert all(r.duration <= 10.0 + 1.1 for r in rows[:-1])


def test_no_plaintext_on_disk_and_recorder_cannot_decrypt(tmp_path):
    _, store, rows, _ = record(tmp_path, motion="3-6", seconds=10)
    files = stored_files(store.root)
    assert len(files) == 3 * len(rows) >= 3
    for f in files:
        assert f.read_bytes().startswith(b"age-encryption.org/v1\n")
        assert plaintext_markers_in(f) == [], f
    # The recorder holds only the recipient: nothing it has can open what it wrote. A fresh
    # identity stands in for "any key that isn't the owner's".
    stranger = X25519Identity.generate()
    with pytest.raises(IdentityError):
        decrypt_bytes((store.root / rows[0].path).read_bytes(), [stranger])
    assert not hasattr(store, "identities")
    assert all("AGE-SECRET-KEY" not in str(r) for r in store.recipients)


def test_stock_age_decrypts_a_clip(tmp_path):
    owner, store, rows, _ = record(tmp_path, motion="3-6", seconds=10)
    key = tmp_path / "owner.key"
    key.write_text(str(owner) + "\n")
    out = subprocess.run(["age", "-d", "-i", str(key), str(store.root / rows[0].path)],
                         check=True, capture_output=True).stdout
    assert out[4:8] == b"ftyp"
    assert decrypt_bytes((store.root / rows[0].path).read_bytes(), [owner]) == out
    assert io.BytesIO(out).read(4)
