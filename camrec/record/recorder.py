"""Per-camera recording: the pre-roll ring, the clip policy and the clip writer, in one thread.

Everything that touches a clip happens in this thread, fed by one queue: main-stream packets and
disconnects from the camera's packet hub (the recorder is its push subscriber: `on_hub_item` runs
in the capture thread and only queues), motion decisions from the detection thread, and the stop
notice. One consumer means no locks around the ring, the policy or the open file.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2

from camrec.clock import wall_of
from camrec.errors import StorageError, StorageUnavailable
from camrec.motion.worker import MotionEvent
from camrec.record.mux import FragmentedMp4Muxer
from camrec.record.policy import Action, ClipPolicy
from camrec.sources import Clock, MediaPacket, StreamInfo
from camrec.sources.hub import HubItem, StreamEnd
from camrec.store.writer import OpenClip, Store

log = logging.getLogger(__name__)

# How long a detector decision may lag behind the video before the ring has lost the packets the
# clip needs: decode + analysis + min_frames hysteresis, with room for a busy CPU.
DETECTION_LAG_ALLOWANCE = 5.0
# A detector that says nothing for this long (crashed, or its stream is down) no longer counts as
# "motion continues": the clip then ends after post-roll instead of running on in max_clip pieces.
DETECTOR_SILENCE = 10.0
RING_MAX_BYTES = 64 * 1024 * 1024
# After a storage failure (disk full, I/O error, storage unmounted), new clips are attempted again
# only after this many seconds of video, so a dead disk doesn't turn every packet into an error.
STORAGE_RETRY_SECONDS = 5.0
# A recorder that has had work queued but processed nothing for this long is hung.
RECORDER_STUCK_SECONDS = 60.0
MAX_DETAIL_FRAMES = 3000
# A recorder whose clips have all failed for this long (and at least CLIP_FAILURES_UNHEALTHY times),
# for a reason other than a full or unmounted disk, is broken in a way it can't fix by itself
# (a bug, an unusable recipient, a storage directory it may not write): it is reported unhealthy.
CLIP_FAILURE_SECONDS = 60.0
CLIP_FAILURES_UNHEALTHY = 3


class Disconnected:
    """The main stream ended; close any open clip."""


class StopRecording:
    """The daemon is stopping; close any open clip and end the thread."""


@dataclass
class RecorderStatus:
    recording: bool = False
    clips_written: int = 0
    last_clip: str | None = None
    storage_error: str | None = None
    failing: str | None = None  # "every clip failed for N s: <reason>" once unhealthy
    packets_dropped: int = 0  # inbox overflows: the disk stalled for seconds (never another subscriber)


@dataclass
class _Clip:
    """A clip in progress: the file, the muxer feeding it, and what goes into its sidecars."""

    file: OpenClip
    muxer: FragmentedMp4Muxer
    start_utc: float
    first_arrival: float
    details: list[dict[str, Any]] = field(default_factory=list)


class Recorder(threading.Thread):
    def __init__(self, camera: str, settings: Any, store: Store, clock: Clock, fragment_seconds: float = 0.5) -> None:
        super().__init__(name=f"record-{camera}", daemon=True)
        self.camera = camera
        self.store = store
        self.clock = clock
        self.fragment_seconds = fragment_seconds
        self.inbox: queue.Queue[Any] = queue.Queue(maxsize=4000)
        self.policy = ClipPolicy(settings.pre_roll, settings.post_roll, settings.max_clip)
        self.ring_seconds = settings.pre_roll + DETECTION_LAG_ALLOWANCE
        self.status = RecorderStatus()
        self.last_activity = time.monotonic()
        self._ring: deque[MediaPacket] = deque()
        self._ring_bytes = 0
        self._stream: StreamInfo | None = None
        self._clip: _Clip | None = None
        self._pending_start = False
        self._best: tuple[float, Any] | None = None  # (score, BGR image) of the best motion frame
        self._early_details: list[dict[str, Any]] = []
        self._last_motion_msg = float("-inf")
        self._storage_retry_at = float("-inf")
        self._storage_reason: str | None = None
        # Clip failures since the last clip that closed cleanly (for `failing`).
        self._failing_since: float | None = None
        self._failed_clips = 0
        self._failure_reason = ""
        # Clip times of one camera never go backwards, even when the wall clock is stepped back.
        self._last_end_utc = store.last_end(camera)

    # -- producers (other threads) ---------------------------------------------------------------

    def on_hub_item(self, item: HubItem) -> None:
        """The recorder's sink on the main stream's hub (push mode, in the capture thread).

        Stream starts need no message (a packet's new `StreamInfo` is noticed by identity) and a
        push subscriber never gets gaps; a stream's end closes the open clip."""
        if isinstance(item, MediaPacket):
            self.put_packet(item)
        elif isinstance(item, StreamEnd):
            self.disconnected()

    def put_packet(self, packet: MediaPacket) -> None:
        try:
            self.inbox.put(packet, timeout=2.0)
        except queue.Full:  # the disk can't keep up; losing video beats blocking the camera socket
            self.status.packets_dropped += 1
            log.error("%s: recorder queue full, dropping a packet", self.camera)

    def put_motion(self, event: MotionEvent) -> None:
        self.inbox.put(event)

    def disconnected(self) -> None:
        self.inbox.put(Disconnected())

    def stop(self) -> None:
        self.inbox.put(StopRecording())

    # -- the recording thread --------------------------------------------------------------------

    def stuck(self, now: float) -> bool:
        """Work is waiting but nothing was processed for a long time: a hang (a dead disk in D state)."""
        return self.is_alive() and self.inbox.qsize() > 0 and now - self.last_activity > RECORDER_STUCK_SECONDS

    def run(self) -> None:
        while True:
            item = self.inbox.get()
            self.last_activity = time.monotonic()
            try:
                if isinstance(item, MediaPacket):
                    self._on_packet(item)
                elif isinstance(item, MotionEvent):
                    self._on_motion(item)
                elif isinstance(item, Disconnected):
                    self._close_clip("camera disconnected")
                    self._ring.clear()
                    self._ring_bytes = 0
                    self.policy.reset()
                elif isinstance(item, StopRecording):
                    self._close_clip("stopping")
            except StorageError as exc:
                self._storage_failed(exc)
            except Exception as exc:  # a bug or a muxer surprise: keep what is on disk, keep recording
                if self._failed_clips == 0:  # the traceback once, not once per retried clip
                    log.exception("%s: unexpected error in the recorder", self.camera)
                self._storage_failed(StorageError(f"unexpected error: {type(exc).__name__}: {exc}"))
            if isinstance(item, StopRecording):
                return  # even when closing the last clip failed: it is aborted (partial) by now

    def failing(self, now: float) -> str | None:
        """Why this recorder is unhealthy, or None: every clip attempted for CLIP_FAILURE_SECONDS
        (monotonic `now`) failed, at least CLIP_FAILURES_UNHEALTHY of them, none succeeded."""
        since = self._failing_since
        if since is None or self._failed_clips < CLIP_FAILURES_UNHEALTHY or now - since < CLIP_FAILURE_SECONDS:
            self.status.failing = None
            return None
        self.status.failing = f"every clip failed for {now - since:.0f} s: {self._failure_reason}"
        return self.status.failing

    def _on_motion(self, event: MotionEvent) -> None:
        r = event.result
        self._last_motion_msg = r.t
        self.policy.motion(r.t, r.motion)
        if not r.motion:
            return
        if event.thumbnail is not None and (self._best is None or r.score > self._best[0]):
            self._best = (r.score, event.thumbnail)
        entry = {"t": r.t, "score": round(r.score, 5), "boxes": [[round(v, 4) for v in b] for b in r.boxes]}
        target = self._clip.details if self._clip else self._early_details
        if len(target) < MAX_DETAIL_FRAMES:
            target.append(entry)

    def _on_packet(self, p: MediaPacket) -> None:
        if p.stream is not self._stream:
            if self._stream is not None and self._clip is not None:
                self._close_clip(f"stream changed to {p.stream.describe()}")
            self._stream = p.stream
            self._ring.clear()
            self._ring_bytes = 0
        if p.arrival - self._last_motion_msg > DETECTOR_SILENCE:
            self.policy.motion(p.arrival, False)
        decision = self.policy.packet(p.arrival, p.keyframe)
        if decision is not None:
            if decision.action is Action.START:
                self._pending_start = True
                self._start_from = decision.start_from
            elif decision.action is Action.STOP:
                self._close_clip("post-roll elapsed")
            elif decision.action is Action.SPLIT:
                self._close_clip("max_clip reached")
                self._open_clip([p])
                self._append_ring(p)
                return
        self._append_ring(p)
        if self._clip is not None:
            self._mux(p)
        elif self._pending_start and p.arrival >= self._storage_retry_at:
            if self.policy.motion_over(p.arrival):  # the storage came back after the event ended
                self._pending_start = False
                return
            start = self._select_start(self._start_from)
            if start is not None:
                self._open_clip(list(self._ring)[start:])

    def _append_ring(self, p: MediaPacket) -> None:
        self._ring.append(p)
        self._ring_bytes += len(p.data)
        horizon = p.arrival - self.ring_seconds
        # Drop whole GOPs from the front while the next GOP still starts early enough: the ring must
        # always begin with a keyframe.
        while True:
            second_key = next((i for i, q in enumerate(self._ring) if i > 0 and q.keyframe), None)
            if second_key is None:
                break
            if self._ring[second_key].arrival > horizon and self._ring_bytes <= RING_MAX_BYTES:
                break
            for _ in range(second_key):
                self._ring_bytes -= len(self._ring.popleft().data)

    def _select_start(self, start_from: float) -> int | None:
        """Index in the ring of the keyframe a new clip starts at: the last one at or before
        `start_from`, but never one inside the previous clip; None if the ring has no keyframe yet."""
        chosen = None
        for i, q in enumerate(self._ring):
            if not q.keyframe or q.arrival < self.policy.last_clip_end:
                continue
            if q.arrival <= start_from or chosen is None:
                chosen = i
            if q.arrival > start_from:
                break
        return chosen

    def _open_clip(self, packets: list[MediaPacket]) -> None:
        self._pending_start = False
        first = packets[0]
        start_utc = wall_of(self.clock, first.arrival)
        if start_utc < self._last_end_utc:
            # The wall clock was stepped back (NTP after a boot without RTC, a manual change): keep
            # this camera's clips in order and non-overlapping; times catch up with the clock later.
            # (Back-to-back clips differ by a few ms of arrival jitter: not worth a warning.)
            if self._last_end_utc - start_utc > 1.0:
                log.warning("%s: wall clock is %.1fs behind the previous clip's end; clip times held at it",
                            self.camera, self._last_end_utc - start_utc)
            start_utc = self._last_end_utc
        self._storage_retry_at = first.arrival + STORAGE_RETRY_SECONDS  # if opening fails below
        opened = self.store.open_clip(self.camera, start_utc)
        self._storage_retry_at = float("-inf")
        if self.status.storage_error is not None:
            log.info("%s: storage is writable again", self.camera)
            self.status.storage_error = None
            self._storage_reason = None

        def write(data: bytes) -> None:
            # The clip covers up to the newest muxed frame once these bytes are on disk.
            opened.write(data, start_utc + muxer.duration)

        muxer = FragmentedMp4Muxer(first.stream, write, self.fragment_seconds)
        clip = _Clip(opened, muxer, start_utc, first.arrival, self._early_details)
        self._early_details = []
        self._clip = clip
        self.policy.opened(first.arrival)
        self.status.recording = True
        log.info("%s: clip started %s (%.1fs of pre-roll)", self.camera, opened.rel,
                 max(0.0, self._ring[-1].arrival - first.arrival) if self._ring else 0.0)
        for q in packets:
            self._mux(q)

    def _mux(self, p: MediaPacket) -> None:
        assert self._clip is not None
        self._clip.muxer.add(p)

    def _close_clip(self, reason: str) -> None:
        clip = self._clip
        if clip is None:
            self._pending_start = False
            return
        self._clip = None
        self.status.recording = False
        clip.muxer.close()
        end_utc = clip.start_utc + clip.muxer.duration
        thumb = None
        if self._best is not None:
            ok, jpeg = cv2.imencode(".jpg", self._best[1], [cv2.IMWRITE_JPEG_QUALITY, 80])
            thumb = jpeg.tobytes() if ok else None
        self._best = None
        details = json.dumps({
            "camera": self.camera,
            "start": clip.start_utc,
            "end": end_utc,
            "stream": clip.muxer.info.describe(),
            "reason_closed": reason,
            # Times relative to the clip's first frame, in seconds.
            "motion": [dict(d, t=round(d["t"] - clip.first_arrival, 3)) for d in clip.details],
        }).encode()
        self._last_end_utc = end_utc
        row = clip.file.close(end_utc, thumbnail=thumb, details=details)
        self.policy.closed(clip.first_arrival + clip.muxer.duration)
        self._failing_since, self._failed_clips = None, 0  # a clip got through: healthy
        self.status.clips_written += 1
        self.status.last_clip = row.path
        log.info("%s: clip closed %s (%.1fs, %d bytes, %s)", self.camera, row.path, row.duration, row.size, reason)

    def _storage_failed(self, exc: StorageError) -> None:
        # Log once per condition (the reason after the file name), not once per attempted clip.
        reason = exc.message.rsplit(": ", 1)[-1]
        if reason != self._storage_reason:
            log.error("%s: %s%s", self.camera, exc.message, f" ({exc.hint})" if exc.hint else "")
        self._storage_reason = reason
        self.status.storage_error = exc.message
        if not isinstance(exc, StorageUnavailable):  # a full or unmounted disk is waited out instead
            self._failed_clips += 1
            self._failure_reason = exc.message
            if self._failing_since is None:
                self._failing_since = time.monotonic()
        self.store.wants_housekeeping.set()  # retention may free space at once
        now = self._ring[-1].arrival if self._ring else 0.0
        self._storage_retry_at = max(self._storage_retry_at, now + STORAGE_RETRY_SECONDS)
        if self._clip is not None:
            clip, self._clip = self._clip, None
            self._last_end_utc = max(self._last_end_utc, clip.file.end)
            clip.file.abort()
            self.status.recording = False
            self.policy.closed(now)
