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
from camrec.web.live.webrtc import LivePeer, IceSettings
from tests.support.web_browser import CHROMIUM_ARGS

SIZE = sys.argv[1] if len(sys.argv) > 1 else "1920x1080"
OPTS = sys.argv[2] if len(sys.argv) > 2 else "headers=extradata"
hub = PacketHub("cam"); stop = threading.Event()
def feed():
    src = SyntheticSource(f"synthetic:?size={SIZE}&fps=15&gop=4&stamp=1&bitrate=4000&{OPTS}"); src.open()
    while not stop.is_set(): hub.publish(src.read())
th = threading.Thread(target=feed); th.start()

JS_OFFER = """async () => {
  const pc = new RTCPeerConnection({iceServers: []}); window.pc = pc;
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.ontrack = (e) => { const v = document.createElement('video'); v.muted = true; v.autoplay = true; v.playsInline = true;
     v.srcObject = new MediaStream([e.track]); document.body.appendChild(v); window.v = v; v.play(); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => { if (pc.iceGatheringState === 'complete') r(); pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); });
  return pc.localDescription.sdp; }"""
JS_STAMP = """() => { const v = window.v; if (!v || !v.videoWidth) return null;
  const w = v.videoWidth, side = Math.max(8, Math.floor(Math.floor(w / 48) / 8) * 8);
  const c = document.createElement('canvas'); c.width = 48 * side; c.height = side;
  const g = c.getContext('2d', {willReadFrequently: true}); g.drawImage(v, 0, 0, c.width, side, 0, 0, c.width, side);
  const d = g.getImageData(0, 0, c.width, side).data; const q = side / 4; const bits = [];
  for (let i = 0; i < 48; i++) { let s = 0, n = 0;
    for (let y = q; y < side - q; y++) for (let x = i * side + q; x < (i + 1) * side - q; x++) { const o = (y * c.width + x) * 4; s += (d[o] + d[o+1] + d[o+2]) / 3; n++; }
    bits.push(s / n >= 128 ? 1 : 0); }
  const start = [1,0,1,1], end = [0,1,0];
  for (let i = 0; i < 4; i++) if (bits[i] !== start[i]) return -1;
  for (let i = 0; i < 3; i++) if (bits[45 + i] !== end[i]) return -1;
  let ones = 0, val = 0; for (let i = 4; i < 44; i++) { ones += bits[i]; val = val * 2 + bits[i]; }
  if (ones % 2 !== bits[44]) return -1;
  return (Date.now() - val + 2 ** 40) % 2 ** 40; }"""
JS_STATS = """async () => { const s = await window.pc.getStats(); let r = {};
  s.forEach(x => { if (x.type === 'inbound-rtp' && x.kind === 'video') r = {framesDecoded: x.framesDecoded, frameWidth: x.frameWidth, codecId: x.codecId, framesDropped: x.framesDropped, jitterBufferDelay: x.jitterBufferDelay, jitterBufferEmittedCount: x.jitterBufferEmittedCount, keyFramesDecoded: x.keyFramesDecoded, pliCount: x.pliCount, nackCount: x.nackCount, packetsLost: x.packetsLost};});
  if (r.codecId) r.codec = s.get(r.codecId).mimeType; return r; }"""

async def main():
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=[*CHROMIUM_ARGS, "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"])
        page = await browser.new_page()
        await page.set_content("<html><body></body></html>")
        await asyncio.sleep(2.0)  # mid-GOP (gop 4 s)
        offer = await page.evaluate(JS_OFFER)
        t0 = time.monotonic()
        peer = LivePeer(hub.subscribe("chromium"), IceSettings(("127.0.0.1",)))
        answer = await peer.answer(offer)
        await page.evaluate("(sdp) => window.pc.setRemoteDescription({type: 'answer', sdp})", answer)
        first = None
        while time.monotonic() - t0 < 10:
            st = await page.evaluate(JS_STATS)
            if st.get("framesDecoded"):
                first = (time.monotonic() - t0) * 1000; break
            await asyncio.sleep(0.01)
        lat = []
        end = time.monotonic() + 15
        while time.monotonic() < end:
            x = await page.evaluate(JS_STAMP)
            if x is not None and x >= 0: lat.append(x)
            await asyncio.sleep(0.1)
        st = await page.evaluate(JS_STATS)
        lat.sort()
        print(json.dumps({"size": SIZE, "opts": OPTS, "first_frame_ms_after_answer_start": first, "stats": st, "stamp_reads": len(lat),
                          "glass_to_glass_ms_median": lat[len(lat)//2] if lat else None, "p95": lat[int(len(lat)*0.95)] if lat else None, "min": lat[0] if lat else None,
                          "server": peer.stats()}, indent=1))
        await peer.close(); await browser.close()
try:
    asyncio.run(main())
finally:
    stop.set(); th.join()
