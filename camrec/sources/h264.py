"""H.264 access units without decoding: Annex B and length-prefixed ("avcC") forms, SPS/PPS, codec strings.

Cameras hand us access units in one of two framings. RTSP depacketizers and libx264 write Annex B
(NAL units behind 00 00 01 / 00 00 00 01 start codes); MP4-style sources write each NAL unit behind
a big-endian length of 1–4 bytes, and then `StreamInfo.extradata` is an avcC record (first byte 1)
that says the length size and carries SPS/PPS. WebRTC packetizers (aiortc) want Annex B, and a
browser can only start decoding a keyframe when SPS and PPS came before it, which many cameras send
only once, in the RTSP SDP: `ParameterSetInjector` puts them back in front of keyframes that lack them.
The recorder's muxer (camrec.record.mux) uses the same injector, so a clip carries the camera's own
SPS/PPS in its first keyframe, where the MP4 muxer takes its avcC from.

Everything here is pure (bytes in, bytes out) and treats its input as hostile: a broken packet
raises ValueError with a one-line message, never anything else, and every loop advances.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

START_CODE = b"\x00\x00\x00\x01"


def nal_type(nal: bytes) -> int:
    """The nal_unit_type of one NAL unit (without start code); ValueError when empty."""
    if not nal:
        raise ValueError("empty NAL unit")
    return nal[0] & 0x1F


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B buffer, start codes removed.

    Bytes before the first start code are not a NAL unit and are ignored, as decoders do; trailing
    zero bytes of a unit (the next start code's leading zero, or trailing_zero_8bits) are stripped.
    Empty units are dropped. A buffer without any start code gives [].
    """
    nals: list[bytes] = []
    n = len(data)
    pos = data.find(b"\x00\x00\x01")
    while pos != -1:
        start = pos + 3
        nxt = data.find(b"\x00\x00\x01", start)
        end = n if nxt == -1 else nxt
        nal = data[start:end].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        pos = nxt  # strictly greater than the previous pos: the loop always advances
    return nals


def split_length_prefixed(data: bytes, length_size: int = 4) -> list[bytes]:
    """The NAL units of an avcC-style buffer (each unit behind a big-endian length)."""
    if length_size not in (1, 2, 3, 4):
        raise ValueError(f"NAL length size must be 1 to 4 bytes, not {length_size}")
    nals: list[bytes] = []
    pos, n = 0, len(data)
    while pos < n:
        if pos + length_size > n:
            raise ValueError(f"truncated NAL length at byte {pos} of {n}")
        size = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if size == 0:
            continue  # tolerated padding; pos advanced by length_size
        if pos + size > n:
            raise ValueError(f"NAL unit of {size} bytes at byte {pos} overruns the {n}-byte packet")
        nals.append(data[pos:pos + size])
        pos += size
    return nals


def join_annexb(nals: Iterable[bytes]) -> bytes:
    return b"".join(START_CODE + nal for nal in nals if nal)


def join_length_prefixed(nals: Iterable[bytes], length_size: int = 4) -> bytes:
    if length_size not in (1, 2, 3, 4):
        raise ValueError(f"NAL length size must be 1 to 4 bytes, not {length_size}")
    limit = 1 << (8 * length_size)
    out = bytearray()
    for nal in nals:
        if not nal:
            continue
        if len(nal) >= limit:
            raise ValueError(f"NAL unit of {len(nal)} bytes does not fit a {length_size}-byte length")
        out += len(nal).to_bytes(length_size, "big") + nal
    return bytes(out)


@dataclass(frozen=True)
class ParameterSets:
    """SPS and PPS NAL units (without start codes), and the NAL length size when the source is avcC."""

    sps: tuple[bytes, ...] = ()
    pps: tuple[bytes, ...] = ()
    length_size: int | None = None  # None: the packets are Annex B

    @property
    def complete(self) -> bool:
        return bool(self.sps and self.pps)


def is_avcc(extradata: bytes | None) -> bool:
    """True when `extradata` is an avcC record (packets then are length-prefixed)."""
    return bool(extradata) and extradata[0] == 1  # type: ignore[index]


def parse_extradata(extradata: bytes | None) -> ParameterSets:
    """SPS/PPS from a stream's extradata, in avcC or Annex B form; ParameterSets() when absent."""
    if not extradata:
        return ParameterSets()
    if extradata[0] == 1:
        return _parse_avcc(extradata)
    nals = split_annexb(extradata)
    if not nals and extradata:
        raise ValueError("extradata is neither an avcC record nor Annex B")
    return ParameterSets(sps=tuple(n for n in nals if nal_type(n) == NAL_SPS),
                         pps=tuple(n for n in nals if nal_type(n) == NAL_PPS))


def _parse_avcc(data: bytes) -> ParameterSets:
    # ISO/IEC 14496-15 AVCDecoderConfigurationRecord: version, profile, compat, level,
    # 6 bits reserved + lengthSizeMinusOne, 3 bits reserved + numOfSPS, then (u16 size, SPS)*,
    # numOfPPS, (u16 size, PPS)*. High-profile trailers after that are ignored.
    if len(data) < 7:
        raise ValueError(f"avcC record too short ({len(data)} bytes)")
    length_size = (data[4] & 0x03) + 1
    if length_size == 3:
        raise ValueError("avcC record with a 3-byte NAL length size is not allowed")
    pos = 5
    groups: list[tuple[bytes, ...]] = []
    for count_mask in (0x1F, 0xFF):
        if pos >= len(data):
            raise ValueError("avcC record truncated before its parameter set count")
        count = data[pos] & count_mask
        pos += 1
        units = []
        for _ in range(count):
            if pos + 2 > len(data):
                raise ValueError("avcC record truncated inside a parameter set length")
            size = int.from_bytes(data[pos:pos + 2], "big")
            pos += 2
            if size == 0 or pos + size > len(data):
                raise ValueError("avcC record has a parameter set that overruns the record")
            units.append(data[pos:pos + size])
            pos += size
        groups.append(tuple(units))
    return ParameterSets(sps=groups[0], pps=groups[1], length_size=length_size)


def split_packet(data: bytes, length_size: int | None) -> list[bytes]:
    """NAL units of one packet: Annex B when `length_size` is None, else length-prefixed."""
    if length_size is None:
        return split_annexb(data)
    return split_length_prefixed(data, length_size)


def to_annexb(data: bytes, length_size: int | None) -> bytes:
    """One access unit in Annex B form (a no-op copy for Annex B input)."""
    return join_annexb(split_packet(data, length_size))


def to_length_prefixed(data: bytes, length_size: int = 4) -> bytes:
    """One Annex B access unit in avcC form."""
    return join_length_prefixed(split_annexb(data), length_size)


def codec_string(sps: bytes) -> str:
    """The RFC 6381 `avc1.PPCCLL` string of an SPS NAL unit (with or without its header byte)."""
    body = sps[1:] if sps and nal_type(sps) == NAL_SPS else sps
    if len(body) < 3:
        raise ValueError(f"SPS too short for a codec string ({len(sps)} bytes)")
    return f"avc1.{body[0]:02x}{body[1]:02x}{body[2]:02x}"


class ParameterSetInjector:
    """Turns a stream's packets into Annex B, with SPS/PPS in front of every keyframe.

    The parameter sets come from the extradata and are replaced by the newest ones seen in-band,
    so a camera that changes its SPS mid-stream is followed. A keyframe that already carries an
    SPS and a PPS is passed on unchanged; one that lacks either gets the known sets put in front
    (after an access unit delimiter, if it starts with one). One injector per `StreamInfo`.
    """

    def __init__(self, extradata: bytes | None) -> None:
        sets = parse_extradata(extradata)
        self.length_size = sets.length_size
        self.sps: bytes | None = sets.sps[0] if sets.sps else None
        self.pps: bytes | None = sets.pps[0] if sets.pps else None
        self.injected = 0  # keyframes that needed our parameter sets

    def codec(self) -> str | None:
        """The codec string of the current SPS, if one is known and readable."""
        if self.sps is None:
            return None
        try:
            return codec_string(self.sps)
        except ValueError:
            return None

    def process(self, data: bytes, keyframe: bool) -> bytes:
        """The packet in Annex B; raises ValueError when it holds no NAL unit or is malformed."""
        # NAL types 0 and 24-31 are unspecified in H.264, and RTP (RFC 6184) uses 24-29 for its own
        # aggregation and fragmentation units: passed on, they would make the browser misparse
        # the RTP payload. A set forbidden_zero_bit marks a corrupt unit. Such units are dropped.
        nals = [n for n in split_packet(data, self.length_size) if 0 < n[0] & 0x1F < 24 and not n[0] & 0x80]
        if not nals:
            raise ValueError(f"packet of {len(data)} bytes holds no valid NAL unit")
        types = [n[0] & 0x1F for n in nals]
        for nal, kind in zip(nals, types, strict=True):
            if kind == NAL_SPS:
                self.sps = nal
            elif kind == NAL_PPS:
                self.pps = nal
        is_key = keyframe or NAL_IDR in types
        if is_key and not (NAL_SPS in types and NAL_PPS in types):
            missing = [n for n, kind in ((self.sps, NAL_SPS), (self.pps, NAL_PPS))
                       if n is not None and kind not in types]
            if missing:
                at = 1 if types[0] == NAL_AUD else 0
                nals[at:at] = missing
                self.injected += 1
        return join_annexb(nals)
