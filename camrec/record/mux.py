"""Remux compressed packets into fragmented MP4, in memory, without re-encoding.

Fragmented MP4 survives truncation: the `moov` box comes first and each fragment (`moof`+`mdat`)
is self-contained, so a clip cut by a power loss still plays up to its last complete fragment.
Fragments are cut at every keyframe and at least every `fragment_seconds` (0.5 s), which bounds how
much video sits in the muxer's memory (and so how much a crash can lose): the muxer hands a fragment
to the sink as soon as the first packet after the boundary arrives.

The muxer writes to a `write()`-only sink (no `seek`), which makes FFmpeg treat the output as a
stream: nothing is ever patched in place, and no plaintext temp file is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import av

from camrec.sources.base import MediaPacket, StreamInfo
from camrec.sources.h264 import ParameterSetInjector

MP4_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}


class _WriteOnlySink:
    """A file-like object PyAV can write to; without `seek` FFmpeg never tries to rewind."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write

    def write(self, data: Any) -> int:
        self._write(bytes(data))
        return len(data)


class FragmentedMp4Muxer:
    """Feeds packets of one stream into an fMP4 byte stream delivered to `write`.

    Timestamps are shifted so the clip starts at 0; the first packet must be a keyframe.
    """

    def __init__(self, info: StreamInfo, write: Callable[[bytes], None], fragment_seconds: float = 0.5) -> None:
        self.info = info
        options = dict(MP4_OPTIONS, frag_duration=str(int(fragment_seconds * 1_000_000)))
        self._container = av.open(_WriteOnlySink(write), "w", format="mp4", options=options)
        # A stream without an encoder: `add_stream("h264")` would open libx264, whose own SPS/PPS
        # replace the camera's in the clip's avcC (clips of cameras that send them only in the SDP
        # then decoded with errors). The muxer takes the avcC from the first keyframe instead, and
        # the injector makes sure that keyframe carries the camera's SPS/PPS.
        self._stream: Any = self._container.add_mux_stream(info.codec, width=info.width, height=info.height,
                                                           time_base=info.time_base)
        self._inject: ParameterSetInjector | None = None
        if info.codec == "h264":
            try:
                self._inject = ParameterSetInjector(info.extradata)
            except ValueError:  # extradata we can't read: keyframes must carry their own SPS/PPS
                self._inject = ParameterSetInjector(None)
        self._origin: int | None = None
        self._last_dts = -1
        self.first_pts: int | None = None
        self.last_end: int | None = None  # pts + duration of the newest packet (stream ticks)
        self.packets = 0

    def add(self, mp: MediaPacket) -> None:
        if self._origin is None:
            if not mp.keyframe:
                raise ValueError("a clip must start with a keyframe")
            self._origin = mp.dts
            self.first_pts = mp.pts
        dts = mp.dts - self._origin
        if dts <= self._last_dts:  # the muxer refuses non-increasing dts; sources already prevent it
            dts = self._last_dts + 1
        data = mp.data
        # Keyframes get the parameter sets they lack; a length-prefixed ("avcC") stream is turned
        # into Annex B packet by packet, the one framing the muxer reads without an avcC of ours.
        if self._inject is not None and (mp.keyframe or self._inject.length_size is not None):
            try:
                data = self._inject.process(data, mp.keyframe)
            except ValueError:  # not H.264 framing we understand: the camera's bytes, as they came
                data = mp.data
        packet = av.Packet(data)
        packet.dts = dts
        packet.pts = max(mp.pts - self._origin, dts)
        packet.duration = mp.duration
        packet.time_base = self.info.time_base
        packet.is_keyframe = mp.keyframe
        packet.stream = self._stream
        self._container.mux(packet)
        self._last_dts = dts
        self.last_end = mp.pts + mp.duration
        self.packets += 1

    @property
    def duration(self) -> float:
        """Seconds of video muxed so far."""
        if self.first_pts is None or self.last_end is None:
            return 0.0
        return float((self.last_end - self.first_pts) * self.info.time_base)

    def close(self) -> None:
        """Flushes the last fragment (and the small `mfra` index) to the sink."""
        self._container.close()
