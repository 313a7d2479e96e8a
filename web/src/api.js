// The JSON API client. It knows the CSRF token and nothing else: the identity module is never
// imported here, so no code path can put a key or passphrase into a request.

let csrfToken = null;
let onUnauthorized = () => {};

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
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
  try {
    const body = await resp.json();
    if (body && typeof body.error === "string") message = body.error;
  } catch {
    // not JSON: keep the status line
  }
  return new HttpError(resp.status, message);
}

async function request(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    if (!csrfToken && path !== "/api/login") await session();
    if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
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
