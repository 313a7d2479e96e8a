// The live player: one camera stream, over WebRTC (WHEP) or fragmented MP4 over a WebSocket (MSE).
//
// In "auto" both start together and the first to show a frame wins. WebRTC is preferred (lower
// latency, no buffer to manage): when MSE shows video first, WebRTC keeps trying for a few seconds
// and takes over if it delivers frames. The viewer can force either one. Whichever is in use, the
// overlay says so when the camera is offline or reconnecting, or when frames stop arriving, so a
// frozen picture is never shown as live.
//
// The camera's H.264 reaches the browser as the camera sent it (no transcoding). Streams with
// B-frames cannot be decoded over WebRTC: the server answers the offer with 409 {"fallback": "mse"}
// and the player says why it plays over MSE.

import * as api from "../api.js";
import { MseTransport } from "./mse.js";
import { videoElement } from "./transport.js";
import { RtcTransport } from "./webrtc.js";

const RTC_GRACE_MS = 4000; // after MSE won: how long WebRTC may still take over
const POLL_MS = 3000; // GET /api/live/<camera>: the camera's state as the recorder sees it
const TICK_MS = 100; // first-frame detection and the stall watchdog
const STALL_MS = 3000; // no new frame for this long: say so instead of showing a frozen picture
const STALL_RESTART_MS = 10000; // ...and reconnect if the recorder says the camera is live
const RESTART_MS = [1000, 2000, 5000, 10000]; // back-off after a lost connection

export const TRANSPORTS = ["auto", "webrtc", "mse"];
export const TRANSPORT_NAMES = { auto: "Auto", webrtc: "WebRTC", mse: "MSE" };

const players = new Set();

const STATE_TEXT = {
  offline: "Camera offline",
  reconnecting: "Camera reconnecting…",
};

/** The stream's entry in a GET /api/live/<camera> answer (tolerates {streams: {...}} or flat). */
export function streamsOf(cam) {
  if (!cam || typeof cam !== "object") return {};
  const s = cam.streams && typeof cam.streams === "object" ? cam.streams : cam;
  const out = {};
  for (const name of ["main", "sub"]) if (s[name] && typeof s[name] === "object") out[name] = s[name];
  return out;
}

export class LivePlayer {
  /**
   * `box` receives the two video layers and the overlay. `onChange(player)` is called whenever
   * what the viewer should read changes (transport in use, notes, state, stream facts).
   */
  constructor(box, { camera, stream = "main", transport = "auto", onChange = () => {} }) {
    this.box = box;
    this.camera = camera;
    this.stream = stream;
    this.transport = TRANSPORTS.includes(transport) ? transport : "auto";
    this.onChange = onChange;
    this.rtcVideo = videoElement("live-rtc");
    this.mseVideo = videoElement("live-mse");
    this.overlay = document.createElement("div");
    this.overlay.className = "live-overlay";
    this.overlay.setAttribute("role", "status");
    box.classList.add("live-box");
    box.setAttribute("aria-label", `${camera}: live video`);
    box.replaceChildren(this.mseVideo, this.rtcVideo, this.overlay);
    this.stopped = true;
    this.info = null; // this stream's entry from GET /api/live/<camera>
    this.viewers = null;
    this.timers = [];
    this.restarts = 0;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    players.add(this);
    installHook();
    this.timers.push(setInterval(() => this.poll(), POLL_MS));
    this.poll();
    this.connect();
  }

  connect() {
    this.generation = (this.generation || 0) + 1; // tells late answers of an earlier connect apart
    clearTimeout(this.restartTimer);
    this.reconnecting = null;
    this.stalled = false;
    this.active = null;
    this.note = null;
    this.error = null;
    this.rtcError = null;
    this.mseError = null;
    this.localState = null; // "reconnecting" while WebRTC's connection is disconnected
    this.startedAt = performance.now();
    this.firstFrameMs = null;
    this.lastFrames = -1;
    this.lastFrameAt = performance.now();
    this.graceTimer = null;
    this.rtc = null;
    this.mse = null;
    if (this.transport !== "mse") this.startRtc();
    if (this.transport !== "webrtc") this.startMse();
    this.tickTimer = setInterval(() => this.tick(), TICK_MS);
    this.changed();
  }

  startRtc() {
    const rtc = new RtcTransport(this.rtcVideo, { onState: (s) => this.rtcState(rtc, s) });
    this.rtc = rtc;
    rtc.start(this.camera, this.stream).catch((e) => this.rtcFailed(rtc, e));
  }

  startMse() {
    const mse = new MseTransport(this.mseVideo, {
      onState: (s) => this.serverState(s),
      onFailed: (e) => this.mseFailed(mse, e),
    });
    this.mse = mse;
    try {
      mse.start(this.camera, this.stream);
    } catch (e) {
      this.mseFailed(mse, e);
    }
  }

  /** Stops both transports, ends the WebRTC session, stops polling. */
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    this.disconnect();
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    clearTimeout(this.restartTimer);
    players.delete(this);
  }

  disconnect() {
    clearInterval(this.tickTimer);
    clearTimeout(this.graceTimer);
    if (this.rtc) this.rtc.stop();
    if (this.mse) this.mse.stop();
    this.rtc = null;
    this.mse = null;
    this.active = null;
  }

  /** Restarts with another stream or transport (the viewer's choice). */
  reconfigure({ stream = this.stream, transport = this.transport } = {}) {
    this.stream = stream;
    this.transport = TRANSPORTS.includes(transport) ? transport : "auto";
    this.info = null;
    if (this.stopped) return;
    this.disconnect();
    this.restarts = 0;
    this.poll();
    this.connect();
  }

  current() {
    if (this.active === "webrtc") return this.rtc;
    if (this.active === "mse") return this.mse;
    return null;
  }

  get videoElement() {
    return this.active === "mse" ? this.mseVideo : this.rtcVideo;
  }

  tick() {
    if (this.stopped) return;
    const rtcUp = this.rtc && this.rtc.showsVideo();
    const mseUp = this.mse && this.mse.showsVideo();
    if (this.active === null) {
      if (rtcUp) this.choose("webrtc");
      else if (mseUp) this.choose("mse");
    } else if (this.active === "mse" && rtcUp) {
      this.choose("webrtc"); // WebRTC delivered after all: it is preferred
    }
    const t = this.current();
    if (!t) return;
    const frames = t.frames();
    const now = performance.now();
    if (document.hidden) {
      // A background tab presents no frames: that is not a stalled camera.
      this.lastFrameAt = now;
      return;
    }
    if (frames !== this.lastFrames) {
      this.lastFrames = frames;
      this.lastFrameAt = now;
      if (this.stalled) {
        this.stalled = false;
        // Frames again after a pause: ask now whether the camera is back, rather than showing
        // the offline overlay over a moving picture until the next poll.
        if (this.info && this.info.state !== "live") this.poll();
        this.changed();
      }
    } else if (now - this.lastFrameAt > STALL_MS) {
      if (!this.stalled) {
        this.stalled = true;
        this.changed();
      }
      const live = !this.info || this.info.state === "live";
      if (live && now - this.lastFrameAt > STALL_RESTART_MS) this.restartSoon("No picture: reconnecting…");
    }
  }

  choose(kind) {
    const first = this.active === null;
    this.active = kind;
    this.stalled = false;
    this.lastFrameAt = performance.now();
    if (first) this.firstFrameMs = Math.round(performance.now() - this.startedAt);
    this.box.dataset.transport = kind;
    this.rtcVideo.classList.toggle("front", kind === "webrtc");
    this.mseVideo.classList.toggle("front", kind === "mse");
    this.restarts = 0;
    if (kind === "webrtc") {
      clearTimeout(this.graceTimer);
      if (this.mse) this.mse.stop();
      this.mse = null;
    } else if (this.rtc && !this.rtc.closed) {
      clearTimeout(this.graceTimer);
      this.graceTimer = setTimeout(() => {
        if (this.active !== "mse" || !this.rtc) return;
        this.rtc.stop();
        this.rtc = null;
        if (!this.note) this.note = `WebRTC showed no picture within ${RTC_GRACE_MS / 1000} s: playing over MSE`;
        this.changed();
      }, RTC_GRACE_MS);
    }
    this.changed();
  }

  rtcState(rtc, state) {
    if (rtc !== this.rtc || this.stopped) return;
    if (state === "disconnected") this.localState = "reconnecting";
    else if (state === "connected") this.localState = null;
    else if (state === "failed" || state === "closed") {
      this.rtc.stop();
      this.rtc = null;
      if (this.active === "webrtc") {
        this.restartSoon("The WebRTC connection was lost: reconnecting…");
        return;
      }
      this.rtcError = "the WebRTC connection failed";
      this.bothFailed();
    }
    this.changed();
  }

  rtcFailed(rtc, e) {
    if (rtc !== this.rtc || this.stopped) return;
    rtc.stop();
    this.rtc = null;
    if (e && e.fallback === "mse") {
      // The server's reason: the stream has B-frames, or WebRTC is switched off.
      this.note = `${e.message || "WebRTC cannot play this stream"}: playing over MSE`;
      if (!this.mse && this.active === null) this.startMse(); // the viewer chose WebRTC, but only MSE can
    } else if (e && e.status === 401) {
      return; // the login page takes over
    } else {
      this.rtcError = e && e.status === 429 ? limitMessage(e.message, this) : `WebRTC: ${e && e.message ? e.message : e}`;
      if (this.active === "mse" || this.mse) this.note = this.note || this.rtcError;
    }
    this.bothFailed();
    this.changed();
  }

  async mseFailed(mse, e) {
    if (mse !== this.mse || this.stopped) return;
    this.mse = null;
    if (this.active === "mse") {
      this.restartSoon("The live feed was lost: reconnecting…");
      return;
    }
    let message = `MSE: ${e && e.message ? e.message : e}`;
    if (e && e.status === -1) {
      // Refused before the first message: the viewer limit, an unknown camera, or the session.
      const generation = this.generation;
      await this.poll();
      if (this.stopped || generation !== this.generation) return;
      if (this.viewers && this.viewers.max > 0 && this.viewers.count >= this.viewers.max) message = limitMessage("", this);
    }
    this.mseError = message;
    if (this.rtc && this.active === null) this.note = this.note || message;
    this.bothFailed();
    this.changed();
  }

  // Nothing left that could show video: say why, and try again later unless it is final.
  bothFailed() {
    if (this.rtc || this.mse || this.active !== null) return;
    this.error = [this.rtcError, this.mseError, this.note].filter(Boolean)[0] || "no live video";
    clearInterval(this.tickTimer);
    this.changed();
    this.restartSoon(null);
  }

  restartSoon(message) {
    if (this.stopped) return;
    this.disconnect();
    this.reconnecting = message;
    const delay = RESTART_MS[Math.min(this.restarts, RESTART_MS.length - 1)];
    this.restarts += 1;
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      if (this.stopped) return;
      this.reconnecting = null;
      this.connect();
    }, delay);
    this.changed();
  }

  serverState(state) {
    if (!this.info) this.info = {};
    if (this.info.state === state) return;
    this.info = { ...this.info, state };
    this.changed();
  }

  async poll() {
    if (this.stopped) return;
    try {
      const doc = await api.liveCamera(this.camera);
      if (this.stopped) return;
      const s = streamsOf(doc)[this.stream];
      this.info = s ? { ...s } : this.info;
      const count = Number(doc && doc.viewers);
      const max = Number(doc && doc.max_viewers);
      this.viewers = Number.isFinite(count) ? { count, max: Number.isFinite(max) ? max : 0 } : null;
      this.pollError = null;
    } catch (e) {
      if (this.stopped) return;
      this.pollError = e && e.message ? e.message : String(e);
    }
    this.changed();
  }

  /** What the overlay says now; null when the picture is live. */
  overlayText() {
    const state = this.info && this.info.state;
    if (state && STATE_TEXT[state]) return STATE_TEXT[state];
    if (this.error) return this.error;
    if (this.reconnecting) return this.reconnecting;
    if (this.localState === "reconnecting") return "Connection interrupted: reconnecting…";
    if (this.active === null) return "Connecting…";
    if (this.stalled) return "No picture from the camera…";
    return null;
  }

  changed() {
    const text = this.overlayText();
    this.overlay.hidden = text === null;
    this.overlay.textContent = text || "";
    const state = this.info && this.info.state;
    this.overlay.className = `live-overlay${state && STATE_TEXT[state] ? ` state-${state}` : ""}${this.error ? " error" : ""}`;
    this.box.dataset.state = text === null ? "live" : (state && STATE_TEXT[state] ? state : this.error ? "error" : "waiting");
    try {
      this.onChange(this);
    } catch (e) {
      console.error(e);
    }
  }

  /** For the test hook: what plays, and read-only views of it (no session URL, no cookies). */
  hook() {
    const p = this;
    return {
      camera: p.camera,
      stream: p.stream,
      mode: p.active,
      transport: p.transport,
      firstFrameMs: p.firstFrameMs,
      connects: p.generation, // 1 + the times it had to reconnect
      videoElement: p.videoElement,
      rtcVideo: p.rtcVideo,
      mseVideo: p.mseVideo,
      overlay: p.overlay.hidden ? null : p.overlay.textContent,
      getStats: () => (p.rtc ? p.rtc.getStats() : Promise.resolve(null)),
      lag: () => (p.mse ? p.mse.lag() : null),
      jumps: p.mse ? p.mse.jumps : 0,
    };
  }
}

function limitMessage(serverText, player) {
  const v = player.viewers;
  const n = v && v.max > 0 ? ` (${v.max} at once)` : "";
  return `Viewer limit reached for this camera${n}: close another live view and retry.${serverText ? ` ${serverText}` : ""}`;
}

// A tiny read-only hook for the browser tests: which transport plays, and its <video>, so a test
// can read getStats() and getVideoPlaybackQuality(). It holds no session URL and no secret.
function installHook() {
  if (Object.prototype.hasOwnProperty.call(window, "camrecLive")) return;
  const first = () => players.values().next().value;
  Object.defineProperty(window, "camrecLive", {
    configurable: false,
    enumerable: false,
    value: Object.freeze({
      get players() {
        return [...players].map((p) => p.hook());
      },
      get mode() {
        const p = first();
        return p ? p.active : null;
      },
      get videoElement() {
        const p = first();
        return p ? p.videoElement : null;
      },
      getStats() {
        const p = first();
        return p && p.rtc ? p.rtc.getStats() : Promise.resolve(null);
      },
    }),
  });
}
