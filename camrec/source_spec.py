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


# --- V4L2 (USB) devices -----------------------------------------------------------------------

V4L2_HELP = ("e.g. source: /dev/v4l/by-id/usb-…-video-index0?input_format=mjpeg&video_size=1280x720"
             "&framerate=15 (options: input_format h264|mjpeg|yuyv422, video_size, framerate, "
             "bitrate kbit/s, encoder auto|libx264|v4l2m2m)")
V4L2_FORMATS = ("h264", "mjpeg", "yuyv422")
V4L2_ENCODERS = ("auto", "libx264", "v4l2m2m")


def is_v4l2(source: str) -> bool:
    return source.startswith(("/dev/video", "/dev/v4l/"))


@dataclass(frozen=True)
class V4l2Options:
    device: str
    input_format: str | None = None  # None: the driver's default
    width: int | None = None
    height: int | None = None
    framerate: int | None = None
    bitrate: int = 2000  # kbit/s of camrec's own H.264 encode (MJPEG/YUYV cameras)
    encoder: str = "auto"  # auto: h264_v4l2m2m when a test encode proves it, else libx264

    def demuxer_options(self) -> dict[str, str]:
        """Options for FFmpeg's v4l2 demuxer (av.open(..., format="v4l2", options=...))."""
        options: dict[str, str] = {}
        if self.input_format:
            options["input_format"] = self.input_format
        if self.width and self.height:
            options["video_size"] = f"{self.width}x{self.height}"
        if self.framerate:
            options["framerate"] = str(self.framerate)
        return options


def parse_v4l2(source: str) -> V4l2Options:
    """A V4L2 source string: a device path, then optional `?key=value&…` options."""
    device, _, query = source.partition("?")
    if not is_v4l2(device):
        raise ValueError(f"{device!r} is not a V4L2 device path")
    pairs = parse_qs(query, keep_blank_values=True)
    fields: dict[str, object] = {}
    for key, values in pairs.items():
        value = values[-1].strip().lower()
        if key == "input_format":
            value = {"yuyv": "yuyv422", "mjpg": "mjpeg"}.get(value, value)
            if value not in V4L2_FORMATS:
                raise ValueError(f"input_format must be one of {', '.join(V4L2_FORMATS)}, got {value!r}")
            fields["input_format"] = value
        elif key == "video_size":
            w, sep, h = value.partition("x")
            if not (sep and w.isdigit() and h.isdigit()) or not (16 <= int(w) <= 8192 and 16 <= int(h) <= 8192):
                raise ValueError(f"video_size must be WIDTHxHEIGHT, got {value!r}")
            fields["width"], fields["height"] = int(w), int(h)
        elif key == "framerate":
            if not value.isdigit() or not 1 <= int(value) <= 120:
                raise ValueError(f"framerate must be a whole number from 1 to 120, got {value!r}")
            fields["framerate"] = int(value)
        elif key == "bitrate":
            if not value.isdigit() or not 100 <= int(value) <= 50000:
                raise ValueError(f"bitrate must be kbit/s from 100 to 50000, got {value!r}")
            fields["bitrate"] = int(value)
        elif key == "encoder":
            if value not in V4L2_ENCODERS:
                raise ValueError(f"encoder must be one of {', '.join(V4L2_ENCODERS)}, got {value!r}")
            fields["encoder"] = value
        else:
            raise ValueError(f"unknown V4L2 option {key!r} (known: input_format, video_size, framerate, "
                             "bitrate, encoder)")
    if query and not pairs:
        raise ValueError(f"cannot read the V4L2 options {query!r}")
    return V4l2Options(device=device, **fields)  # type: ignore[arg-type]
