// WebRTC, signalled WHEP-style: one recvonly H.264 transceiver, the offer POSTed once ICE
// gathering is complete (no trickle), the session URL DELETEd when the viewer leaves.

import * as api from "../api.js";
import { FrameCounter, TransportError, sleep } from "./transport.js";

const ICE_GATHER_MS = 2000; // host candidates only: gathering takes milliseconds; a cap, not a wait

// The recorder sends the camera's own H.264 (no transcoding): offer nothing else, so the answer
// cannot settle on a codec the server would have to encode.
function preferH264(transceiver) {
  const caps = globalThis.RTCRtpReceiver && RTCRtpReceiver.getCapabilities ? RTCRtpReceiver.getCapabilities("video") : null;
  if (!caps || typeof transceiver.setCodecPreferences !== "function") return;
  const h264 = caps.codecs.filter((c) => c.mimeType.toLowerCase() === "video/h264");
  if (!h264.length) return;
  const mode1 = (c) => /packetization-mode=1/.test(c.sdpFmtpLine || "");
  h264.sort((a, b) => Number(mode1(b)) - Number(mode1(a)));
  const rtx = caps.codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx");
  try {
    transceiver.setCodecPreferences([...h264, ...rtx]);
  } catch {
    // an older browser that rejects the list: its default offer includes H.264 too
  }
}

export class RtcTransport {
  constructor(video, { onState }) {
    this.kind = "webrtc";
    this.video = video;
    this.onState = onState;
    this.pc = null;
    this.session = null;
    this.closed = false;
    this.counter = new FrameCounter(video);
  }

  async start(camera, stream) {
    if (typeof globalThis.RTCPeerConnection !== "function") throw new TransportError("this browser has no WebRTC");
    // No ICE servers: host candidates only. (Leaving iceServers out would not mean "none" in
    // every browser; nothing may go to a STUN or TURN server.)
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    const transceiver = pc.addTransceiver("video", { direction: "recvonly" });
    preferH264(transceiver);
    pc.addEventListener("track", (e) => {
      this.video.srcObject = e.streams && e.streams[0] ? e.streams[0] : new MediaStream([e.track]);
      this.video.play().catch(() => {});
    });
    pc.addEventListener("connectionstatechange", () => {
      if (!this.closed) this.onState(pc.connectionState);
    });
    await pc.setLocalDescription(await pc.createOffer());
    await this.gathered();
    if (this.closed) return;
    let answer;
    try {
      answer = await api.whepOffer(camera, stream, pc.localDescription.sdp);
    } catch (e) {
      if (e instanceof api.HttpError) {
        throw new TransportError(e.message, { status: e.status, fallback: e.body && e.body.fallback });
      }
      throw e;
    }
    this.session = answer.session;
    if (this.closed) {
      this.endSession();
      return;
    }
    await pc.setRemoteDescription({ type: "answer", sdp: answer.answer });
  }

  // WHEP without trickle: the offer goes out with every candidate in it.
  gathered() {
    const pc = this.pc;
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState !== "complete") return;
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, ICE_GATHER_MS);
    });
  }

  showsVideo() {
    return this.counter.showsVideo();
  }

  frames() {
    return this.counter.frames();
  }

  getStats() {
    return this.pc ? this.pc.getStats() : Promise.resolve(null);
  }

  /** DELETEs the session URL; resolves when the server answered (or failed to). */
  endSession() {
    const session = this.session;
    this.session = null;
    // The server also ends a session whose peer goes away: a failed DELETE changes nothing.
    return session ? api.whepEnd(session).catch(() => {}) : Promise.resolve();
  }

  stop() {
    if (this.closed) return;
    this.closed = true;
    this.counter.stop();
    this.video.srcObject = null;
    // The peer closes once the DELETE is answered (within a second at most): closed first, the
    // server would end the session on its own and answer the DELETE with 404.
    const pc = this.pc;
    Promise.race([this.endSession(), sleep(1000)]).finally(() => {
      if (pc) pc.close();
    });
  }
}

