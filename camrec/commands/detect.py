"""`camrec detect INPUT`: the daemon's motion detector over a recorded clip, images or a stream.

Owners use it to tune threshold, min_area, zones and masks on footage of their own camera before
trusting the daemon with them. It runs the same code as `camrec run` (camrec.motion.input wraps
the daemon's DetectionWorker) with the motion settings of a configured camera (`-c CONFIG
--camera NAME`) or the defaults, overridden by flags, and prints the resulting events (and with
`--frames` every frame's score and decision); `--json` prints one JSON object instead.

Every input frame is analysed (the daemon analyses about detect_fps of them; the detector's time
constants are in seconds, so the decisions match). Frame indices are 0-based in input order;
times are seconds from the first frame (index / frame rate for files and images).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from camrec.errors import UsageError

ORDER = 35

_FLAG_OF = {"threshold": "--threshold", "min_area": "--min-area", "min_frames": "--min-frames",
            "detect_width": "--width", "zones": "--zone", "masks": "--mask"}


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "detect", help="run the motion detector over a video file, a directory of images or an RTSP URL",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("input", metavar="INPUT", help="video file, directory of images (file-name order) or rtsp:// URL")
    s.add_argument("-c", "--config", metavar="CONFIG", help="take the motion settings of a camera in this config")
    s.add_argument("--camera", metavar="NAME", help="which camera of CONFIG (needed if it has several)")
    s.add_argument("--threshold", type=int, metavar="N", help="per-pixel luma change that counts, 1..255")
    s.add_argument("--min-area", type=float, metavar="F", help="fraction of the watched area that must move")
    s.add_argument("--min-frames", type=int, metavar="N", help="frames (at detect_fps) motion must last")
    s.add_argument("--width", type=int, metavar="PX", help="detection width (detect_width)")
    s.add_argument("--zone", action="append", metavar="POLYGON",
                   help='only motion inside counts, e.g. "0.1,0.1 0.5,0.1 0.5,0.9" (repeatable; replaces '
                        "the camera's zones)")
    s.add_argument("--mask", action="append", metavar="POLYGON",
                   help="motion inside is ignored (repeatable; replaces the camera's masks)")
    s.add_argument("--fps", type=float, metavar="FPS",
                   help="frame rate of an image directory (default 15; video files have their own)")
    s.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames (e.g. for a live stream)")
    s.add_argument("--duration", type=float, metavar="S", help="stop after S seconds of input")
    s.add_argument("--frames", action="store_true", help="also print one line per frame")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    s.set_defaults(func=run)


def parse_polygon(text: str, flag: str) -> tuple[tuple[float, float], ...]:
    """ "x,y x,y x,y" (fractions of the frame) → points; the model checks ranges and shape."""
    points = []
    for part in text.replace(";", " ").split():
        try:
            x, y = part.split(",")
            points.append((float(x), float(y)))
        except ValueError:
            raise UsageError(f"bad {flag} {text!r}: {part!r} is not a point x,y",
                             hint='write points as x,y fractions of the frame: "0.1,0.1 0.5,0.1 0.5,0.9"') from None
    return tuple(points)


def motion_settings(args: argparse.Namespace) -> Any:
    """The camera's (or default) motion settings with the flags applied, validated like a config."""
    from pydantic import ValidationError

    from camrec.commands.common import load_config
    from camrec.config import MotionSettings

    values: dict[str, Any] = {}
    if args.config:
        config = load_config(args.config)
        names = list(config.cameras)
        name = args.camera
        if name is None:
            if len(names) != 1:
                raise UsageError(f"{args.config} has {len(names)} cameras; pick one with --camera",
                                 hint="cameras: " + ", ".join(names))
            name = names[0]
        if name not in config.cameras:
            raise UsageError(f"no camera named {name!r} in {args.config}", hint="cameras: " + ", ".join(names))
        values = config.cameras[name].motion.model_dump()
    elif args.camera:
        raise UsageError("--camera needs -c CONFIG")
    for field, value in (("threshold", args.threshold), ("min_area", args.min_area),
                         ("min_frames", args.min_frames), ("detect_width", args.width)):
        if value is not None:
            values[field] = value
    if args.zone:
        values["zones"] = [parse_polygon(z, "--zone") for z in args.zone]
    if args.mask:
        values["masks"] = [parse_polygon(m, "--mask") for m in args.mask]
    try:
        return MotionSettings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err.get("loc", ())
        field = str(loc[0]) if loc else ""
        where = _FLAG_OF.get(field, field)
        if len(loc) > 1 and field in ("zones", "masks"):
            where += f" #{int(loc[1]) + 1}"
        raise UsageError(f"bad {where}: {err.get('msg', 'invalid value')}") from None


def run(args: argparse.Namespace) -> int:
    from camrec.motion.input import DetectionRun

    for flag, value in (("--fps", args.fps), ("--duration", args.duration)):
        if value is not None and not value > 0:
            raise UsageError(f"{flag} must be positive, got {value:g}")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1, got {args.max_frames}")
    settings = motion_settings(args)
    detection = DetectionRun(args.input, settings, fps=args.fps, max_frames=args.max_frames, duration=args.duration)
    frames: list[dict[str, Any]] = []
    interrupted = False
    stream_lines = args.frames and not args.json
    try:
        for f in detection:
            r = f.result
            entry: dict[str, Any] = {"index": f.index, "t": round(f.t, 3), "motion": r.motion,
                                     "score": round(r.score, 5), "active": r.active}
            if r.lighting_change:
                entry["lighting"] = True
            if r.boxes:
                entry["boxes"] = [[round(v, 4) for v in b] for b in r.boxes]
            frames.append(entry)
            if stream_lines:
                _print_frame(entry)
    except KeyboardInterrupt:  # a live stream runs until stopped: report what was seen
        interrupted = True
    events = find_events(frames)
    summary = {"input": args.input, "kind": detection.kind, "fps": round(detection.fps, 3),
               "settings": settings.model_dump(mode="json"), "frames": frames, "events": events}
    if interrupted:
        summary["interrupted"] = True
    if args.json:
        json.dump(summary, sys.stdout)
        print()
    else:
        _print_summary(summary)
    return 0


def find_events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of frames whose decision is motion, with their peak score."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for f in frames:
        if f["motion"]:
            if current is None:
                current = {"start_frame": f["index"], "start_s": f["t"], "peak_score": 0.0}
                events.append(current)
            current["end_frame"], current["end_s"] = f["index"], f["t"]
            current["peak_score"] = max(current["peak_score"], f["score"])
        else:
            current = None
    return events


def _print_frame(f: dict[str, Any]) -> None:
    flags = ("motion" if f["motion"] else "-") + (" lighting" if f.get("lighting") else "")
    print(f"{f['index']:>7} {f['t']:>9.3f}s  score {f['score']:.4f}  {flags}", flush=True)


def _print_summary(s: dict[str, Any]) -> None:
    frames, events = s["frames"], s["events"]
    st = s["settings"]
    print(f"{s['input']}: {len(frames)} frames at {s['fps']:g} fps ({s['kind']})"
          + ("; stopped early" if s.get("interrupted") else ""))
    print(f"settings: threshold {st['threshold']}, min_area {st['min_area']:g}, min_frames {st['min_frames']}, "
          f"detect_width {st['detect_width']}, zones {len(st['zones'])}, masks {len(st['masks'])}")
    moving = sum(1 for f in frames if f["motion"])
    share = 100.0 * moving / len(frames) if frames else 0.0
    print(f"{len(events)} event(s); motion in {moving} of {len(frames)} frames ({share:.1f} %)")
    for i, e in enumerate(events, 1):
        length = e["end_s"] - e["start_s"]
        print(f"  {i:>3}  frames {e['start_frame']}-{e['end_frame']}  {e['start_s']:.2f}s-{e['end_s']:.2f}s "
              f"({length:.2f} s)  peak score {e['peak_score']:.4f}")
