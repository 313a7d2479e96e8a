"""RTSP (and any FFmpeg-readable URL) source through PyAV, over TCP, with timeouts.

Facts this code is built around (DESIGN §4): without timeouts PyAV blocks forever on a frozen or
black-holed camera; a dropped TCP connection ends the demuxer quietly (end of stream, not an
error); the first RTSP packet has no pts and every packet has duration 0.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any

import av

from camrec.errors import AuthError, SourceError
from camrec.redact import redact, register_url_credentials
from camrec.sources.base import Clock, MediaPacket, StreamInfo, SystemClock

log = logging.getLogger(__name__)


def _describe_av_error(exc: BaseException) -> str:
    """A short, redacted reason: PyAV errors embed the URL, credentials included."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return redact(str(text))


class RtspSource:
    def __init__(
        self,
        url: str,
        *,
        transport: str = "tcp",
        open_timeout: float = 10.0,
        read_timeout: float = 5.0,
        generation: int = 0,
        clock: Clock | None = None,
    ) -> None:
        # Registered here too, not only by the config loader: `camrec check URL`, tests and any
        # future caller get the password hidden in every error and log line this source makes.
        register_url_credentials(url)
        self.url = url
        self.transport = transport
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.generation = generation
        self.clock = clock or SystemClock()
        self._container: Any = None
        self._stream: Any = None
        self._packets: Any = None
        self.info: StreamInfo | None = None
        self._last_dts: int | None = None
        self._frame_ticks = 1

    def _open_container(self, quick: bool) -> Any:
        options: dict[str, str] = {}
        if self.url.startswith(("rtsp://", "rtsps://")):
            options = {
                "rtsp_transport": self.transport,
                # FFmpeg's socket timeout in microseconds; `stimeout` is gone since FFmpeg 5.
                "timeout": str(int(self.read_timeout * 1_000_000)),
            }
            if quick:
                # Default probing costs ~1.9 s per connect. Cameras describe the stream (SPS/PPS,
                # size) in the SDP, so no probing is needed: reconnects take ~0.1 s instead.
                options.update(analyzeduration="0", probesize="32")
        try:
            return av.open(self.url, options=options, timeout=(self.open_timeout, self.read_timeout))
        except (av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError) as exc:
            code = "401 Unauthorized" if isinstance(exc, av.error.HTTPUnauthorizedError) else "403 Forbidden"
            raise AuthError(
                f"{redact(self.url)}: wrong user or password (the camera answered {code})",
                hint="check the user name and password in the camera URL (or its ${env:…} variable); "
                     "camrec retries only every few minutes so that the camera does not lock the account",
            ) from None
        except av.error.ExitError:
            # PyAV's timeout interrupts FFmpeg, which then reports "Immediate exit requested".
            raise SourceError(
                f"cannot open {redact(self.url)}: no answer within {self.open_timeout:g} s",
                hint="check that the camera is on and reachable, and the URL and port are right",
            ) from None
        except (av.error.FFmpegError, OSError) as exc:
            raise SourceError(
                f"cannot open {redact(self.url)}: {_describe_av_error(exc)}",
                hint="check that the camera is on and the URL, port and credentials are right",
            ) from None

    def open(self) -> StreamInfo:
        self._container = self._open_container(quick=True)
        videos = self._container.streams.video
        if videos and not videos[0].codec_context.width:
            # The SDP didn't carry the parameters: probe the stream itself.
            self._container.close()
            self._container = self._open_container(quick=False)
            videos = self._container.streams.video
        if not videos:
            self.close()
            raise SourceError(f"{redact(self.url)} has no video stream")
        stream = videos[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(15)
        time_base = stream.time_base or Fraction(1, 90000)
        self._frame_ticks = max(1, round(1 / (float(rate) * float(time_base))))
        self.info = StreamInfo(
            codec=ctx.name,
            width=ctx.width,
            height=ctx.height,
            time_base=Fraction(time_base),
            fps=float(rate),
            extradata=bytes(ctx.extradata) if ctx.extradata else None,
            generation=self.generation,
        )
        self._stream = stream
        self._packets = self._container.demux(stream)
        return self.info

    def read(self) -> MediaPacket | None:
        assert self.info is not None and self._packets is not None, "open() first"
        while True:
            try:
                packet = next(self._packets)
            except StopIteration:
                return None
            except av.error.ExitError:
                # The read timeout fired: the connection is up but the camera sends nothing.
                raise SourceError(f"no video for {self.read_timeout:g} s from {redact(self.url)}") from None
            except (av.error.FFmpegError, OSError) as exc:
                raise SourceError(f"reading {redact(self.url)}: {_describe_av_error(exc)}") from None
            if packet.size == 0:  # demuxer flush packet at end of stream
                continue
            return self._stamp(packet)

    def _stamp(self, packet: Any) -> MediaPacket:
        """Fill in missing timestamps and durations so the muxer gets a clean, monotonic stream."""
        dts = packet.dts if packet.dts is not None else packet.pts
        if dts is None:
            dts = 0 if self._last_dts is None else self._last_dts + self._frame_ticks
        if self._last_dts is not None and dts <= self._last_dts:
            dts = self._last_dts + 1
        pts = packet.pts if packet.pts is not None and packet.pts >= dts else dts
        if self._last_dts is not None and 0 < dts - self._last_dts < 4 * self._frame_ticks:
            # RTSP says duration 0; the spacing of the frames is the best measure of their length
            # (the nominal rate from the SDP is often missing or wrong).
            self._frame_ticks = dts - self._last_dts
        self._last_dts = dts
        assert self.info is not None
        return MediaPacket(
            data=bytes(packet),
            pts=pts,
            dts=dts,
            duration=packet.duration or self._frame_ticks,  # the frame's length, ≥ 1 tick
            keyframe=bool(packet.is_keyframe),
            arrival=self.clock.monotonic(),
            stream=self.info,
        )

    def close(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # closing a broken connection may fail; nothing to save
                log.debug("close failed for %s", redact(self.url), exc_info=True)
        self._container = None
        self._packets = None
