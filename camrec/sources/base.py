"""Types shared by every camera source.

A source yields compressed video packets (never decoded frames): the recorder copies them into
the clip container without re-encoding, and only the detector decodes. Each packet carries its
stream timestamps (for muxing) and the camera-clock time (camrec.clock) at which it arrived (for the clip policy,
which must line up the main stream with a detection sub-stream that has its own timestamps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

from camrec.clock import Clock, SystemClock, wall_of

__all__ = ["Clock", "MediaPacket", "Source", "StreamInfo", "SystemClock", "wall_of"]


@dataclass(frozen=True)
class StreamInfo:
    """What a muxer or decoder needs to know about one connection's video stream.

    A new object is made on every (re)connect, so a camera that comes back with another
    resolution or SPS is noticed by identity comparison.
    """

    codec: str
    width: int
    height: int
    time_base: Fraction
    fps: float
    extradata: bytes | None = None
    generation: int = 0  # counts connections; lets consumers notice a new stream

    def describe(self) -> str:
        return f"{self.codec} {self.width}x{self.height} @ {self.fps:.3g} fps"


@dataclass(slots=True)
class MediaPacket:
    """One compressed access unit, with timestamps made trustworthy by the source."""

    data: bytes
    pts: int  # in stream.time_base, monotonically increasing within one connection
    dts: int
    duration: int  # in stream.time_base, never 0 (filled in from the frame rate when the camera says 0)
    keyframe: bool
    arrival: float  # camera clock (Clock.monotonic) when the packet arrived
    stream: StreamInfo = field(repr=False)

    @property
    def pts_seconds(self) -> float:
        return float(self.pts * self.stream.time_base)


class Source(Protocol):
    """A camera connection. One instance per connection attempt; not thread-safe."""

    def open(self) -> StreamInfo:
        """Connect; raises SourceError (with a redacted message) when the camera can't be reached."""
        ...

    def read(self) -> MediaPacket | None:
        """The next video packet; None at end of stream (on a live camera: a disconnect).

        Raises SourceError on a read timeout or I/O error.
        """
        ...

    def close(self) -> None: ...
