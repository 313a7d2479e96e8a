// Streams a clip from the API, decrypts it chunk by chunk and appends the fMP4 bytes to a Media
// Source Extensions SourceBuffer as they come, so playback starts before the whole file is
// decrypted. The plaintext chunks are kept for the Download button (a Blob made in the browser).
//
// MSE accepts a byte stream cut anywhere (its parser buffers partial boxes), so each 64 KiB
// plaintext chunk is appended as it is. A crash-cut clip ends with a partial fragment: abort()
// drops it from the parser, and endOfStream() makes the authenticated prefix the whole clip.

import { clipResponse } from "./api.js";
import { decryptReader } from "./agefile.js";
import { initSegmentLength, mimeTypeOf } from "./mp4.js";

const MediaSourceImpl = globalThis.MediaSource || globalThis.ManagedMediaSource;

function once(target, name) {
  return new Promise((resolve) => target.addEventListener(name, resolve, { once: true }));
}

function concatAll(parts) {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

async function append(video, sb, data) {
  for (;;) {
    try {
      sb.appendBuffer(data);
      await once(sb, "updateend");
      return;
    } catch (e) {
      if (!e || e.name !== "QuotaExceededError") throw e;
      // The browser's buffer is full (long clips): drop what was played, or wait for playback.
      const keepFrom = video.currentTime - 10;
      if (sb.buffered.length && keepFrom > sb.buffered.start(0)) {
        sb.remove(0, keepFrom);
        await once(sb, "updateend");
      } else {
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }
}

/**
 * Plays clip `id` in `video`. Resolves, once the whole file has been read, to
 * {truncated, bytes, parts}: `parts` are the plaintext chunks (the decrypted MP4).
 * Rejects with WrongIdentityError before anything plays if the key does not open the clip.
 */
export async function playClip(video, id, identities, { onFirstData } = {}) {
  const resp = await clipResponse(id, "video");
  const reader = resp.body.getReader();
  const parts = [];

  if (!MediaSourceImpl) {
    // No MSE (old iPhones): decrypt the whole clip first, then play it from a Blob.
    const result = await decryptReader(reader, identities, (pt) => parts.push(pt));
    video.src = URL.createObjectURL(new Blob(parts, { type: "video/mp4" }));
    return { ...result, parts };
  }

  const ms = new MediaSourceImpl();
  video.disableRemotePlayback = true; // required by ManagedMediaSource, harmless otherwise
  video.src = URL.createObjectURL(ms);
  await once(ms, "sourceopen");
  let sb = null;
  let pending = [];
  let pendingBytes = 0;

  const onChunk = async (pt) => {
    parts.push(pt);
    if (sb === null) {
      pending.push(pt);
      pendingBytes += pt.length;
      const head = pending.length === 1 ? pt : concatAll(pending);
      if (initSegmentLength(head) < 0) {
        if (pendingBytes > 4 * 1024 * 1024) throw new Error("the clip does not start with an MP4 header");
        return;
      }
      const mime = mimeTypeOf(head);
      if (!MediaSourceImpl.isTypeSupported(mime)) throw new Error(`this browser cannot play ${mime}`);
      sb = ms.addSourceBuffer(mime);
      pending = [];
      await append(video, sb, head);
      if (onFirstData) onFirstData();
      return;
    }
    await append(video, sb, pt);
  };

  let result;
  try {
    result = await decryptReader(reader, identities, onChunk);
  } catch (e) {
    reader.cancel().catch(() => {});
    if (ms.readyState === "open") ms.endOfStream("decode");
    throw e;
  }
  if (sb === null) {
    throw new Error(result.truncated ? "the clip was cut before any video was saved" : "the clip holds no video");
  }
  if (ms.readyState === "open") {
    if (result.truncated && !sb.updating) sb.abort(); // forget the partial fragment at the cut
    ms.endOfStream();
  }
  return { ...result, parts };
}

/** Decrypts clip `id` completely without playing it (the Download button before playback). */
export async function decryptClip(id, identities) {
  const resp = await clipResponse(id, "video");
  const parts = [];
  const result = await decryptReader(resp.body.getReader(), identities, (pt) => parts.push(pt));
  return { ...result, parts };
}

/** Saves the decrypted MP4 made in this browser as `<id>.mp4`. */
export function saveMp4(parts, id) {
  const url = URL.createObjectURL(new Blob(parts, { type: "video/mp4" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = `${String(id).replace(/[^A-Za-z0-9._-]/g, "_")}.mp4`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
