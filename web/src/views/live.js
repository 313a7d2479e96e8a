// Live view: one camera (main or sub stream, WebRTC / MSE / auto) and the grid of all cameras.
//
// Live video is not encrypted at rest, so these pages need no key: only the login session.
// Every player is stopped when the view is left (router navigation or pagehide; see main.js).

import * as api from "../api.js";
import { LivePlayer, TRANSPORT_NAMES, TRANSPORTS, streamsOf } from "../live/player.js";
import { el } from "../ui.js";

const STREAM_NAMES = { main: "Main stream", sub: "Sub-stream" };
const SMALL_SCREEN = "(max-width: 720px)";

/** [{name, streams, viewers, max_viewers}] from GET /api/live, whichever way it lists cameras. */
export function cameraList(doc) {
  let entries = [];
  if (Array.isArray(doc)) entries = doc.map((c) => [c && (c.camera ?? c.name), c]);
  else if (doc && typeof doc === "object") {
    const cams = doc.cameras && typeof doc.cameras === "object" ? doc.cameras : doc;
    entries = Array.isArray(cams) ? cams.map((c) => [c && (c.camera ?? c.name), c]) : Object.entries(cams);
  }
  return entries
    .filter(([name, c]) => typeof name === "string" && name && c && typeof c === "object")
    .map(([name, c]) => ({ name, streams: streamsOf(c), viewers: c.viewers, max_viewers: c.max_viewers }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function describeStream(info) {
  if (!info || typeof info !== "object") return "";
  const parts = [];
  if (info.codec) parts.push(String(info.codec).toUpperCase() === "H264" ? "H.264" : String(info.codec));
  if (info.width && info.height) parts.push(`${info.width}×${info.height}`);
  if (info.fps) parts.push(`${Math.round(Number(info.fps) * 10) / 10} fps`);
  if (info.b_frames) parts.push("B-frames (MSE only)");
  return parts.join(" · ");
}

function describePlayer(p) {
  if (p.active === null) {
    if (p.error) return "No live video";
    return p.transport === "auto" ? "Starting WebRTC and MSE…" : `Starting ${TRANSPORT_NAMES[p.transport]}…`;
  }
  // Never "playing" while the overlay says the picture is not live.
  if (p.overlayText() !== null) return `Connected over ${TRANSPORT_NAMES[p.active]}: no live picture`;
  const first = p.firstFrameMs === null ? "" : ` · first frame after ${p.firstFrameMs} ms`;
  return `Playing over ${TRANSPORT_NAMES[p.active]}${first}`;
}

function defaultStream(streams) {
  return streams.sub && window.matchMedia && window.matchMedia(SMALL_SCREEN).matches ? "sub" : "main";
}

function select(id, label, options, value, onChange) {
  const s = el("select", { id, onchange: () => onChange(s.value) },
    ...options.map(([v, text, disabled]) => el("option", { value: v, text, disabled: !!disabled })));
  s.value = value;
  return el("label", { class: "live-choice" }, el("span", { text: label }), s);
}

export async function renderLive(view, camera, params, scope) {
  const enc = encodeURIComponent(camera);
  const head = el("div", { class: "title" },
    el("a", { href: "/", "data-link": true, text: "Cameras" }), " / ",
    el("a", { href: `/camera/${enc}`, "data-link": true, text: camera }), " / ", el("strong", { text: "Live" }));
  view.replaceChildren(head, el("p", { class: "hint", text: "Loading…" }));
  let doc;
  try {
    doc = await api.liveCamera(camera);
  } catch (e) {
    if (e && e.status === 401) throw e;
    view.replaceChildren(head, el("p", { class: "message error", id: "live-error", text: `No live view: ${e.message}` }),
      el("p", {}, el("a", { href: "/", "data-link": true, text: "Back to the cameras" })));
    return;
  }
  if (!scope.alive()) return;
  const streams = streamsOf(doc);
  let stream = params.get("stream");
  if (!(stream in STREAM_NAMES) || (stream === "sub" && !streams.sub)) stream = defaultStream(streams);
  let transport = params.get("transport");
  if (!TRANSPORTS.includes(transport)) transport = "auto";

  const box = el("div", { class: "live-wrap", id: "live-player", "data-camera": camera });
  const status = el("span", { id: "live-status", class: "live-status" });
  const note = el("p", { id: "live-note", class: "message warn", hidden: true });
  const facts = el("span", { id: "live-info", class: "hint" });
  const setQuery = () => {
    const q = new URLSearchParams();
    if (stream !== defaultStream(streams)) q.set("stream", stream);
    if (transport !== "auto") q.set("transport", transport);
    const qs = q.toString();
    history.replaceState(null, "", `/live/${enc}${qs ? `?${qs}` : ""}`);
  };
  const player = new LivePlayer(box, {
    camera, stream, transport,
    onChange: (p) => {
      status.textContent = describePlayer(p);
      note.hidden = !p.note;
      note.textContent = p.note || "";
      const viewers = p.viewers ? `${p.viewers.count}${p.viewers.max ? ` of ${p.viewers.max}` : ""} viewers` : "";
      facts.textContent = [describeStream(p.info), viewers].filter(Boolean).join(" · ");
    },
  });
  const controls = el("div", { class: "row live-controls" },
    select("live-stream", "Stream", [["main", STREAM_NAMES.main], ["sub", STREAM_NAMES.sub, !streams.sub]], stream, (v) => {
      stream = v;
      setQuery();
      player.reconfigure({ stream });
    }),
    select("live-transport", "Via", TRANSPORTS.map((t) => [t, TRANSPORT_NAMES[t]]), transport, (v) => {
      transport = v;
      setQuery();
      player.reconfigure({ transport });
    }),
    el("a", { href: `/camera/${enc}`, "data-link": true, id: "live-events", class: "button-link", text: "Latest events ▸" }),
    el("a", { href: "/live", "data-link": true, id: "live-all", text: "All cameras live" }));
  // Controls and notes first: the video may fill the screen, the links stay in reach.
  view.replaceChildren(head, controls, note, box, el("div", { class: "live-under" }, status, facts));
  scope.onLeave(() => player.stop());
  player.start();
}

export async function renderLiveGrid(view, scope) {
  const head = el("div", { class: "title" }, el("a", { href: "/", "data-link": true, text: "Cameras" }), " / ",
    el("strong", { text: "Live" }));
  view.replaceChildren(head, el("p", { class: "hint", text: "Loading…" }));
  const cams = cameraList(await api.liveCameras());
  if (!scope.alive()) return;
  const grid = el("div", { class: "live-grid", id: "live-grid" });
  view.replaceChildren(head, grid);
  if (!cams.length) grid.append(el("p", { class: "hint", text: "No cameras." }));
  for (const cam of cams) {
    const enc = encodeURIComponent(cam.name);
    const box = el("div", { class: "live-wrap" });
    const status = el("span", { class: "hint live-tile-status" });
    grid.append(el("section", { class: "card live-tile", "data-live-camera": cam.name },
      el("a", { href: `/live/${enc}`, "data-link": true, class: "live-tile-video", title: `${cam.name}: full view` }, box),
      el("div", { class: "live-tile-head" },
        el("a", { href: `/live/${enc}`, "data-link": true }, el("strong", { text: cam.name })),
        status,
        el("a", { href: `/camera/${enc}`, "data-link": true, class: "live-tile-events", text: "events ▸" }))));
    // The grid uses sub-streams where configured: many small pictures, little bandwidth.
    const player = new LivePlayer(box, {
      camera: cam.name, stream: cam.streams.sub ? "sub" : "main",
      onChange: (p) => {
        status.textContent = p.active ? `${TRANSPORT_NAMES[p.active]}${p.stream === "sub" ? " · sub" : ""}` : "";
      },
    });
    scope.onLeave(() => player.stop());
    player.start();
  }
}
