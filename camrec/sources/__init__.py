"""Camera connections: RTSP (PyAV), the synthetic demo camera, child processes writing H.264 (exec:,
picamera:), USB cameras (V4L2), the capture
loop that keeps one connection per stream alive, and the packet hub that fans its packets out.
May import: the foundation modules only (errors, redact, clock)."""

from __future__ import annotations

from camrec.sources.base import Clock, MediaPacket, Source, StreamInfo, SystemClock

__all__ = ["Clock", "MediaPacket", "Source", "StreamInfo", "SystemClock", "make_source"]


def make_source(url: str, *, transport: str = "tcp", open_timeout: float = 10.0, read_timeout: float = 5.0,
                generation: int = 0, clock: Clock | None = None) -> Source:
    """A new (unopened) source for a configured `source`/`detect_source` string."""
    if url.startswith("synthetic:"):
        from camrec.sources.synthetic import SyntheticSource

        return SyntheticSource(url, generation=generation, clock=clock)
    if url.startswith(("exec:", "picamera:")):
        from camrec.sources.command import CommandSource

        return CommandSource(url, open_timeout=open_timeout, read_timeout=read_timeout,
                             generation=generation, clock=clock)
    if url.startswith(("/dev/video", "/dev/v4l/")):
        from camrec.sources.v4l2 import V4l2Source

        return V4l2Source(url, open_timeout=open_timeout, read_timeout=read_timeout,
                          generation=generation, clock=clock)
    from camrec.sources.rtsp import RtspSource

    return RtspSource(url, transport=transport, open_timeout=open_timeout, read_timeout=read_timeout,
                      generation=generation, clock=clock)
