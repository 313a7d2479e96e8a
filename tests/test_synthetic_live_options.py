"""The synthetic camera's options for the live view (issue 12): B-frames, extradata-only headers and
the time stamp drawn into the picture (camrec.sources.stamp), read back after real H.264 coding."""

from __future__ import annotations

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from camrec.clock import SystemClock
from camrec.errors import SourceError
from camrec.sources import h264, stamp
from camrec.sources.synthetic import SyntheticSource, parse_synthetic


class SteppedClock(SystemClock):
    def __init__(self) -> None:
        self.now = 1_796_000_000.0

    def time(self) -> float:
        self.now += 1 / 15
        return self.now


def read(source: str, n: int, clock: SystemClock | None = None) -> tuple[list, object]:
    src = SyntheticSource(f"synthetic:?{source}", clock=clock)
    info = src.open()
    packets = [src.read() for _ in range(n)]
    src.close()
    return packets, info


def test_bframes_reorder_pts_but_keep_a_fixed_gop() -> None:
    packets, _ = read("size=320x240&realtime=0&gop=1&bframes=2", 45)
    assert any(p.pts != p.dts for p in packets)
    dts = [p.dts for p in packets]
    assert dts == sorted(dts) and len(set(dts)) == len(dts)
    assert [i for i, p in enumerate(packets) if p.keyframe] == [0, 15, 30]


@pytest.mark.parametrize("headers", ["inband", "extradata"])
def test_headers_inband_or_only_in_extradata(headers: str) -> None:
    packets, info = read(f"size=320x240&realtime=0&gop=1&headers={headers}", 16)
    in_band = {n[0] & 0x1F for p in packets if p.keyframe for n in h264.split_annexb(p.data)}
    assert (h264.NAL_SPS in in_band) == (headers == "inband")
    assert (info.extradata is not None) == (headers == "extradata")  # type: ignore[attr-defined]
    if headers == "extradata":
        sets = h264.parse_extradata(info.extradata)  # type: ignore[attr-defined]
        assert sets.complete and sets.length_size is None  # Annex B, like an RTSP camera's SDP


def test_stamp_survives_real_encoding() -> None:
    clock = SteppedClock()
    packets, _ = read("size=640x360&realtime=0&gop=1&stamp=1&bitrate=300", 10, clock)
    decoder = av.CodecContext.create("h264", "r")
    frames = [f for p in packets for f in decoder.decode(av.Packet(p.data))] + list(decoder.decode(None))
    stamps = [stamp.read_stamp(f.to_ndarray(format="gray")) for f in frames]
    expected = [round((1_796_000_000.0 + (i + 1) / 15) * 1000) % stamp.MODULUS for i in range(len(frames))]
    assert len(frames) == 10 and stamps == expected


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2**50), st.sampled_from([384, 640, 1280, 1920, 3840]))
def test_stamp_round_trip(ms: int, width: int) -> None:
    luma = np.full((stamp.block_size(width) * 2, width), 128, np.uint8)
    stamp.draw_stamp(luma, ms)
    assert stamp.read_stamp(luma) == ms % stamp.MODULUS


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**40 - 1), st.integers(min_value=4, max_value=47))
def test_a_damaged_stamp_reads_as_none_never_as_another_time(ms: int, flipped: int) -> None:
    luma = np.zeros((16, 640), np.uint8)
    stamp.draw_stamp(luma, ms)
    side = stamp.block_size(640)
    block = luma[:side, flipped * side:(flipped + 1) * side]
    block[:] = 255 - block  # one wrong bit: parity or a marker catches it
    assert stamp.read_stamp(luma) is None


def test_no_stamp_in_a_plain_picture() -> None:
    packets, _ = read("size=640x360&realtime=0&gop=1", 1)
    frames = av.CodecContext.create("h264", "r").decode(av.Packet(packets[0].data))
    assert stamp.read_stamp(frames[0].to_ndarray(format="gray")) is None


@pytest.mark.parametrize(("source", "message"), [
    ("synthetic:?bframes=17", "bframes"),
    ("synthetic:?bframes=x", "bad synthetic source"),
    ("synthetic:?headers=sdp", "inband or extradata"),
    ("synthetic:?size=320x240&stamp=1", "at least 384"),
])
def test_bad_options(source: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_synthetic(source)
