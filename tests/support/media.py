"""Deterministic synthetic "IP camera" test media, made with the ffmpeg CLI.

The clip is a static textured scene (sky, buildings with windows, a road, textured grass) with
temporal sensor noise on every frame, and a textured object (ffmpeg's ``testsrc2`` pattern) that
crosses the whole frame ONLY during the motion windows: it enters at the window's start and leaves at
its end, alternating direction (left→right, right→left, ...). Outside the windows the object is
parked far off-screen, so the only change between frames is the noise. The ground truth is written
next to the clip as ``motion_truth.json``.

The encoding is what camrec sees from real cameras: H.264 Main, no B-frames, a fixed closed GOP with
no scene-cut keyframes, constant frame rate, roughly constant bit rate.

Results are cached by parameters (and by this file's source and the ffmpeg version, so a changed
recipe makes new clips): each parameter set gets its own directory
``<out_dir>/cam_<w>x<h>_<fps>fps_<dur>s_<hash>/`` holding ``main.mp4``, ``motion_truth.json`` and any
sub-streams made from it. Files are written to a temporary name and renamed into place, so an
interrupted or concurrent run never leaves a half-written clip behind; ``motion_truth.json`` is
written last and marks a complete entry.

Usage::

    media = make_camera_media(tmp_dir)                 # main 640x360 + sub 320x180, 30 s
    media.mounts        # {"/cam": .../main.mp4, "/cam_sub": .../sub_320x180.mp4}
    media.truth["motion_windows_s"]                    # [[8.0, 12.0], [20.0, 23.0]]
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

# Recorded in motion_truth.json. The cache key also covers this file's source and the ffmpeg
# version, so a changed recipe never reuses old clips.
GENERATOR_VERSION = 3

TRUTH_NAME = "motion_truth.json"
MAIN_NAME = "main.mp4"

DEFAULT_MOTION_WINDOWS: tuple[tuple[float, float], ...] = ((8.0, 12.0), (20.0, 23.0))

# One encoder thread: multi-threaded x264 with VBV rate control gives different bytes from run to
# run (measured here), single-threaded output is reproducible and, at these sizes, just as fast
# (the filter graph is the bottleneck).
_X264_THREADS = "1"


class MediaError(RuntimeError):
    """ffmpeg is missing or failed to produce the clip."""


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None


def _even(v: float, minimum: int = 2) -> int:
    """Round to an even integer (yuv420p needs even sizes and offsets)."""
    return max(minimum, round(v / 2.0) * 2)


def _fmt(v: float) -> str:
    return f"{v:g}"


@dataclass(frozen=True)
class _Geometry:
    width: int
    height: int
    obj_w: int
    obj_h: int
    obj_y: int


def _geometry(width: int, height: int) -> _Geometry:
    # Proportions of a 1920x1080 scene with a 200x400 object whose top is at y=480.
    obj_w = _even(width * 200 / 1920, 8)
    obj_h = _even(height * 400 / 1080, 8)
    obj_y = min(_even(height * 480 / 1080, 0), height - obj_h)
    return _Geometry(width, height, obj_w, obj_h, obj_y)


def _frame_windows(windows: Sequence[tuple[float, float]], fps: int) -> list[tuple[int, int]]:
    """Motion windows in frame numbers: (first frame at or after a, last frame at or before b)."""
    # Fractions: 0.6 s * 15 fps must be frame 9 exactly, not 8.999999.
    return [(math.ceil(Fraction(str(a)) * fps), math.floor(Fraction(str(b)) * fps)) for a, b in windows]


def _object_x_expr(g: _Geometry, frame_windows: Sequence[tuple[int, int]], fps: int) -> str:
    """ffmpeg expression for the object's left edge, a function of the frame number.

    In window (fa, fb) the object is just off-screen at frames fa and fb and crosses in between;
    outside the windows it is parked far off-screen. The frame number is recovered from the time
    as floor(t*fps+0.5), which is exact however t was rounded, and the position is then a ratio
    of integers: so ``_object_visible`` can predict every frame, the edge frames included.
    """
    k = f"floor(t*{fps}+0.5)"
    travel = g.width + g.obj_w
    expr = str(-10 * travel)
    for i, (fa, fb) in reversed(list(enumerate(frame_windows))):
        step = f"({k}-{fa})*{travel}/{fb - fa}"
        # Even windows left -> right (x from -obj_w to width), odd ones right -> left.
        x = f"-{g.obj_w}+{step}" if i % 2 == 0 else f"{g.width}-{step}"
        expr = f"if(between({k},{fa},{fb}),{x},{expr})"
    return expr


def _object_visible(g: _Geometry, frame_windows: Sequence[tuple[int, int]], n: int) -> bool:
    """Whether frame n shows the object, computed as the overlay filter does: the same double
    arithmetic, then x truncated to int and rounded down to an even offset (chroma subsampling)."""
    travel = g.width + g.obj_w
    for i, (fa, fb) in enumerate(frame_windows):
        if fa <= n <= fb:
            step = (n - fa) * travel / (fb - fa)
            x = -g.obj_w + step if i % 2 == 0 else g.width - step
            xi = int(x) & ~1
            return xi < g.width and xi + g.obj_w > 0
    return False


def _runs(flags: Sequence[bool]) -> list[list[int]]:
    """[[first, last], ...] (inclusive) of the True runs."""
    runs: list[list[int]] = []
    for i, f in enumerate(flags):
        if f and (i == 0 or not flags[i - 1]):
            runs.append([i, i])
        elif f:
            runs[-1][1] = i
    return runs


def _scene_filter(g: _Geometry, fps: int) -> str:
    """One frame of the static scene at the target size (coordinates scaled from 1920x1080).

    The sources run at ``fps`` although only one frame is used: the link's frame rate travels down
    the graph, and at 1 fps the ffmpeg CLI would keep only one looped frame per second.
    """
    w, h = g.width, g.height
    sx, sy = w / 1920, h / 1080
    ground_y = _even(600 * sy, 0)

    def box(x: float, y: float, bw: float, bh: float, color: str) -> str:
        return (
            f"drawbox=x={round(x * sx)}:y={round(y * sy)}:w={max(1, round(bw * sx))}:"
            f"h={max(1, round(bh * sy))}:color={color}:t=fill"
        )

    boxes = [
        box(150, 260, 420, 360, "0x8a6f5a"),  # house
        box(120, 230, 480, 40, "0x5a3e2b"),  # roof
        box(760, 330, 300, 290, "0xb9b2a4"),  # shed
        box(1300, 180, 460, 440, "0x6e7782"),  # block of flats
        box(200, 320, 70, 90, "0x2a3440"),
        box(320, 320, 70, 90, "0x2a3440"),
        box(440, 320, 70, 90, "0xd9c27a"),  # lit window
        box(300, 470, 90, 150, "0x3b2a1e"),  # door
        box(800, 380, 60, 60, "0x2a3440"),
        box(950, 380, 60, 60, "0x2a3440"),
        *(
            box(1340 + 100 * c, 220 + 100 * r, 60, 50, "0xdddddd" if (r + c) % 3 == 0 else "0x2a3440")
            for r in range(4)
            for c in range(4)
        ),
        box(0, 780, 1920, 120, "0x55575a"),  # road
        box(0, 836, 1920, 8, "0xe0e0e0"),  # lane marking
    ]
    # The grass texture is a sum of sines instead of geq's random(): random() keeps per-slice state,
    # so its output would depend on the number of filter threads, i.e. on the machine.
    grass = (
        f"color=c=0x4f6b3a:s={w}x{h - ground_y}:r={fps},format=yuv420p,trim=end_frame=1,"
        "geq=lum='lum(X,Y)+22*sin(X/4.1)*cos(Y/2.3)+14*sin(X*0.71+Y*1.37)*sin(X*1.13-Y*0.53)':"
        "cb='cb(X,Y)':cr='cr(X,Y)',gblur=sigma=0.7"
    )
    sky = (
        f"gradients=s={w}x{h}:c0=0x87a8d0:c1=0xdfe9f3:x0={w // 2}:y0=0:x1={w // 2}:y1={ground_y}:"
        f"nb_colors=2:seed=1:r={fps},format=yuv420p,trim=end_frame=1"
    )
    return f"{sky}[sky];{grass}[grass];[sky][grass]overlay=0:{ground_y},{','.join(boxes)},gblur=sigma=0.6"


def _encoder_args(fps: int, gop: int, bitrate: str) -> list[str]:
    # Camera-like H.264: Main profile, no B-frames, fixed closed GOP, no scene-cut keyframes,
    # CBR-ish (maxrate = bitrate). A fast preset keeps the default clips to a couple of seconds.
    return [
        "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", "-pix_fmt", "yuv420p",
        "-bf", "0", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-x264-params", "open-gop=0:scenecut=0",
        "-threads", _X264_THREADS,
        "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate,
        "-r", str(fps), "-fps_mode", "cfr",
        "-an", "-map_metadata", "-1", "-fflags", "+bitexact", "-movflags", "+faststart",
    ]  # fmt: skip


def _run_ffmpeg(args: list[str], dest: Path) -> None:
    """Run ffmpeg writing to a temporary file, then rename it to ``dest`` atomically."""
    if not ffmpeg_available():
        raise MediaError("ffmpeg not found on PATH (Debian: apt-get install ffmpeg)")
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.tmp{dest.suffix}")
    cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args, str(tmp)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0 or not tmp.exists():
            raise MediaError(f"ffmpeg failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json_atomic(dest: Path, data: dict[str, Any]) -> None:
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, dest)


@functools.cache
def _recipe_fingerprint() -> str:
    """This file's source and the ffmpeg version: any change to either means new clips."""
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n")[0]
    return hashlib.sha256(Path(__file__).read_bytes() + version.encode()).hexdigest()


def _params_dir(out_dir: Path, params: dict[str, Any]) -> Path:
    key = json.dumps({**params, "recipe": _recipe_fingerprint()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    name = f"cam_{params['width']}x{params['height']}_{params['fps']}fps_{_fmt(params['duration'])}s_{digest}"
    return out_dir / name


def make_test_media(
    out_dir: str | os.PathLike[str],
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 15,
    duration: float = 30.0,
    motion_windows: Sequence[tuple[float, float]] = DEFAULT_MOTION_WINDOWS,
    gop_seconds: float = 1.0,
    noise: int = 5,
    bitrate: str = "800k",
) -> Path:
    """Make (or reuse) the main clip; returns the path of the MP4 (``motion_truth.json`` beside it).

    ``motion_windows`` are ``(start_s, end_s)`` pairs inside ``[0, duration]``; ``noise`` is the
    strength of ffmpeg's temporal luma noise (0 disables it); ``gop_seconds`` is the keyframe
    interval. Same parameters → same directory → the cached file is returned without running ffmpeg.
    """
    if not ffmpeg_available():
        raise MediaError("ffmpeg not found on PATH (Debian: apt-get install ffmpeg)")
    if width % 2 or height % 2 or width < 64 or height < 64:
        raise ValueError(f"width/height must be even and >= 64, got {width}x{height}")
    if int(fps) != fps or fps <= 0:
        raise ValueError(f"fps must be a positive integer, got {fps}")
    fps = int(fps)
    windows = [(float(a), float(b)) for a, b in motion_windows]
    for a, b in windows:
        if not 0 <= a < b <= duration:
            raise ValueError(f"motion window {(a, b)} not inside [0, {duration}]")
    n_frames = round(duration * fps)
    frame_windows = _frame_windows(windows, fps)
    if any(fb - fa < 2 for fa, fb in frame_windows):
        raise ValueError(f"motion windows must span at least 2 frames at {fps} fps: {windows}")
    if any(frame_windows[i][1] > frame_windows[i + 1][0] for i in range(len(windows) - 1)):
        raise ValueError(f"motion windows must be sorted and not overlap: {windows}")
    gop = max(1, round(gop_seconds * fps))
    params = {
        "version": GENERATOR_VERSION, "width": width, "height": height, "fps": fps,
        "duration": float(duration), "motion_windows": windows, "gop": gop, "noise": int(noise),
        "bitrate": str(bitrate),
    }  # fmt: skip
    entry = _params_dir(Path(out_dir), params)
    main, truth_path = entry / MAIN_NAME, entry / TRUTH_NAME
    if main.is_file() and truth_path.is_file():
        return main
    entry.mkdir(parents=True, exist_ok=True)

    g = _geometry(width, height)
    noise_f = f",noise=c0s={int(noise)}:c0f=t:c0_seed=123457" if noise else ""
    graph = (
        # The scene is rendered once and repeated; setpts makes frame n's time n/fps (the object's
        # position is a function of n, see _object_x_expr).
        f"{_scene_filter(g, fps)},loop=loop=-1:size=1:start=0,setpts=N[bg];"
        f"testsrc2=s={g.obj_w}x{g.obj_h}:r={fps}[obj];"
        f"[bg][obj]overlay=x='{_object_x_expr(g, frame_windows, fps)}':y={g.obj_y}:eval=frame:shortest=0"
        f"{noise_f},format=yuv420p[v]"
    )
    args = [
        "-filter_complex_threads", "1", "-filter_complex", graph, "-map", "[v]",
        "-frames:v", str(n_frames), *_encoder_args(fps, gop, bitrate),
    ]  # fmt: skip
    _run_ffmpeg(args, main)

    visible = [_object_visible(g, frame_windows, n) for n in range(n_frames)]
    truth = {
        "generator": f"tests.support.media v{GENERATOR_VERSION}",
        "width": width,
        "height": height,
        "fps": fps,
        "frames": n_frames,
        "duration_s": n_frames / fps,
        "gop_frames": gop,
        "codec": "H.264 Main, no B-frames, closed GOP, no scene-cut",
        "bitrate": str(bitrate),
        # Seconds since the start of the clip (= since the RTSP session started, see rtsp_server.py).
        "motion_windows_s": [[a, b] for a, b in windows],
        # Inclusive frame ranges in which the object is at least partly on screen (frame n is shown
        # at n/fps s); they lie strictly inside the windows, every other frame is static + noise.
        "motion_frames": _runs(visible),
        "object": {
            "pattern": "testsrc2",
            "size": [g.obj_w, g.obj_h],
            "y": g.obj_y,
            "path": "crosses the full width during each window, alternating left->right / right->left",
        },
        "noise": {"filter": "noise", "strength": int(noise), "temporal": True},
    }
    _write_json_atomic(truth_path, truth)
    return main


def load_truth(media: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``motion_truth.json`` that belongs to a clip (main or sub-stream) made here."""
    data: dict[str, Any] = json.loads((Path(media).parent / TRUTH_NAME).read_text())
    return data


def make_substream(main: str | os.PathLike[str], *, width: int = 320, height: int = 180, bitrate: str = "200k") -> Path:
    """Make (or reuse) a low-resolution copy of ``main`` next to it: same frames, rate and GOP.

    Like a camera's sub-stream, it shows the same picture frame for frame, so the main clip's
    ``motion_truth.json`` applies to it too.
    """
    main = Path(main)
    truth = load_truth(main)
    dest = main.with_name(f"sub_{width}x{height}_{bitrate}.mp4")
    if dest.is_file() and dest.stat().st_mtime_ns >= main.stat().st_mtime_ns:
        return dest
    fps, gop = int(truth["fps"]), int(truth["gop_frames"])
    args = [
        "-i", str(main), "-vf", f"scale={width}:{height}:flags=area", "-threads", _X264_THREADS,
        "-frames:v", str(truth["frames"]), *_encoder_args(fps, gop, bitrate),
    ]  # fmt: skip
    _run_ffmpeg(args, dest)
    return dest


@dataclass(frozen=True)
class CameraMedia:
    """A main clip, its optional sub-stream and the motion ground truth they share."""

    main: Path
    sub: Path | None
    truth: dict[str, Any] = field(repr=False)

    @property
    def dir(self) -> Path:
        return self.main.parent

    @property
    def fps(self) -> int:
        return int(self.truth["fps"])

    @property
    def duration(self) -> float:
        return float(self.truth["duration_s"])

    @property
    def motion_windows(self) -> list[tuple[float, float]]:
        return [(float(a), float(b)) for a, b in self.truth["motion_windows_s"]]

    @property
    def motion_frames(self) -> list[tuple[int, int]]:
        """Inclusive frame ranges that show the moving object (all other frames: static + noise)."""
        return [(int(a), int(b)) for a, b in self.truth["motion_frames"]]

    @property
    def mounts(self) -> dict[str, Path]:
        """Mount table for ``RtspCamera``: ``/cam`` (main) and, if made, ``/cam_sub``."""
        m = {"/cam": self.main}
        if self.sub is not None:
            m["/cam_sub"] = self.sub
        return m

    def in_motion(self, t: float) -> bool:
        """True if second ``t`` of the clip (modulo the loop) lies inside a motion window."""
        t = math.fmod(t, self.duration)
        return any(a <= t <= b for a, b in self.motion_windows)


def make_camera_media(
    out_dir: str | os.PathLike[str],
    *,
    sub_size: tuple[int, int] | None = (320, 180),
    sub_bitrate: str = "200k",
    **main_kwargs: Any,
) -> CameraMedia:
    """Main clip (``make_test_media(out_dir, **main_kwargs)``) plus a sub-stream (``sub_size=None``: none)."""
    main = make_test_media(out_dir, **main_kwargs)
    sub = None
    if sub_size is not None:
        sub = make_substream(main, width=sub_size[0], height=sub_size[1], bitrate=sub_bitrate)
    return CameraMedia(main=main, sub=sub, truth=load_truth(main))
