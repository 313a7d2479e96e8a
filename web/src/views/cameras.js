// Cameras: each with its state and the thumbnail of its latest event.

import * as api from "../api.js";
import { hasIdentity, wrongIdentityMessage } from "../identity.js";
import { el } from "../ui.js";
import { thumbnailUrl } from "./clipdata.js";

const STATES = {
  recording: "recording",
  idle: "idle",
  offline: "offline",
  storage_error: "storage error",
  "storage error": "storage error",
};

export async function renderCameras(view) {
  view.replaceChildren(el("h1", { text: "Cameras" }), el("p", { class: "hint", text: "Loading…" }));
  const list = await api.cameras();
  const grid = el("div", { class: "cameras", id: "camera-list" });
  for (const cam of Array.isArray(list) ? list : []) grid.append(cameraItem(cam));
  const head = el("div", { class: "page-head" }, el("h1", { text: "Cameras" }),
    el("a", { href: "/live", "data-link": true, id: "live-all", class: "button-link", text: "▶ All cameras live" }));
  view.replaceChildren(head, grid);
  if (!grid.children.length) grid.append(el("p", { class: "hint", text: "No cameras." }));
}

// The card opens the camera's timeline; the link under it, its live view.
function cameraItem(cam) {
  const name = String(cam.name);
  return el("div", { class: "camera-item" }, cameraCard(cam),
    el("a", { href: `/live/${encodeURIComponent(name)}`, "data-link": true, "data-live": name, class: "live-link", text: "▶ Live" }));
}

function cameraCard(cam) {
  const name = String(cam.name);
  const state = String(cam.state || "unknown");
  const label = STATES[state] || state;
  const figure = el("div", { class: "thumb" });
  const card = el("a", { class: `card camera state-${label.replace(/\W+/g, "-")}`, href: `/camera/${encodeURIComponent(name)}`, "data-link": true, "data-camera": name },
    figure,
    el("div", { class: "camera-head" }, el("strong", { text: name }), el("span", { class: "badge", text: label })));
  if (label === "offline") card.append(el("p", { class: "message warn", text: "Camera offline: recorded events are still here." }));
  if (label === "storage error") card.append(el("p", { class: "message error", text: "Storage error: the recorder cannot save clips." }));
  const latest = cam.latest_event;
  // The event being recorded has no thumbnail until it closes: show the newest one that has.
  const pictured = cam.thumbnail_event === undefined ? latest : cam.thumbnail_event;
  if (latest === null || latest === undefined) {
    figure.append(el("span", { class: "placeholder", text: "no events yet" }));
  } else if (!hasIdentity()) {
    figure.append(el("span", { class: "placeholder", text: "load your key to see the thumbnail" }));
  } else {
    figure.append(el("span", { class: "placeholder", text: "decrypting…" }));
    thumbnailUrl(String(pictured ?? latest)).then(
      (url) => figure.replaceChildren(el("img", { src: url, alt: `latest event of ${name}`, class: "thumbnail" })),
      (e) => figure.replaceChildren(el("span", { class: "placeholder error", text: wrongIdentityMessage(e) || thumbError(e) })),
    );
  }
  return card;
}

function thumbError(e) {
  return e && e.status === 404 ? "no thumbnail for the latest event" : `thumbnail: ${e.message}`;
}
