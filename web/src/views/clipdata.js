// Thumbnails and event details: small age files fetched whole and decrypted here.

import * as api from "../api.js";
import { decryptBytes } from "../agefile.js";
import { currentIdentities } from "../identity.js";

const thumbCache = new Map(); // clip id -> object URL of the decrypted JPEG (this page only)

export async function thumbnailUrl(id) {
  if (thumbCache.has(id)) return thumbCache.get(id);
  const { plaintext } = await decryptBytes(await api.clipBytes(id, "thumbnail"), currentIdentities());
  const url = URL.createObjectURL(new Blob([plaintext], { type: "image/jpeg" }));
  thumbCache.set(id, url);
  return url;
}

export function forgetThumbnails() {
  for (const url of thumbCache.values()) URL.revokeObjectURL(url);
  thumbCache.clear();
}

export async function details(id) {
  const { plaintext } = await decryptBytes(await api.clipBytes(id, "details"), currentIdentities());
  const doc = JSON.parse(new TextDecoder().decode(plaintext));
  return doc && typeof doc === "object" ? doc : {};
}

/** Motion entries with well-formed boxes only: the details come from the recorder's store. */
export function motionEntries(doc) {
  const out = [];
  for (const m of Array.isArray(doc.motion) ? doc.motion : []) {
    if (!m || typeof m.t !== "number" || !Array.isArray(m.boxes)) continue;
    const boxes = m.boxes.filter((b) => Array.isArray(b) && b.length === 4 && b.every((v) => typeof v === "number" && v >= -1 && v <= 2));
    out.push({ t: m.t, score: typeof m.score === "number" ? m.score : 0, boxes });
  }
  return out;
}
