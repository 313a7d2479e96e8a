// What the live player's two transports share: the error they fail with, the frame counter that
// tells whether a <video> shows a picture, and small helpers.

export function once(target, name) {
  return new Promise((resolve) => target.addEventListener(name, resolve, { once: true }));
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A transport that failed, with what the viewer should read. */
export class TransportError extends Error {
  constructor(message, { status = 0, fallback = null } = {}) {
    super(message);
    this.status = status;
    this.fallback = fallback;
  }
}

export function videoElement(className) {
  const v = document.createElement("video");
  v.className = `live-layer ${className}`;
  v.muted = true; // autoplay without a gesture (and live video from a camera has no audio here)
  v.autoplay = true;
  v.playsInline = true;
  v.setAttribute("playsinline", "");
  v.disablePictureInPicture = true;
  return v;
}

/** Counts the frames a <video> presents (requestVideoFrameCallback), or asks the element. */
export class FrameCounter {
  constructor(video) {
    this.video = video;
    this.count = 0;
    this.stopped = false;
    if (typeof video.requestVideoFrameCallback === "function") {
      const step = () => {
        if (this.stopped) return;
        this.count += 1;
        video.requestVideoFrameCallback(step);
      };
      video.requestVideoFrameCallback(step);
      this.viaCallback = true;
    }
  }

  frames() {
    if (this.viaCallback) return this.count;
    const q = this.video.getVideoPlaybackQuality ? this.video.getVideoPlaybackQuality() : null;
    return q ? q.totalVideoFrames : 0;
  }

  showsVideo() {
    return this.video.readyState >= 2 && this.video.videoWidth > 0;
  }

  stop() {
    this.stopped = true;
  }
}
