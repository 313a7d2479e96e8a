// A day of one camera: a 24-hour strip with the events on it, and the list of events.

import * as api from "../api.js";
import { clipFlag, el, formatDuration, localDay, timeOfDay } from "../ui.js";

export const eventCache = new Map(); // event id -> event row, so the event page can show it at once
export const dayLists = new Map(); // "camera|day" -> ordered ids (for previous/next)

function parseDay(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text || "");
  if (!m) return null;
  const d = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  return Number.isNaN(d.getTime()) ? null : d;
}

export function dayBounds(day) {
  const start = new Date(day.getFullYear(), day.getMonth(), day.getDate());
  const end = new Date(day.getFullYear(), day.getMonth(), day.getDate() + 1);
  return { start, end };
}

export async function renderTimeline(view, camera, params) {
  const day = parseDay(params.get("day")) || new Date();
  const { start, end } = dayBounds(day);
  const prev = localDay(new Date(start.getFullYear(), start.getMonth(), start.getDate() - 1));
  const next = localDay(end);
  const base = `/camera/${encodeURIComponent(camera)}`;
  const nav = el("nav", { class: "daynav" },
    el("a", { href: `${base}?day=${prev}`, "data-link": true, id: "prev-day", text: "◀ Previous day" }),
    el("strong", { id: "day", text: localDay(start) }),
    el("a", { href: `${base}?day=${next}`, "data-link": true, id: "next-day", text: "Next day ▶" }));
  const head = el("div", { class: "title" }, el("a", { href: "/", "data-link": true, text: "Cameras" }), " / ", el("strong", { text: camera }),
    " · ", el("a", { href: `/live/${encodeURIComponent(camera)}`, "data-link": true, id: "timeline-live", text: "▶ Live" }));
  view.replaceChildren(head, nav, el("p", { class: "hint", text: "Loading…" }));

  const [rows, cams] = await Promise.all([
    api.events({ camera, since: start.toISOString(), until: end.toISOString() }),
    api.cameras().catch(() => []),
  ]);
  const events = (Array.isArray(rows) ? rows : [])
    .filter((r) => r && r.id !== undefined && !Number.isNaN(new Date(r.start).getTime()))
    .sort((a, b) => new Date(a.start) - new Date(b.start));
  for (const r of events) eventCache.set(String(r.id), r);
  dayLists.set(`${camera}|${localDay(start)}`, events.map((r) => String(r.id)));

  const strip = el("div", { class: "strip", id: "strip" });
  for (let h = 0; h <= 24; h += 6) strip.append(el("span", { class: "tick", "data-hour": h, text: `${h}h` }));
  const list = el("ol", { class: "events", id: "event-list" });
  const span = end - start;
  for (const r of events) {
    const s = new Date(r.start);
    const flag = clipFlag(r.state);
    const href = `/event/${encodeURIComponent(r.id)}?camera=${encodeURIComponent(camera)}&day=${localDay(start)}`;
    const mark = el("a", { class: `mark${flag ? " flagged" : ""}`, href, "data-link": true, title: `${timeOfDay(s)} (${formatDuration(r.duration)})` });
    // Positions are set through CSSOM (allowed by the CSP), not a style attribute.
    mark.style.left = `${Math.max(0, Math.min(100, ((s - start) / span) * 100))}%`;
    mark.style.width = `${Math.max(0.3, (Number(r.duration) * 1000 / span) * 100)}%`;
    strip.append(mark);
    list.append(el("li", { class: "event" },
      el("a", { href, "data-link": true, "data-event": String(r.id) },
        el("span", { class: "time", text: timeOfDay(s) }),
        el("span", { class: "duration", text: formatDuration(r.duration) }),
        flag ? el("span", { class: `badge flag-${r.state}`, text: flag }) : null)));
  }
  const me = (Array.isArray(cams) ? cams : []).find((c) => c && c.name === camera);
  const notes = [];
  if (me && me.state === "offline") notes.push(el("p", { class: "message warn", text: "This camera is offline: no new events are being recorded." }));
  if (!events.length) notes.push(el("p", { class: "hint", id: "no-events", text: "No events on this day." }));
  view.replaceChildren(head, nav, ...notes, strip, list);
}
