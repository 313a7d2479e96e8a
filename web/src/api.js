// The JSON API client. It knows the CSRF token and nothing else: the identity module is never
// imported here, so no code path can put a key or passphrase into a request.

let csrfToken = null;
let onUnauthorized = () => {};

export class HttpError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.status = status;
    this.body = body; // the JSON answer when there was one (e.g. {"error": …, "fallback": "mse"})
  }
}

export function setCsrf(token) {
  csrfToken = token || null;
}
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

async function errorOf(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  let body = null;
  try {
    body = await resp.json();
    if (body && typeof body.error === "string") message = body.error;
  } catch {
    // not JSON: keep the status line
  }
  return new HttpError(resp.status, message, body);
}

async function request(path, { method = "GET", body, raw, contentType, accept = "application/json" } = {}) {
  const headers = { Accept: accept };
  if (method !== "GET" && method !== "HEAD") {
    if (!csrfToken && path !== "/api/login") await session();
    if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (raw !== undefined) headers["Content-Type"] = contentType;
  const resp = await fetch(path, {
    method,
    headers,
    body: raw !== undefined ? raw : body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  if (resp.status === 401 && path !== "/api/login") {
    setCsrf(null);
    onUnauthorized();
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

export async function getJson(path) {
  return (await request(path)).json();
}

/** The session's user and CSRF token, or null when not logged in. */
export async function session() {
  const resp = await fetch("/api/session", { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" });
  if (resp.status === 401) return null;
  if (!resp.ok) throw await errorOf(resp);
  const s = await resp.json();
  setCsrf(s.csrf);
  return s;
}

export async function login(username, password) {
  const resp = await request("/api/login", { method: "POST", body: { username, password } });
  const s = await resp.json();
  setCsrf(s.csrf);
  return s;
}

export async function logout() {
  try {
    await request("/api/logout", { method: "POST" });
  } finally {
    setCsrf(null);
  }
}

export const cameras = () => getJson("/api/cameras");

export function events({ camera, since, until } = {}) {
  const q = new URLSearchParams();
  if (camera) q.set("camera", camera);
  if (since) q.set("since", since);
  if (until) q.set("until", until);
  const qs = q.toString();
  return getJson(`/api/events${qs ? `?${qs}` : ""}`);
}

/** One event by id (the same fields as in the list). */
export const event = (id) => getJson(`/api/events/${encodeURIComponent(id)}`);

const clipUrl = (id, part) => `/api/clips/${encodeURIComponent(id)}/${part}`;

/** The ciphertext of a clip part as a Response whose body can be streamed. */
export function clipResponse(id, part) {
  return request(clipUrl(id, part));
}

export async function clipBytes(id, part) {
  return new Uint8Array(await (await clipResponse(id, part)).arrayBuffer());
}

// --- live view (docs/web.md: WHEP-shaped signalling, the MSE WebSocket, the live state) ------

const livePath = (camera) => `/api/live/${encodeURIComponent(camera)}`;

/** Every camera's live streams: state, codec, size, fps, B-frames, viewers. */
export const liveCameras = () => getJson("/api/live");
/** One camera's live streams (polled by the player to show offline / reconnecting). */
export const liveCamera = (camera) => getJson(livePath(camera));

/** The WebSocket URL of a camera stream's fragmented-MP4 feed (same origin: the cookie goes along). */
export function liveMseUrl(camera, stream) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${livePath(camera)}/mse?stream=${encodeURIComponent(stream)}`;
}

/**
 * Sends a WebRTC offer WHEP-style; resolves to {answer, session}: the answer SDP and the session
 * URL to DELETE when the viewer leaves. Rejects with HttpError (409 + body.fallback === "mse" for
 * streams WebRTC cannot carry, 429 over the viewer limit).
 */
export async function whepOffer(camera, stream, sdp) {
  const resp = await request(`${livePath(camera)}/whep?stream=${encodeURIComponent(stream)}`,
    { method: "POST", raw: sdp, contentType: "application/sdp", accept: "application/sdp" });
  const answer = await resp.text();
  const where = resp.headers.get("Location");
  // Only ever DELETE on this origin, whatever the header says.
  const url = where ? new URL(where, location.href) : null;
  return { answer, session: url && url.origin === location.origin ? url.pathname + url.search : null };
}

/**
 * Ends a WHEP session. keepalive lets the request finish while the page is being left; a 401 here
 * (the login session ended, and the server ended the live session with it) is not a reason to
 * show the login page, so this bypasses request()'s handler.
 */
export async function whepEnd(session) {
  const headers = csrfToken ? { "X-CSRF-Token": csrfToken } : {};
  const resp = await fetch(session, { method: "DELETE", headers, credentials: "same-origin", cache: "no-store", keepalive: true });
  if (!resp.ok && resp.status !== 404 && resp.status !== 401) throw await errorOf(resp);
}
