"""WebRTC passthrough: a camera hub's H.264 packets to one browser, packetized by aiortc, never re-encoded.

`LivePeer` is one viewer: `answer(offer)` makes the WHEP-style answer (ICE gathered completely, no
trickle), `close()` ends it. Its `HubVideoTrack` reads the hub subscription and returns `av.Packet`s,
which aiortc's H.264 "encoder" only packetizes. aiortc ignores the browser's keyframe requests in
this mode, so the subscription starts at the hub's cached keyframe: the viewer has a picture at once.

Network discipline (issue 12): `RTCConfiguration(iceServers=[])` always (aiortc's default, None,
means Google's STUN server), so only host candidates exist and no STUN/TURN server is contacted.
`IceSettings` chooses which local addresses become candidates and, optionally, a UDP port range.
aioice has no option for either, so `restrict_candidates` replaces, on each of this peer's own
aioice connections only, the method that binds host candidates. The private parts this relies on
are listed in PRIVATE_HOOKS and checked by `check_private_hooks()` (tests/test_live_webrtc.py runs it),
and every answer is checked afterwards: a candidate outside the settings is an error, never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import Connection, StunProtocol
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcicetransport import RTCIceGatherer
from aiortc.sdp import SessionDescription

from camrec.sources.base import MediaPacket, StreamInfo
from camrec.sources.h264 import ParameterSetInjector
from camrec.sources.hub import Gap, StreamEnd, StreamStart, Subscription

log = logging.getLogger(__name__)

RTP_CLOCK = 90_000
RTP_TIME_BASE = Fraction(1, RTP_CLOCK)
MAX_OFFER_BYTES = 64 * 1024
# A backlog (the cached GOP at join) goes out at this rate instead of all at once: unpaced, a
# 1080p GOP (about 1 MB) overflowed the viewer's UDP receive buffer on loopback and its keyframe
# was lost, so the "instant" first frame came one GOP late. Live packets are never delayed.
BACKLOG_BYTES_PER_SECOND = 4_000_000
# Receive buffer of each candidate socket, as aioice sets for its own: a keyframe arrives as a burst.
UDP_RECEIVE_BUFFER = 256 * 1024
# Media time that moves further than this between two packets (a camera clock reset, a reconnect
# that kept its timestamps) starts a new segment of the output clock instead of a jump.
MAX_STEP_SECONDS = 2.0
PRIVATE_HOOKS = (
    "aiortc.rtcicetransport.RTCIceGatherer._connection (the aioice Connection of a gatherer)",
    "aioice.ice.Connection.get_component_candidates(component, addresses, timeout) called by"
    " Connection.gather_candidates with the host addresses (we replace it per instance)",
    "aioice.ice.Connection._protocols (list of StunProtocol; Connection.close closes them)",
    "aioice.ice.StunProtocol(connection) and its local_candidate attribute",
)


class OfferError(ValueError):
    """An SDP offer we cannot answer; the message is one line, fit for a 400 response."""


class NoCandidatesError(RuntimeError):
    """No local address could be bound (a wrong `addresses` setting, a full port range)."""


@dataclass(frozen=True)
class IceSettings:
    """Which local addresses become ICE host candidates, and which UDP ports they may use.

    `addresses` empty: aioice's own choice (every interface address except loopback). Otherwise
    exactly these addresses (loopback included). `ports` (first, last), inclusive: bind candidates
    inside this range, so a firewall can allow it; None: the kernel picks ephemeral ports.
    """

    addresses: tuple[str, ...] = ()
    ports: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        for address in self.addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"WebRTC address {address!r} is not an IP address") from None
        if self.ports is not None:
            first, last = self.ports
            if not 1024 <= first <= last <= 65535:
                raise ValueError(f"WebRTC port range {first}-{last} must lie within 1024-65535")

    def allows(self, host: str, port: int) -> bool:
        if self.addresses and host not in self.addresses:
            return False
        return self.ports is None or self.ports[0] <= port <= self.ports[1]

    def reaches(self, remote: str) -> bool:
        """Whether one of our candidates could reach a browser's candidate at `remote`: loopback
        talks only to loopback and a LAN address only to non-loopback ones, of its own IP version.
        Without this, a server pinned to 127.0.0.1 would send connectivity checks to every
        address the browser lists (its LAN and VPN addresses), and a LAN server to loopback."""
        if remote.endswith(".local"):  # an mDNS name: resolving it asks the LAN, never from loopback
            return not self.addresses or any(not ipaddress.ip_address(a).is_loopback for a in self.addresses)
        try:
            ip = ipaddress.ip_address(remote)
        except ValueError:
            return False
        if not self.addresses:  # aioice's own choice never includes loopback
            return not ip.is_loopback
        return any((local := ipaddress.ip_address(a)).version == ip.version and local.is_loopback == ip.is_loopback
                   for a in self.addresses)


def reachable_offer(offer_sdp: str, ice: IceSettings) -> str:
    """The offer without the candidates `ice` can't reach (IceSettings.reaches)."""
    kept = []
    for line in offer_sdp.split("\n"):
        fields = line.split()
        if line.startswith("a=candidate:") and len(fields) >= 6 and not ice.reaches(fields[4]):
            continue
        kept.append(line)
    return "\n".join(kept)


def check_private_hooks() -> None:
    """Raises RuntimeError naming the hook when this aiortc/aioice no longer has what we replace."""
    gatherer = RTCIceGatherer(iceServers=[])
    conn = getattr(gatherer, "_connection", None)
    if not isinstance(conn, Connection):
        raise RuntimeError(f"aiortc changed: {PRIVATE_HOOKS[0]}")
    params = list(inspect.signature(conn.get_component_candidates).parameters)
    if params[:2] != ["component", "addresses"] or "self.get_component_candidates(" not in inspect.getsource(
            Connection.gather_candidates):
        raise RuntimeError(f"aioice changed: {PRIVATE_HOOKS[1]}")
    if not isinstance(getattr(conn, "_protocols", None), list):
        raise RuntimeError(f"aioice changed: {PRIVATE_HOOKS[2]}")
    if list(inspect.signature(StunProtocol).parameters) != ["receiver"]:
        raise RuntimeError(f"aioice changed: {PRIVATE_HOOKS[3]}")


def _gatherers(pc: RTCPeerConnection) -> list[RTCIceGatherer]:
    found: dict[int, RTCIceGatherer] = {}
    transports = [t.sender.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        if dtls is not None:
            gatherer = dtls.transport.iceGatherer
            found[id(gatherer)] = gatherer
    return list(found.values())


def restrict_candidates(pc: RTCPeerConnection, settings: IceSettings) -> None:
    """Makes this peer's not yet gathered ICE transports offer only `settings`' addresses and ports.

    Call it after the transceivers exist (after setRemoteDescription, or addTransceiver on the
    offering side) and before setLocalDescription, which gathers. Only this peer is affected.
    """
    if not settings.addresses and settings.ports is None:
        return
    for gatherer in _gatherers(pc):
        if gatherer.state != "new":
            raise RuntimeError("restrict_candidates called after ICE gathering started")
        conn = gatherer._connection
        if not isinstance(conn, Connection):
            raise RuntimeError(f"aiortc changed: {PRIVATE_HOOKS[0]}")
        conn.get_component_candidates = _host_candidates_binder(conn, settings)  # type: ignore[method-assign]


def _host_candidates_binder(conn: Connection, settings: IceSettings) -> Callable[..., Any]:
    async def get_component_candidates(component: int, addresses: list[str], timeout: int = 5) -> list[Candidate]:
        # aioice passes its own interface list (loopback skipped); ours replaces it. There is no
        # STUN/TURN server (iceServers=[]), so host candidates are all this method has to make.
        wanted = list(settings.addresses) or list(addresses)
        loop = asyncio.get_running_loop()
        candidates: list[Candidate] = []
        for address in wanted:
            bound = await _bind(loop, conn, address, settings.ports)
            if bound is None:
                continue
            transport, protocol = bound
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
            host, port = transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host), component=component, transport="udp",
                priority=candidate_priority(component, "host"), host=host, port=port, type="host")
            conn._protocols.append(protocol)
            candidates.append(protocol.local_candidate)
        return candidates

    return get_component_candidates


async def _bind(loop: asyncio.AbstractEventLoop, conn: Connection, address: str,
                ports: tuple[int, int] | None) -> tuple[asyncio.DatagramTransport, StunProtocol] | None:
    choices: Iterable[int]
    if ports is None:
        choices = [0]
    else:
        first, last = ports
        start = random.randint(first, last)  # spread peers over the range instead of probing from the bottom
        choices = [*range(start, last + 1), *range(first, start)]
    for port in choices:
        try:
            transport, protocol = await loop.create_datagram_endpoint(lambda: StunProtocol(conn),
                                                                      local_addr=(address, port))
        except OSError:
            continue
        return transport, protocol
    log.warning("WebRTC: no free UDP port on %s%s", address, "" if ports is None else f" in {ports[0]}-{ports[1]}")
    return None


class Timeline:
    """A continuous 90 kHz clock for the RTP timestamps of one track, whatever the hub delivers.

    Within a segment, output time follows media time (pts), so frame spacing is the camera's. But it
    never runs ahead of the wall clock: a burst (the cached GOP at join, a delayed batch) is
    compressed to the time it is sent, otherwise the browser's jitter buffer would hold every later
    frame back by the age of the cached keyframe. A reconnect, a new stream or a media-time jump
    starts a new segment at the current wall time, so time never goes backwards or leaps by the
    length of an outage.
    """

    def __init__(self, now: float) -> None:
        self._t0 = now
        self._last: int | None = None
        self._origin: float | None = None  # media seconds at the segment's start
        self._anchor = 0  # output ticks that the segment's origin maps to
        self._prev_media = 0.0
        self.behind = False  # the last packet was ahead of the wall clock: part of a backlog

    def restart(self) -> None:
        self._origin = None

    def stamp(self, media: float, now: float) -> int:
        wall = round((now - self._t0) * RTP_CLOCK)
        step = media - self._prev_media
        if self._origin is None or step > MAX_STEP_SECONDS or step < -MAX_STEP_SECONDS / 2:
            self._origin = media
            self._anchor = wall if self._last is None else max(wall, self._last + 1)
        self._prev_media = media
        out = self._anchor + round((media - self._origin) * RTP_CLOCK)
        # Ahead of the wall clock by more than a frame's worth of jitter: a backlog, being compressed.
        self.behind = out - wall > RTP_CLOCK // 20
        if out > wall:
            self._anchor -= out - wall
            out = wall
        if self._last is not None and out <= self._last:
            out = self._last + 1
        self._last = out
        return out


class HubVideoTrack(MediaStreamTrack):
    """A video track whose `recv()` returns Annex B `av.Packet`s from a hub subscription."""

    kind = "video"

    def __init__(self, sub: Subscription, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._sub = sub
        self._monotonic = monotonic
        self._timeline = Timeline(monotonic())
        self._info: StreamInfo | None = None
        self._injector: ParameterSetInjector | None = None
        self._need_key = True
        self._pace_until = 0.0  # monotonic time before which the next backlog packet may not go
        self.packets = 0
        self.bytes = 0
        self.skipped = 0  # packets not sent: before the first keyframe, or malformed and until the next key

    @property
    def info(self) -> StreamInfo | None:
        return self._info

    async def recv(self) -> av.Packet:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            item = await self._sub.aget()
            if item is None:
                self.stop()
                raise MediaStreamError
            if isinstance(item, StreamStart):
                self._begin(item.info)
            elif isinstance(item, StreamEnd):
                self._timeline.restart()
                self._need_key = True
            elif isinstance(item, Gap):
                self._need_key = True  # the hub resumes at a keyframe anyway
            elif isinstance(item, MediaPacket):
                packet = self._packet(item)
                if packet is not None:
                    await self._pace(packet.size)
                    return packet

    async def _pace(self, size: int) -> None:
        # Each packet books size/rate seconds of the link; only backlog packets wait for the booking.
        now = self._monotonic()
        if self._timeline.behind and self._pace_until > now:
            await asyncio.sleep(self._pace_until - now)
            now = self._pace_until
        self._pace_until = max(now, self._pace_until) + size / BACKLOG_BYTES_PER_SECOND

    def _begin(self, info: StreamInfo) -> None:
        self._info = info
        self._timeline.restart()
        self._need_key = True
        try:
            self._injector = ParameterSetInjector(info.extradata)
        except ValueError as exc:
            log.warning("live view: ignoring the stream's unreadable extradata: %s", exc)
            self._injector = ParameterSetInjector(None)

    def _packet(self, item: MediaPacket) -> av.Packet | None:
        if item.stream is not self._info or self._injector is None:
            self._begin(item.stream)
        assert self._injector is not None
        if self._need_key and not item.keyframe:
            self.skipped += 1
            return None
        try:
            data = self._injector.process(item.data, item.keyframe)
        except ValueError as exc:
            log.debug("live view: skipping a malformed packet: %s", exc)
            self.skipped += 1
            self._need_key = True
            return None
        self._need_key = False
        packet = av.Packet(data)
        packet.pts = packet.dts = self._timeline.stamp(float(item.pts * item.stream.time_base), self._monotonic())
        packet.time_base = RTP_TIME_BASE
        self.packets += 1
        self.bytes += len(data)
        return packet


def _check_offer(offer_sdp: str) -> None:
    if len(offer_sdp) > MAX_OFFER_BYTES:
        raise OfferError(f"SDP offer larger than {MAX_OFFER_BYTES} bytes")
    try:
        parsed = SessionDescription.parse(offer_sdp)
    except Exception as exc:  # aiortc's parser raises whatever the bad line provokes
        raise OfferError(f"malformed SDP offer ({type(exc).__name__})") from None
    for media in parsed.media:
        if (media.kind == "video" and media.port != 0 and media.direction in (None, "sendrecv", "recvonly")
                and any(c.mimeType.lower() == "video/h264" for c in media.rtp.codecs)):
            if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
                raise OfferError("SDP offer without ICE credentials")
            if media.dtls is None or not media.dtls.fingerprints:
                raise OfferError("SDP offer without a DTLS fingerprint")
            return
    raise OfferError("SDP offer has no video section that can receive H.264")


class LivePeer:
    """One WebRTC viewer of one hub subscription. Owns the subscription from construction on."""

    def __init__(self, sub: Subscription, ice: IceSettings | None = None,
                 on_closed: Callable[[LivePeer], object] | None = None) -> None:
        self.ice = ice or IceSettings()
        self.on_closed = on_closed
        self.track = HubVideoTrack(sub)
        self.started = time.monotonic()
        self._sub = sub
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._answered = False
        self._closing: asyncio.Task[None] | None = None
        self._pc.on("connectionstatechange", self._state_changed)
        self.track.on("ended", self._track_ended)

    @property
    def state(self) -> str:
        return "closed" if self._closing is not None else self._pc.connectionState

    async def answer(self, offer_sdp: str) -> str:
        """The SDP answer with every candidate in it; raises OfferError for an offer we can't serve."""
        if self._answered or self._closing is not None:
            raise OfferError("this live session already has an offer")
        self._answered = True
        try:
            _check_offer(offer_sdp)
            # The sending transceiver exists before the offer is applied, so aiortc gives it the
            # offer's first video section and negotiates only H.264 for it (its default is VP8 first), with RTX
            # for retransmissions the browser asks for by NACK.
            video = self._pc.addTransceiver(self.track, direction="sendonly")
            video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                       if c.mimeType.lower() in ("video/h264", "video/rtx")])
            try:
                await self._pc.setRemoteDescription(RTCSessionDescription(sdp=reachable_offer(offer_sdp, self.ice),
                                                                          type="offer"))
            except Exception as exc:  # aiortc raises ValueError, KeyError, … for offers it dislikes
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise OfferError(f"unusable SDP offer: {first}") from None
            restrict_candidates(self._pc, self.ice)
            answer = await self._pc.createAnswer()
            if not any(m.kind == "video" and m.port != 0 and any(c.mimeType.lower() == "video/h264"
                                                                   for c in m.rtp.codecs)
                       for m in SessionDescription.parse(answer.sdp).media):
                raise OfferError("SDP offer has no H.264 format we can send")
            await self._pc.setLocalDescription(answer)  # gathers every candidate: no trickle
            self._check_candidates()
            return self._pc.localDescription.sdp
        except BaseException:
            await self.close()
            raise

    def _check_candidates(self) -> None:
        found = 0
        for gatherer in _gatherers(self._pc):
            for candidate in gatherer.getLocalCandidates():
                if not self.ice.allows(candidate.ip, candidate.port):
                    raise RuntimeError(f"ICE candidate {candidate.ip}:{candidate.port} escaped the WebRTC "
                                       f"address settings (aioice changed?)")
                found += 1
        if not found:  # the server's configuration, not the offer: a 5xx, and the owner must act
            where = ", ".join(self.ice.addresses) or "any LAN address"
            if self.ice.ports is not None:
                where += f" in ports {self.ice.ports[0]}-{self.ice.ports[1]}"
            raise NoCandidatesError(f"no WebRTC candidate: could not bind a UDP socket on {where}")

    def stats(self) -> dict[str, Any]:
        sub = self._sub.stats()
        return {"state": self.state, "packets_sent": self.track.packets, "bytes_sent": self.track.bytes,
                "skipped": self.track.skipped, "dropped": sub.get("dropped", 0),
                "seconds": round(time.monotonic() - self.started, 1)}

    async def close(self) -> None:
        """Ends the session: the peer connection, its sockets and tasks, the track and the subscription."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._sub.close()
        self.track.stop()
        try:
            await self._pc.close()
        finally:
            callback, self.on_closed = self.on_closed, None
            if callback is not None:
                try:
                    callback(self)
                except Exception:
                    log.exception("live view: on_closed callback failed")

    def _state_changed(self) -> None:
        if self._pc.connectionState in ("failed", "closed") and self._closing is None:
            self._closing = asyncio.ensure_future(self._close())

    def _track_ended(self) -> None:
        if self._closing is None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to close from here
                self._closing = asyncio.get_running_loop().create_task(self._close())
