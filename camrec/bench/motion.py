"""`camrec bench motion --data DIR`: the motion detector on labelled footage, against baselines.

For every sequence under DIR (see camrec/bench/motion_support/scoring.py for the layout and the
scoring rules) this runs camrec's detection path (`camrec.motion.input.DetectionRun`, the same
worker as `camrec run`) with the default motion settings — exactly what a camera without a
`motion:` section gets — and, on the very same grey frames, OpenCV's MOG2 and a plain frame
difference. It prints event recall, false events per hour of motion-free footage and frame-level
precision/recall/F1 for each, then the detector's per-frame cost at 640x360 (median and p95) next
to the baselines' cost measured in the same run (each detector timed over every frame of each
sequence, scaled to 640x360, in a loop of its own).

Every input frame is analysed, at the sequence's own rate (a video's frame rate; ``--fps`` for
image directories, default 15), not at the daemon's ``detect_fps``: the detector's time constants
are in seconds, so it behaves the same at either rate, and labels exist for every frame.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from camrec.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("motion", help="motion detector vs. MOG2 and frame differencing on labelled footage",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--data", required=True, metavar="DIR", help="the labelled footage (labels/, CDnet2014/, …)")
    s.add_argument("--fps", type=float, default=15.0, help="frame rate of image sequences (default 15)")
    s.add_argument("--only", action="append", metavar="NAME",
                   help="run only sequences whose name contains NAME (repeatable)")
    s.add_argument("--no-speed", action="store_true", help="skip the 640x360 timing pass")
    s.add_argument("--unlabelled", action="store_true",
                   help="also run the unlabelled videos (frames with motion, events; no scores)")
    s.add_argument("--perturb", metavar="NAMES",
                   help="also run perturbed copies: comma-separated from noise, flicker, drift, jitter, rain")
    s.add_argument("--rate", type=float, metavar="FPS",
                   help="also run at this analysis rate (e.g. 5, the daemon's detect_fps), decisions held between")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout instead of tables")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from camrec.bench.motion_support import runner

    data = Path(args.data)
    if not data.is_dir():
        raise UsageError(f"no such directory: {data}", hint="--data takes the directory holding labels/")
    if not args.fps > 0:
        raise UsageError(f"--fps must be positive, got {args.fps:g}")
    if args.rate is not None and not args.rate > 0:
        raise UsageError(f"--rate must be positive, got {args.rate:g}")
    perturb = [p.strip() for p in args.perturb.split(",") if p.strip()] if args.perturb else []
    report = runner.run_all(data, image_fps=args.fps, only=args.only, speed=not args.no_speed,
                            unlabelled=args.unlabelled, progress=sys.stderr.isatty() and not args.json,
                            perturb=perturb, rate=args.rate)
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        print_report(report)
    return 0


def _f(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def _rows(name: str, detectors: dict[str, Any], width: int) -> list[str]:
    rows = []
    for i, (det, s) in enumerate(detectors.items()):
        label = name if i == 0 else ""
        rows.append(f"{label:<{width}} {det:<10} {s['frames']:>6} {s['events_found']:>3}/{s['events']:<3} "
                    f"{_f(s['event_recall'], 2):>6} {s['false_events']:>5} {s['motion_free_s']:>7.1f} "
                    f"{s['false_events_per_hour']:>8.1f} {_f(s['precision']):>6} {_f(s['recall']):>6} "
                    f"{_f(s['f1'], 4):>6}")
    return rows


def _header(first: str, width: int) -> str:
    return (f"{first:<{width}} {'detector':<10} {'frames':>6} {'events':>7} {'recall':>6} {'false':>5} "
            f"{'free s':>7} {'false/h':>8} {'P':>6} {'R':>6} {'F1':>6}")


def print_report(report: dict[str, Any]) -> None:
    labelled = [s for s in report["sequences"] if s.get("labelled")]
    width = max([26, *(len(s["name"]) + 1 for s in labelled)])
    header = _header("sequence", width)
    print(header)
    print("-" * len(header))
    for seq in labelled:
        print("\n".join(_rows(seq["name"], seq["detectors"], width)))
    variants = [(f"{seq['name']} {v}", d) for seq in labelled for v, d in seq.get("variants", {}).items()]
    if variants:
        vwidth = max(len(name) for name, _ in variants) + 1
        header = _header("variant", vwidth)
        print()
        print(header)
        print("-" * len(header))
        for name, detectors in variants:
            print("\n".join(_rows(name, detectors, vwidth)))
    unlabelled = [s for s in report["sequences"] if not s.get("labelled")]
    if unlabelled:
        print()
        print(f"{'unlabelled video':<48} {'detector':<10} {'frames':>6} {'motion %':>8} {'events':>6}")
        for seq in unlabelled:
            for i, (name, s) in enumerate(seq["detectors"].items()):
                label = seq["name"] if i == 0 else ""
                print(f"{label:<48} {name:<10} {s['frames']:>6} {100 * s['motion_fraction']:>8.1f} "
                      f"{len(s['detected_events']):>6}")
    summary = report.get("summary")
    if summary:
        print()
        for line in summary:
            print(line)
    speed = report.get("speed")
    if speed:
        print()
        print(f"per-frame cost at {speed['size']} on {speed['frames']} frames of the sequences above "
              f"(the detector alone, decoding and scaling excluded):")
        for name, s in speed["detectors"].items():
            ratio = f"  ({s['ratio_to_camrec']:.2f}x camrec)" if name != "camrec" else ""
            print(f"  {name:<10} median {s['median_ms']:.3f} ms   p95 {s['p95_ms']:.3f} ms   "
                  f"mean {s['mean_ms']:.3f} ms{ratio}")
    print()
    for line in report["notes"]:
        print(f"note: {line}")
