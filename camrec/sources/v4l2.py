"""USB (V4L2) cameras through PyAV's v4l2 demuxer.

Source string: a device path, `/dev/v4l/by-id/usb-…-video-index0` (stable across re-plugs; by-path
is the fallback) or `/dev/videoN`, with optional options (camrec.source_spec.parse_v4l2):
`?input_format=mjpeg&video_size=1280x720&framerate=15&bitrate=2000&encoder=auto`.

- The device is resolved at every open: a re-plugged camera gets a new /dev/videoN, and a by-id
  symlink follows it. Only capture nodes are used: the resolved node's sysfs `index` must be 0 (UVC
  cameras also create a metadata node, `-index1`, that gives no video).
- H.264 cameras: packets are copied. MJPEG/YUYV cameras: frames are decoded and encoded here to
  H.264 (libx264 ultrafast/zerolatency, yuv420p (UVC MJPEG is 4:2:2), a 1 s GOP, no B-frames,
  `bitrate` kbit/s), or with `h264_v4l2m2m` (the Pi 4's hardware encoder) when a one-second test
  encode at start proves it works and writes codec headers.
- Timestamps: the device's, when they increase; otherwise the arrival time.
- Device trouble (errno) is a SourceError with one line and a hint; the capture loop reopens.
- The demux runs in a reader thread: a read blocked in the driver (FFmpeg's interrupt callback is
  not checked inside VIDIOC_DQBUF) makes read() give up after `read_timeout` (the watchdog), and the
  capture loop reopens.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.video.frame import PictureType

from camrec.errors import SourceError
from camrec.source_spec import V4L2_HELP, V4l2Options, parse_v4l2
from camrec.sources.base import Clock, MediaPacket, StreamInfo, SystemClock
from camrec.sources.command import parameter_sets

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
TICKS = 90000
SYS_ROOT = Path("/sys/class/video4linux")
V4L_ROOT = Path("/dev/v4l")
INBOX_DEPTH = 64  # demuxed packets waiting for read(): a few seconds of video
_EOF = object()

# opener(device, options, open_timeout, read_timeout) -> an opened PyAV input container
Opener = Callable[[str, dict[str, str], float, float], Any]

_hinted: set[str] = set()  # /dev/videoN paths already told to use their by-id name
_m2m_verdict: dict[tuple[int, int], bool] = {}  # (width, height) -> did the test encode work


def default_opener(device: str, options: dict[str, str], open_timeout: float, read_timeout: float) -> Any:
    return av.open(device, format="v4l2", options=options, timeout=(open_timeout, read_timeout))


def stable_name(node: str, v4l_root: Path = V4L_ROOT) -> str | None:
    """The /dev/v4l/by-id (else by-path) symlink that points at `node`, if there is one."""
    real = os.path.realpath(node)
    for kind in ("by-id", "by-path"):
        folder = v4l_root / kind
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            if os.path.realpath(folder / name) == real:
                return str(folder / name)
    return None


def resolve_device(path: str, *, sys_root: Path = SYS_ROOT, v4l_root: Path = V4L_ROOT) -> str:
    """The /dev/videoN node `path` names now; SourceError when it is missing or not a capture node."""
    if not os.path.exists(path):  # follows symlinks: a by-id link whose camera is unplugged
        raise SourceError(f"{path}: no such device (unplugged?); waiting for it to be plugged in",
                          hint="check the cable; `ls -l /dev/v4l/by-id/` lists the cameras present")
    real = os.path.realpath(path)
    name = os.path.basename(real)
    index_file = sys_root / name / "index"
    try:
        index = index_file.read_text().strip()
    except OSError:
        index = ""  # no sysfs here (a container): trust the configured node
    if index and index != "0":
        raise SourceError(f"{path} ({real}) is not a capture node (a UVC metadata node, index {index})",
                          hint="use the camera's …-video-index0 name")
    if not os.path.islink(path) and path not in _hinted:  # /dev/videoN itself: may change on re-plug
        stable = stable_name(real, v4l_root)
        if stable:
            _hinted.add(path)
            log.info("%s is also %s: use that name in the config, it survives re-plugging "
                     "(a re-plugged camera may get another /dev/videoN)", path, stable)
    return real


def error_for(device: str, exc: BaseException, *, reading: bool = False) -> SourceError:
    """A one-line SourceError for an errno from opening or reading a device."""
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT:
        return SourceError(f"{device}: no such device (unplugged?); waiting for it to be plugged in",
                           hint="check the cable; `ls -l /dev/v4l/by-id/` lists the cameras present")
    if code == errno.EBUSY:
        return SourceError(f"{device} is in use by another program",
                           hint="stop the other program (`fuser -v " + device + "` names it)")
    if code == errno.ENODEV or (code == errno.EIO and reading):
        return SourceError(f"{device} was unplugged (or lost power); waiting for it to come back",
                           hint="a USB camera needs a good cable and enough power (a powered hub helps)")
    if code == errno.EACCES or code == errno.EPERM:
        return SourceError(f"{device}: permission denied", hint="add the camrec user to the video group")
    if code == errno.ENOTTY:
        return SourceError(f"{device} is not a video capture device", hint=V4L2_HELP)
    if code == errno.EINVAL:
        return SourceError(f"{device} refused the format, size or frame rate asked for",
                           hint="`v4l2-ctl --list-formats-ext -d " + device + "` lists what it offers; "
                                "or leave out input_format/video_size/framerate")
    what = "reading" if reading else "cannot open"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return SourceError(f"{what} {device}: {text}")


def _annexb_has_sps(data: bytes) -> bool:
    return any(part[:1] and part[0] & 0x1F == 7 for part in bytes(data).split(b"\0\0\1")[1:])


def v4l2m2m_works(width: int, height: int, fps: int) -> bool:
    """A one-second test encode with h264_v4l2m2m: packets come out and a keyframe has an SPS."""
    key = (width, height)
    if key in _m2m_verdict:
        return _m2m_verdict[key]
    ok = False
    try:
        enc: Any = av.CodecContext.create("h264_v4l2m2m", "w")
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.time_base = Fraction(1, fps)
        enc.framerate = Fraction(fps)
        enc.gop_size = fps
        enc.bit_rate = 1_000_000
        enc.open()
        packets: list[Any] = []
        for i in range(fps):
            frame = av.VideoFrame(width, height, "yuv420p")
            frame.pts = i
            packets += enc.encode(frame)
        packets += enc.encode(None)
        ok = bool(packets) and any(p.is_keyframe and _annexb_has_sps(bytes(p)) for p in packets)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        log.debug("h264_v4l2m2m test encode failed: %s", exc)
    _m2m_verdict[key] = ok
    log.info("hardware H.264 encoder h264_v4l2m2m: %s", "works, using it" if ok else "not usable; using libx264")
    return ok


class V4l2Source:
    """A V4L2 capture device as a camera stream (compressed H.264 packets out)."""

    def __init__(self, source: str, *, open_timeout: float = 10.0, read_timeout: float = 5.0,
                 generation: int = 0, clock: Clock | None = None, opener: Opener | None = None,
                 sys_root: Path = SYS_ROOT, v4l_root: Path = V4L_ROOT,
                 resolver: Callable[[str], str] | None = None) -> None:
        try:
            self.opts: V4l2Options = parse_v4l2(source)
        except ValueError as exc:
            raise SourceError(f"bad V4L2 source {source!r}: {exc}", hint=V4L2_HELP) from None
        self.source = source
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.generation = generation
        self.clock = clock or SystemClock()
        self.opener = opener or default_opener
        self.resolver = resolver or (lambda path: resolve_device(path, sys_root=sys_root, v4l_root=v4l_root))
        self.device = self.opts.device
        self.info: StreamInfo | None = None
        self.encoder_name: str | None = None  # None: packets are copied
        self._container: Any = None
        self._stream: Any = None
        self._inbox: queue.Queue[tuple[Any, float]] | None = None
        self._reader_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._encoder: Any = None
        self._decoder: Any = None
        self._headers = b""  # the encoder's last SPS/PPS (Annex B)
        self._pending: deque[Any] = deque()
        self._ticks = TICKS // 15
        self._origin: float | None = None  # device seconds of the first frame
        self._arrival0 = 0.0
        self._use_arrival = False
        self._last_pts = -1
        self._frame_pts: dict[int, float] = {}  # encoder pts -> arrival

    # --- open -------------------------------------------------------------------------------

    def open(self) -> StreamInfo:
        node = self.resolver(self.device)
        try:
            self._container = self.opener(node, self.opts.demuxer_options(), self.open_timeout, self.read_timeout)
        except av.error.ExitError:
            raise SourceError(f"{self.device}: no answer within {self.open_timeout:g} s",
                              hint="unplug and re-plug the camera") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise error_for(self.device, exc) from None
        try:
            return self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> StreamInfo:
        videos = self._container.streams.video
        if not videos:
            raise SourceError(f"{self.device} gives no video stream")
        stream = self._stream = videos[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate and 0 < float(rate) <= 240 else float(self.opts.framerate or 15)
        self._ticks = max(1, round(TICKS / fps))
        width, height = ctx.width, ctx.height
        if not (width and height):
            raise SourceError(f"{self.device} did not say its frame size")
        extradata: bytes | None = None
        if ctx.name == "h264":
            extradata = bytes(ctx.extradata) if ctx.extradata else None
        else:
            self._decoder = self._make_decoder(ctx)
            self._encoder = self._make_encoder(width, height, max(1, round(fps)))
        self.info = StreamInfo(codec="h264", width=width, height=height, time_base=TIME_BASE, fps=fps,
                               extradata=extradata, generation=self.generation)
        self._inbox = queue.Queue(maxsize=INBOX_DEPTH)
        self._reader_thread = threading.Thread(
            target=self._reader, args=(self._container, self._container.demux(stream), self._inbox, self._stop),
            name=f"v4l2-{os.path.basename(self.device)}", daemon=True)
        self._container = None  # the reader closes it
        self._reader_thread.start()
        log.debug("%s: %s %dx%d @ %.3g fps, %s", self.device, ctx.name, width, height, fps,
                  f"encoded with {self.encoder_name}" if self.encoder_name else "copied")
        return self.info

    def _make_decoder(self, ctx: Any) -> Any:
        """A decoder of our own: the container (and its codec contexts) is closed by the reader
        thread, which must not pull the decoder from under read()."""
        try:
            dec: Any = av.CodecContext.create(ctx.name, "r")
            dec.width, dec.height = ctx.width, ctx.height
            if ctx.format is not None:
                dec.pix_fmt = ctx.format.name
            if ctx.extradata:
                dec.extradata = ctx.extradata
            dec.open()
        except (av.error.FFmpegError, ValueError) as exc:
            raise SourceError(f"{self.device}: cannot decode its {ctx.name} video: {exc}") from None
        return dec

    def _make_encoder(self, width: int, height: int, fps: int) -> Any:
        if width % 2 or height % 2:
            raise SourceError(f"{self.device}: odd frame size {width}x{height} cannot be encoded as yuv420p")
        name = "libx264"
        if self.opts.encoder == "v4l2m2m" or (self.opts.encoder == "auto" and v4l2m2m_works(width, height, fps)):
            name = "h264_v4l2m2m"
        enc: Any = av.CodecContext.create(name, "w")
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.time_base = TIME_BASE
        enc.framerate = Fraction(fps)
        enc.gop_size = fps  # a keyframe every second: clips and the pre-roll start at one
        enc.max_b_frames = 0
        enc.bit_rate = self.opts.bitrate * 1000
        if name == "libx264":
            # SPS/PPS before every keyframe (like a camera), so any clip cut starts decodable.
            enc.options = {"preset": "ultrafast", "tune": "zerolatency",
                           "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0:repeat-headers=1"}
        try:
            enc.open()
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot start the {name} encoder for {self.device}: {exc}") from None
        self.encoder_name = name
        return enc

    # --- read -------------------------------------------------------------------------------

    def _reader(self, container: Any, packets: Any, inbox: queue.Queue[tuple[Any, float]],
                stop: threading.Event) -> None:
        """The demux loop, in its own thread so that a read blocked in the driver (VIDIOC_DQBUF
        does not check FFmpeg's interrupt callback) can't block the capture loop: read() gives up
        after read_timeout. The container is closed here, once no read is in flight."""
        item: tuple[Any, float]
        try:
            while not stop.is_set():
                try:
                    packet = next(packets)
                except StopIteration:
                    item = (_EOF, 0.0)
                except av.error.ExitError:
                    item = (SourceError(f"no video for {self.read_timeout:g} s from {self.device}",
                                        hint="the camera stopped sending frames; it is reopened"), 0.0)
                except (av.error.FFmpegError, OSError) as exc:
                    item = (error_for(self.device, exc, reading=True), 0.0)
                except Exception as exc:  # a bug or an FFmpeg surprise: read() reports it
                    log.debug("%s: reader failed", self.device, exc_info=True)
                    item = (SourceError(f"reading {self.device}: {type(exc).__name__}: {exc}"), 0.0)
                else:
                    if not packet.size:
                        continue
                    item = (packet, self.clock.monotonic())
                while not stop.is_set():
                    try:
                        inbox.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if not isinstance(item[0], av.Packet):
                    return
        finally:
            try:
                container.close()
            except Exception:  # an unplugged device may fail to close; nothing to save
                log.debug("close failed for %s", self.device, exc_info=True)

    def _next_packet(self) -> tuple[Any, float] | None:
        """The next demuxed packet with data and its arrival time, or None at end of stream."""
        assert self._inbox is not None
        try:
            packet, arrival = self._inbox.get(timeout=self.read_timeout)
        except queue.Empty:
            raise SourceError(f"no video for {self.read_timeout:g} s from {self.device}",
                              hint="the camera stopped sending frames; it is reopened") from None
        if packet is _EOF:
            return None
        if isinstance(packet, SourceError):
            raise packet
        return packet, arrival

    def _stamp(self, packet: Any, arrival: float) -> int:
        """90 kHz pts from the device's timestamp while it increases, else from the arrival time."""
        if self._origin is None:
            self._origin = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
            self._arrival0 = arrival
        pts = -1
        if not self._use_arrival and packet.pts is not None:
            pts = round((float(packet.pts * packet.time_base) - self._origin) * TICKS)
            if pts <= self._last_pts:
                log.info("%s: the device's timestamps do not increase; using arrival times", self.device)
                self._use_arrival = True
        if self._use_arrival or pts < 0:
            pts = round((arrival - self._arrival0) * TICKS)
        if pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def read(self) -> MediaPacket | None:
        assert self.info is not None, "open() first"
        if self._encoder is None:
            got = self._next_packet()
            if got is None:
                return None
            packet, arrival = got
            pts = self._stamp(packet, arrival)
            return MediaPacket(data=bytes(packet), pts=pts, dts=pts, duration=self._ticks,
                               keyframe=bool(packet.is_keyframe), arrival=arrival, stream=self.info)
        while not self._pending:
            got = self._next_packet()
            if got is None:
                return None
            packet, arrival = got
            pts = self._stamp(packet, arrival)
            try:
                frames = self._decoder.decode(packet)
            except av.error.FFmpegError as exc:  # one corrupt JPEG: skip the frame
                log.debug("%s: a frame did not decode: %s", self.device, exc)
                continue
            for frame in frames:
                out = frame.reformat(format="yuv420p")
                out.pts = pts
                out.pict_type = PictureType.NONE  # a JPEG is an I picture: don't force a keyframe per frame
                out.time_base = TIME_BASE
                self._frame_pts[pts] = arrival
                if len(self._frame_pts) > 256:  # an encoder that drops frames must not grow this
                    self._frame_pts.pop(next(iter(self._frame_pts)))
                try:
                    self._pending.extend(self._encoder.encode(out))
                except av.error.FFmpegError as exc:
                    raise SourceError(f"encoding {self.device}: {exc}") from None
        encoded = self._pending.popleft()
        pts = int(encoded.pts)
        arrival = self._frame_pts.pop(pts, self.clock.monotonic())
        data = bytes(encoded)
        if encoded.is_keyframe:
            # Every keyframe carries SPS/PPS (a clip or the pre-roll may start at any of them): an
            # encoder that writes them only once (h264_v4l2m2m has been seen to) gets them repeated.
            if _annexb_has_sps(data):
                self._headers = parameter_sets(data)
            elif self._headers:
                data = self._headers + data
        return MediaPacket(data=data, pts=pts, dts=pts, duration=self._ticks,
                           keyframe=bool(encoded.is_keyframe), arrival=arrival, stream=self.info)

    def close(self) -> None:
        self._stop.set()
        container, self._container = self._container, None
        reader, self._reader_thread = self._reader_thread, None
        self._inbox = None
        self._encoder = self._decoder = None
        self._pending.clear()
        self._frame_pts.clear()
        if container is not None:  # opened, but the reader never started
            try:
                container.close()
            except Exception:
                log.debug("close failed for %s", self.device, exc_info=True)
        if reader is not None:
            reader.join(timeout=1.0)
            if reader.is_alive():
                # Blocked inside the driver: it closes the device when (if) the read returns.
                log.warning("%s: a read is stuck in the driver; the device stays open until it returns "
                            "(unplug and re-plug the camera if it does not come back)", self.device)
