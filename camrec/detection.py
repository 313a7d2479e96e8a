"""Decodes the detection stream and runs the motion detector, in a thread of its own.

Only this thread decodes video. It receives compressed packets through a small lossy queue: when it
falls behind, packets are dropped up to the next keyframe (a decoder can't resume mid-GOP), so a slow
detector never delays the recorder. Frames are decoded with the loop filter skipped (detection
doesn't need deblocked pixels, and it saves about a quarter of the decode cost) and scaled by
swscale straight to a small grey image; only frames at about `detect_fps` are analysed.
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

from camrec.motion import MotionDetector, MotionParams, MotionResult
from camrec.sources import MediaPacket, StreamInfo

log = logging.getLogger(__name__)

THUMB_WIDTH = 640


@dataclass(frozen=True)
class MotionEvent:
    """A detector decision, with a small colour image of the frame when it shows motion."""

    result: MotionResult
    thumbnail: np.ndarray | None  # BGR, at most THUMB_WIDTH wide


class _Gap:
    """Marks packets dropped from the queue: decoding must restart at a keyframe."""


GAP = _Gap()


class LossyPacketQueue:
    """Bounded queue whose producer never blocks: on overflow it drops everything queued."""

    def __init__(self, maxsize: int = 120) -> None:
        self._q: queue.Queue[MediaPacket | _Gap | None] = queue.Queue(maxsize)
        self.dropped = 0

    def put(self, item: MediaPacket | _Gap | None) -> None:
        try:
            self._q.put_nowait(item)
        except queue.Full:
            while True:
                try:
                    self._q.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    break
            self._q.put_nowait(GAP)
            self._q.put_nowait(item)

    def get(self, timeout: float) -> MediaPacket | _Gap | None:
        return self._q.get(timeout=timeout)


def scaled_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """Even dimensions with the frame's aspect ratio, never upscaled."""
    w = min(target_width, width)
    h = max(2, round(height * w / width / 2) * 2)
    return w // 2 * 2, h


class DetectionWorker(threading.Thread):
    def __init__(self, camera: str, params: MotionParams, deliver: Callable[[MotionEvent], None],
                 stop: threading.Event) -> None:
        super().__init__(name=f"detect-{camera}", daemon=True)
        self.camera = camera
        self.params = params
        self.packets = LossyPacketQueue()
        self._deliver = deliver
        self._stop_event = stop
        self.detector = MotionDetector(params)
        self.frames_analysed = 0
        self.decode_errors = 0
        self._decoder: Any = None
        self._stream: StreamInfo | None = None
        self._need_key = True
        self._next_t = float("-inf")
        self._interval = 1.0 / params.detect_fps

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                item = self.packets.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is None:
                break
            try:
                self.feed(item)
            except Exception:  # never let one bad frame end detection for this camera
                log.exception("%s: unexpected error in motion detection", self.camera)
                self._need_key = True

    def feed(self, item: MediaPacket | _Gap) -> None:
        """Decodes one packet and analyses its frame if it is due (also called directly by tests)."""
        if isinstance(item, _Gap):
            self._need_key = True
            return
        if item.stream is not self._stream:  # new connection: maybe a new resolution or SPS
            self._stream = item.stream
            self._decoder = self._make_decoder(item.stream)
            self.detector.reset()
            self._need_key = True
            self._next_t = float("-inf")
        if self._need_key and not item.keyframe:
            return
        self._need_key = False
        try:
            frames = self._decoder.decode(av.Packet(item.data))
        except av.error.FFmpegError as exc:
            self.decode_errors += 1
            log.debug("%s: decode error %s; waiting for a keyframe", self.camera, exc)
            self._need_key = True
            return
        for frame in frames:
            if item.arrival < self._next_t:
                continue
            # Step the schedule, but don't try to "catch up" after a stall.
            self._next_t = max(self._next_t + self._interval, item.arrival - self._interval / 2)
            self._analyse(frame, item.arrival)

    def _make_decoder(self, stream: StreamInfo) -> Any:
        decoder = av.CodecContext.create(stream.codec, "r")
        if stream.extradata:
            decoder.extradata = stream.extradata
        decoder.options = {"skip_loop_filter": "all", "flags2": "+fast"}
        return decoder

    def _analyse(self, frame: Any, t: float) -> None:
        w, h = scaled_size(frame.width, frame.height, self.params.detect_width)
        gray = frame.reformat(width=w, height=h, format="gray").to_ndarray()
        result = self.detector.process(gray, t)
        self.frames_analysed += 1
        thumb = None
        if result.motion:
            tw, th = scaled_size(frame.width, frame.height, THUMB_WIDTH)
            thumb = frame.reformat(width=tw, height=th, format="bgr24").to_ndarray()
        self._deliver(MotionEvent(result, thumb))
