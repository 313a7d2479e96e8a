#!/usr/bin/env python3
"""CPU cost of recording one camera: `camrec run` against `ffmpeg -c copy`, same stream, same run.

Serves generated H.264 (default 1920x1080 @ 15 fps, sensor noise, an object crossing at 10–15 s,
30–38 s and 50–53 s of each minute) from the test RTSP camera on 127.0.0.1, then records it for
--seconds with:
  1. ffmpeg -rtsp_transport tcp -i URL -c copy   (the floor: demux + remux, no decode)
  2. camrec run, detection on the main stream    (defaults: decode every frame, analyse 5 fps)
  3. camrec run, detection on a 640x360 sub-stream (`detect_source`)
and prints CPU seconds (user + system, from wait4) and the ratio to ffmpeg. Needs ffmpeg, age and
the GStreamer RTSP server packages (see README's test command). Run from the repository root:

    python3 bench/record_cpu.py [--seconds 60] [--size 1920x1080] [--fps 15]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from camrec.crypto.keys import X25519Identity
from tests.support.camera import RtspCamera
from tests.support.media import make_camera_media


def run_measured(cmd: list[str], log: Path) -> tuple[float, float]:
    """(CPU seconds of the child, wall seconds)."""
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}); see {log}")
    return usage.ru_utime + usage.ru_stime, time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--media-dir", default=str(Path(tempfile.gettempdir()) / "camrec-bench-media"))
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    print(f"making {args.size}@{args.fps} media (cached in {args.media_dir}) ...", file=sys.stderr)
    media = make_camera_media(args.media_dir, width=width, height=height, fps=args.fps, duration=60.0,
                              motion_windows=((10.0, 15.0), (30.0, 38.0), (50.0, 53.0)),
                              bitrate="3000k", sub_size=(640, 360), sub_bitrate="512k")
    work = Path(tempfile.mkdtemp(prefix="camrec-bench-"))
    owner = X25519Identity.generate()
    results: list[tuple[str, float, float]] = []
    with RtspCamera(media.mounts) as cam:
        url, sub = cam.url("/cam"), cam.url("/cam_sub")
        cpu, wall = run_measured(["ffmpeg", "-v", "error", "-rtsp_transport", "tcp", "-i", url, "-c", "copy",
                                  "-t", str(args.seconds), "-f", "mp4", "-y", str(work / "ffmpeg.mp4")],
                                 work / "ffmpeg.log")
        results.append(("ffmpeg -c copy", cpu, wall))
        for label, detect in (("camrec run (detect on main)", None), ("camrec run (detect_source 640x360)", sub)):
            storage = work / f"storage-{len(results)}"
            storage.mkdir()  # `camrec run` creates no storage directory but /var/lib/camrec
            cfg = work / f"camrec-{len(results)}.yaml"
            cfg.write_text(f"recipients: [{owner.recipient()}]\nstorage:\n  path: {storage}\ncameras:\n"
                           f"  bench:\n    source: {url}\n" + (f"    detect_source: {detect}\n" if detect else ""))
            cpu, wall = run_measured([sys.executable, "-m", "camrec", "run", "-c", str(cfg),
                                      "--duration", f"{args.seconds}s"], work / f"camrec-{len(results)}.log")
            clips = len(list(storage.rglob("*.mp4.age")))
            results.append((f"{label}, {clips} clips", cpu, wall))

    base = results[0][1]
    print(f"\n{args.seconds:g} s of {args.size}@{args.fps} H.264 over RTSP/TCP on 127.0.0.1 ({os.cpu_count()} cores)")
    print(f"{'':<48} {'CPU s':>7} {'wall s':>7} {'× ffmpeg':>9}")
    for label, cpu, wall in results:
        print(f"{label:<48} {cpu:>7.2f} {wall:>7.1f} {cpu / base:>9.2f}")
    print(f"(logs and outputs in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
