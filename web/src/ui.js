// Small DOM helpers: elements are built with textContent only (never innerHTML), so a camera
// name or anything else that comes from the store cannot inject markup.

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Shows a message in the page's banner; kind: "info" | "warn" | "error". */
export function showMessage(text, kind = "info") {
  const box = document.getElementById("message");
  box.replaceChildren();
  if (!text) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  box.className = `message ${kind}`;
  box.textContent = text;
}

export function pad2(n) {
  return String(n).padStart(2, "0");
}

export function localDay(d) {
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}`;
}

export function timeOfDay(d) {
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return s % 60 ? `${m} min ${s % 60} s` : `${m} min`;
}

const STATE_TEXT = {
  partial: "cut short",
  missing: "missing",
  garbage: "being deleted",
  writing: "recording",
};
export function clipFlag(state) {
  return STATE_TEXT[state] || null;
}
