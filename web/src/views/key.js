// The identity panel: load an identity file (plain or passphrase-protected), paste a key, and
// opt in to remembering it on this device. None of these fields is inside a <form> or has a
// `name`, so no browser mechanism can ever submit them.

import * as identity from "../identity.js";
import { el } from "../ui.js";

let rememberedFile = null; // a remembered passphrase-protected file waiting for its passphrase

export function setRememberedFile(bytes) {
  rememberedFile = bytes;
}

export function renderKeyPanel(panel, { onLoaded }) {
  const status = el("p", { id: "identity-message", class: "message info", role: "status" });
  const file = el("input", { type: "file", id: "identity-file", accept: ".txt,.age,text/plain" });
  const passphrase = el("input", { type: "password", id: "identity-passphrase", autocomplete: "off", placeholder: "only for a protected file" });
  const paste = el("textarea", { id: "identity-paste", rows: 2, spellcheck: "false", autocomplete: "off", placeholder: "AGE-SECRET-KEY-1… or AGE-SECRET-KEY-PQ-1…" });
  const remember = el("input", { type: "checkbox", id: "identity-remember" });
  const say = (text, kind = "info") => {
    status.className = `message ${kind}`;
    status.textContent = text;
  };

  const afterLoad = async () => {
    passphrase.value = "";
    paste.value = "";
    file.value = "";
    let note = "";
    if (remember.checked) {
      try {
        note = ` ${await identity.rememberOnDevice()}`;
      } catch (e) {
        say(`Loaded, but not remembered: ${e.message}`, "warn");
        onLoaded();
        return;
      }
    }
    say(`Key loaded (${identity.identityDescription()}); it stays in this page's memory.${note}`, "ok");
    onLoaded();
  };

  const useFile = async () => {
    const f = file.files && file.files[0];
    const bytes = f ? new Uint8Array(await f.arrayBuffer()) : rememberedFile;
    if (!bytes) {
      say("Choose an identity file first.", "warn");
      return;
    }
    if (identity.needsPassphrase(bytes) && !passphrase.value) {
      say("This identity file is protected by a passphrase: enter it and press Open.", "warn");
      passphrase.focus();
      return;
    }
    say("Opening the identity…");
    try {
      await identity.loadIdentityFile(bytes, passphrase.value, f ? f.name : "remembered identity file");
      if (!f) rememberedFile = null;
      await afterLoad();
    } catch (e) {
      say(e.message, "error");
    }
  };

  const usePaste = async () => {
    try {
      identity.loadPastedKey(paste.value);
      await afterLoad();
    } catch (e) {
      say(e.message, "error");
    }
  };

  file.addEventListener("change", () => useFile());
  passphrase.addEventListener("keydown", (e) => {
    if (e.key === "Enter") useFile();
  });

  panel.replaceChildren(
    el("h2", { text: "Your key" }),
    el("p", { class: "hint", text: "Clips are decrypted here, in this browser. The key is never sent to the recorder." }),
    el("div", { class: "key-grid" },
      el("label", { for: "identity-file", text: "Identity file" }), file,
      el("label", { for: "identity-passphrase", text: "Passphrase" }),
      el("span", { class: "row" }, passphrase, el("button", { type: "button", id: "identity-open", text: "Open", onclick: useFile })),
      el("label", { for: "identity-paste", text: "Or paste a key" }),
      el("span", { class: "row" }, paste, el("button", { type: "button", id: "identity-use", text: "Use key", onclick: usePaste })),
    ),
    el("p", { class: "row" },
      el("label", { class: "check" }, remember, " Remember on this device"),
      el("button", {
        type: "button", id: "identity-forget", text: "Forget key",
        onclick: async () => {
          identity.forgetIdentity();
          await identity.forgetOnDevice().catch(() => {});
          say("The key was forgotten (this page and this device).");
        },
      }),
    ),
    el("p", { class: "hint", text: "Remembering keeps an X25519 key as a non-extractable browser key, or keeps a passphrase-protected file (its passphrase is asked each visit)." }),
    status,
  );
  if (rememberedFile) say("A protected identity file is remembered on this device: enter its passphrase and press Open.", "info");
  else if (identity.hasIdentity()) say(`Key loaded (${identity.identityDescription()}).`, "ok");
  else say("No key loaded: load your identity file to see thumbnails and clips.", "warn");
}
