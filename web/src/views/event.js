// One event: thumbnail with the motion boxes from the decrypted details, the player, previous /
// next event and the download of the decrypted MP4.

import * as api from "../api.js";
import { WrongIdentityError } from "../agefile.js";
import { currentIdentities, hasIdentity } from "../identity.js";
import { decryptClip, playClip, saveMp4 } from "../player.js";
import { clipFlag, el, formatDuration, localDay, timeOfDay } from "../ui.js";
import { details, motionEntries, thumbnailUrl } from "./clipdata.js";
import { dayBounds, dayLists, eventCache } from "./timeline.js";

const WRONG_KEY = "This key does not open this clip. Load the identity that matches the recorder's recipient.";
const CUT_SHORT = "This clip was cut short (power loss or crash): playing the part that was saved.";
const MISSING = "This clip is missing from the store (deleted by retention, or lost).";

// Boxes are (x, y, w, h) relative to the frame (0..1), as the motion detector reports them.
function drawBoxes(canvas, boxes, width, height) {
  canvas.width = width;
  canvas.height = height;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, width, height);
  g.lineWidth = Math.max(2, Math.round(width / 320));
  g.strokeStyle = "#ff3b30";
  for (const [x, y, w, h] of boxes) g.strokeRect(x * width, y * height, w * width, h * height);
}

async function findEvent(id, params) {
  if (eventCache.has(id)) return eventCache.get(id);
  if (!params.get("camera") || !/^\d{4}-\d{2}-\d{2}$/.test(params.get("day") || "")) {
    // A bare /event/<id> (a bookmark, a shared link): the event itself, then its day's list below
    // for previous / next, instead of listing every event in the store to find it.
    let row;
    try {
      row = await api.event(id);
    } catch (e) {
      if (e && e.status === 404) return null;
      throw e;
    }
    params.set("camera", row.camera);
    params.set("day", localDay(new Date(row.start)));
  }
  const camera = params.get("camera") || undefined;
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(params.get("day") || "");
  let range = {};
  if (m) {
    const { start, end } = dayBounds(new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
    range = { since: start.toISOString(), until: end.toISOString() };
  }
  const rows = await api.events({ camera, ...range });
  const list = (Array.isArray(rows) ? rows : []).filter((r) => r && r.id !== undefined);
  list.sort((a, b) => new Date(a.start) - new Date(b.start));
  for (const r of list) eventCache.set(String(r.id), r);
  if (camera && m) dayLists.set(`${camera}|${params.get("day")}`, list.map((r) => String(r.id)));
  else if (list.length) dayLists.set(`*|${id}`, list.map((r) => String(r.id)));
  return eventCache.get(id) || null;
}

function neighbours(id, row, params) {
  const camera = params.get("camera") || (row && row.camera);
  const day = params.get("day") || (row && localDay(new Date(row.start)));
  const ids = dayLists.get(`${camera}|${day}`) || dayLists.get(`*|${id}`) || [];
  const i = ids.indexOf(id);
  const link = (j, text, elId) => {
    if (i < 0 || j < 0 || j >= ids.length) return el("span", { class: "disabled", id: elId, text });
    const q = `?camera=${encodeURIComponent(camera || "")}&day=${encodeURIComponent(day || "")}`;
    return el("a", { href: `/event/${encodeURIComponent(ids[j])}${q}`, "data-link": true, id: elId, text });
  };
  return el("nav", { class: "daynav" }, link(i - 1, "◀ Previous event", "prev-event"), link(i + 1, "Next event ▶", "next-event"));
}

export async function renderEvent(view, id, params) {
  view.replaceChildren(el("p", { class: "hint", text: "Loading…" }));
  const row = await findEvent(id, params);
  const camera = (row && row.camera) || params.get("camera") || "";
  const start = row ? new Date(row.start) : null;
  const flag = row ? clipFlag(row.state) : null;
  const head = el("div", { class: "title" },
    el("a", { href: "/", "data-link": true, text: "Cameras" }), " / ",
    camera ? el("a", { href: `/camera/${encodeURIComponent(camera)}${start ? `?day=${localDay(start)}` : ""}`, "data-link": true, text: camera }) : "event",
    " / ", el("strong", { text: start ? `${localDay(start)} ${timeOfDay(start)}` : id }),
    row ? el("span", { class: "duration", text: ` ${formatDuration(row.duration)}` }) : null,
    flag ? el("span", { class: `badge flag-${row.state}`, id: "event-flag", text: flag }) : null);
  const status = el("p", { id: "player-message", class: "message", hidden: true });
  const say = (text, kind = "info") => {
    status.hidden = !text;
    status.className = `message ${kind}`;
    status.textContent = text || "";
  };

  const thumbBox = el("div", { class: "thumb boxed" });
  const video = el("video", { id: "player", controls: true, playsinline: true, muted: true, preload: "none" });
  video.muted = true; // autoplay after the Play button needs no further gesture on phones
  const overlay = el("canvas", { class: "boxes", id: "video-boxes" });
  const playButton = el("button", { type: "button", id: "play", class: "primary", text: "▶ Play" });
  const downloadButton = el("button", { type: "button", id: "download", text: "Download MP4" });
  view.replaceChildren(head, neighbours(id, row, params), status,
    el("div", { class: "event-media" },
      el("figure", { class: "still" }, thumbBox, el("figcaption", { text: "Thumbnail and motion boxes" })),
      el("div", { class: "video-wrap" }, video, overlay)),
    el("p", { class: "row" }, playButton, downloadButton));

  if (!row) say("This event is not in the index (unknown id).", "warn");
  if (row && row.state === "missing") {
    say(MISSING, "error");
    playButton.disabled = true;
    downloadButton.disabled = true;
  }
  if (!hasIdentity()) {
    say("Load your key (button “Key” above) to decrypt this event.", "warn");
    thumbBox.append(el("span", { class: "placeholder", text: "no key loaded" }));
  }

  let motion = [];
  const showStill = async () => {
    if (!hasIdentity() || (row && row.state === "missing")) return;
    const [thumb, doc] = await Promise.allSettled([
      row && !row.thumbnail ? Promise.reject(new Error("no thumbnail")) : thumbnailUrl(id),
      row && !row.details ? Promise.resolve({}) : details(id),
    ]);
    if (doc.status === "fulfilled") motion = motionEntries(doc.value);
    if (thumb.status === "rejected") {
      const e = thumb.reason;
      if (e instanceof WrongIdentityError) say(WRONG_KEY, "error");
      thumbBox.replaceChildren(el("span", { class: "placeholder", text: e instanceof WrongIdentityError ? "wrong key" : "no thumbnail" }));
      return;
    }
    const img = el("img", { src: thumb.value, alt: "event thumbnail", class: "thumbnail", id: "event-thumbnail" });
    const canvas = el("canvas", { class: "boxes", id: "thumb-boxes" });
    thumbBox.replaceChildren(img, canvas);
    // The thumbnail is the frame with the highest motion score: draw that frame's boxes.
    const best = motion.reduce((a, m) => (a === null || m.score > a.score ? m : a), null);
    img.addEventListener("load", () => drawBoxes(canvas, best ? best.boxes : [], img.naturalWidth, img.naturalHeight), { once: true });
  };
  showStill().catch((e) => say(e.message, "error"));

  // During playback, the boxes of the motion entries near the current time.
  video.addEventListener("timeupdate", () => {
    if (!video.videoWidth) return;
    const near = motion.filter((m) => Math.abs(m.t - video.currentTime) < 0.25).flatMap((m) => m.boxes);
    drawBoxes(overlay, near, video.videoWidth, video.videoHeight);
  });

  let decrypted = null; // {parts, truncated} once the whole clip has been read
  let playing = null;
  const play = () => {
    if (playing) return playing;
    if (!hasIdentity()) {
      say("Load your key first.", "warn");
      return null;
    }
    playButton.disabled = true;
    say("Decrypting…");
    const started = performance.now();
    playing = playClip(video, id, currentIdentities(), {
      onFirstData: () => {
        video.play().catch(() => {});
        view.dataset.firstDataMs = String(Math.round(performance.now() - started));
      },
    }).then((r) => {
      decrypted = r;
      view.dataset.decrypted = "1";
      if (r.truncated) say(CUT_SHORT, "warn");
      else say("");
      return r;
    }, (e) => {
      playing = null;
      playButton.disabled = false;
      say(clipError(e), "error");
      throw e;
    });
    return playing;
  };
  playButton.addEventListener("click", () => play()?.catch(() => {}));
  downloadButton.addEventListener("click", async () => {
    if (!hasIdentity()) {
      say("Load your key first.", "warn");
      return;
    }
    downloadButton.disabled = true;
    try {
      if (!decrypted) {
        say("Decrypting the clip for download…");
        decrypted = playing ? await playing : await decryptClip(id, currentIdentities());
        say(decrypted.truncated ? CUT_SHORT : "");
      }
      saveMp4(decrypted.parts, id);
    } catch (e) {
      say(clipError(e), "error");
    } finally {
      downloadButton.disabled = false;
    }
  });
}

function clipError(e) {
  if (e instanceof WrongIdentityError) return WRONG_KEY;
  if (e && e.status === 404) return MISSING;
  if (e && e.status === 401) return "Your session expired: log in again (your key stays loaded).";
  return `Cannot play this clip: ${e && e.message}`;
}
