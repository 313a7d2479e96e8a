"""Run the daemon's detection path over recorded input: a video file, a directory of images, or
an RTSP URL. Used by `camrec detect` and `camrec bench motion`.

There is no second detector here. Video files and RTSP streams are demuxed by the RTSP source's
PyAV reader (``av.open`` reads files as well) into the same `MediaPacket`s a camera produces and
fed to a `DetectionWorker`, which decodes, scales and judges them exactly as in `camrec run`.
Images are decoded by OpenCV and handed to the worker's `analyse()`, the half of that path after
decoding. The only differences from the daemon are the two offline switches documented on
`DetectionWorker` (every frame is analysed, frames are timed by their timestamps).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from camrec.errors import FormatError, SourceError, UsageError
from camrec.motion.detector import MotionParams, MotionResult
from camrec.motion.worker import DetectionWorker, MotionEvent

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"})
DEFAULT_IMAGE_FPS = 15.0


@dataclass(frozen=True, slots=True)
class AnalysedFrame:
    """One input frame's verdict. ``index`` is 0-based in input order; ``t`` is seconds from the
    first frame; ``gray`` (only when asked for) is exactly what the detector saw."""

    index: int
    t: float
    result: MotionResult
    gray: np.ndarray | None


def is_stream_url(text: str) -> bool:
    return text.startswith(("rtsp://", "rtsps://", "rtmp://", "http://", "https://"))


def list_images(directory: Path) -> list[Path]:
    """Image files of a directory in file-name order (CDnet's in000001.jpg … sort correctly)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise UsageError(f"cannot read directory {directory}: {exc.strerror or exc}") from None
    images = [directory / n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise UsageError(f"no images in {directory}",
                         hint="expected files ending in " + ", ".join(sorted(IMAGE_SUFFIXES)))
    return images


class DetectionRun:
    """Iterate over `AnalysedFrame`s of one input, produced by the daemon's `DetectionWorker`.

    ``fps`` is the rate of an image sequence (ignored for video, which has timestamps).
    ``max_frames``/``duration`` bound a live stream (or a long file).
    """

    def __init__(self, spec: str, params: MotionParams, *, fps: float | None = None, keep_gray: bool = False,
                 max_frames: int | None = None, duration: float | None = None,
                 open_timeout: float = 10.0, read_timeout: float = 5.0) -> None:
        self.spec = spec
        self.params = params
        self.keep_gray = keep_gray
        self.max_frames = max_frames
        self.duration = duration
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self._images: list[Path] | None = None
        self.fps = float(fps) if fps else DEFAULT_IMAGE_FPS
        self.kind = "stream" if is_stream_url(spec) else "file"
        if not is_stream_url(spec):
            path = Path(spec)
            if path.is_dir():
                self.kind = "images"
                self._images = list_images(path)
            elif not path.exists():
                raise UsageError(f"no such file or directory: {spec}")
            elif not os.access(path, os.R_OK):
                raise UsageError(f"cannot read {spec}: permission denied")
        if fps is not None and not (0 < fps <= 1000):
            raise UsageError(f"--fps must be between 0 and 1000, got {fps:g}")
        self._pending: list[MotionEvent] = []
        self.worker = DetectionWorker("detect", params, self._pending.append, threading.Event(),
                                      every_frame=True, frame_clock=self.kind == "file", thumbnails=False,
                                      keep_gray=keep_gray)

    def __iter__(self) -> Iterator[AnalysedFrame]:
        events = self._images_events() if self._images is not None else self._video_events()
        t0: float | None = None
        for index, event in enumerate(events):
            if self.max_frames is not None and index >= self.max_frames:
                return
            t0 = event.result.t if t0 is None else t0
            t = event.result.t - t0
            if self.duration is not None and t > self.duration:
                return
            yield AnalysedFrame(index, t, event.result, event.gray)

    def _images_events(self) -> Iterator[MotionEvent]:
        assert self._images is not None
        for i, path in enumerate(self._images):
            # IMREAD_GRAYSCALE: the detector only looks at luma, and decoding straight to grey
            # is cheaper than BGR; the worker then scales it like a decoded video frame.
            image: np.ndarray | None = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if image is None:
                raise UsageError(f"cannot read image {path}", hint="is it a complete image file?")
            frame = av.VideoFrame.from_ndarray(image, format="gray")
            self.worker.analyse(frame, i / self.fps)
            yield from self._drain()

    def _video_events(self) -> Iterator[MotionEvent]:
        from camrec.sources.rtsp import RtspSource

        source = RtspSource(self.spec, open_timeout=self.open_timeout, read_timeout=self.read_timeout)
        try:
            try:
                info = source.open()
            except SourceError as exc:
                if self.kind == "file":  # a local file that FFmpeg cannot parse is not a camera problem
                    reason = exc.message.split(": ", 1)[-1]
                    raise FormatError(f"{self.spec} is not a readable video: {reason}") from None
                raise
            self.fps = info.fps or self.fps
            while True:
                packet = source.read()
                if packet is None:
                    break
                self.worker.feed(packet)
                yield from self._drain()
            self.worker.flush()
            yield from self._drain()
        finally:
            source.close()

    def _drain(self) -> Iterator[MotionEvent]:
        while self._pending:
            yield self._pending.pop(0)
