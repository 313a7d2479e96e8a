// The owner's identity: loaded from a file or pasted, kept in this module's memory only.
//
// The app is a single page (client-side routing), so the identity survives moving between
// cameras, timeline and events; a reload or a new tab forgets it unless the owner opted in to
// "Remember on this device". Nothing here ever goes into a request: the API client has no access
// to this module's state, and the identity is only handed to the decryption code.
//
// Remember on this device (opt-in), two forms:
//  - X25519 keys are imported into WebCrypto as *non-extractable* CryptoKeys and those objects are
//    stored in IndexedDB. Scripts of this origin can still use them to decrypt, but nothing can
//    read the key bytes back out (no export, not in a disk copy of the profile as plain text).
//  - A passphrase-protected identity file (needed for post-quantum keys, which WebCrypto cannot
//    hold) is stored as the encrypted file; the passphrase is asked on each visit.
// A plain (unprotected) post-quantum key is never written to browser storage.

import { bech32 } from "@scure/base";
import { Decrypter, armor } from "age-encryption";
import { WrongIdentityError, looksLikeAgeFile } from "./agefile.js";

const X25519_PREFIX = "AGE-SECRET-KEY-1";
const PQ_PREFIX = "AGE-SECRET-KEY-PQ-1";
const PKCS8_X25519 = new Uint8Array([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20]);
const DB_NAME = "camrec-identity";
const STORE = "remembered";

let identities = []; // strings (AGE-SECRET-KEY-…) or non-extractable X25519 CryptoKeys
let description = "";
let protectedFile = null; // the passphrase-protected file this identity came from, if any
const listeners = new Set();

export class IdentityError extends Error {}

export function hasIdentity() {
  return identities.length > 0;
}
export function currentIdentities() {
  return identities.slice();
}
export function identityDescription() {
  return description;
}
export function onIdentityChange(fn) {
  listeners.add(fn);
}
function changed() {
  for (const fn of listeners) fn();
}

export function forgetIdentity() {
  identities = [];
  description = "";
  protectedFile = null;
  changed();
}

/** Identity strings from identity-file text: one key a line, `#` comments and blank lines allowed. */
export function parseIdentityText(text) {
  const keys = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith(PQ_PREFIX) || line.startsWith(X25519_PREFIX)) {
      // Validate now, so a typo is reported here rather than as "does not open this clip".
      try {
        new Decrypter().addIdentity(line);
      } catch {
        throw new IdentityError(`line ${i + 1} is not a valid age identity`);
      }
      keys.push(line);
    } else if (line.startsWith("age1")) {
      throw new IdentityError("this is a public key (age1…); load the secret identity (AGE-SECRET-KEY-…)");
    } else {
      throw new IdentityError(`line ${i + 1} is not an age identity (expected AGE-SECRET-KEY-…)`);
    }
  }
  if (keys.length === 0) throw new IdentityError("no identity found (expected a line AGE-SECRET-KEY-…)");
  return keys;
}

export function needsPassphrase(bytes) {
  return looksLikeAgeFile(bytes);
}

/** Decrypts a passphrase-protected identity file (`camrec keygen --passphrase`, `age -p [-a]`). */
export async function unlockIdentityFile(bytes, passphrase) {
  let data = bytes;
  const text = new TextDecoder().decode(bytes);
  if (text.trimStart().startsWith("-----BEGIN AGE ENCRYPTED FILE-----")) data = armor.decode(text);
  const d = new Decrypter();
  d.addPassphrase(passphrase);
  let plain;
  try {
    plain = await d.decrypt(data, "text");
  } catch (e) {
    const msg = String(e && e.message);
    if (/no identity matched/.test(msg)) {
      throw new IdentityError(
        /^-> scrypt /m.test(new TextDecoder().decode(data.subarray(0, 512)))
          ? "wrong passphrase for this identity file"
          : "this file is age-encrypted, but not with a passphrase",
      );
    }
    throw new IdentityError(`cannot open the identity file: ${msg}`);
  }
  return parseIdentityText(plain);
}

/** Loads identity file bytes: plain text, or passphrase-protected (then `passphrase` is needed). */
export async function loadIdentityFile(bytes, passphrase, name) {
  if (needsPassphrase(bytes)) {
    if (!passphrase) throw new IdentityError("this identity file is protected by a passphrase: enter it");
    const keys = await unlockIdentityFile(bytes, passphrase);
    setIdentities(keys, `${name || "identity file"} (passphrase-protected)`, bytes);
  } else {
    setIdentities(parseIdentityText(new TextDecoder().decode(bytes)), name || "identity file", null);
  }
}

export function loadPastedKey(text) {
  setIdentities(parseIdentityText(text), "pasted key", null);
}

function setIdentities(list, what, file) {
  identities = list;
  const pq = list.filter((k) => typeof k === "string" && k.startsWith(PQ_PREFIX)).length;
  description = `${what}: ${list.length} key${list.length === 1 ? "" : "s"}${pq ? ` (${pq} post-quantum)` : ""}`;
  protectedFile = file;
  changed();
}

// ---- Remember on this device -------------------------------------------------------------

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function dbOp(mode, fn) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = fn(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(req && req.result);
      tx.onerror = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

async function toCryptoKey(identity) {
  const { prefix, bytes } = bech32.decodeToBytes(identity.toLowerCase(), 1000);
  if (prefix !== "age-secret-key-" || bytes.length !== 32) throw new IdentityError("not an X25519 identity");
  const der = new Uint8Array(PKCS8_X25519.length + 32);
  der.set(PKCS8_X25519);
  der.set(bytes, PKCS8_X25519.length);
  bytes.fill(0);
  return crypto.subtle.importKey("pkcs8", der, { name: "X25519" }, false, ["deriveBits"]);
}

/** Keeps the current identity on this device; returns a sentence saying how it was kept. */
export async function rememberOnDevice() {
  if (!hasIdentity()) throw new IdentityError("load an identity first");
  if (protectedFile) {
    await dbOp("readwrite", (s) => s.put({ kind: "protected-file", bytes: protectedFile, description }, "identity"));
    description = `${description} — remembered on this device`;
    changed();
    return "The passphrase-protected identity file is kept on this device; its passphrase is asked on each visit.";
  }
  if (identities.some((k) => typeof k === "string" && k.startsWith(PQ_PREFIX))) {
    throw new IdentityError(
      "a post-quantum key can be remembered only as a passphrase-protected identity file (camrec keygen --passphrase)",
    );
  }
  const keys = [];
  for (const k of identities) keys.push(typeof k === "string" ? await toCryptoKey(k) : k);
  await dbOp("readwrite", (s) => s.put({ kind: "cryptokeys", keys, description }, "identity"));
  identities = keys; // from now on even this page holds only the non-extractable form
  description = `${description} — remembered on this device`;
  changed();
  return "The key is kept on this device as a non-extractable WebCrypto key.";
}

export async function forgetOnDevice() {
  await dbOp("readwrite", (s) => s.delete("identity"));
}

/** What is remembered: null, {kind:"cryptokeys"} (already loaded), or {kind:"protected-file"}. */
export async function restoreRemembered() {
  let entry;
  try {
    entry = await dbOp("readonly", (s) => s.get("identity"));
  } catch {
    return null;
  }
  if (!entry) return null;
  if (entry.kind === "cryptokeys" && Array.isArray(entry.keys) && entry.keys.length > 0) {
    setIdentities(entry.keys, "remembered on this device", null);
    description = `${typeof entry.description === "string" ? entry.description : "key"} — remembered on this device`;
    changed();
    return { kind: "cryptokeys" };
  }
  if (entry.kind === "protected-file" && entry.bytes instanceof Uint8Array) {
    return { kind: "protected-file", bytes: entry.bytes };
  }
  return null;
}

export function wrongIdentityMessage(e) {
  return e instanceof WrongIdentityError ? "This key does not open this clip." : null;
}
