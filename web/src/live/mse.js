// MSE: fragmented MP4 over a WebSocket into a SourceBuffer, with the latency kept bounded.

import * as api from "../api.js";
import { keyframeTimes, trackTimingOf } from "../mp4.js";
import { FrameCounter, TransportError, once, sleep } from "./transport.js";

const MediaSourceImpl = globalThis.MediaSource || globalThis.ManagedMediaSource;

// Latency bounds (seconds): the buffer kept behind the live edge, the lag beyond which the
// player jumps to the edge, the lag from which it catches up by playing faster (1.1×, and 1.25×
// from twice that), and how far before the edge a jump lands.
const KEEP_BEHIND_S = 1.5;
const JUMP_LAG_S = 0.8;
const SOFT_LAG_S = 0.2;
const EDGE_GAP_S = 0.1;

export class MseTransport {
  constructor(video, { onState, onFailed, onNote }) {
    this.kind = "mse";
    this.video = video;
    this.onState = onState;
    this.onFailed = onFailed;
    this.onNote = onNote;
    this.ws = null;
    this.ms = null;
    this.sb = null;
    this.url = null;
    this.ops = []; // "mse" messages and binary segments, applied strictly in order
    this.pumping = false;
    this.closed = false;
    this.received = false;
    this.counter = new FrameCounter(video);
    this.jumps = 0;
  }

  start(camera, stream) {
    if (!MediaSourceImpl) throw new TransportError("this browser has no Media Source Extensions");
    const ws = new WebSocket(api.liveMseUrl(camera, stream));
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.addEventListener("message", (e) => {
      if (this.closed) return;
      this.received = true;
      if (typeof e.data === "string") this.onText(e.data);
      else this.push({ data: e.data });
    });
    ws.addEventListener("close", (e) => {
      if (this.closed) return;
      // A refused upgrade (no session, unknown camera, viewer limit) closes before any message:
      // the browser does not reveal the HTTP status, so the player asks the API why.
      this.fail(new TransportError(e.reason || (this.received ? "the live feed closed" : "the live feed was refused"),
        { status: this.received ? 0 : -1 }));
    });
  }

  onText(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (!msg || typeof msg !== "object") return;
    if (msg.type === "mse" && typeof msg.value === "string") this.push({ mime: msg.value });
    else if (msg.type === "state" && typeof msg.value === "string") this.onState(msg.value);
    else if (msg.type === "error" && typeof msg.value === "string") this.fail(new TransportError(msg.value));
  }

  push(op) {
    this.ops.push(op);
    if (!this.pumping) this.pump();
  }

  async pump() {
    this.pumping = true;
    try {
      while (this.ops.length && !this.closed) {
        const op = this.ops.shift();
        if (op.mime !== undefined) await this.begin(op.mime);
        else if (this.sb) await this.appendSegment(new Uint8Array(op.data));
      }
    } catch (e) {
      this.fail(e instanceof TransportError ? e : new TransportError(`MSE: ${e && e.message ? e.message : e}`));
    } finally {
      this.pumping = false;
    }
  }

  // A "mse" message starts a stream: the next binary frame is its init segment. After a reconnect
  // or a new resolution the recorder continues the decode timeline, so the SourceBuffer is kept
  // (changeType() for another codec string) and the picture goes on without a reset.
  async begin(mime) {
    if (!MediaSourceImpl.isTypeSupported(mime)) throw new TransportError(`this browser cannot play ${mime}`);
    if (this.sb && this.ms && this.ms.readyState === "open") {
      if (mime !== this.mime) {
        if (typeof this.sb.changeType !== "function") return this.open(mime);
        this.sb.changeType(mime);
        this.mime = mime;
      }
      this.timing = null;
      return undefined;
    }
    return this.open(mime);
  }

  // A fresh MediaSource and SourceBuffer (the first stream, or a browser without changeType).
  async open(mime) {
    const ms = new MediaSourceImpl();
    const old = this.url;
    this.url = URL.createObjectURL(ms);
    this.video.disableRemotePlayback = true; // required by ManagedMediaSource, harmless otherwise
    this.video.src = this.url;
    if (old) URL.revokeObjectURL(old);
    await once(ms, "sourceopen");
    if (this.closed) return;
    this.ms = ms;
    // A live stream: Chromium renders an infinite-duration stream in its low-delay mode (no
    // waiting for a comfortable buffer before playing on).
    try {
      ms.duration = Infinity;
    } catch {
      // an implementation that wants a finite duration: it still plays, a little later
    }
    this.sb = ms.addSourceBuffer(mime);
    this.sb.mode = "segments";
    this.mime = mime;
    this.timing = null; // from the init segment, the next binary frame
    this.keyframes = []; // presentation times (s) of the buffered keyframes, ascending
  }

  async appendSegment(data) {
    if (this.timing === null) {
      this.timing = trackTimingOf(data) || { timescale: 0, defaultFlags: 0 };
    } else if (this.timing.timescale) {
      for (const t of keyframeTimes(data, this.timing.defaultFlags)) this.keyframes.push(t / this.timing.timescale);
    }
    for (let attempt = 0; ; attempt++) {
      try {
        this.sb.appendBuffer(data);
        await once(this.sb, "updateend");
        break;
      } catch (e) {
        if (!e || e.name !== "QuotaExceededError" || attempt >= 3) throw e;
        // Full: drop everything already played and try again.
        await this.trim(this.video.currentTime - 0.1);
        if (attempt) await sleep(200);
      }
    }
    await this.keepLive();
  }

  // Removes what was played before `before`, but only up to a keyframe: removing part of a GOP
  // would also remove the rest of it (its frames depend on the removed ones).
  async trim(before, minimum = 0) {
    const b = this.sb.buffered;
    if (!b.length || this.sb.updating) return;
    let cut = null;
    for (const k of this.keyframes) if (k <= before) cut = k;
    if (cut === null || cut - b.start(0) <= minimum) return;
    this.keyframes = this.keyframes.filter((k) => k >= cut);
    this.sb.remove(0, cut);
    await once(this.sb, "updateend");
  }

  // Bounded latency: play close to the newest frame, and keep only a little played video.
  async keepLive() {
    const v = this.video;
    const b = this.sb.buffered;
    if (!b.length) return;
    const start = b.start(b.length - 1);
    const end = b.end(b.length - 1);
    const lag = end - v.currentTime;
    if (v.currentTime < start || lag > JUMP_LAG_S) {
      v.currentTime = Math.max(start, end - EDGE_GAP_S);
      v.playbackRate = 1;
      this.jumps += 1;
    } else {
      // Catch up by playing faster, more so the further behind (a jump would skip frames).
      v.playbackRate = lag > 2 * SOFT_LAG_S ? 1.25 : lag > SOFT_LAG_S ? 1.1 : 1;
    }
    if (v.paused) v.play().catch(() => {});
    // At most KEEP_BEHIND_S behind the edge (more with a long GOP: down to its keyframe), in steps.
    await this.trim(Math.min(end - KEEP_BEHIND_S, v.currentTime - 0.1), 0.5);
  }

  lag() {
    const b = this.sb ? this.sb.buffered : null;
    return b && b.length ? b.end(b.length - 1) - this.video.currentTime : null;
  }

  showsVideo() {
    return this.counter.showsVideo();
  }

  frames() {
    return this.counter.frames();
  }

  fail(e) {
    if (this.closed) return;
    this.stop();
    this.onFailed(e);
  }

  stop() {
    if (this.closed) return;
    this.closed = true;
    this.ops = [];
    this.counter.stop();
    if (this.ws) this.ws.close();
    this.video.removeAttribute("src");
    this.video.load();
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
    this.sb = null;
    this.ms = null;
  }
}

