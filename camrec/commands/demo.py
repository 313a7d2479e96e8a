"""`camrec demo`: the whole main path on a machine with no camera.

A synthetic camera (scene + sensor noise + objects crossing at known seconds) is recorded by the
real daemon for ~20 s into age-encrypted clips, to a throw-away owner key made for the demo; then
the owner side exports the clips to MP4. The daemon part only ever sees the public key.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from camrec.errors import UsageError

log = logging.getLogger(__name__)


def _demo_config(recipient: str, storage: Path, duration: float) -> str:
    # Two crossings inside the recording window, so the demo shows two separate clips.
    first = (max(2.0, duration * 0.15), max(4.0, duration * 0.35))
    second = (duration * 0.6, duration * 0.75)
    motion = f"{first[0]:g}-{first[1]:g},{second[0]:g}-{second[1]:g}"
    return f"""# Written by `camrec demo`: a synthetic camera and a throw-away owner key.
recipients: [{recipient}]
storage:
  path: {storage}
cameras:
  demo:
    source: "synthetic:?size=640x360&fps=15&motion={motion}&period=600"
    pre_roll: 2s
    post_roll: 2s
"""


def run_demo(args: argparse.Namespace) -> int:
    from camrec.cli import setup_logging
    from camrec.config import load_config
    from camrec.crypto.keys import X25519Identity, identity_file_text, load_identities
    from camrec.owner.export import remux_encrypted
    from camrec.service.daemon import Daemon
    from camrec.store import layout
    from camrec.timeparse import parse_duration

    try:
        duration = parse_duration(args.duration)
    except ValueError as exc:
        raise UsageError(f"bad --duration: {exc}") from None
    if not 8 <= duration <= 600:
        raise UsageError("--duration must be between 8s and 10m")
    # Absolute: the config written below is read relative to its own directory.
    base = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="camrec-demo-"))
    base.mkdir(parents=True, exist_ok=True)
    key_path = base / "owner-identity.txt"
    if not key_path.exists():
        identity = X25519Identity.generate()
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(identity_file_text(identity))
    identities = load_identities(str(key_path))
    recipient = str(identities[0].recipient())
    config_path = base / "camrec.yaml"
    config_path.write_text(_demo_config(recipient, base / "storage", duration))

    setup_logging("info", getattr(args, "debug", False))
    print(f"camrec demo: recording a synthetic camera for {duration:g}s into {base / 'storage'}", file=sys.stderr)
    config = load_config(config_path)
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    daemon.run(duration=duration)

    from camrec.store.index import ClipIndex

    index = ClipIndex(base / "storage" / layout.INDEX_NAME, readonly=True)
    rows = index.query(states=("complete", "partial"))
    index.close()
    export_dir = base / "export"
    export_dir.mkdir(exist_ok=True)
    exported: list[Path] = []
    for row in rows:
        name = row.path.rsplit("/", 1)[-1][: -len(layout.VIDEO_SUFFIX)] + ".mp4"
        remux_encrypted(base / "storage" / row.path, identities, export_dir / name)
        exported.append(export_dir / name)

    print()
    print(f"Encrypted clips (age v1, owner key only) under {base / 'storage'}:")
    for row in rows:
        extra = [p for p in (row.thumb, row.meta) if p]
        print(f"  {base / 'storage' / row.path}  ({row.duration:.1f}s, {row.state})")
        for side in extra:
            print(f"  {base / 'storage' / side}")
    print(f"Exported MP4 files under {export_dir}:")
    for p in exported:
        print(f"  {p}")
    print(f"Owner identity (throw-away, demo only): {key_path}")
    print(f"Config used: {config_path}")
    if rows:
        print("Decrypt one with the stock age tool:")
        print(f"  age -d -i {key_path} {base / 'storage' / rows[0].path} > clip.mp4")
    if not rows:
        print("camrec demo: no clips were recorded (the machine may be too slow)", file=sys.stderr)
        return 1
    print()
    print("Next:")
    print(f"  - play {exported[0] if exported else export_dir} with any video player (mpv, VLC, ffplay, a browser)")
    print(f"  - list what was recorded: camrec list -c {config_path}   (or: camrec list --store {base / 'storage'})")
    print("  - record your own cameras: README.md, \"Install on a Raspberry Pi (64-bit)\"")
    if args.dir:
        print(f"  - the demo's files stay in {base}")
    else:
        print(f"  - everything above is in {base}; remove it when done: rm -r {base}")
    return 0
