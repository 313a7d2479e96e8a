"""Decodes the detection stream and runs the motion detector, in a thread of its own.

Only this thread decodes video. It receives compressed packets as a queue-mode subscriber of the
stream's packet hub: when it falls behind, packets are dropped up to the next keyframe (a decoder
can't resume mid-GOP) and counted, so a slow detector never delays the recorder. Frames are
decoded with the loop filter skipped (detection doesn't need deblocked pixels, and it saves about
a quarter of the decode cost) and scaled by swscale straight to a small grey image; only frames
at about `detect_fps` are analysed.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from camrec.motion.detector import MotionDetector, MotionParams, MotionResult
from camrec.sources import MediaPacket, StreamInfo
from camrec.sources.hub import Gap, PacketHub, StreamEnd, StreamStart, Subscription

log = logging.getLogger(__name__)

THUMB_WIDTH = 640
# The detector's queue in the hub: 8 s at 15 fps. Longer is pointless: a decision that late has
# already lost its pre-roll in the recorder's ring.
DETECT_QUEUE_PACKETS = 120


@dataclass(frozen=True)
class MotionEvent:
    """A detector decision, with a small colour image of the frame when it shows motion."""

    result: MotionResult
    thumbnail: np.ndarray | None  # BGR, at most THUMB_WIDTH wide
    gray: np.ndarray | None = None  # the detector's input frame, only when asked for (benchmarks)


def padded_packet(data: bytes) -> av.Packet:
    """A packet for the decoder, with the zeroed padding FFmpeg's bitstream readers rely on.

    ``av.Packet(data)`` (PyAV 18) leaves the padding after the data uninitialised; decoders read
    a few bytes past the end (MPEG-4 part 2 visibly so), and the same file then decodes to
    slightly different pictures from run to run. ``av.Packet(size)`` allocates zeroed padding.
    """
    packet = av.Packet(len(data))
    memoryview(packet)[:] = data
    return packet


def scaled_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """Even dimensions with the frame's aspect ratio, never upscaled."""
    w = min(target_width, width)
    h = max(2, round(height * w / width / 2) * 2)
    return w // 2 * 2, h


class DetectionWorker(threading.Thread):
    """Packets in, `MotionEvent`s out: the one detection path of camrec.

    The daemon `attach`es it to a stream's hub and starts it as a thread. `camrec detect` and `camrec bench
    motion` drive the very same object synchronously with `feed()`/`flush()` (video files, RTSP)
    or `analyse()` (decoded images), so what an owner tunes on a recorded clip is what the daemon
    runs. Two switches exist for that offline use, and both default to the daemon's behaviour:

    - ``every_frame``: analyse every decoded frame instead of about ``detect_fps`` of them
      (labelled footage is scored frame by frame; the detector's time constants are in seconds,
      so it behaves the same at either rate).
    - ``frame_clock``: time the n-th decoded frame at n / fps instead of by packet arrival (a file
      is read much faster than real time, so arrival means nothing there; and container
      timestamps are unreliable in old formats such as AVI, whose B-frames carry made-up pts).
    """

    def __init__(self, camera: str, params: MotionParams, deliver: Callable[[MotionEvent], None],
                 stop: threading.Event, *, every_frame: bool = False, frame_clock: bool = False,
                 thumbnails: bool = True, keep_gray: bool = False) -> None:
        super().__init__(name=f"detect-{camera}", daemon=True)
        self.camera = camera
        self.params = params
        self.subscription: Subscription | None = None
        self._deliver = deliver
        self._stop_event = stop
        self.detector = MotionDetector(params)
        self.frames_analysed = 0
        self.decode_errors = 0
        self._decoder: Any = None
        self._stream: StreamInfo | None = None
        self._need_key = True
        self._next_t = float("-inf")
        self._frames_decoded = 0
        self._interval = 1.0 / params.detect_fps
        self._every_frame = every_frame
        self._frame_clock = frame_clock
        self._thumbnails = thumbnails
        self._keep_gray = keep_gray

    def attach(self, hub: PacketHub) -> None:
        """Subscribes to the stream to decode, from its next keyframe (a decoder needs one)."""
        self.subscription = hub.subscribe("detector", start="next_keyframe", max_items=DETECT_QUEUE_PACKETS)

    def stop(self) -> None:
        """Ends `run` (from any thread): closing the subscription wakes the thread."""
        if self.subscription is not None:
            self.subscription.close()

    @property
    def packets_dropped(self) -> int:
        return 0 if self.subscription is None else self.subscription.dropped

    def run(self) -> None:
        subscription = self.subscription
        if subscription is None:
            raise RuntimeError(f"{self.name}: attach() the worker to a hub before starting it")
        while not self._stop_event.is_set():
            try:
                item = subscription.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is None:  # closed: the daemon is stopping
                break
            if isinstance(item, StreamStart | StreamEnd):
                continue  # a new stream is noticed by the packets' StreamInfo (feed)
            try:
                self.feed(item)
            except Exception:  # never let one bad frame end detection for this camera
                log.exception("%s: unexpected error in motion detection", self.camera)
                self._need_key = True

    def feed(self, item: MediaPacket | Gap) -> None:
        """Decodes one packet and analyses its frame if it is due (`camrec detect` calls it directly)."""
        if isinstance(item, Gap):
            self._need_key = True
            return
        if item.stream is not self._stream:  # new connection: maybe a new resolution or SPS
            self._stream = item.stream
            self._decoder = self._make_decoder(item.stream)
            self.detector.reset()
            self._need_key = True
            self._next_t = float("-inf")
            self._frames_decoded = 0
        if self._need_key and not item.keyframe:
            return
        self._need_key = False
        self._decode(padded_packet(item.data), item)

    def flush(self) -> None:
        """End of input: analyse the frames the decoder still holds (a file's last frames)."""
        if self._decoder is not None and not self._need_key:
            self._decode(None, None)

    def _decode(self, packet: Any, item: MediaPacket | None) -> None:
        try:
            frames = self._decoder.decode(packet)
        except av.error.FFmpegError as exc:
            self.decode_errors += 1
            log.debug("%s: decode error %s; waiting for a keyframe", self.camera, exc)
            self._need_key = True
            return
        for frame in frames:
            t = self._frames_decoded / self._file_fps() if self._frame_clock or item is None else item.arrival
            self._frames_decoded += 1
            if not self._every_frame:
                if t < self._next_t:
                    continue
                # Step the schedule, but don't try to "catch up" after a stall.
                self._next_t = max(self._next_t + self._interval, t - self._interval / 2)
            self.analyse(frame, float(t))

    def _file_fps(self) -> float:
        fps = self._stream.fps if self._stream is not None else 0.0
        return fps if fps > 0 else self.params.detect_fps

    def _make_decoder(self, stream: StreamInfo) -> Any:
        decoder = av.CodecContext.create(stream.codec, "r")
        if stream.extradata:
            decoder.extradata = stream.extradata
        # Codecs without in-band headers (MPEG-4 part 2 variants in old AVI files) need the size.
        decoder.width, decoder.height = stream.width, stream.height  # type: ignore[attr-defined]
        decoder.options = {"skip_loop_filter": "all", "flags2": "+fast"}
        return decoder

    def analyse(self, frame: Any, t: float) -> None:
        """Scale a decoded frame to the detection size in grey, judge it, deliver the verdict."""
        w, h = scaled_size(frame.width, frame.height, self.params.detect_width)
        gray = frame.reformat(width=w, height=h, format="gray").to_ndarray()
        result = self.detector.process(gray, t)
        self.frames_analysed += 1
        thumb = None
        if result.motion and self._thumbnails:
            tw, th = scaled_size(frame.width, frame.height, THUMB_WIDTH)
            thumb = frame.reformat(width=tw, height=th, format="bgr24").to_ndarray()
        self._deliver(MotionEvent(result, thumb, gray if self._keep_gray else None))
