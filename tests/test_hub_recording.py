"""Issue 10: a subscriber that never reads costs the recorder nothing.

The real daemon records a real RTSP camera on 127.0.0.1 (in-process, so the test can subscribe to
its hub). Until a clip has been recorded and closed (~10 s), a test subscriber with a small queue
reads nothing while a second one, a push witness, writes down every packet the hub publishes. Then:
- the stalled subscriber dropped packets (it really overflowed) and its drops are counted;
- the recorder's subscription got every published packet, and its inbox dropped none;
- every clip closed in that time, decrypted with the real `age` and probed with the real ffprobe,
  holds exactly a contiguous run of the published packets, starting at a keyframe: the same
  packets, in the same number, as a recorder alone on the stream would have written.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

from camrec.config import load_config
from camrec.crypto.keys import X25519Identity
from camrec.service.daemon import Daemon
from camrec.sources.base import MediaPacket
from camrec.sources.hub import Gap, HubItem, StreamEnd, StreamStart

STALL_LIMIT_SECONDS = 60.0


def _closed_clips_since(storage: Path, before: set[str], since: float) -> list[str]:
    """Paths of the clips closed (complete) that began at `since` or later and are not in `before`."""
    db_path = storage / "index.sqlite3"
    if not db_path.exists():
        return []
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT path, start, state FROM clips").fetchall()
    return [path for path, start, state in rows if path not in before and state == "complete" and start >= since]


def _clip_dts(path: Path) -> tuple[list[Fraction], bool]:
    """Decode times (seconds, exact) of a clip's packets, and whether the first is a keyframe."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "packet=dts,flags:stream=time_base", "-of", "json", str(path)],
                         check=True, capture_output=True, text=True).stdout
    doc = json.loads(out)
    base = Fraction(doc["streams"][0]["time_base"])
    packets = doc["packets"]
    return [int(p["dts"]) * base for p in packets], packets[0]["flags"].startswith("K")


def test_a_subscriber_that_never_reads_costs_the_recorder_nothing(rtsp_camera_factory, early_media,
                                                                  tmp_path: Path) -> None:
    rtsp_camera = rtsp_camera_factory(early_media)  # motion at 4-7 s and 15-18 s of the session
    owner = X25519Identity.generate()
    key = tmp_path / "owner.key"
    key.write_text(f"{owner}\n")
    storage = tmp_path / "storage"
    storage.mkdir()
    config = tmp_path / "camrec.yaml"
    config.write_text(f"recipients: [{owner.recipient()}]\nstorage:\n  path: {storage}\n  min_free: 0\n"
                      f"cameras:\n  front:\n    source: {rtsp_camera.url('/cam')}\n"
                      "    pre_roll: 3s\n    post_roll: 2s\n")
    daemon = Daemon(load_config(config))
    runner = threading.Thread(target=daemon.run, name="test-daemon", daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not (daemon.started and daemon.pipelines[0].hubs["main"].stats()["streaming"]):
            assert runner.is_alive() and time.monotonic() < deadline, "the camera never connected"
            time.sleep(0.05)
        pipeline = daemon.pipelines[0]
        hub = pipeline.hubs["main"]
        witness: list[MediaPacket] = []

        def write_down(item: HubItem) -> None:
            if isinstance(item, MediaPacket):
                witness.append(item)

        # The witness first: every packet the stalled one could see, the witness sees too.
        seen = hub.subscribe("witness", start="next_keyframe", sink=write_down)
        attached_at = time.time()
        stalled = hub.subscribe("stalled", start="cached_keyframe", max_items=30)
        clips_before = {r.path for r in daemon.store.index.query()} if daemon.store else set()
        # Stalled until a clip that began after the witness attached has closed (motion at 4-7 s of
        # the camera session: ~10 s, or the 15-18 s one); the stalled queue overflows within 2 s.
        stall_end = time.monotonic() + STALL_LIMIT_SECONDS
        while not _closed_clips_since(storage, clips_before, attached_at + 0.5):
            assert runner.is_alive() and time.monotonic() < stall_end, "no clip closed during the stall"
            time.sleep(0.2)
        stats = {s["name"]: s for s in hub.stats()["subscriptions"]}
        published = hub.packets
        recorder_sub = stats["recorder"]
        # `camrec status` shows every subscriber's queue and drops (status.json is rewritten twice
        # a second; wait for one written after the stall began).
        time.sleep(1.0)
        shown = subprocess.run([sys.executable, "-m", "camrec", "status", "-c", str(config)],
                               capture_output=True, text=True, timeout=60)
    finally:
        daemon.stop_event.set()
        runner.join(60)
    assert not runner.is_alive()

    subscribers = [line for line in shown.stdout.splitlines() if line.startswith("    main stream: ")]
    assert len(subscribers) == 1, shown.stdout + shown.stderr
    assert "recorder " in subscribers[0] and "witness 0 queued, 0 dropped" in subscribers[0]
    assert re.search(r"stalled 3[01] queued, [1-9]\d* dropped", subscribers[0]), subscribers
    print(f"published {published}, stalled dropped {stalled.dropped} in {stalled.gaps} gaps, "
          f"recorder got {recorder_sub['delivered']}")

    # The stalled subscriber overflowed and counted what it lost. Read now, it holds the stream's
    # start, its first 30 packets from a keyframe, the gap, and the end the daemon's stop made.
    assert stalled.dropped > 0, stats["stalled"]
    items = []
    while (item := stalled.get(timeout=0)) is not None:
        items.append(item)
        if isinstance(item, StreamEnd):
            break
    assert isinstance(items[0], StreamStart) and isinstance(items[-1], StreamEnd)
    kept = items[1:-2]
    assert len(kept) == 30 and kept[0].keyframe and all(isinstance(p, MediaPacket) for p in kept)
    assert items[-2] == Gap(stalled.dropped) and stalled.gaps == 1
    # The recorder got every packet the hub published, and lost none in its own inbox.
    assert recorder_sub["dropped"] == 0 and recorder_sub["delivered"] == published, recorder_sub
    assert pipeline.recorder.status.packets_dropped == 0
    assert recorder_sub["mode"] == "push" and seen.delivered == len(witness) > 0

    # Every clip that began after the witness attached is an exact, contiguous run of the
    # published packets from a keyframe on: nothing missing, nothing added, nothing reordered.
    clips = _closed_clips_since(storage, clips_before, attached_at + 0.5)
    assert clips, "no clip was closed during the stall (the camera has motion at 4-7 s and 15-18 s)"
    keyframes = [i for i, p in enumerate(witness) if p.keyframe]
    for path in clips:
        plain = tmp_path / (Path(path).name + ".mp4")
        subprocess.run(["age", "-d", "-i", str(key), "-o", str(plain), str(storage / path)], check=True)
        dts, keyframe_first = _clip_dts(plain)
        assert keyframe_first, path
        matches = [i for i in keyframes if [(p.dts - witness[i].dts) * p.stream.time_base
                                            for p in witness[i:i + len(dts)]] == dts]
        assert len(matches) == 1, (path, len(dts), matches)
        print(f"{path}: {len(dts)} packets = published packets {matches[0]}..{matches[0] + len(dts) - 1}")
