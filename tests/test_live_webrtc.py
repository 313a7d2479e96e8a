"""camrec.web.live.webrtc: a real hub fed by the synthetic camera, a real aiortc viewer, loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from itertools import pairwise

import av
import pytest
from aioice.ice import Connection
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from camrec.sources import h264
from camrec.sources.hub import PacketHub
from camrec.sources.stamp import MODULUS, read_stamp
from camrec.sources.synthetic import SyntheticSource
from camrec.web.live.webrtc import (
    PRIVATE_HOOKS,
    RTP_CLOCK,
    HubVideoTrack,
    IceSettings,
    LivePeer,
    NoCandidatesError,
    OfferError,
    Timeline,
    check_private_hooks,
    restrict_candidates,
)

LOOPBACK = IceSettings(addresses=("127.0.0.1",))


class Camera:
    """The synthetic camera publishing into a hub from its own thread, in real time."""

    def __init__(self, options: str) -> None:
        self.hub = PacketHub("cam")
        self.source = SyntheticSource(f"synthetic:?{options}")
        self.info = self.source.open()
        self.keyframes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-camera")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            packet = self.source.read()
            if packet is None:
                return
            self.keyframes += packet.keyframe
            self.hub.publish(packet)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.source.close()


@pytest.fixture
def camera(request: pytest.FixtureRequest) -> Iterator[Camera]:
    cam = Camera(request.param)
    yield cam
    cam.stop()


async def wait_until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def connect_viewer(peer: LivePeer) -> tuple[RTCPeerConnection, asyncio.Queue[MediaStreamTrack], str, str]:
    """A real aiortc viewer on loopback: offer (recvonly video), answer from `peer`."""
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client.addTransceiver("video", direction="recvonly")
    tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
    client.on("track", tracks.put_nowait)
    restrict_candidates(client, LOOPBACK)
    await client.setLocalDescription(await client.createOffer())
    offer = client.localDescription.sdp
    answer = await peer.answer(offer)
    await client.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return client, tracks, offer, answer


def candidates(sdp: str) -> set[tuple[str, int]]:
    return {(c.ip, c.port) for m in SessionDescription.parse(sdp).media for c in m.ice_candidates}


class DatagramRecord:
    """Every UDP datagram this process sends (socket.sendto, which asyncio's datagram transports use)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[tuple[tuple[str, int], tuple[str, int], bytes]] = []
        original = socket.socket.sendto
        record = self.sent

        def sendto(sock: socket.socket, data: bytes, *args: object) -> int:
            address = args[-1]
            record.append((sock.getsockname()[:2], address[:2], bytes(data)))  # type: ignore[index]
            return original(sock, data, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(socket.socket, "sendto", sendto)

    def stun_requests(self) -> list[tuple[tuple[str, int], tuple[str, int]]]:
        # RFC 5389: type 0x0001 (Binding request), magic cookie 0x2112A442 at bytes 4..7.
        return [(src, dst) for src, dst, data in self.sent
                if len(data) >= 20 and data[:2] == b"\x00\x01" and data[4:8] == b"\x21\x12\xa4\x42"]


def test_private_aiortc_and_aioice_hooks_are_still_there() -> None:
    """Fails loudly, naming the hook, when an aiortc/aioice upgrade moves what restrict_candidates replaces."""
    assert len(PRIVATE_HOOKS) == 4
    check_private_hooks()


def test_candidate_restriction_is_per_connection_not_process_wide() -> None:
    async def main() -> None:
        restricted = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        restricted.addTransceiver("video", direction="recvonly")
        restrict_candidates(restricted, LOOPBACK)
        other = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        other.addTransceiver("video", direction="recvonly")
        conn_of = [t.sender.transport.transport.iceGatherer._connection
                   for pc in (restricted, other) for t in pc.getTransceivers()]
        assert "get_component_candidates" in vars(conn_of[0])  # replaced on that instance only
        assert "get_component_candidates" not in vars(conn_of[1])
        assert "get_component_candidates" in vars(Connection)
        await restricted.close()
        await other.close()

    asyncio.run(main())


@pytest.mark.parametrize(("events", "expected"), [
    # (media seconds, wall seconds) → output ticks. Live, in step with the wall clock: media spacing.
    ([(0.0, 10.0), (0.1, 10.1), (0.2, 10.2)], [900_000, 909_000, 918_000]),
    # A cached GOP arriving at once is compressed to send time, then live packets follow media time.
    ([(0.0, 10.0), (0.1, 10.0), (0.2, 10.0), (0.3, 10.1)], [900_000, 900_001, 900_002, 909_000]),
    # A camera clock reset (media time back to 0) continues forward from the wall clock.
    ([(50.0, 10.0), (50.1, 10.1), (0.0, 10.2)], [900_000, 909_000, 918_000]),
    # Media time that leaps an hour ahead: a new segment, no leap.
    ([(0.0, 10.0), (3600.0, 10.1)], [900_000, 909_000]),
])
def test_timeline(events: list[tuple[float, float]], expected: list[int]) -> None:
    timeline = Timeline(0.0)
    assert [timeline.stamp(media, wall) for media, wall in events] == expected


def test_timeline_never_goes_back_across_restarts() -> None:
    timeline = Timeline(0.0)
    out = [timeline.stamp(1000.0 + i / 15, 5 + i / 15) for i in range(30)]
    timeline.restart()  # a reconnect: the new stream's pts start again at 0, 3 minutes later
    out += [timeline.stamp(i / 15, 185 + i / 15) for i in range(30)]
    assert all(b > a for a, b in pairwise(out))
    assert out[30] == 185 * RTP_CLOCK


@pytest.mark.parametrize("camera", ["size=320x240&realtime=0&gop=1&headers=extradata"], indirect=True)
def test_track_returns_annexb_packets_with_parameter_sets_and_ends_with_the_subscription(camera: Camera) -> None:
    async def main() -> list[av.Packet]:
        await wait_until(lambda: camera.keyframes >= 2)
        sub = camera.hub.subscribe("viewer", start="cached_keyframe")
        track = HubVideoTrack(sub)
        got = [await track.recv() for _ in range(20)]
        sub.close()
        with pytest.raises(MediaStreamError):
            while True:  # whatever was in flight, the closed subscription ends the track
                await track.recv()
        assert track.readyState == "ended"
        return got

    got = asyncio.run(main())
    first = h264.split_annexb(bytes(got[0]))
    assert [n[0] & 0x1F for n in first[:2]] == [h264.NAL_SPS, h264.NAL_PPS]
    assert all(p.time_base == Fraction(1, RTP_CLOCK) for p in got)
    pts = [p.pts for p in got]
    assert all(b > a for a, b in pairwise(pts))
    decoder = av.CodecContext.create("h264", "r")
    frames = [f for p in got for f in decoder.decode(av.Packet(bytes(p)))]
    assert frames and (frames[0].width, frames[0].height) == (320, 240)


def test_a_cached_backlog_is_paced_and_live_packets_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached GOP goes out at BACKLOG_BYTES_PER_SECOND (unpaced, a 1080p GOP overflowed the
    viewer's socket buffer); once the track is at the live edge nothing waits."""
    from camrec.web.live import webrtc

    waits: list[float] = []
    real_sleep = asyncio.sleep
    clock = [100.0]  # the track's monotonic clock: moves only when the track sleeps, or when told

    async def recording_sleep(delay: float) -> None:
        waits.append(delay)
        clock[0] += delay
        await real_sleep(0)

    monkeypatch.setattr(webrtc.asyncio, "sleep", recording_sleep)
    source = SyntheticSource("synthetic:?size=320x240&realtime=0&gop=10")
    info = source.open()
    packets = [source.read() for _ in range(31)]
    source.close()
    hub = PacketHub("cam")
    hub.start_stream(info)
    for packet in packets[:30]:  # two seconds of cached GOP, published at once
        hub.publish(packet)  # type: ignore[arg-type]
    sub = hub.subscribe("viewer")

    async def main() -> None:
        track = HubVideoTrack(sub, monotonic=lambda: clock[0])
        sizes = [(await track.recv()).size for _ in range(30)]
        # each backlog packet waits for the previous one's share of the link, so the waits add up to
        # all but the last packet's bytes at the backlog rate
        assert sum(waits) == pytest.approx(sum(sizes[:-1]) / webrtc.BACKLOG_BYTES_PER_SECOND)
        waits.clear()
        clock[0] += 10  # the live edge: the next packet is late rather than early
        hub.publish(packets[30])  # type: ignore[arg-type]
        await track.recv()
        assert waits == []
        sub.close()

    asyncio.run(main())


def test_track_survives_reconnects_gaps_and_garbage() -> None:
    """A reconnect (new StreamInfo, pts from 0 again), a garbage packet and a hub Gap: the track skips
    to the next keyframe, puts SPS/PPS in front of it, and its clock keeps going forward."""
    hub = PacketHub("cam")
    sub = hub.subscribe("viewer", max_items=6)
    streams = []
    for _ in range(2):  # two connections of an extradata-only camera, keyframes every 6 packets
        source = SyntheticSource("synthetic:?size=320x240&realtime=0&gop=0.4&headers=extradata")
        info = source.open()
        packets = [source.read() for _ in range(20)]
        source.close()
        assert all(p is not None for p in packets)
        streams.append((info, packets))
    (info1, first), (_, second) = streams
    garbage = replace(first[3], data=b"\x00\x00\x01\xff\xff", keyframe=False)  # type: ignore[type-var]  # NAL type 31

    async def main() -> list[av.Packet]:
        track = HubVideoTrack(sub)
        got: list[av.Packet] = []

        async def read() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    got.append(await track.recv())

        reader = asyncio.create_task(read())
        for batch in ([*first[:3], garbage], first[3:12], first[12:], second[:8]):  # the 2nd overflows the queue
            if batch is second[:8]:
                hub.end_stream("camera went away")
            for packet in batch:
                hub.publish(packet)  # type: ignore[arg-type]
            await asyncio.sleep(0.2)
        sub.close()
        await reader
        return got

    hub.start_stream(info1)
    got = asyncio.run(main())
    pts = [p.pts for p in got]
    assert all(b > a for a, b in pairwise(pts))
    nal_lists = [h264.split_annexb(bytes(p)) for p in got]
    keyframes = [nals for nals in nal_lists if h264.NAL_IDR in {n[0] & 0x1F for n in nals}]
    # Each batch is published without the reader running, so the 6-item queue overflows: first stream
    # 0 and 6 (3..8 queued, 9..11 dropped), 12 after a Gap (18 dropped), second stream 0 (6 dropped).
    assert len(keyframes) == 4
    assert all([n[0] & 0x1F for n in nals[:2]] == [h264.NAL_SPS, h264.NAL_PPS] for nals in keyframes)
    assert (sub.gaps, sub.dropped) == (2, 7)
    decoder = av.CodecContext.create("h264", "r")
    frames = [f for p in got for f in decoder.decode(av.Packet(bytes(p)))]
    assert len(frames) >= len(got) - 2  # the decoder may hold the last frames back


@pytest.mark.parametrize(("offer", "message"), [
    ("", "no video section"),
    ("v=0\r\nthis is not sdp\r\n", "malformed|no video"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
     "a=rtpmap:96 VP8/90000\r\na=recvonly\r\n", "no video section that can receive H.264"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
     "a=rtpmap:96 H264/90000\r\na=sendonly\r\n", "no video section that can receive H.264"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
     "a=rtpmap:96 H264/90000\r\na=recvonly\r\n", "ICE credentials"),
    ("x" * 70_000, "larger than"),
])
def test_bad_offers_are_refused_with_one_line(offer: str, message: str) -> None:
    hub = PacketHub("cam")

    async def main() -> None:
        peer = LivePeer(hub.subscribe("viewer"), LOOPBACK)
        with pytest.raises(OfferError, match=message) as caught:
            await peer.answer(offer)
        assert "\n" not in str(caught.value)
        assert peer.state == "closed" and hub.subscribers == 0

    asyncio.run(main())


@pytest.mark.parametrize("kinds", [["audio", "video"], ["video", "video"]])
def test_browser_like_offers_get_one_h264_sending_section_and_only_our_candidates(kinds: list[str]) -> None:
    """Browsers offer audio and a data channel too, all bundled: every section's candidates are ours,
    and the first video section sends H.264 only."""
    async def main() -> str:
        peer = LivePeer(PacketHub("cam").subscribe("viewer"), LOOPBACK)
        client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        for kind in kinds:
            client.addTransceiver(kind, direction="recvonly")
        client.createDataChannel("chat")
        restrict_candidates(client, LOOPBACK)
        await client.setLocalDescription(await client.createOffer())
        answer = await peer.answer(client.localDescription.sdp)
        await peer.close()
        await client.close()
        return answer

    answer = asyncio.run(main())
    media = SessionDescription.parse(answer).media
    assert len(media) == len(kinds) + 1
    assert {c.ip for m in media for c in m.ice_candidates} == {"127.0.0.1"}
    sending = [m for m in media if m.direction == "sendonly"]
    assert len(sending) == 1 and sending[0].kind == "video"
    assert {c.mimeType for c in sending[0].rtp.codecs} - {"video/rtx"} == {"video/H264"}


def test_a_full_port_range_is_a_clear_server_error() -> None:
    """The only port of the range is taken: no candidate can be bound, and the answer says so."""
    async def main() -> None:
        client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        client.addTransceiver("video", direction="recvonly")
        restrict_candidates(client, LOOPBACK)
        await client.setLocalDescription(await client.createOffer())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            port = taken.getsockname()[1]
            hub = PacketHub("cam")
            peer = LivePeer(hub.subscribe("viewer"), IceSettings(addresses=("127.0.0.1",), ports=(port, port)))
            with pytest.raises(NoCandidatesError, match=f"could not bind a UDP socket on 127.0.0.1 in ports {port}-"):
                await peer.answer(client.localDescription.sdp)
        assert peer.state == "closed" and hub.subscribers == 0
        await client.close()

    asyncio.run(main())


@pytest.mark.parametrize("camera", ["size=640x360&fps=15&gop=10&stamp=1&headers=extradata"], indirect=True)
def test_viewer_gets_the_cached_keyframe_at_once_over_loopback_only(camera: Camera,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A long GOP (10 s) and SPS/PPS only in the extradata: the first decoded frame was captured before
    the viewer joined (it is the cached keyframe or its GOP), and every datagram stays on loopback."""
    record = DatagramRecord(monkeypatch)

    async def main() -> tuple[list[av.VideoFrame], int, str, str, dict]:
        await wait_until(lambda: camera.keyframes >= 1 and camera.hub.stats()["gop_cache_packets"] >= 2)
        await asyncio.sleep(0.3)  # well after the keyframe, long before the next one (10 s)
        joined_ms = round(time.time() * 1000)
        peer = LivePeer(camera.hub.subscribe("viewer", start="cached_keyframe"), LOOPBACK)
        client, tracks, offer, answer = await connect_viewer(peer)
        track = await asyncio.wait_for(tracks.get(), 10)
        frames = [await asyncio.wait_for(track.recv(), 10) for _ in range(5)]
        stats = peer.stats()
        await peer.close()
        await client.close()
        return frames, joined_ms, offer, answer, stats

    frames, joined_ms, offer, answer, stats = asyncio.run(main())
    assert camera.keyframes == 1, "the camera sent a second keyframe: the test no longer shows a cached start"
    assert (frames[0].width, frames[0].height) == (640, 360)
    stamps = [read_stamp(f.to_ndarray(format="gray")) for f in frames]
    assert None not in stamps
    assert (joined_ms - stamps[0]) % MODULUS < 5000  # captured before the join: it came from the cache
    assert stamps == sorted(stamps)
    assert stats["packets_sent"] >= 5 and stats["bytes_sent"] > 0

    # Only loopback candidates on both sides, and only loopback datagrams.
    assert {host for host, _ in candidates(answer)} == {"127.0.0.1"}
    assert {host for host, _ in candidates(offer)} == {"127.0.0.1"}
    assert record.sent and {dst[0] for _, dst, _ in record.sent} == {"127.0.0.1"}
    # STUN binding requests only between the two peers' own candidates: no STUN/TURN server.
    requests = record.stun_requests()
    assert requests
    ours, theirs = candidates(answer), candidates(offer)
    for src, dst in requests:
        assert (src in ours and dst in theirs) or (src in theirs and dst in ours), (src, dst)


@pytest.mark.parametrize("camera", ["size=320x240&fps=15&gop=1"], indirect=True)
def test_port_range_and_twenty_peers_leave_no_sockets_or_tasks(camera: Camera) -> None:
    settings = IceSettings(addresses=("127.0.0.1",), ports=(42000, 42100))

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def one_viewer() -> None:
        peer = LivePeer(camera.hub.subscribe("viewer"), settings)
        client, tracks, _, answer = await connect_viewer(peer)
        assert all(42000 <= port <= 42100 for _, port in candidates(answer))
        track = await asyncio.wait_for(tracks.get(), 10)
        frame = await asyncio.wait_for(track.recv(), 10)
        assert (frame.width, frame.height) == (320, 240)
        await peer.close()
        await peer.close()  # idempotent
        await client.close()

    async def main() -> tuple[int, int, int, int]:
        await wait_until(lambda: camera.keyframes >= 1)
        await one_viewer()  # warm-up: lazily created executors, codec contexts
        await asyncio.sleep(0.2)
        fds_before, tasks_before = fds(), len(asyncio.all_tasks())
        for _ in range(20):
            await one_viewer()
        # aiortc's transports finish their last tasks a moment after close() returns
        await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_before and fds() <= fds_before, timeout=5)
        return fds_before, fds(), tasks_before, len(asyncio.all_tasks())

    fds_before, fds_after, tasks_before, tasks_after = asyncio.run(main())
    assert fds_after <= fds_before and tasks_after <= tasks_before
    assert camera.hub.subscribers == 0


@pytest.mark.parametrize("camera", ["size=320x240&fps=15&gop=1"], indirect=True)
def test_on_closed_fires_when_the_viewer_goes_away(camera: Camera) -> None:
    async def main() -> list[str]:
        closed: list[str] = []
        peer = LivePeer(camera.hub.subscribe("viewer"), LOOPBACK, on_closed=lambda p: closed.append(p.state))
        client, tracks, _, _ = await connect_viewer(peer)
        await asyncio.wait_for((await asyncio.wait_for(tracks.get(), 10)).recv(), 10)
        await client.close()  # the browser leaves: DTLS close_notify, then the connection closes
        await wait_until(lambda: bool(closed), timeout=10)
        await peer.close()
        return closed

    assert asyncio.run(main()) == ["closed"]
    assert camera.hub.subscribers == 0


@pytest.mark.parametrize(("addresses", "remote", "reached"), [
    (("127.0.0.1",), "127.0.0.1", True),
    (("127.0.0.1",), "192.0.2.2", False),  # the browser's LAN address: never from a loopback server
    (("127.0.0.1",), "fd00::2", False),
    (("127.0.0.1",), "0a1b2c.local", False),  # mDNS would ask the LAN
    (("::1",), "::1", True),
    (("::1",), "127.0.0.1", False),
    (("192.168.1.20",), "192.168.1.31", True),
    (("192.168.1.20",), "127.0.0.1", False),
    (("192.168.1.20",), "0a1b2c.local", True),
    ((), "192.168.1.31", True),
    ((), "127.0.0.1", False),  # aioice's default addresses never include loopback
    ((), "not an address", False),
])
def test_only_reachable_browser_candidates_are_paired(addresses: tuple[str, ...], remote: str,
                                                      reached: bool) -> None:
    from camrec.web.live.webrtc import reachable_offer

    ice = IceSettings(addresses=addresses)
    assert ice.reaches(remote) is reached
    line = f"a=candidate:1 1 udp 2122260223 {remote} 50000 typ host generation 0"
    sdp = f"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n{line}\r\na=end-of-candidates\r\n"
    assert (line in reachable_offer(sdp, ice)) is reached
    assert "a=end-of-candidates" in reachable_offer(sdp, ice)
