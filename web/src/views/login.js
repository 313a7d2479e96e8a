// The login view. The form has no action and its inputs have no `name`: only the script sends
// the credentials, as JSON to /api/login.

import * as api from "../api.js";
import { el } from "../ui.js";

export function renderLogin(view, { next, navigate, notice }) {
  const user = el("input", { id: "login-user", autocomplete: "username", required: true, autocapitalize: "none" });
  const pass = el("input", { id: "login-password", type: "password", autocomplete: "current-password", required: true });
  const msg = el("p", { id: "login-message", class: "message", role: "alert", hidden: !notice, text: notice || "" });
  if (notice) msg.className = "message warn";
  const button = el("button", { type: "submit", id: "login-submit", text: "Log in" });
  const form = el("form", { id: "login-form", class: "card narrow", novalidate: true },
    el("h1", { text: "camrec" }),
    el("label", { for: "login-user", text: "User" }), user,
    el("label", { for: "login-password", text: "Password" }), pass,
    button, msg);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    button.disabled = true;
    msg.hidden = true;
    try {
      await api.login(user.value, pass.value);
      pass.value = "";
      navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/");
    } catch (err) {
      msg.hidden = false;
      msg.className = "message error";
      msg.textContent = err.status === 429
        ? "Too many failed logins: wait a moment and try again."
        : err.status === 401 ? "Wrong user name or password." : `Login failed: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  });
  view.replaceChildren(form);
  user.focus();
}
