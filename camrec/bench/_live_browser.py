"""Debian's chromium as a live viewer for `camrec bench live --browser`: WebRTC (WHEP) and MSE.

A small page (PAGE, below) replaces an answer of the web app in the browser, so it runs on the
app's own origin: it logs in and calls the real routes with the session cookie, the CSRF token and
a same-origin WebSocket, as the web app's pages do. Never a browser download: the Debian package only.

The page reads the synthetic camera's stamp (layout in camrec/sources/stamp.py) from a canvas at
every presented frame (`requestVideoFrameCallback`): its clock then minus the stamp is the
glass-to-glass latency (capture → encode → hub → network → decode → display). The MSE player
keeps about 0.15 s behind the live edge as a live player must: it jumps forward when more than
0.5 s is buffered ahead, and plays 10 % faster above 0.25 s.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # Anything that is not loopback goes to a proxy that does not exist, and fails.
                 "--proxy-server=http://127.0.0.1:9", "--autoplay-policy=no-user-gesture-required"]
# WebRTC on loopback: Chromium gathers no loopback candidates and hides host addresses behind mDNS
# names otherwise (DESIGN §8).
WEBRTC_LOOPBACK_ARGS = ["--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"]

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>camrec bench live</title></head><body>
<script>
const MOD = 2 ** 40;
let csrf = '';

async function login(user, password) {
  const r = await fetch('/api/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                       body: JSON.stringify({username: user, password})});
  if (r.status !== 200) throw new Error('login: ' + r.status);
  csrf = (await r.json()).csrf;
}

// The stamp's layout: camrec/sources/stamp.py. null when this frame has no readable stamp.
function readStamp(v) {
  const w = v.videoWidth; if (!w) return null;
  const side = Math.max(8, Math.floor(Math.floor(w / 48) / 8) * 8);
  const c = readStamp.canvas || (readStamp.canvas = document.createElement('canvas'));
  if (c.width !== 48 * side) { c.width = 48 * side; c.height = side; }
  const g = c.getContext('2d', {willReadFrequently: true});
  g.drawImage(v, 0, 0, c.width, side, 0, 0, c.width, side);
  const d = g.getImageData(0, 0, c.width, side).data, q = side / 4, bits = [];
  for (let i = 0; i < 48; i++) {
    let s = 0, n = 0;
    for (let y = q; y < side - q; y++) {
      for (let x = i * side + q; x < (i + 1) * side - q; x++) {
        const o = (y * c.width + x) * 4; s += (d[o] + d[o + 1] + d[o + 2]) / 3; n++;
      }
    }
    bits.push(s / n >= 128 ? 1 : 0);
  }
  const start = [1, 0, 1, 1], end = [0, 1, 0];
  for (let i = 0; i < 4; i++) if (bits[i] !== start[i]) return null;
  for (let i = 0; i < 3; i++) if (bits[45 + i] !== end[i]) return null;
  let ones = 0, val = 0;
  for (let i = 4; i < 44; i++) { ones += bits[i]; val = val * 2 + bits[i]; }
  return ones % 2 === bits[44] ? val : null;
}

function newVideo() {
  const v = document.createElement('video');
  v.muted = true; v.autoplay = true; v.playsInline = true; document.body.appendChild(v);
  return v;
}

// Every presented frame until `seconds` after the first one plus `skip` seconds (the cached GOP's
// catch-up): first-frame time from t0, that frame's age at the join, then latencies.
function watch(v, t0, joinedMs, seconds, skip) {
  return new Promise((resolve) => {
    const out = {first_frame_ms: null, first_age_ms: null, latencies: [], frames: 0, unreadable: 0};
    let firstAt = null, done = false;
    // The age at the join of the first frame whose stamp reads (the very first one may be drawn
    // before it is complete); negative: captured after the join, so not from the cached GOP.
    const age = (stamp) => (joinedMs - stamp + MOD * 1.5) % MOD - MOD / 2;
    const finish = () => { if (!done) { done = true; resolve(out); } };
    const onFrame = () => {
      if (done) return;
      const now = performance.now(), nowMs = Date.now(), stamp = readStamp(v);
      out.frames++;
      if (stamp === null) out.unreadable++;
      if (out.first_age_ms === null && stamp !== null && out.frames <= 5) out.first_age_ms = age(stamp);
      if (firstAt === null) {
        firstAt = now; out.first_frame_ms = now - t0;
      } else if (now - firstAt > skip * 1000 && stamp !== null) {
        out.latencies.push((nowMs - stamp + MOD) % MOD);
      }
      if (now - firstAt > (skip + seconds) * 1000) finish(); else v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
    setTimeout(finish, (skip + seconds + 15) * 1000);  // no picture at all: report what there is
  });
}

async function webrtc(camera, seconds, skip) {
  const v = newVideo(), t0 = performance.now(), joined = Date.now();
  const pc = new RTCPeerConnection({iceServers: []});
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.ontrack = (e) => { v.srcObject = new MediaStream([e.track]); v.play().catch(() => {}); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((ok) => {
    if (pc.iceGatheringState === 'complete') ok();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && ok();
  });
  const r = await fetch(`/api/live/${camera}/whep?stream=main`, {method: 'POST',
    headers: {'Content-Type': 'application/sdp', 'X-CSRF-Token': csrf}, body: pc.localDescription.sdp});
  if (r.status !== 201) throw new Error('WHEP: ' + r.status + ' ' + await r.text());
  const session = r.headers.get('Location');
  await pc.setRemoteDescription({type: 'answer', sdp: await r.text()});
  const out = await watch(v, t0, joined, seconds, skip);
  const stats = await pc.getStats();
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') {
      out.codec = s.codecId && stats.get(s.codecId) ? stats.get(s.codecId).mimeType : null;
      Object.assign(out, {width: s.frameWidth, frames_decoded: s.framesDecoded, frames_dropped: s.framesDropped,
                          packets_lost: s.packetsLost, jitter_buffer_ms: s.jitterBufferEmittedCount ?
                            1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount : null});
    }
  });
  await fetch(session, {method: 'DELETE', headers: {'X-CSRF-Token': csrf}});
  pc.close();
  v.remove();
  return out;
}

async function mse(camera, seconds, skip) {
  const v = newVideo(), t0 = performance.now(), joined = Date.now();
  const ws = new WebSocket(`ws://${location.host}/api/live/${camera}/mse?stream=main`);
  ws.binaryType = 'arraybuffer';
  const pending = [];
  let source = null, sb = null, mime = null;
  const catchUp = () => {
    const b = v.buffered; if (!b.length) return;
    const start = b.start(0), end = b.end(b.length - 1), ahead = end - v.currentTime;
    if (v.currentTime < start || ahead > 0.5) v.currentTime = Math.max(start, end - 0.15);
    else v.playbackRate = ahead > 0.25 ? 1.1 : 1.0;
    if (v.paused) v.play().catch(() => {});
  };
  const pump = () => {
    if (!sb || sb.updating) return;
    const b = v.buffered;  // keep the buffer short: a live player never seeks back far
    if (b.length && v.currentTime - b.start(0) > 20) { sb.remove(0, v.currentTime - 10); return; }
    if (pending.length) sb.appendBuffer(pending.shift());
  };
  ws.onmessage = (e) => {
    if (typeof e.data === 'string') {
      const m = JSON.parse(e.data);
      if (m.type !== 'mse') return;
      if (!source) {
        mime = m.value; source = new MediaSource(); v.src = URL.createObjectURL(source);
        source.addEventListener('sourceopen', () => {
          sb = source.addSourceBuffer(mime);
          sb.addEventListener('updateend', () => { catchUp(); pump(); });
          pump();
        }, {once: true});
      } else if (sb && m.value !== mime) { mime = m.value; sb.changeType(mime); }
      return;
    }
    pending.push(e.data); pump();
  };
  const out = await watch(v, t0, joined, seconds, skip);
  const q = v.getVideoPlaybackQuality();
  Object.assign(out, {codec: mime, width: v.videoWidth, frames_decoded: q.totalVideoFrames,
                      frames_dropped: q.droppedVideoFrames});
  ws.close();
  v.remove();
  return out;
}
</script></body></html>"""


async def measure(base: str, camera: str, user: str, password: str, seconds: float, skip: float,
                  between: Any = None) -> dict[str, Any]:
    """WebRTC then MSE in one chromium page: {"webrtc": {...}, "mse": {...}} (see `summarize`).

    `between(kind)` is awaited before each kind and after the last (the caller reads CPU clocks)."""
    from playwright.async_api import async_playwright

    out: dict[str, Any] = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM),
                                          args=[*CHROMIUM_ARGS, *WEBRTC_LOOPBACK_ARGS])
        try:
            # The page must come from the server itself: a page Playwright fulfils has no address,
            # counts as public, and Chromium's local network access checks then block its WebSocket
            # to 127.0.0.1. So: an answer of the app (a 401 JSON one: no script of its own runs), its
            # content replaced by ours (bypass_csp: the app's CSP allows no inline script, rightly).
            context = await browser.new_context(bypass_csp=True)
            page = await context.new_page()
            await page.goto(f"{base}/api/live")
            await page.set_content(PAGE)
            await page.evaluate("([u, p]) => login(u, p)", [user, password])
            for kind in ("webrtc", "mse"):
                if between is not None:
                    await between(kind)
                raw = await page.evaluate(f"([c, s, k]) => {kind}(c, s, k)", [camera, seconds, skip])
                out[kind] = summarize(raw)
            if between is not None:
                await between(None)
        finally:
            await browser.close()
    return out


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    lat = sorted(raw.pop("latencies"))
    raw["latency_ms"] = {"samples": len(lat), "median": round(statistics.median(lat), 1) if lat else None,
                         "p95": round(lat[int(0.95 * (len(lat) - 1))], 1) if lat else None}
    for key in ("first_frame_ms", "first_age_ms", "jitter_buffer_ms"):
        if raw.get(key) is not None:
            raw[key] = round(raw[key], 1)
    return raw
