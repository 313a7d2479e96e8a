"""Live fragmented MP4 for the Media Source Extensions fallback: one fragment per frame, no transcoding.

A viewer gets the `init_segment` (`ftyp`+`moov`, no samples) and then, for every packet, the
`moof`+`mdat` fragment that holds exactly that packet, returned by the very `add()` call that
received it. Browsers play B-frame streams this way (the `trun` carries composition offsets),
which WebRTC cannot.

Who writes which box, and why:

- The init segment comes from FFmpeg's mov muxer (PyAV), which builds the `avcC` from the
  stream's SPS/PPS. We hand it the parameter sets found in the first keyframe (cameras repeat
  them in-band; the RTSP SDP's copy can be stale or absent), else those of `extradata`.
  The stream is added with `add_mux_stream` on purpose: `add_stream("h264")` opens a libx264
  *encoder*, which replaces the extradata we set with its own SPS/PPS.
- The media fragments are written here (a 104-byte `moof` and an 8-byte `mdat` header). FFmpeg's mov
  muxer only closes a fragment when the *next* packet arrives (`frag_every_frame` and
  `frag_keyframe` are checked on the incoming packet; the packet duration does not change that),
  or on `av_write_frame(NULL)`, which PyAV does not expose: its fragments would lag one frame
  (67 ms at 15 fps, 1 s on a 1 fps sub-stream) behind the camera.

A camera that changes its SPS/PPS in-band (resolution, profile) without reconnecting is noticed
by `needs_new_init`; the caller then sends a new MIME message and init segment from a new
LiveFragmenter made with ``after=`` the old one (Chromium then shows the new size).

Timeline: decode times start at 0 for the first keyframe and stay continuous: Chromium stops for
good at a hole of even two frames in a SourceBuffer, so after lost packets (the hub's `Gap`), a
camera pause or a clock step the next frame is placed right after the previous one. Each frame
lasts as long as the camera's last step between frames (its own duration for the first), so the
timeline follows the real frame rate and the buffer neither drains nor grows. Presentation
starts at the first keyframe's composition offset (0 without B-frames): a player should start at
`video.buffered.start(0)`.

Use with a hub subscription (queue mode), in the viewer's task::

    frag = None
    async for item in sub:
        if isinstance(item, Gap) and frag:
            frag.mark_gap()
        elif isinstance(item, MediaPacket):
            if frag is None or item.stream is not frag.info or frag.needs_new_init(item):
                if not item.keyframe:
                    continue                       # a stream seen from its start may begin without one
                frag = LiveFragmenter(item.stream, item, after=frag)
                send_text({"type": "mse", "value": frag.mime}); send_bytes(frag.init_segment)
            send_bytes(frag.add(item))

Not thread-safe; the constructor costs about 1 ms (FFmpeg writes the header), `add()` about
0.05 ms per 1080p frame.
"""

from __future__ import annotations

import contextlib
import struct
from fractions import Fraction
from typing import Any

import av

from camrec.sources.base import MediaPacket, StreamInfo

__all__ = ["LiveFragmenter"]

_NAL_SPS, _NAL_PPS = 7, 8
_MAX_OFFSET_SECONDS = 10  # no real B-frame is shown this long after its decode time, nor lasts this long
# trun sample flags (ISO/IEC 14496-12 8.8.3.1): a sync sample depends on nothing; others are non-sync.
_SYNC_FLAGS = 0x02000000
_NON_SYNC_FLAGS = 0x01010000
# trun: data-offset, sample-duration, -size, -flags and -composition-time-offset present.
_TRUN_FLAGS = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I", 8 + len(body)) + kind + body


def _full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def _iter_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes in data[start:end]; ValueError if they don't add up."""
    end = len(data) if end is None else end
    boxes = []
    while start < end:
        if end - start < 8:
            raise ValueError("truncated MP4 box")
        size, kind = struct.unpack_from(">I4s", data, start)
        if size < 8 or start + size > end:
            raise ValueError(f"bad MP4 box size for {kind!r}")
        boxes.append((kind, start + 8, start + size))
        start += size
    return boxes


def _child(data: bytes, parent: tuple[bytes, int, int], kind: bytes) -> tuple[bytes, int, int]:
    for box in _iter_boxes(data, parent[1], parent[2]):
        if box[0] == kind:
            return box
    raise ValueError(f"the init segment has no {kind.decode()} box")


def _split_annexb(data: bytes) -> list[bytes] | None:
    """NAL units of an Annex B access unit, or None when `data` does not start with a start code."""
    first = data.find(b"\x00\x00\x01")
    if first < 0 or data[:first].strip(b"\x00"):
        return None
    nals = []
    pos = first + 3
    while True:
        nxt = data.find(b"\x00\x00\x01", pos)
        # Zero bytes before a start code belong to it (4-byte start codes, trailing_zero_8bits).
        nal = (data[pos:] if nxt < 0 else data[pos:nxt]).rstrip(b"\x00")
        if nal:
            nals.append(nal)
        if nxt < 0:
            return nals
        pos = nxt + 3


def _split_length_prefixed(data: bytes, size: int) -> list[bytes] | None:
    """NAL units of an MP4-style access unit with `size`-byte lengths, or None if they don't add up."""
    nals = []
    pos = 0
    while pos < len(data):
        if pos + size > len(data):
            return None
        length = int.from_bytes(data[pos:pos + size], "big")
        pos += size
        if length == 0 or pos + length > len(data):
            return None
        nals.append(data[pos:pos + length])
        pos += length
    return nals or None


def _avcc_parameter_sets(extradata: bytes) -> tuple[list[bytes], list[bytes], int]:
    """SPS list, PPS list and NAL length size of an `avcC` record (ISO/IEC 14496-15 5.3.3.1)."""
    try:
        length_size = (extradata[4] & 3) + 1
        pos = 6
        sps = []
        for _ in range(extradata[5] & 0x1F):
            n = int.from_bytes(extradata[pos:pos + 2], "big")
            sps.append(extradata[pos + 2:pos + 2 + n])
            pos += 2 + n
        pps = []
        count = extradata[pos]
        pos += 1
        for _ in range(count):
            n = int.from_bytes(extradata[pos:pos + 2], "big")
            pps.append(extradata[pos + 2:pos + 2 + n])
            pos += 2 + n
    except IndexError:
        raise ValueError("the stream's avcC extradata is truncated") from None
    if pos > len(extradata) or not all(sps) or not all(pps):
        raise ValueError("the stream's avcC extradata is truncated")
    return sps, pps, length_size


class LiveFragmenter:
    """Turns one H.264 stream's packets into an MSE-playable fMP4: `init_segment`, then `add()` per packet.

    `first_keyframe` supplies the SPS/PPS when the stream has no extradata; it is not muxed by the
    constructor: pass it to `add()` too (the first packet added must be a keyframe). A new stream
    (`StreamStart`, a reconnect or resolution change, `needs_new_init`) needs a new LiveFragmenter and
    a new init segment; with ``after=`` the old one, its timeline continues where the old one ended,
    so the browser keeps appending to the same SourceBuffer.
    Raises ValueError (one line) for what cannot be played: another codec, no SPS/PPS, a packet that
    is neither Annex B nor length-prefixed, a start without a keyframe.
    """

    def __init__(self, info: StreamInfo, first_keyframe: MediaPacket, *, after: LiveFragmenter | None = None) -> None:
        if info.codec != "h264":
            raise ValueError(f"live MP4 supports H.264 only, not {info.codec!r}")
        if not first_keyframe.keyframe:
            raise ValueError("live MP4 must start with a keyframe")
        self.info = info
        self._avcc_length_size: int | None = None
        sps: list[bytes] = []
        pps: list[bytes] = []
        extradata = info.extradata or b""
        if extradata[:1] == b"\x01":
            sps, pps, self._avcc_length_size = _avcc_parameter_sets(extradata)
        elif extradata:
            nals = _split_annexb(extradata) or []
            sps = [n for n in nals if n[0] & 0x1F == _NAL_SPS]
            pps = [n for n in nals if n[0] & 0x1F == _NAL_PPS]
        nals = self._nal_units(first_keyframe)
        inband_sps = [n for n in nals if n[0] & 0x1F == _NAL_SPS]
        inband_pps = [n for n in nals if n[0] & 0x1F == _NAL_PPS]
        if inband_sps and inband_pps:  # what the decoder will really see wins over the SDP's copy
            sps, pps = inband_sps, inband_pps
        if not sps or not pps:
            raise ValueError("the stream has no SPS/PPS (neither in its extradata nor in the first keyframe)")
        if len(sps[0]) < 4:
            raise ValueError("the stream's SPS is truncated")
        self._parameter_sets = (sps, pps)
        self.codecs = "avc1." + sps[0][1:4].hex()
        self.mime = f'video/mp4; codecs="{self.codecs}"'
        self.init_segment, self.track_id, self.timescale = self._make_init(sps, pps, nals)
        self._scale = Fraction(info.time_base) * self.timescale
        self._started = False
        self._origin = 0  # stream dts that maps to `_origin_out`
        # Output time (timescale units) of this fragmenter's first frame.
        self._start_out = round(after.end_seconds * self.timescale) if after is not None else 0
        self._origin_out = self._start_out
        self._next_dts: int | None = None  # output dts (timescale units) where the next frame is expected
        self._last_dts = -1
        self._last_stream_dts = 0
        self._last_duration = 0
        self._rebase = False
        self._sequence = 0
        self.fragments = 0
        self.bytes_out = len(self.init_segment)

    def _nal_units(self, packet: MediaPacket) -> list[bytes]:
        """The packet's NAL units, whichever form it came in; ValueError when it is no H.264 at all."""
        data = packet.data
        if not data:
            raise ValueError("empty video packet")
        if len(data) > 0x7FFF0000:  # mdat and trun sizes are 32-bit
            raise ValueError("video packet too large")
        # The extradata says which form to expect; the other one is tried too, since a start code
        # and a 4-byte length can look alike. A NAL with the forbidden bit set means a wrong guess.
        if self._avcc_length_size is not None:
            attempts = (lambda: _split_length_prefixed(data, self._avcc_length_size or 4),
                        lambda: _split_annexb(data))
        else:
            attempts = (lambda: _split_annexb(data), lambda: _split_length_prefixed(data, 4))
        for attempt in attempts:
            nals = attempt()
            if nals and not any(n[0] & 0x80 for n in nals):
                return nals
        raise ValueError("video packet is neither Annex B nor length-prefixed H.264")

    def _make_init(self, sps: list[bytes], pps: list[bytes], nals: list[bytes]) -> tuple[bytes, int, int]:
        """ftyp+moov from FFmpeg's mov muxer; also the track id and timescale our fragments must use."""
        out: list[bytes] = []

        class Sink:
            def write(self, data: Any) -> int:
                out.append(bytes(data))
                return len(data)

        # PyAV extracts the avcC from the first packet (extract_extradata) and writes the header
        # when it gets it: feed it the parameter sets plus the keyframe's slices, all Annex B.
        slices = [n for n in nals if n[0] & 0x1F not in (_NAL_SPS, _NAL_PPS)]
        sample = b"".join(b"\x00\x00\x00\x01" + n for n in (*sps, *pps, *slices))
        container: Any = None
        try:
            container = av.open(Sink(), "w", format="mp4",
                                options={"movflags": "empty_moov+default_base_moof+frag_custom"})
            stream: Any = container.add_mux_stream("h264", width=self.info.width, height=self.info.height,
                                                   time_base=self.info.time_base)
            packet = av.Packet(sample)
            packet.pts = packet.dts = 0
            packet.duration = 1
            packet.time_base = self.info.time_base
            packet.is_keyframe = True
            packet.stream = stream
            container.mux(packet)
            init = b"".join(out)
        except (av.error.FFmpegError, ValueError) as exc:
            raise ValueError(f"FFmpeg cannot make an MP4 header for this stream: {exc}") from None
        finally:
            if container is not None:
                with contextlib.suppress(av.error.FFmpegError):
                    container.close()  # what it writes now (the buffered sample, mfra) is not ours
        top = _iter_boxes(init)
        if [b[0] for b in top] != [b"ftyp", b"moov"]:
            raise ValueError("FFmpeg did not write an ftyp+moov init segment for this stream")
        trak = _child(init, top[1], b"trak")
        tkhd = _child(init, trak, b"tkhd")
        track_id = struct.unpack_from(">I", init, tkhd[1] + (20 if init[tkhd[1]] == 1 else 12))[0]
        mdhd = _child(init, _child(init, trak, b"mdia"), b"mdhd")
        timescale = struct.unpack_from(">I", init, mdhd[1] + (20 if init[mdhd[1]] == 1 else 12))[0]
        if timescale <= 0:
            raise ValueError("FFmpeg wrote an init segment without a timescale")
        return init, track_id, timescale

    @property
    def end_seconds(self) -> float:
        """Where the timeline ends: the decode time (in seconds) at which the next frame goes."""
        return (self._next_dts if self._next_dts is not None else self._start_out) / self.timescale

    def needs_new_init(self, packet: MediaPacket) -> bool:
        """True for a keyframe whose in-band SPS/PPS differ from the init segment's (a camera that
        changed resolution or profile without reconnecting). The caller then starts a new
        LiveFragmenter from this packet and sends its `mime` and `init_segment` before its fragments.
        """
        if not packet.keyframe:
            return False
        nals = self._nal_units(packet)
        sps = [n for n in nals if n[0] & 0x1F == _NAL_SPS]
        pps = [n for n in nals if n[0] & 0x1F == _NAL_PPS]
        return bool(sps and pps) and (sps, pps) != self._parameter_sets

    def mark_gap(self) -> None:
        """Packets were lost (the hub's `Gap`): the next keyframe continues the timeline without a hole."""
        self._rebase = True

    def add(self, packet: MediaPacket) -> bytes:
        """The `moof`+`mdat` fragment holding this packet (one sample), ready to append to a SourceBuffer."""
        if packet.stream is not self.info:
            raise ValueError("the packet belongs to another stream: start a new LiveFragmenter")
        nals = self._nal_units(packet)
        # Everything is worked out before any state changes: a refused packet leaves no trace.
        starting = not self._started or self._rebase
        if starting and not packet.keyframe:
            raise ValueError("live MP4 must start (and resume after a gap) with a keyframe")
        continue_at = self._next_dts if self._next_dts is not None else self._start_out
        origin, origin_out = (packet.dts, continue_at) if starting else (self._origin, self._origin_out)
        dts = origin_out + round((packet.dts - origin) * self._scale)
        if self._next_dts is not None and (dts <= self._last_dts or dts - self._next_dts > self._last_duration // 2):
            # A hole in the timeline (lost frames, a camera pause, a clock step; even 2 frames)
            # stalls Chromium at its edge for good, and a clock going back would overwrite what the
            # browser has: continue right where the previous frame ended.
            origin, origin_out, dts = packet.dts, continue_at, continue_at
        cto = max(0, origin_out + round((packet.pts - origin) * self._scale) - dts)
        if cto > _MAX_OFFSET_SECONDS * self.timescale:
            raise ValueError("video packet shown implausibly long after it is decoded (pts far beyond dts)")
        nominal = round(packet.duration * self._scale)
        if not 0 < nominal <= _MAX_OFFSET_SECONDS * self.timescale:
            nominal = max(1, round(self.timescale / (self.info.fps or 15)))
        # The next frame's time is unknown yet: the camera's last real step is the best guess (it
        # follows a frame-rate change at night), within reason; else the packet's own duration.
        # (Measured on the camera's timestamps: steps in our timeline are bent by closed holes.)
        step = round((packet.dts - self._last_stream_dts) * self._scale) if self._started else 0
        duration = step if 0 < step <= 2 * nominal else nominal
        self._origin, self._origin_out, self._started, self._rebase = origin, origin_out, True, False
        self._last_dts = dts
        self._last_stream_dts = packet.dts
        self._last_duration = duration
        self._next_dts = dts + duration
        self._sequence += 1
        fragment = self._fragment(nals, dts, duration, cto, packet.keyframe)
        self.fragments += 1
        self.bytes_out += len(fragment)
        return fragment

    def _fragment(self, nals: list[bytes], dts: int, duration: int, cto: int, keyframe: bool) -> bytes:
        payload = b"".join(struct.pack(">I", len(n)) + n for n in nals)
        trun_tail = struct.pack(">IIIi", duration, len(payload), _SYNC_FLAGS if keyframe else _NON_SYNC_FLAGS, cto)
        moof_size = 8 + 16 + 8 + 16 + 20 + (20 + len(trun_tail))
        traf = _box(b"traf",
                    _full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, struct.pack(">I", self.track_id)),
                    _full_box(b"tfdt", 1, 0, struct.pack(">Q", dts)),
                    # version 1: signed composition offsets; data offset = past moof and mdat header
                    _full_box(b"trun", 1, _TRUN_FLAGS, struct.pack(">Ii", 1, moof_size + 8), trun_tail))
        moof = _box(b"moof", _full_box(b"mfhd", 0, 0, struct.pack(">I", self._sequence)), traf)
        assert len(moof) == moof_size
        return moof + struct.pack(">I", 8 + len(payload)) + b"mdat" + payload
