"""The clip muxer keeps the camera's own SPS/PPS, whatever framing the camera uses.

Cameras that send SPS/PPS only in the RTSP SDP (StreamInfo.extradata), and sources that hand over
length-prefixed ("avcC") packets, used to give clips that decoded with errors or not at all: the
muxer opened a libx264 encoder whose own parameter sets replaced the camera's. Each clip here is
decoded in full by ffmpeg, which must report no error and every frame.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from camrec.record.mux import FragmentedMp4Muxer
from camrec.sources.base import MediaPacket
from camrec.sources.h264 import NAL_PPS, NAL_SPS, split_annexb, to_length_prefixed
from camrec.sources.synthetic import SyntheticSource

FRAMES = 45


def camera(options: str) -> tuple[list[MediaPacket], bytes | None]:
    source = SyntheticSource(f"synthetic:?size=320x180&fps=15&gop=1&realtime=0&{options}")
    info = source.open()
    packets = [p for p in (source.read() for _ in range(FRAMES)) if p is not None]
    source.close()
    return packets, info.extradata


def avcc_form(packets: list[MediaPacket], extradata: bytes | None) -> list[MediaPacket]:
    """The same stream as an MP4-style source gives it: length-prefixed packets, an avcC record
    (built from the SDP's parameter sets, or else from the first keyframe's)."""
    nals = split_annexb(extradata or packets[0].data)
    sps = next(n for n in nals if n[0] & 0x1F == NAL_SPS)
    pps = next(n for n in nals if n[0] & 0x1F == NAL_PPS)
    avcc = (bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]) + len(sps).to_bytes(2, "big") + sps
            + b"\x01" + len(pps).to_bytes(2, "big") + pps)
    info = replace(packets[0].stream, extradata=avcc)
    return [MediaPacket(to_length_prefixed(p.data), p.pts, p.dts, p.duration, p.keyframe, p.arrival, info)
            for p in packets]


def decode(tmp_path: Path, packets: list[MediaPacket]) -> tuple[str, str]:
    out: list[bytes] = []
    muxer = FragmentedMp4Muxer(packets[0].stream, out.append)
    for p in packets:
        muxer.add(p)
    muxer.close()
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"".join(out))
    errors = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-f", "null", "-"],
                            capture_output=True, text=True).stderr
    frames = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                             "stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0", str(clip)],
                            capture_output=True, text=True).stdout.strip()
    return errors, frames


@pytest.mark.parametrize("options", ["headers=inband", "headers=extradata", "headers=extradata&bframes=2"])
def test_annexb_cameras_with_in_band_or_sdp_only_parameter_sets(tmp_path: Path, options: str) -> None:
    packets, extradata = camera(options)
    assert ("extradata" in options) == bool(extradata)
    errors, frames = decode(tmp_path, packets)
    assert errors == "" and frames == f"h264,320,180,{FRAMES}"


@pytest.mark.parametrize("options", ["headers=inband", "headers=extradata"])
def test_length_prefixed_packets_with_an_avcc_record(tmp_path: Path, options: str) -> None:
    packets, extradata = camera(options)
    errors, frames = decode(tmp_path, avcc_form(packets, extradata))
    assert errors == "" and frames == f"h264,320,180,{FRAMES}"
