"""camrec/web/live/fmp4.py: live fragmented MP4 for the MSE fallback, checked with real ffprobe and chromium.

Streams are encoded here with PyAV's libx264 (or the synthetic camera): one with SPS/PPS only
in-band (like the demo camera and most RTSP cameras), one with B-frames and its parameter sets
only in the extradata, and the same one as MP4-style length-prefixed packets with an avcC record.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from camrec.sources.base import MediaPacket, StreamInfo
from camrec.sources.rtsp import RtspSource
from camrec.sources.synthetic import SyntheticScene, SyntheticSource
from camrec.web.live.fmp4 import LiveFragmenter
from tests.support.web_browser import CHROMIUM, chromium

FPS = 15
needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not installed")


def inband_stream(n: int = 30) -> tuple[StreamInfo, list[MediaPacket]]:
    """The synthetic camera: no extradata, SPS/PPS in front of every keyframe, no B-frames."""
    src = SyntheticSource(f"synthetic:?size=320x240&fps={FPS}&gop=1&realtime=0")
    info = src.open()
    packets = [src.read() for _ in range(n)]
    src.close()
    assert all(p is not None for p in packets)
    return info, [p for p in packets if p is not None]


def b_frame_stream(n: int = 30) -> tuple[StreamInfo, list[MediaPacket]]:
    """libx264 with 2 B-frames and a global header: SPS/PPS only in the extradata, pts != dts."""
    enc: Any = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 320, 240, "yuv420p"
    enc.time_base = Fraction(1, FPS)
    enc.framerate = Fraction(FPS)
    enc.gop_size = FPS
    enc.max_b_frames = 2
    enc.flags |= av.codec.context.Flags.global_header
    enc.options = {"preset": "veryfast", "x264-params": "bframes=2:b-adapt=0:scenecut=0"}
    enc.open()
    scene = SyntheticScene(320, 240, FPS, [(0.0, 10.0)], 30.0)
    raw = []
    for i in range(n):
        raw.extend(enc.encode(scene.frame(i)))
    raw.extend(enc.encode(None))
    info = StreamInfo(codec="h264", width=320, height=240, time_base=Fraction(1, FPS), fps=FPS,
                      extradata=bytes(enc.extradata))
    packets = [MediaPacket(data=bytes(p), pts=int(p.pts), dts=int(p.dts), duration=int(p.duration or 1),
                           keyframe=bool(p.is_keyframe), arrival=0.0, stream=info) for p in raw]
    assert any(p.pts != p.dts for p in packets), "the encoder made no B-frames"
    return info, packets


def annexb_nals(data: bytes) -> list[bytes]:
    """A plain Annex B splitter for the tests (independent of the one under test)."""
    parts = data.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
    return [p for p in parts if p]


def as_length_prefixed(info: StreamInfo, packets: list[MediaPacket]) -> tuple[StreamInfo, list[MediaPacket]]:
    """The same stream the way an MP4 demuxer delivers it: avcC extradata and 4-byte NAL lengths."""
    assert info.extradata
    nals = annexb_nals(info.extradata)
    sps = next(n for n in nals if n[0] & 0x1F == 7)
    pps = next(n for n in nals if n[0] & 0x1F == 8)
    avcc = (bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]) + struct.pack(">H", len(sps)) + sps
            + b"\x01" + struct.pack(">H", len(pps)) + pps)
    new = StreamInfo(codec="h264", width=info.width, height=info.height, time_base=info.time_base, fps=info.fps,
                     extradata=avcc)
    out = [MediaPacket(data=b"".join(struct.pack(">I", len(n)) + n for n in annexb_nals(p.data)), pts=p.pts,
                       dts=p.dts, duration=p.duration, keyframe=p.keyframe, arrival=0.0, stream=new) for p in packets]
    return new, out


def restamp(packets: list[MediaPacket], info: StreamInfo, offset: int) -> list[MediaPacket]:
    """`packets` as if they came later in the connection described by `info` (an in-band change)."""
    return [MediaPacket(data=p.data, pts=p.pts + offset, dts=p.dts + offset, duration=p.duration,
                        keyframe=p.keyframe, arrival=p.arrival, stream=info) for p in packets]


def resolution_switch() -> tuple[LiveFragmenter, list[bytes], LiveFragmenter, list[bytes]]:
    """320x240, then the camera changes to 640x360 in-band (same connection, same StreamInfo)."""
    info, first = inband_stream(15)
    src = SyntheticSource(f"synthetic:?size=640x360&fps={FPS}&gop=1&realtime=0")
    src.open()
    second = restamp([p for p in (src.read() for _ in range(15)) if p is not None], info, 15)
    src.close()
    a = LiveFragmenter(info, first[0])
    fa = [a.add(p) for p in first]
    assert not any(a.needs_new_init(p) for p in first)
    assert a.needs_new_init(second[0])
    b = LiveFragmenter(info, second[0], after=a)
    fb = [b.add(p) for p in second]
    return a, fa, b, fb


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, bytes]]:
    """(type, payload) of the top-level boxes in data[start:end]."""
    end = len(data) if end is None else end
    out = []
    while start < end:
        size, kind = struct.unpack_from(">I4s", data, start)
        assert size >= 8 and start + size <= end, f"bad box {kind!r}"
        out.append((kind, data[start + 8:start + size]))
        start += size
    return out


def fragment_fields(fragment: bytes) -> dict[str, int]:
    """tfdt base time, and the one trun sample's duration and composition offset, of a moof."""
    (kind, moof), _ = boxes(fragment)
    assert kind == b"moof"
    traf = dict(boxes(moof))[b"traf"]
    parts = dict(boxes(traf))
    tfdt = parts[b"tfdt"]
    base = struct.unpack(">Q", tfdt[4:12])[0] if tfdt[0] == 1 else struct.unpack(">I", tfdt[4:8])[0]
    trun = parts[b"trun"]
    count = struct.unpack(">I", trun[4:8])[0]
    duration, _size, _flags, cto = struct.unpack(">IIIi", trun[12:28])
    return {"dts": base, "count": count, "duration": duration, "cto": cto}


def fragment_all(info: StreamInfo, packets: list[MediaPacket]) -> tuple[LiveFragmenter, list[bytes]]:
    frag = LiveFragmenter(info, packets[0])
    return frag, [frag.add(p) for p in packets]


def ffprobe(data: bytes, tmp_path: Path, *args: str) -> dict[str, Any]:
    path = tmp_path / "live.mp4"
    path.write_bytes(data)
    run = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr
    result: dict[str, Any] = json.loads(run.stdout)
    return result


# ---------------------------------------------------------------------------------------------
# Structure, timestamps, formats


@needs_ffprobe
def test_inband_stream_one_fragment_per_add_and_ffprobe_reads_every_frame(tmp_path: Path) -> None:
    info, packets = inband_stream()
    assert info.extradata is None
    frag, fragments = fragment_all(info, packets)
    sps = annexb_nals(packets[0].data)[0]
    assert sps[0] & 0x1F == 7
    assert frag.mime == f'video/mp4; codecs="avc1.{sps[1:4].hex()}"'
    assert [k for k, _ in boxes(frag.init_segment)] == [b"ftyp", b"moov"]
    for packet, fragment in zip(packets, fragments, strict=True):
        # Each add() hands back the fragment of that very packet: no frame waits for the next one.
        top = boxes(fragment)
        assert [k for k, _ in top] == [b"moof", b"mdat"]
        mdat = top[1][1]
        nals, pos = [], 0
        while pos < len(mdat):
            n = struct.unpack_from(">I", mdat, pos)[0]
            nals.append(mdat[pos + 4:pos + 4 + n])
            pos += 4 + n
        assert nals == annexb_nals(packet.data)
    probe = ffprobe(frag.init_segment + b"".join(fragments), tmp_path, "-count_frames", "-show_streams")
    (stream,) = probe["streams"]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 320, 240)
    assert int(stream["nb_read_frames"]) == len(packets)
    assert frag.fragments == len(packets) and frag.bytes_out == len(frag.init_segment) + sum(map(len, fragments))


@needs_ffprobe
def test_b_frames_keep_their_composition_offsets(tmp_path: Path) -> None:
    info, packets = b_frame_stream()
    frag, fragments = fragment_all(info, packets)
    fields = [fragment_fields(f) for f in fragments]
    scale = Fraction(info.time_base) * frag.timescale
    origin = packets[0].dts
    assert fields[0]["dts"] == 0
    for p, f, nxt in zip(packets, fields, [*fields[1:], None], strict=True):
        assert f["count"] == 1
        assert f["cto"] == (p.pts - p.dts) * scale
        if nxt is not None:  # decode times are continuous: each frame starts where the previous ends
            assert nxt["dts"] == f["dts"] + f["duration"]
    assert any(f["cto"] > 0 for f in fields)
    probe = ffprobe(frag.init_segment + b"".join(fragments), tmp_path, "-count_frames", "-show_streams",
                    "-show_packets")
    assert int(probe["streams"][0]["nb_read_frames"]) == len(packets)
    tb = Fraction(probe["streams"][0]["time_base"])
    got = [(Fraction(int(q["pts"])) * tb, Fraction(int(q["dts"])) * tb) for q in probe["packets"]]
    want = [((p.pts - origin) * info.time_base, (p.dts - origin) * info.time_base) for p in packets]
    assert got == want


@needs_ffprobe
def test_length_prefixed_packets_give_the_same_fragments(tmp_path: Path) -> None:
    info, packets = b_frame_stream(20)
    avcc_info, avcc_packets = as_length_prefixed(info, packets)
    a, fa = fragment_all(info, packets)
    b, fb = fragment_all(avcc_info, avcc_packets)
    assert a.mime == b.mime
    assert fa == fb  # same NAL units, same timing: the input form leaves no trace
    # An avcC record with Annex B packets (sources that convert one but not the other) works too.
    mixed = restamp(packets, avcc_info, 0)
    c, fc = fragment_all(avcc_info, mixed)
    assert fc == fa and c.init_segment == b.init_segment
    probe = ffprobe(b.init_segment + b"".join(fb), tmp_path, "-count_frames", "-show_streams")
    assert int(probe["streams"][0]["nb_read_frames"]) == len(packets)


def test_gap_and_clock_jumps_keep_the_timeline_continuous() -> None:
    info, packets = inband_stream(45)  # keyframes at 0, 15, 30
    frag = LiveFragmenter(info, packets[0])
    seen = [fragment_fields(frag.add(p)) for p in packets[:4]]
    # Two frames' time without a frame (Chromium would stall at such a hole for good).
    seen.append(fragment_fields(frag.add(restamp([packets[4]], info, 2)[0])))
    # The hub dropped packets 5..14 (Gap): the keyframe at 15 follows frame 4 directly.
    frag.mark_gap()
    with pytest.raises(ValueError, match="keyframe"):
        frag.add(packets[20])
    seen.append(fragment_fields(frag.add(packets[15])))
    # The camera's clock steps back by 10 s, then leaps ahead by an hour.
    for p, shift in ((packets[16], -150), (packets[17], -150), (packets[18], 3600 * FPS)):
        seen.extend(fragment_fields(frag.add(moved)) for moved in restamp([p], info, shift))
    assert [s["dts"] for s in seen] == [i * seen[0]["duration"] for i in range(len(seen))]


def test_in_band_parameter_change_asks_for_a_new_init_and_the_timeline_goes_on() -> None:
    a, fa, b, fb = resolution_switch()
    assert fragment_fields(fb[0])["dts"] * a.timescale == b.timescale * (fragment_fields(fa[-1])["dts"]
                                                                         + fragment_fields(fa[-1])["duration"])
    assert a.end_seconds == pytest.approx(15 / FPS) and b.end_seconds == pytest.approx(30 / FPS)
    assert b.init_segment != a.init_segment


# ---------------------------------------------------------------------------------------------
# Bad input: a clear ValueError, never a crash


def test_refuses_what_cannot_play() -> None:
    info, packets = inband_stream(3)
    with pytest.raises(ValueError, match="keyframe"):
        LiveFragmenter(info, packets[1])
    hevc = StreamInfo(codec="hevc", width=320, height=240, time_base=Fraction(1, FPS), fps=FPS)
    with pytest.raises(ValueError, match=r"H\.264 only"):
        LiveFragmenter(hevc, packets[0])
    slices_only = b"".join(b"\x00\x00\x00\x01" + n for n in annexb_nals(packets[0].data) if n[0] & 0x1F == 5)
    bare = MediaPacket(data=slices_only, pts=0, dts=0, duration=1, keyframe=True, arrival=0.0, stream=info)
    with pytest.raises(ValueError, match="no SPS/PPS"):
        LiveFragmenter(info, bare)
    frag = LiveFragmenter(info, packets[0])
    with pytest.raises(ValueError, match="keyframe"):
        frag.add(packets[1])  # the first fragment must be a keyframe
    for data in (b"", b"\xff" * 64, b"\x00\x00\x01\xe5abc", b"\x00\x00\x00\x09abc"):
        junk = MediaPacket(data=data, pts=0, dts=0, duration=1, keyframe=True, arrival=0.0, stream=info)
        with pytest.raises(ValueError):
            frag.add(junk)
    frag.add(packets[0])
    other = MediaPacket(data=packets[1].data, pts=1, dts=1, duration=1, keyframe=False, arrival=0.0,
                        stream=StreamInfo(codec="h264", width=320, height=240, time_base=Fraction(1, FPS), fps=FPS))
    with pytest.raises(ValueError, match="another stream"):
        frag.add(other)
    truncated = StreamInfo(codec="h264", width=320, height=240, time_base=Fraction(1, FPS), fps=FPS,
                           extradata=b"\x01\x42\xc0\x14\xff\xe1\x00\x40\x67")
    with pytest.raises(ValueError, match="avcC"):
        LiveFragmenter(truncated, packets[0])


def test_mangled_keyframes_raise_value_error_only() -> None:
    """Random damage to the parameter sets and slices: ValueError or a working fragmenter, nothing else."""
    info, packets = inband_stream(2)
    rng = random.Random(12)
    outcomes = {"refused": 0, "accepted": 0}
    for _ in range(60):
        data = bytearray(packets[0].data[:400])
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        p = MediaPacket(data=bytes(data), pts=0, dts=0, duration=1, keyframe=True, arrival=0.0, stream=info)
        try:
            frag = LiveFragmenter(info, p)
            frag.add(p)
            outcomes["accepted"] += 1
        except ValueError as exc:
            assert "\n" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and outcomes["accepted"] > 0, outcomes


def _fields(p: MediaPacket) -> dict[str, Any]:
    return {"data": p.data, "pts": p.pts, "dts": p.dts, "duration": p.duration, "keyframe": p.keyframe,
            "arrival": p.arrival, "stream": p.stream}


def test_hostile_timestamps_raise_value_error_or_stay_continuous() -> None:
    info, packets = inband_stream(16)
    frag = LiveFragmenter(info, packets[0])
    # A refused first keyframe leaves the fragmenter waiting for a keyframe still.
    with pytest.raises(ValueError, match="pts far beyond dts"):
        frag.add(MediaPacket(**{**_fields(packets[0]), "pts": 10**9}))
    with pytest.raises(ValueError, match="keyframe"):
        frag.add(packets[1])
    rng = random.Random(5)
    seen = []
    for p in packets:
        dts = rng.choice([p.dts, -(2**62), 2**62, rng.randrange(-(10**9), 10**9)])
        pts = rng.choice([dts, dts + 1, dts - 5, dts + 10**12])
        duration = rng.choice([p.duration, 0, -3, 10**15])
        packet = MediaPacket(data=p.data, pts=pts, dts=dts, duration=duration, keyframe=p.keyframe,
                             arrival=0.0, stream=info)
        try:
            seen.append(fragment_fields(frag.add(packet)))
        except ValueError as exc:
            assert "pts far beyond dts" in str(exc)
    assert len(seen) > 3
    assert all(b["dts"] == a["dts"] + a["duration"] for a, b in itertools.pairwise(seen))


# ---------------------------------------------------------------------------------------------
# Chromium plays the fragments through Media Source Extensions

PAGE = """<!doctype html><meta charset=utf-8><video id=v muted playsinline></video><script>
window.play = async ([name, timeoutMs]) => {
  const meta = await (await fetch('/' + name + '.json')).json();
  const blob = new Uint8Array(await (await fetch('/' + name + '.bin')).arrayBuffer());
  if (!MediaSource.isTypeSupported(meta.mime)) return {error: 'unsupported ' + meta.mime};
  const v = document.getElementById('v');
  const ms = new MediaSource();
  v.src = URL.createObjectURL(ms);
  await new Promise((ok) => ms.addEventListener('sourceopen', ok, {once: true}));
  const sb = ms.addSourceBuffer(meta.mime);
  let pos = 0;
  for (const [i, size] of meta.sizes.entries()) {  // one appendBuffer per message, as the WebSocket sends them
    if (meta.mimes[i]) sb.changeType(meta.mimes[i]);  // a new {"type": "mse"} message, then its init
    sb.appendBuffer(blob.subarray(pos, pos + size));
    pos += size;
    await new Promise((ok, bad) => { sb.onupdateend = ok; sb.onerror = () => bad(new Error('append')); });
  }
  ms.endOfStream();
  v.currentTime = v.buffered.start(0);
  await v.play();
  // A stream that stalls (at a hole in the timeline) never ends: report where it stands instead.
  await Promise.race([new Promise((ok) => v.addEventListener('ended', ok, {once: true})),
                      new Promise((ok) => setTimeout(ok, timeoutMs))]);
  return {ended: v.ended, frames: v.getVideoPlaybackQuality().totalVideoFrames, start: v.buffered.start(0),
          end: v.buffered.end(0), ranges: v.buffered.length, width: v.videoWidth, error: v.error && v.error.message};
};
</script>"""


Streams = dict[str, tuple[list[bytes], dict[int, str], int]]  # name: (segments, mime per segment index, frames)


@contextlib.contextmanager
def serve(streams: Streams) -> Iterator[str]:
    """A throwaway aiohttp app on 127.0.0.1: the page, and per stream its segments and their MIME types."""
    aiohttp_web = pytest.importorskip("aiohttp.web")

    async def page(request: Any) -> Any:
        return aiohttp_web.Response(text=PAGE, content_type="text/html")

    async def media(request: Any) -> Any:
        segments, mimes, _ = streams[request.match_info["name"]]
        if request.match_info["ext"] == "json":
            return aiohttp_web.json_response({"mime": mimes[0], "sizes": [len(s) for s in segments],
                                              "mimes": [mimes.get(i) for i in range(len(segments))]})
        return aiohttp_web.Response(body=b"".join(segments), content_type="video/mp4")

    app = aiohttp_web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/{name}.{ext:json|bin}", media)
    loop = asyncio.new_event_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    runner = aiohttp_web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(aiohttp_web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def play_in_chromium(streams: Streams, profile: Path, fps: float,
                     seconds_of: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Plays every stream to its end through MSE (`count / fps` seconds long unless `seconds_of`
    says otherwise); what the <video> element reports, per stream."""
    seconds_of = seconds_of or {}
    pytest.importorskip("playwright.sync_api")
    results = {}
    with serve(streams) as base, chromium(profile, base) as browser:
        page = browser.page()
        page.goto(base + "/")
        for name, (_segments, _mimes, count) in streams.items():
            seconds = seconds_of.get(name, count / fps)
            result = page.evaluate("(args) => window.play(args)", [name, 3000 + 1000 * seconds])
            assert result.get("error") is None, (name, result, browser.console)
            assert result["ended"], (name, result)
            assert result["ranges"] == 1, (name, result)
            # The buffered range covers the whole stream: every frame's duration, no hole.
            assert result["end"] - result["start"] == pytest.approx(seconds, abs=0.5 / fps), (name, result)
            assert result["frames"] >= count - 2, (name, result)  # totalVideoFrames grew with every frame
            results[name] = result
        assert not [u for u in (r["url"] for r in browser.requests) if not u.startswith(base)]
    return results


needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


@needs_chromium
def test_chromium_plays_plain_b_frame_and_resolution_switching_streams(tmp_path: Path) -> None:
    streams: Streams = {}
    for name, (info, packets) in (("plain", inband_stream(30)), ("bframes", b_frame_stream(30))):
        frag, fragments = fragment_all(info, packets)
        streams[name] = ([frag.init_segment, *fragments], {0: frag.mime}, len(packets))
    # Half a second without frames (a camera pause): played through, not stalled at a hole.
    info, packets = inband_stream(30)
    frag, fragments = fragment_all(info, packets[:15] + restamp(packets[15:], info, FPS // 2))
    streams["pause"] = ([frag.init_segment, *fragments], {0: frag.mime}, len(packets))
    # The frame rate halves (a camera's night mode): frames last as long as the camera's real steps.
    slower = packets[:15] + [MediaPacket(**{**_fields(p), "pts": 2 * p.pts - 15, "dts": 2 * p.dts - 15})
                             for p in packets[15:]]
    frag, fragments = fragment_all(info, slower)
    streams["slower"] = ([frag.init_segment, *fragments], {0: frag.mime}, len(packets))
    seconds_of = {"slower": frag.end_seconds}
    # 16 frames of 1/15 s (the first longer step is closed like a hole), then 14 of 2/15 s.
    assert frag.end_seconds == pytest.approx((16 + 2 * 14) / FPS)
    a, fa, b, fb = resolution_switch()
    streams["switch"] = ([a.init_segment, *fa, b.init_segment, *fb], {0: a.mime, len(fa) + 1: b.mime},
                         len(fa) + len(fb))
    results = play_in_chromium(streams, tmp_path / "profile", FPS, seconds_of)
    assert {name: r["width"] for name, r in results.items()} == {"plain": 320, "bframes": 320, "pause": 320,
                                                                "slower": 320, "switch": 640}


@needs_chromium
def test_chromium_plays_a_real_rtsp_camera_with_jittery_timestamps(rtsp_camera: Any, tmp_path: Path) -> None:
    """gst-rtsp-server stamps frames with its clock: dts steps of 5978..6032 ticks with 6000-tick durations."""
    src = RtspSource(rtsp_camera.url("/cam"))
    info = src.open()
    packets: list[MediaPacket] = []
    try:
        while len(packets) < 30:
            packet = src.read()
            assert packet is not None
            if packets or packet.keyframe:
                packets.append(packet)
    finally:
        src.close()
    frag, fragments = fragment_all(info, packets)
    results = play_in_chromium({"rtsp": ([frag.init_segment, *fragments], {0: frag.mime}, len(packets))},
                               tmp_path / "profile", info.fps)
    assert results["rtsp"]["width"] == info.width
