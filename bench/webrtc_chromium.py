#!/usr/bin/env python3
"""Debian's chromium as the WebRTC viewer of a camrec LivePeer, on loopback: time to first frame,
getStats() (codec, frames decoded, jitter buffer), and glass-to-glass latency read from the
synthetic camera's time stamp (camrec.sources.stamp) on a canvas. A measurement script, not a test:

    python3 bench/webrtc_chromium.py [WxH] [extra synthetic options, e.g. headers=inband]

The JS stamp reader below implements the layout documented in camrec/sources/stamp.py.
"""
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from playwright.async_api import async_playwright

from camrec.sources.hub import PacketHub
from camrec.sources.synthetic import SyntheticSource
from camrec.web.live.webrtc import IceSettings, LivePeer
from tests.support.web_browser import CHROMIUM_ARGS

SIZE = sys.argv[1] if len(sys.argv) > 1 else "1920x1080"
OPTS = sys.argv[2] if len(sys.argv) > 2 else "headers=extradata"
CHROMIUM_FLAGS = [*CHROMIUM_ARGS, "--allow-loopback-in-peer-connection",
                  "--disable-features=WebRtcHideLocalIpsWithMdns"]
hub = PacketHub("cam")
stop = threading.Event()


def feed() -> None:
    source = SyntheticSource(f"synthetic:?size={SIZE}&fps=15&gop=4&stamp=1&bitrate=4000&{OPTS}")
    source.open()
    while not stop.is_set():
        packet = source.read()
        if packet is not None:
            hub.publish(packet)


JS_OFFER = """async () => {
  const pc = new RTCPeerConnection({iceServers: []}); window.pc = pc;
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.ontrack = (e) => {
    const v = document.createElement('video');
    v.muted = true; v.autoplay = true; v.playsInline = true;
    v.srcObject = new MediaStream([e.track]); document.body.appendChild(v); window.v = v; v.play();
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => {
    if (pc.iceGatheringState === 'complete') r();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
  });
  return pc.localDescription.sdp; }"""
JS_STAMP = """() => { const v = window.v; if (!v || !v.videoWidth) return null;
  const w = v.videoWidth, side = Math.max(8, Math.floor(Math.floor(w / 48) / 8) * 8);
  const c = document.createElement('canvas'); c.width = 48 * side; c.height = side;
  const g = c.getContext('2d', {willReadFrequently: true});
  g.drawImage(v, 0, 0, c.width, side, 0, 0, c.width, side);
  const d = g.getImageData(0, 0, c.width, side).data; const q = side / 4; const bits = [];
  for (let i = 0; i < 48; i++) { let s = 0, n = 0;
    for (let y = q; y < side - q; y++) {
      for (let x = i * side + q; x < (i + 1) * side - q; x++) {
        const o = (y * c.width + x) * 4; s += (d[o] + d[o + 1] + d[o + 2]) / 3; n++;
      }
    }
    bits.push(s / n >= 128 ? 1 : 0); }
  const start = [1,0,1,1], end = [0,1,0];
  for (let i = 0; i < 4; i++) if (bits[i] !== start[i]) return -1;
  for (let i = 0; i < 3; i++) if (bits[45 + i] !== end[i]) return -1;
  let ones = 0, val = 0; for (let i = 4; i < 44; i++) { ones += bits[i]; val = val * 2 + bits[i]; }
  if (ones % 2 !== bits[44]) return -1;
  return (Date.now() - val + 2 ** 40) % 2 ** 40; }"""
JS_STATS = """async () => { const s = await window.pc.getStats(); let r = {};
  const keys = ['framesDecoded', 'frameWidth', 'codecId', 'framesDropped', 'jitterBufferDelay',
                'jitterBufferEmittedCount', 'keyFramesDecoded', 'pliCount', 'nackCount', 'packetsLost'];
  s.forEach(x => {
    if (x.type === 'inbound-rtp' && x.kind === 'video') r = Object.fromEntries(keys.map(k => [k, x[k]]));
  });
  if (r.codecId) r.codec = s.get(r.codecId).mimeType; return r; }"""

async def main() -> None:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        page = await browser.new_page()
        await page.set_content("<html><body></body></html>")
        await asyncio.sleep(2.0)  # join mid-GOP (gop 4 s)
        offer = await page.evaluate(JS_OFFER)
        t0 = time.monotonic()
        peer = LivePeer(hub.subscribe("chromium"), IceSettings(("127.0.0.1",)))
        answer = await peer.answer(offer)
        await page.evaluate("(sdp) => window.pc.setRemoteDescription({type: 'answer', sdp})", answer)
        first = None
        while time.monotonic() - t0 < 10:
            stats = await page.evaluate(JS_STATS)
            if stats.get("framesDecoded"):
                first = (time.monotonic() - t0) * 1000
                break
            await asyncio.sleep(0.01)
        lags = []
        end = time.monotonic() + 15
        while time.monotonic() < end:
            lag = await page.evaluate(JS_STAMP)
            if lag is not None and lag >= 0:
                lags.append(lag)
            await asyncio.sleep(0.1)
        stats = await page.evaluate(JS_STATS)
        lags.sort()
        print(json.dumps({
            "size": SIZE, "options": OPTS, "first_frame_ms_after_offer": first, "chromium": stats,
            "stamp_reads": len(lags),
            "glass_to_glass_ms": {"median": lags[len(lags) // 2], "p95": lags[int(len(lags) * 0.95)],
                                  "min": lags[0]} if lags else None,
            "server": peer.stats()}, indent=1))
        await peer.close()
        await browser.close()


if __name__ == "__main__":
    thread = threading.Thread(target=feed)
    thread.start()
    try:
        asyncio.run(main())
    finally:
        stop.set()
        thread.join()
