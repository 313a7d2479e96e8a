// Builds camrec's web app into camrec/web/static/ (committed, so `pip install` needs no npm).
//
// Reproducible: the same sources and lockfile give byte-identical output. esbuild is pinned and
// run with fixed options (no source maps, no timestamps, no absolute paths in the output), the
// pages and the licence file are generated from sorted inputs. `npm run build` twice and compare:
// `node build.mjs --check` rebuilds into a temp folder and fails if anything differs.

import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const staticDir = join(here, "..", "camrec", "web", "static");

// Every page is the same shell: the script routes on the address (see src/main.js).
const PAGES = { "index.html": "Cameras", "login.html": "Log in", "camera.html": "Timeline", "event.html": "Event", "live.html": "Live" };

function shell(title) {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>camrec · ${title}</title>
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<header class="bar">
<a href="/" data-link class="brand">camrec</a>
<span id="key-status"></span>
<button type="button" id="key-button">Key</button>
<button type="button" id="logout" hidden>Log out</button>
</header>
<section id="key-panel" class="card" hidden></section>
<div id="message" role="status" hidden></div>
<main id="view"></main>
<noscript><p>camrec's pages need JavaScript: clips are decrypted in this browser.</p></noscript>
</body>
</html>
`;
}

function packageOf(input) {
  // "node_modules/@noble/post-quantum/node_modules/@noble/hashes/sha3.js" -> the innermost package dir
  const parts = input.split("/");
  const i = parts.lastIndexOf("node_modules");
  if (i < 0) return null;
  const n = parts[i + 1].startsWith("@") ? 2 : 1;
  return parts.slice(0, i + 1 + n).join("/");
}

function licenses(metafile) {
  const dirs = [...new Set(Object.keys(metafile.inputs).map(packageOf).filter(Boolean))].sort();
  let out = "Third-party code bundled into camrec/web/static/app.js (built by web/build.mjs).\n";
  for (const dir of dirs) {
    const pkg = JSON.parse(readFileSync(join(here, dir, "package.json"), "utf8"));
    const file = readdirSync(join(here, dir)).filter((f) => /^licen[cs]e/i.test(f)).sort()[0];
    if (!file) throw new Error(`${dir}: no licence file to ship`);
    out += `\n${"=".repeat(78)}\n${pkg.name} ${pkg.version} (${pkg.license})\n${"=".repeat(78)}\n\n`;
    out += readFileSync(join(here, dir, file), "utf8").trim() + "\n";
  }
  out += `\n${"=".repeat(78)}\ncamrec's own web code (web/src)\n${"=".repeat(78)}\n\nMIT, like the rest of camrec.\n`;
  return out;
}

async function buildInto(outDir) {
  mkdirSync(outDir, { recursive: true });
  const result = await build({
    absWorkingDir: here,
    entryPoints: ["src/main.js"],
    bundle: true,
    format: "iife",
    target: ["es2022"],
    platform: "browser",
    minify: true,
    legalComments: "none", // the licences go to LICENSES.txt in full
    charset: "utf8",
    sourcemap: false,
    metafile: true,
    write: false,
    logLevel: "warning",
  });
  writeFileSync(join(outDir, "app.js"), result.outputFiles[0].contents);
  writeFileSync(join(outDir, "style.css"), readFileSync(join(here, "src", "style.css")));
  for (const [name, title] of Object.entries(PAGES)) writeFileSync(join(outDir, name), shell(title));
  writeFileSync(join(outDir, "LICENSES.txt"), licenses(result.metafile));
}

function digests(dir) {
  const out = {};
  for (const f of readdirSync(dir).sort()) out[f] = createHash("sha256").update(readFileSync(join(dir, f))).digest("hex");
  return out;
}

if (process.argv.includes("--check")) {
  const tmp = mkdtempSync(join(tmpdir(), "camrec-web-"));
  try {
    await buildInto(tmp);
    const want = digests(tmp);
    const have = digests(staticDir);
    const diff = [...new Set([...Object.keys(want), ...Object.keys(have)])].filter((f) => want[f] !== have[f]);
    if (diff.length) {
      console.error(`camrec/web/static differs from a fresh build: ${diff.join(", ")}`);
      process.exit(1);
    }
    console.log(`camrec/web/static matches a fresh build (${Object.keys(want).length} files)`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
} else {
  await buildInto(staticDir);
  for (const [f, h] of Object.entries(digests(staticDir))) console.log(`${h.slice(0, 16)}  ${relative(join(here, ".."), join(staticDir, f))}`);
}
