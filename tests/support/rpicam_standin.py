"""A stand-in for `rpicam-vid`: writes Annex-B H.264 (libx264 through PyAV) to stdout in real time.

It draws camrec's synthetic scene (an object crosses it, so the motion detector fires) at the size
and rate given by --width/--height/--framerate. `install(bin_dir)` makes an executable
`rpicam-vid` there. Behaviour for tests, from the environment:
  STANDIN_ARGV      file to which the argument list is written (JSON), one line per start
  STANDIN_FRAMES    exit (status 3) after this many frames: a crash
  STANDIN_HANG      after this many frames stop writing and sleep (with a child `sleep` in the
                    group), a frozen camera
  STANDIN_STDERR    a line written to stderr at start
  STANDIN_PIDS      file to which "pid pgid" is written at start
  STANDIN_MOTION    motion windows of the scene (default 1-3, period 30)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def install(bin_dir: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "rpicam-vid"
    script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                      "from tests.support.rpicam_standin import main\nmain(sys.argv[1:])\n")
    script.chmod(0o755)
    return script


def _arg(argv: list[str], name: str, default: int) -> int:
    return int(argv[argv.index(name) + 1]) if name in argv else default


def main(argv: list[str]) -> None:
    import av

    from camrec.sources.synthetic import SyntheticScene

    env = os.environ
    if "STANDIN_ARGV" in env:
        with open(env["STANDIN_ARGV"], "a") as f:
            f.write(json.dumps(argv) + "\n")
    if "STANDIN_PIDS" in env:
        Path(env["STANDIN_PIDS"]).write_text(f"{os.getpid()} {os.getpgid(0)}\n")
    if "STANDIN_STDERR" in env:
        sys.stderr.write(env["STANDIN_STDERR"] + "\n")
        sys.stderr.flush()
    width, height = _arg(argv, "--width", 320), _arg(argv, "--height", 240)
    fps = _arg(argv, "--framerate", 15)
    frames = int(env.get("STANDIN_FRAMES", "0")) or None
    hang = int(env.get("STANDIN_HANG", "0")) or None
    windows = [tuple(map(float, w.split("-"))) for w in env.get("STANDIN_MOTION", "1-3").split(",")]
    scene = SyntheticScene(width, height, fps, windows, 30.0)  # type: ignore[arg-type]
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = Fraction(1, fps)
    enc.framerate = Fraction(fps)
    gop = _arg(argv, "--intra", fps)
    enc.options = {"preset": "ultrafast", "tune": "zerolatency",
                   "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:repeat-headers=1"}
    enc.open()
    out = sys.stdout.buffer
    t0 = time.monotonic()
    index = 0
    while True:
        if frames is not None and index >= frames:
            out.flush()
            os._exit(3)
        if hang is not None and index >= hang:
            out.flush()
            subprocess.Popen(["sleep", "300"])  # a grandchild in the same process group
            time.sleep(300)
        delay = t0 + index / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for packet in enc.encode(scene.frame(index)):
            out.write(bytes(packet))
        out.flush()
        index += 1


if __name__ == "__main__":
    main(sys.argv[1:])
