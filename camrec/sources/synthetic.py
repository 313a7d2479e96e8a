"""The built-in demo camera: a locally generated scene with sensor noise and moving objects.

It produces real H.264 (libx264 from PyAV's FFmpeg) so the demo and the component tests run the
very same record path as an RTSP camera: compressed packets in, remux, encrypt. Nothing is
downloaded; the scene is drawn with numpy from a fixed seed.

Source string: ``synthetic:`` or ``synthetic:?size=640x360&fps=15&motion=4-8,13-16&period=30``
  size    frame size (default 640x360)
  fps     frame rate (default 15)
  motion  seconds (within each period) during which an object crosses the scene
  period  the timeline repeats every `period` seconds (default 30)
  gop     keyframe interval in seconds (default 1)
  bitrate  target kbit/s of the encoder (default 800)
  realtime=0  produce frames as fast as possible (tests); arrival times then follow the frame clock
  bframes  B-frames between references (default 0); with B-frames pts and dts differ
  headers  inband (default: SPS/PPS before every keyframe) or extradata (SPS/PPS only in
           StreamInfo.extradata, Annex B, like cameras that send them only in the RTSP SDP)
  stamp=1  draw the capture wall-clock time into the top rows (camrec.sources.stamp)
"""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any
from urllib.parse import parse_qs, urlsplit

import av
import numpy as np

from camrec.errors import SourceError
from camrec.sources.base import Clock, MediaPacket, StreamInfo, SystemClock
from camrec.sources.stamp import draw_stamp

_NOISE_BANK = 8  # pre-drawn noise fields, cycled: per-frame random draws would cost more than encoding


def parse_synthetic(source: str) -> dict[str, Any]:
    """Options of a `synthetic:` source string; raises SourceError with the bad part named."""
    query = urlsplit(source).query or source.partition("?")[2]
    raw = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    opts: dict[str, Any] = {"width": 640, "height": 360, "fps": 15, "period": 30.0, "gop": 1.0,
                            "motion": [(4.0, 8.0), (13.0, 16.0)], "realtime": True, "bitrate": 800,
                            "bframes": 0, "headers": "inband", "stamp": False}
    try:
        for key, value in raw.items():
            if key == "size":
                w, h = value.lower().split("x")
                opts["width"], opts["height"] = int(w) // 2 * 2, int(h) // 2 * 2
            elif key in ("fps", "bitrate", "bframes"):
                opts[key] = int(value)
            elif key in ("period", "gop"):
                opts[key] = float(value)
            elif key == "motion":
                windows = []
                for part in filter(None, value.split(",")):
                    a, b = part.split("-")
                    windows.append((float(a), float(b)))
                opts["motion"] = windows
            elif key in ("realtime", "stamp"):
                opts[key] = value not in ("0", "false", "no")
            elif key == "headers":
                if value not in ("inband", "extradata"):
                    raise ValueError("headers must be inband or extradata")
                opts["headers"] = value
            else:
                raise ValueError(f"unknown option {key!r}")
    except ValueError as exc:
        raise SourceError(f"bad synthetic source {source!r}: {exc}",
                          hint="example: synthetic:?size=640x360&fps=15&motion=4-8,13-16") from None
    if not (16 <= opts["width"] <= 4096 and 16 <= opts["height"] <= 4096 and 1 <= opts["fps"] <= 60):
        raise SourceError(f"bad synthetic source {source!r}: size or fps out of range")
    if not 0 <= opts["bframes"] <= 16:
        raise SourceError(f"bad synthetic source {source!r}: bframes must be 0 to 16")
    if opts["stamp"] and opts["width"] < 384:
        raise SourceError(f"bad synthetic source {source!r}: stamp=1 needs a frame at least 384 wide")
    return opts


class SyntheticScene:
    """Draws frames (Y, U, V planes) of a static textured scene with noise and a crossing object."""

    def __init__(self, width: int, height: int, fps: int, motion: list[tuple[float, float]],
                 period: float, seed: int = 7) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.motion, self.period = motion, period
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        # Sky gradient above, textured ground below, a few "buildings": enough structure for a
        # realistic bitrate and for the detector to have edges that noise must not trigger on.
        y = 170 - 60 * yy / height + 0 * xx
        ground = yy > height * 0.6
        y[ground] = 90 + 12 * np.sin(xx[ground] / 7) * np.cos(yy[ground] / 4)
        for i in range(5):
            x0 = int(width * (0.05 + 0.19 * i))
            top = int(height * (0.25 + 0.07 * (i % 3)))
            y[top:int(height * 0.6), x0:x0 + int(width * 0.12)] = 60 + 25 * i
        y += rng.normal(0, 4, size=y.shape)  # fixed texture
        self.y = np.clip(y, 0, 255).astype(np.uint8)
        self.u = np.full((height // 2, width // 2), 120, np.uint8)
        self.v = np.full((height // 2, width // 2), 132, np.uint8)
        self.noise = [rng.normal(0, 3, size=(height, width)).astype(np.int16) for _ in range(_NOISE_BANK)]
        obj_h, obj_w = height // 3, max(8, width // 10)
        checker = ((np.indices((obj_h, obj_w)) // 6).sum(axis=0) % 2).astype(np.uint8)
        self.object = (40 + 170 * checker).astype(np.uint8)

    def object_x(self, t: float) -> int | None:
        """Left edge of the object at stream time t, or None when no object is in view."""
        local = t % self.period if self.period > 0 else t
        for start, end in self.motion:
            if start <= local < end:
                span = self.width + self.object.shape[1]
                return int(-self.object.shape[1] + (local - start) / (end - start) * span)
        return None

    def frame(self, index: int, stamp_ms: int | None = None) -> av.VideoFrame:
        t = index / self.fps
        y = self.y.astype(np.int16) + self.noise[index % _NOISE_BANK]
        x = self.object_x(t)
        if x is not None:
            oh, ow = self.object.shape
            top = int(self.height * 0.5)
            a, b = max(0, x), min(self.width, x + ow)
            if a < b:
                y[top:top + oh, a:b] = self.object[: self.height - top, a - x:b - x]
        if stamp_ms is not None:
            draw_stamp(y, stamp_ms)
        planes = np.concatenate([np.clip(y, 0, 255).astype(np.uint8).ravel(), self.u.ravel(), self.v.ravel()])
        frame = av.VideoFrame.from_ndarray(planes.reshape(self.height * 3 // 2, self.width), format="yuv420p")
        frame.pts = index
        return frame


class SyntheticSource:
    def __init__(self, source: str, *, generation: int = 0, clock: Clock | None = None) -> None:
        self.opts = parse_synthetic(source)
        self.generation = generation
        self.clock = clock or SystemClock()
        self._encoder: Any = None
        self._pending: list[Any] = []
        self._index = 0
        self._t0 = 0.0
        self.info: StreamInfo | None = None
        self.scene: SyntheticScene | None = None

    def open(self) -> StreamInfo:
        o = self.opts
        self.scene = SyntheticScene(o["width"], o["height"], o["fps"], o["motion"], o["period"])
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height, enc.pix_fmt = o["width"], o["height"], "yuv420p"
        enc.time_base = Fraction(1, o["fps"])
        enc.framerate = Fraction(o["fps"])
        gop = max(1, round(o["gop"] * o["fps"]))
        enc.gop_size = gop
        enc.max_b_frames = o["bframes"]
        enc.bit_rate = self.opts["bitrate"] * 1000
        # Like a camera: fixed GOP, no B-frames unless asked, and SPS/PPS in-band before every
        # IDR unless asked to keep them in the extradata only (GLOBAL_HEADER makes libx264 write
        # them there, Annex B, and stop repeating them).
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0"
        if o["headers"] == "inband":
            params += ":repeat-headers=1"
        else:
            enc.flags |= av.codec.context.Flags.global_header
        if o["bframes"]:
            # zerolatency turns B-frames off; x264-params are applied after the tune.
            params += f":bframes={o['bframes']}:b-adapt=0"
        enc.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": params}
        try:
            enc.open()
        except av.error.FFmpegError as exc:
            raise SourceError(f"cannot start the synthetic camera's encoder: {exc}") from None
        self._encoder = enc
        self._t0 = self.clock.monotonic()
        self.info = StreamInfo(codec="h264", width=o["width"], height=o["height"],
                               time_base=Fraction(1, o["fps"]), fps=float(o["fps"]),
                               extradata=bytes(enc.extradata or b"") or None if o["headers"] == "extradata" else None,
                               generation=self.generation)
        return self.info

    def read(self) -> MediaPacket | None:
        assert self.scene is not None and self.info is not None, "open() first"
        while not self._pending:
            if self.opts["realtime"]:
                delay = self._t0 + self._index / self.opts["fps"] - self.clock.monotonic()
                if delay > 0:
                    time.sleep(delay)
            stamp = round(self.clock.time() * 1000) if self.opts["stamp"] else None
            self._pending.extend(self._encoder.encode(self.scene.frame(self._index, stamp)))
            self._index += 1
        packet = self._pending.pop(0)
        pts = int(packet.pts)
        arrival = self.clock.monotonic() if self.opts["realtime"] else self._t0 + pts / self.opts["fps"]
        return MediaPacket(data=bytes(packet), pts=pts, dts=int(packet.dts if packet.dts is not None else pts),
                           duration=1, keyframe=bool(packet.is_keyframe), arrival=arrival, stream=self.info)

    def close(self) -> None:
        self._encoder = None
        self._pending.clear()
