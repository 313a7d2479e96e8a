"""camrec.sources.h264: Annex B ↔ avcC, parameter sets, injection, codec strings, hostile input."""

from __future__ import annotations

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from camrec.sources import h264
from camrec.sources.synthetic import SyntheticSource

SPS = bytes.fromhex("6742c01eda0280bfe5840000030004000003007a3c58ba80")
PPS = bytes.fromhex("68ce3c80")
IDR = bytes.fromhex("65888410ff")
SLICE = bytes.fromhex("419a2233")
AUD = bytes.fromhex("09f0")
SEI = bytes.fromhex("0605ff80")


def annexb(*nals: bytes, short: bool = False) -> bytes:
    code = b"\x00\x00\x01" if short else b"\x00\x00\x00\x01"
    return b"".join(code + n for n in nals)


def avcc_record(sps: bytes = SPS, pps: bytes = PPS, length_size: int = 4) -> bytes:
    return (bytes([1, sps[1], sps[2], sps[3], 0xFC | (length_size - 1), 0xE1]) + len(sps).to_bytes(2, "big") + sps
            + b"\x01" + len(pps).to_bytes(2, "big") + pps)


@pytest.mark.parametrize(("data", "nals"), [
    (b"", []),
    (b"\x00\x00\x00", []),
    (b"garbage without start code", []),
    (annexb(SPS, PPS, IDR), [SPS, PPS, IDR]),
    (annexb(SPS, PPS, IDR, short=True), [SPS, PPS, IDR]),
    (b"junk" + annexb(SLICE) + b"\x00\x00", [SLICE]),  # leading junk and trailing zeros
    (annexb(b"", SLICE), [SLICE]),  # empty unit between two start codes
])
def test_split_annexb(data: bytes, nals: list[bytes]) -> None:
    assert h264.split_annexb(data) == nals


@pytest.mark.parametrize("length_size", [1, 2, 4])
def test_length_prefixed_round_trip(length_size: int) -> None:
    nals = [AUD, SPS, PPS, IDR]
    packed = h264.join_length_prefixed(nals, length_size)
    assert h264.split_length_prefixed(packed, length_size) == nals
    assert h264.to_annexb(packed, length_size) == annexb(*nals)
    assert h264.to_length_prefixed(annexb(*nals), length_size) == packed


@pytest.mark.parametrize(("data", "length_size", "message"), [
    (b"\x00\x00\x00\x09\x65", 4, "overruns"),
    (b"\x00\x00", 4, "truncated NAL length"),
    (b"\x05\x65", 1, "overruns"),
    (b"\x01", 5, "1 to 4"),
])
def test_length_prefixed_rejects_broken_packets(data: bytes, length_size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        h264.split_length_prefixed(data, length_size)


@pytest.mark.parametrize(("extradata", "expected"), [
    (None, h264.ParameterSets()),
    (annexb(SPS, PPS), h264.ParameterSets(sps=(SPS,), pps=(PPS,))),
    (avcc_record(), h264.ParameterSets(sps=(SPS,), pps=(PPS,), length_size=4)),
    (avcc_record(length_size=2), h264.ParameterSets(sps=(SPS,), pps=(PPS,), length_size=2)),
])
def test_parse_extradata(extradata: bytes | None, expected: h264.ParameterSets) -> None:
    assert h264.parse_extradata(extradata) == expected


@pytest.mark.parametrize(("extradata", "message"), [
    (b"\x01\x42", "too short"),
    (avcc_record()[:12], "overruns"),
    (avcc_record()[:-len(PPS) - 3], "truncated"),
    (b"\x17\x42\x42", "neither"),
])
def test_parse_extradata_rejects_broken_records(extradata: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        h264.parse_extradata(extradata)


@pytest.mark.parametrize(("extradata", "packet", "keyframe", "expected", "injected"), [
    # Keyframe without parameter sets: SPS/PPS from the extradata go in front.
    (annexb(SPS, PPS), annexb(IDR), True, annexb(SPS, PPS, IDR), 1),
    # ... after an access unit delimiter, which must stay first.
    (annexb(SPS, PPS), annexb(AUD, SEI, IDR), True, annexb(AUD, SPS, PPS, SEI, IDR), 1),
    # Keyframe that carries its own: unchanged.
    (annexb(SPS, PPS), annexb(SPS, PPS, IDR), True, annexb(SPS, PPS, IDR), 0),
    # Non-keyframe: unchanged.
    (annexb(SPS, PPS), annexb(SLICE), False, annexb(SLICE), 0),
    # An IDR NAL makes it a keyframe even when the flag says otherwise.
    (annexb(SPS, PPS), annexb(IDR), False, annexb(SPS, PPS, IDR), 1),
    # avcC source: converted to Annex B, parameter sets from the record.
    (avcc_record(), h264.join_length_prefixed([IDR]), True, annexb(SPS, PPS, IDR), 1),
    (avcc_record(length_size=2), h264.join_length_prefixed([SLICE], 2), False, annexb(SLICE), 0),
    # No extradata and none in-band: nothing to inject, passed on.
    (None, annexb(IDR), True, annexb(IDR), 0),
    # Only the PPS is in-band: the SPS is added.
    (annexb(SPS, PPS), annexb(PPS, IDR), True, annexb(SPS, PPS, IDR), 1),
])
def test_injector(extradata: bytes | None, packet: bytes, keyframe: bool, expected: bytes, injected: int) -> None:
    injector = h264.ParameterSetInjector(extradata)
    assert injector.process(packet, keyframe) == expected
    assert injector.injected == injected


@pytest.mark.parametrize(("packet", "expected"), [
    (annexb(bytes([0x18, 1, 2]), SLICE), annexb(SLICE)),  # STAP-A type (24): RTP's, not H.264's
    (annexb(bytes([0x1F, 1]), SLICE), annexb(SLICE)),  # 31: unspecified
    (annexb(bytes([0x00, 1]), SLICE), annexb(SLICE)),  # 0: unspecified
    (annexb(bytes([0xC1, 1]), SLICE), annexb(SLICE)),  # forbidden_zero_bit set
])
def test_injector_drops_units_that_rtp_would_misread(packet: bytes, expected: bytes) -> None:
    assert h264.ParameterSetInjector(None).process(packet, False) == expected
    with pytest.raises(ValueError, match="no valid NAL unit"):
        h264.ParameterSetInjector(None).process(packet.replace(annexb(SLICE), b""), False)


def test_injector_follows_in_band_parameter_sets() -> None:
    new_sps = SPS[:-1] + b"\x81"
    injector = h264.ParameterSetInjector(annexb(SPS, PPS))
    injector.process(annexb(new_sps, PPS, IDR), True)
    assert injector.process(annexb(IDR), True) == annexb(new_sps, PPS, IDR)


@pytest.mark.parametrize(("sps", "codec"), [
    (SPS, "avc1.42c01e"),
    (bytes.fromhex("64001f"), "avc1.64001f"),  # without the NAL header
    (bytes.fromhex("674d4028"), "avc1.4d4028"),
])
def test_codec_string(sps: bytes, codec: str) -> None:
    assert h264.codec_string(sps) == codec


def test_codec_string_rejects_short_sps() -> None:
    with pytest.raises(ValueError, match="too short"):
        h264.codec_string(b"\x67\x42")


@pytest.mark.parametrize("headers", ["inband", "extradata"])
def test_real_libx264_packets_decode_after_injection(headers: str) -> None:
    """Decoding starts at a mid-stream keyframe with no extradata given to the decoder."""
    source = SyntheticSource(f"synthetic:?size=320x240&realtime=0&gop=0.4&headers={headers}")
    info = source.open()
    packets = [source.read() for _ in range(12)]
    source.close()
    assert all(p is not None for p in packets)
    key = next(i for i, p in enumerate(packets) if i > 0 and p is not None and p.keyframe)
    in_band = h264.split_annexb(packets[key].data)  # type: ignore[union-attr]
    assert (h264.NAL_SPS in {n[0] & 0x1F for n in in_band}) == (headers == "inband")
    injector = h264.ParameterSetInjector(info.extradata)
    decoder = av.CodecContext.create("h264", "r")
    frames = []
    for p in packets[key:]:
        assert p is not None
        frames += decoder.decode(av.Packet(injector.process(p.data, p.keyframe)))
    frames += decoder.decode(None)
    assert len(frames) == len(packets) - key
    assert (frames[0].width, frames[0].height) == (320, 240)
    assert injector.injected == (1 if headers == "extradata" else 0)
    sps = next(n for n in h264.split_annexb(injector.process(packets[key].data, True))  # type: ignore[union-attr]
               if n[0] & 0x1F == h264.NAL_SPS)
    assert h264.codec_string(sps) == f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"


# --- hostile input: nothing but ValueError, and always an end ---------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, 1, 2, 4]), st.booleans())
def test_hostile_packets_raise_only_value_error(data: bytes, length_size: int | None, keyframe: bool) -> None:
    extradata = avcc_record(length_size=length_size) if length_size else annexb(SPS, PPS)
    injector = h264.ParameterSetInjector(extradata)
    try:
        out = injector.process(data, keyframe)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert out.startswith(b"\x00\x00\x00\x01")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_hostile_extradata_raises_only_value_error(data: bytes) -> None:
    try:
        sets = h264.parse_extradata(data)
    except ValueError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(sets.sps) and all(sets.pps)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=50).filter(lambda b: b"\x00\x00" not in b and b[-1] != 0),
                max_size=8))
def test_annexb_round_trip_property(nals: list[bytes]) -> None:
    assert h264.split_annexb(h264.join_annexb(nals)) == nals
    assert h264.split_length_prefixed(h264.join_length_prefixed(nals)) == nals
