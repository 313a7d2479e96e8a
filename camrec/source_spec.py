"""Parsing of the command-based source strings, shared by the config validator and the sources.

`exec:<command line>` and `picamera:[?size=WxH&fps=F&camera=N]` are checked the same way when the
config is loaded (so a typo is a config error naming the line) and when the source starts.
Pure and stdlib only (a foundation module): errors are ValueError with a message fit for the owner.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from urllib.parse import parse_qs

EXEC_PREFIX = "exec:"
PICAMERA_PREFIX = "picamera:"
EXEC_HELP = 'e.g. source: "exec:/usr/bin/rpicam-vid -t 0 -n --inline --codec h264 -o -"'
PICAMERA_HELP = "e.g. source: picamera:?size=1280x720&fps=15"


def split_exec(source: str) -> list[str]:
    """The argument list of an `exec:` source, split like a POSIX shell would (never run by one)."""
    command = source[len(EXEC_PREFIX):].strip()
    if not command:
        raise ValueError("exec: needs a command line after the colon")
    try:
        argv = shlex.split(command)
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise ValueError(f"cannot split the exec: command line ({exc})") from None
    if not argv:
        raise ValueError("exec: needs a command line after the colon")
    program = argv[0]
    if "/" in program and not program.startswith("/"):
        raise ValueError(f"the program {program!r} must be an absolute path or a name found on PATH")
    return argv


@dataclass(frozen=True)
class PicameraOptions:
    width: int = 1280
    height: int = 720
    fps: int = 15
    camera: int | None = None  # rpicam-vid --camera N (several camera ports, e.g. on a Pi 5)


def parse_picamera(source: str) -> PicameraOptions:
    """Options of a `picamera:` source string: size (WxH), fps, camera (index)."""
    rest = source[len(PICAMERA_PREFIX):]
    if rest and not rest.startswith("?"):
        raise ValueError(f"options of picamera: start with '?', got {rest!r}")
    query = rest[1:]
    pairs = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    width, height, fps, camera = PicameraOptions.width, PicameraOptions.height, PicameraOptions.fps, None
    for key, values in pairs.items():
        value = values[-1]
        if key == "size":
            w, sep, h = value.lower().partition("x")
            if not (sep and w.isdigit() and h.isdigit()):
                raise ValueError(f"size must be WIDTHxHEIGHT, got {value!r}")
            width, height = int(w), int(h)
            if not (64 <= width <= 4096 and 64 <= height <= 4096) or width % 2 or height % 2:
                raise ValueError(f"size {value!r} is out of range (even numbers from 64 to 4096)")
        elif key == "fps":
            if not value.isdigit() or not 1 <= int(value) <= 120:
                raise ValueError(f"fps must be a whole number from 1 to 120, got {value!r}")
            fps = int(value)
        elif key == "camera":
            if not value.isdigit() or not 0 <= int(value) <= 7:
                raise ValueError(f"camera must be a camera index from 0 to 7, got {value!r}")
            camera = int(value)
        else:
            raise ValueError(f"unknown picamera option {key!r} (known: size, fps, camera)")
    if query and not pairs:
        raise ValueError(f"cannot read the picamera options {query!r}")
    return PicameraOptions(width=width, height=height, fps=fps, camera=camera)
