// Streaming age v1 decryption with an explicit "cut short" outcome.
//
// typage (age-encryption) unwraps the file key: X25519, post-quantum hybrid and scrypt stanzas
// and the header MAC. The STREAM payload is decrypted here instead of with typage's
// TransformStream because camrec's clips may be cut by a power loss: such a file has no chunk
// with the last-chunk flag, and typage then throws away the last complete chunk it holds back.
// Here every chunk that authenticates is released, and the caller learns that the file was cut
// (like `camrec decrypt --salvage`). A chunk that fails authentication is never released.

import { Decrypter, armor } from "age-encryption";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";

const CHUNK = 64 * 1024;
const TAG = 16;
const SEALED = CHUNK + TAG;
const NONCE_SIZE = 16;
const MAX_HEADER = 256 * 1024; // post-quantum stanzas are ~1.6 KB each; anything this big is not ours
const MAGIC = new TextEncoder().encode("age-encryption.org/v1\n");
const ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----";

/** The identity given does not open this file (no stanza matched, or the header MAC is wrong). */
export class WrongIdentityError extends Error {}
/** The bytes are not an age file, or the header is malformed. */
export class NotAgeError extends Error {}

function concat(a, b) {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

// The header ends with the MAC line: "--- <base64>\n". Stanza lines start with "-> " and body
// lines are base64, so the first "\n--- " is the MAC line.
function headerEnd(buf) {
  for (let i = 0; i + 5 <= buf.length; i++) {
    if (buf[i] === 0x0a && buf[i + 1] === 0x2d && buf[i + 2] === 0x2d && buf[i + 3] === 0x2d && buf[i + 4] === 0x20) {
      const nl = buf.indexOf(0x0a, i + 5);
      return nl < 0 ? -1 : nl + 1;
    }
  }
  return -1;
}

function streamNonce(counter, last) {
  const nonce = new Uint8Array(12);
  let c = counter;
  for (let i = 10; i >= 0 && c > 0; i--) {
    nonce[i] = c % 256;
    c = Math.floor(c / 256);
  }
  nonce[11] = last ? 1 : 0;
  return nonce;
}

function open(key, counter, last, sealed) {
  try {
    return chacha20poly1305(key, streamNonce(counter, last)).decrypt(sealed);
  } catch {
    return null;
  }
}

async function unwrapFileKey(header, identities) {
  const d = new Decrypter();
  for (const id of identities) {
    if (typeof id === "object" && id !== null && "passphrase" in id) d.addPassphrase(id.passphrase);
    else d.addIdentity(id);
  }
  try {
    return await d.decryptHeader(header);
  } catch (e) {
    const msg = String(e && e.message);
    if (/no identity matched|header HMAC/i.test(msg)) throw new WrongIdentityError(msg);
    throw new NotAgeError(msg);
  }
}

/**
 * Decrypts an age file read from `reader` (a ReadableStreamDefaultReader of Uint8Array).
 * Calls `onChunk(plaintext)` for each authenticated 64 KiB chunk, in order, as soon as it is
 * known (one sealed chunk of look-ahead: a full chunk may be the last one).
 * Resolves to {truncated, plaintextBytes}. Rejects with WrongIdentityError / NotAgeError before
 * any plaintext is released if the header does not open.
 */
export async function decryptReader(reader, identities, onChunk) {
  let buf = new Uint8Array(0);
  let done = false;
  const pull = async () => {
    const r = await reader.read();
    if (r.done) done = true;
    else buf = concat(buf, r.value);
  };

  let end = -1;
  while (end < 0) {
    if (buf.length >= MAGIC.length && !MAGIC.every((b, i) => buf[i] === b)) throw new NotAgeError("not an age file");
    end = headerEnd(buf);
    if (end >= 0) break;
    if (done || buf.length > MAX_HEADER) throw new NotAgeError(done ? "the file ends inside its header" : "header too large");
    await pull();
  }
  const fileKey = await unwrapFileKey(buf.subarray(0, end), identities);
  buf = buf.subarray(end);
  while (buf.length < NONCE_SIZE && !done) await pull();
  if (buf.length < NONCE_SIZE) return { truncated: true, plaintextBytes: 0 };
  const key = hkdf(sha256, fileKey, buf.subarray(0, NONCE_SIZE), new TextEncoder().encode("payload"), 32);
  buf = buf.subarray(NONCE_SIZE);

  let counter = 0;
  let released = 0;
  const release = async (pt) => {
    released += pt.length;
    counter++;
    await onChunk(pt);
  };
  for (;;) {
    // Only a chunk followed by more bytes is certainly not the last one.
    while (buf.length > SEALED) {
      const pt = open(key, counter, false, buf.subarray(0, SEALED));
      if (pt === null) return { truncated: true, damaged: true, plaintextBytes: released };
      buf = buf.subarray(SEALED);
      await release(pt);
    }
    if (done) break;
    await pull();
  }
  if (buf.length === 0) return { truncated: true, plaintextBytes: released };
  const last = open(key, counter, true, buf);
  if (last !== null && (last.length > 0 || counter === 0)) {
    await release(last);
    return { truncated: false, plaintextBytes: released };
  }
  // A power loss after a full chunk: it was written without the last flag (the writer holds one
  // chunk back until close). It is authentic, so it is released; the clip is still cut short.
  if (buf.length === SEALED) {
    const held = open(key, counter, false, buf);
    if (held !== null) await release(held);
  }
  return { truncated: true, plaintextBytes: released };
}

/** Decrypts a whole age file held in memory (binary or ASCII-armored) → {plaintext, truncated}. */
export async function decryptBytes(bytes, identities) {
  let data = bytes;
  const head = new TextDecoder().decode(bytes.subarray(0, ARMOR_BEGIN.length + 4)).trimStart();
  if (head.startsWith(ARMOR_BEGIN)) {
    try {
      data = armor.decode(new TextDecoder().decode(bytes));
    } catch (e) {
      throw new NotAgeError(`bad ASCII armor: ${e.message}`);
    }
  }
  const parts = [];
  const stream = new ReadableStream({
    start(c) {
      c.enqueue(data);
      c.close();
    },
  });
  const result = await decryptReader(stream.getReader(), identities, (pt) => parts.push(pt));
  const plaintext = new Uint8Array(result.plaintextBytes);
  let off = 0;
  for (const p of parts) {
    plaintext.set(p, off);
    off += p.length;
  }
  return { plaintext, truncated: result.truncated };
}

/** True if these bytes are an age file (binary or armored) rather than identity text. */
export function looksLikeAgeFile(bytes) {
  const head = new TextDecoder().decode(bytes.subarray(0, 64)).trimStart();
  return head.startsWith("age-encryption.org/") || head.startsWith(ARMOR_BEGIN);
}
