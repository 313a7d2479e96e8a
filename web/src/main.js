// camrec's owner web app: one page with client-side routing over its views.
//
// The server answers /, /login, /camera/<name>, /event/<id>, /live and /live/<name> with the same
// shell; this script draws the view for the address and follows links with history.pushState.
// Staying on one page is what keeps the identity in memory while the owner moves between cameras
// and events. A view that holds connections (the live players) registers what ends them; that
// runs when the view is left, by navigation or when the page itself goes away (pagehide).

import * as api from "./api.js";
import * as identity from "./identity.js";
import { el, showMessage } from "./ui.js";
import { renderCameras } from "./views/cameras.js";
import { forgetThumbnails } from "./views/clipdata.js";
import { renderEvent } from "./views/event.js";
import { renderKeyPanel, setRememberedFile } from "./views/key.js";
import { renderLive, renderLiveGrid } from "./views/live.js";
import { renderLogin } from "./views/login.js";
import { renderTimeline } from "./views/timeline.js";

let loggedIn = false;
let sessionUser = null; // "local" in `camrec web serve --store` mode: no accounts, nothing to log out of
let pendingNotice = null;
let renderSeq = 0;
let onLeave = []; // what ends the current view's connections

function leaveView() {
  for (const fn of onLeave.splice(0)) {
    try {
      fn();
    } catch (e) {
      console.error(e);
    }
  }
}

function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  render();
}

function toLogin(notice) {
  loggedIn = false;
  pendingNotice = notice;
  const here = location.pathname + location.search;
  const next = here.startsWith("/login") ? "" : `?next=${encodeURIComponent(here)}`;
  navigate(`/login${next}`, { replace: true });
}

function updateBar() {
  const status = document.getElementById("key-status");
  status.textContent = identity.hasIdentity() ? identity.identityDescription() : "no key";
  status.className = identity.hasIdentity() ? "ok" : "warn";
  document.getElementById("logout").hidden = !loggedIn || sessionUser === "local";
  document.getElementById("key-button").hidden = location.pathname === "/login";
}

function toggleKeyPanel(show) {
  const panel = document.getElementById("key-panel");
  const wanted = show === undefined ? panel.hidden : show;
  if (wanted === !panel.hidden) return; // already so: keep what the owner typed or ticked
  panel.hidden = !wanted;
  if (wanted) renderKeyPanel(panel, {
      onLoaded: () => {
        panel.hidden = true;
        updateBar();
        render();
      },
    });
}

async function render() {
  const seq = ++renderSeq;
  leaveView();
  // A view that finishes loading after the owner moved on ends its connections at once.
  const scope = {
    alive: () => seq === renderSeq,
    onLeave: (fn) => (seq === renderSeq ? onLeave.push(fn) : fn()),
  };
  const view = document.getElementById("view");
  const path = location.pathname;
  const params = new URLSearchParams(location.search);
  updateBar();
  showMessage(null);
  try {
    if (path === "/login") {
      const notice = pendingNotice;
      pendingNotice = null;
      renderLogin(view, { next: params.get("next"), navigate: (to) => { loggedIn = true; navigate(to, { replace: true }); }, notice });
      return;
    }
    if (!loggedIn) {
      const s = await api.session();
      if (seq !== renderSeq) return;
      if (!s) {
        toLogin(null);
        return;
      }
      loggedIn = true;
      sessionUser = typeof s.user === "string" ? s.user : null;
      updateBar();
    }
    let m;
    // Live video needs no key (it is not encrypted at rest): don't push the key panel there.
    const live = path === "/live" || path.startsWith("/live/");
    if (live) toggleKeyPanel(false);
    else if (!identity.hasIdentity()) toggleKeyPanel(true);
    if (path === "/" || path === "/index.html") await renderCameras(view);
    else if (path === "/live") await renderLiveGrid(view, scope);
    else if ((m = /^\/live\/([^/]+)$/.exec(path))) await renderLive(view, decodeURIComponent(m[1]), params, scope);
    else if ((m = /^\/camera\/([^/]+)$/.exec(path))) await renderTimeline(view, decodeURIComponent(m[1]), params);
    else if ((m = /^\/event\/([^/]+)$/.exec(path))) await renderEvent(view, decodeURIComponent(m[1]), params);
    else view.replaceChildren(el("h1", { text: "Not found" }), el("a", { href: "/", "data-link": true, text: "Cameras" }));
  } catch (e) {
    if (seq !== renderSeq) return;
    if (e instanceof api.HttpError && e.status === 401) return; // the 401 handler moved to login
    showMessage(e.message || String(e), "error");
  }
}

async function boot() {
  api.setUnauthorizedHandler(() => {
    if (location.pathname !== "/login") toLogin("Your session expired: log in again. Your key stays loaded in this page.");
  });
  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest("a[data-link]");
    if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin) return;
    e.preventDefault();
    navigate(url.pathname + url.search);
  });
  window.addEventListener("popstate", render);
  window.addEventListener("pagehide", leaveView);
  window.addEventListener("pageshow", (e) => {
    if (e.persisted) render(); // back from the back/forward cache: the live views start again
  });
  document.getElementById("key-button").addEventListener("click", () => toggleKeyPanel());
  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await api.logout();
    } catch {
      // the session may already be gone; the page forgets its state either way
    }
    identity.forgetIdentity();
    forgetThumbnails();
    loggedIn = false;
    navigate("/login", { replace: true });
  });
  identity.onIdentityChange(() => {
    forgetThumbnails();
    updateBar();
  });
  const remembered = await identity.restoreRemembered();
  if (remembered && remembered.kind === "protected-file") setRememberedFile(remembered.bytes);
  await render();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
else boot();
