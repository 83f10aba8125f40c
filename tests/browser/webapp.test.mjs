// Browser test of the web app: headless Debian Chromium driven by playwright-core.
//
//   node tests/browser/webapp.test.mjs --mode gpu|cpu
//
// Loads the model, refuses a corrupt one, picks a folder holding the album (plus a sub-folder with
// a renamed duplicate, a corrupt photo and a non-image) as a folder handle while another tab holds
// the indexing lock (nothing is indexed until it lets go), waits for indexing, checks that
// IndexedDB holds an int8 vector and a thumbnail per photo and no file bytes, searches in Chinese
// and checks the ranking against `brivl embed` run natively on the same files (same top-1, scores
// within 1e-3), searches similar photos, reloads (model from the cache, index intact), pauses
// indexing of files given without a handle and reloads mid-way (the app lists them as not indexed,
// asks for the folder again, then resumes: nothing lost or doubled), works offline, makes the engine
// worker die mid-album (test hooks: stuck, a wasm trap as on out-of-memory, a panic; those photos
// are listed as failed, every other one indexed, a search meanwhile never hangs, and nothing is
// retried after a reload), and checks that no request left the origin and the
// Content-Security-Policy was never violated. --mode cpu runs the same
// suite with WebGPU disabled in the browser. The server sends COOP/COEP, so the page is
// cross-origin isolated and runs the engine's threaded build (the CPU path on a pool of
// workers); --one-thread leaves them out: the one-thread build runs until the first reload, which
// the service worker's headers isolate. Screenshots go to tests/artifacts/webapp-<mode>/.
//
// Needs: dist/ built by trunk (www/serve.sh or tests/run.sh), the `brivl` binary (BRIVL_BIN).

import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "../../www/tools/static-server.mjs";
import { CHROMIUM, CPU_FLAGS, FLAGS, GPU_FLAGS } from "./chromium.mjs";
import { quantizeI8 } from "../../app/web/js/store.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

// ---- What is tested: one setting each (the demo model and album replace the tiny fixture). ----
// Environment: BRIVL_TEST_MODEL, BRIVL_TEST_ALBUM, BRIVL_TEST_QUERY, BRIVL_TEST_EXPECTED,
// BRIVL_TEST_LIMIT.
// MODEL: a .safetensors path, or "tiny" to convert the tiny fixture to q8.
const MODEL = process.env.BRIVL_TEST_MODEL || "tiny";
const ALBUM = path.resolve(ROOT, process.env.BRIVL_TEST_ALBUM || "tests/fixtures/tiny/images");
// QUERY and EXPECTED (the file that must rank first). Defaults: the first row of the album's
// captions.tsv (file \t zh \t en) when it has one; else a fixed query and brivl's native top-1.
let QUERY = process.env.BRIVL_TEST_QUERY || "";
let EXPECTED = process.env.BRIVL_TEST_EXPECTED || "";
// At most this many album photos (sorted by name) are used: WebGPU on SwiftShader is slow.
const LIMIT = Number(process.env.BRIVL_TEST_LIMIT || 0) || Infinity;

const args = process.argv.slice(2);
const MODE = args.includes("--mode") ? args[args.indexOf("--mode") + 1] : "gpu";
// Scores against brivl natively (on the GPU where there is one). The CPU path multiplies q8
// weights by inputs quantised to u8 per group of 32 (engine/src/cpu/int8): its scores move by up
// to 2.4e-3 on the demo model (measured 2026-12-07), the GPU's by under 1e-3.
const TOLERANCE = MODE === "cpu" ? 4e-3 : 1e-3;
const ONE_THREAD = args.includes("--one-thread");
const LABEL = MODE + (ONE_THREAD ? "-one-thread" : "");
const DIST = path.resolve(ROOT, process.env.BRIVL_DIST || "dist");
const TARGET = process.env.CARGO_TARGET_DIR || path.join(ROOT, "target");
const BRIVL = process.env.BRIVL_BIN || path.join(TARGET, "debug", "brivl");
const ART = path.join(ROOT, "tests", "artifacts", `webapp-${LABEL}`);
const IMAGE = /\.(jpe?g|png|webp|gif|bmp|tiff?)$/i;

function log(...a) {
  console.log(`[webapp ${LABEL}]`, ...a);
}

function check(cond, msg) {
  if (!cond) throw new Error(`FAILED: ${msg}`);
  log(`ok: ${msg}`);
}

const sha256 = (bytes) => crypto.createHash("sha256").update(bytes).digest("hex");
const dot = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);
// The index holds int8 rows with a scale: a native embedding as the app stores it.
const stored = (e) => {
  const { code, scale } = quantizeI8(new Float32Array(e));
  return Array.from(code, (c) => c * scale);
};

function prepare(work) {
  fs.rmSync(ART, { recursive: true, force: true });
  fs.mkdirSync(ART, { recursive: true });
  check(fs.existsSync(path.join(DIST, "index.html")), `built site at ${DIST}`);

  // The site: dist/ plus the model under test as the site's model.
  const site = path.join(work, "site");
  fs.cpSync(DIST, site, { recursive: true });
  const models = path.join(site, "models");
  for (const f of fs.readdirSync(models)) if (f.endsWith(".safetensors")) fs.rmSync(path.join(models, f));
  let model = MODEL;
  if (MODEL === "tiny") {
    model = path.join(work, "brivl-tiny-q8.safetensors");
    execFileSync(BRIVL, [
      "convert", path.join(ROOT, "tests/fixtures/tiny/brivl-tiny.pth"),
      "--vocab", path.join(ROOT, "tests/fixtures/tokenizer/vocab.txt"),
      "--quant", "q8", "--image-size", "200", "--img-heads", "2", "--text-heads", "2", "--bert-heads", "2",
      "-o", model,
    ], { stdio: "inherit" });
  }
  fs.copyFileSync(model, path.join(models, path.basename(model)));
  execFileSync("bash", [path.join(ROOT, "www/tools/models-manifest.sh"), site]);

  // The folder the user picks: the album, a sub-folder with a renamed copy of a photo, a corrupt
  // photo and a non-image. Two names carry markup, which must show as text.
  const album = fs.readdirSync(ALBUM).filter((f) => IMAGE.test(f) && !f.endsWith(".pil.png")).sort().slice(0, LIMIT);
  check(album.length >= 2, `album has ${album.length} photos`);
  const drop = path.join(work, "drop", "album");
  fs.mkdirSync(path.join(drop, "more"), { recursive: true });
  for (const f of album) fs.copyFileSync(path.join(ALBUM, f), path.join(drop, f));
  const firstJpeg = album.find((f) => /\.jpe?g$/i.test(f)) || album[0];
  fs.copyFileSync(path.join(ALBUM, firstJpeg), path.join(drop, "more", "<b>renamed copy.jpg"));
  const jpeg = fs.readFileSync(path.join(ALBUM, firstJpeg));
  fs.writeFileSync(path.join(drop, "more", "<i>broken.jpg"), jpeg.subarray(0, Math.min(600, jpeg.length >> 1)));
  fs.writeFileSync(path.join(drop, "notes.txt"), "not a photo\n");

  const captions = path.join(ALBUM, "captions.tsv");
  if (!QUERY && fs.existsSync(captions)) {
    // The first row naming a photo of the album (skips a header row).
    const row = fs.readFileSync(captions, "utf8").split("\n").map((l) => l.split("\t").map((c) => c.trim()))
      .find(([file, zh]) => zh && album.includes(file));
    if (row) {
      QUERY = row[1];
      EXPECTED = EXPECTED || row[0];
    }
  }
  QUERY = QUERY || "海边的日落";

  // brivl natively on the same files: photo and query embeddings, keyed by content hash.
  const out = path.join(work, "native.jsonl");
  execFileSync(BRIVL, ["embed", "--model", model, "--images", drop, "--text", QUERY, "--out", out], { stdio: "inherit" });
  const native = { photos: new Map(), text: null };
  for (const line of fs.readFileSync(out, "utf8").split("\n").filter(Boolean)) {
    const j = JSON.parse(line);
    if (j.kind === "image") native.photos.set(sha256(fs.readFileSync(j.name)), { name: path.basename(j.name), emb: j.embedding });
    if (j.kind === "text") native.text = j.embedding;
  }
  check(native.photos.size === album.length || native.photos.size === new Set(album.map((f) => sha256(fs.readFileSync(path.join(ALBUM, f))))).size,
    `brivl embed read ${native.photos.size} distinct photos`);
  const ranking = [...native.photos.entries()].map(([hash, p]) => ({ hash, name: p.name, score: dot(native.text, stored(p.emb)), f32: dot(native.text, p.emb) }))
    .sort((a, b) => b.score - a.score);
  const expectedHash = EXPECTED ? ranking.find((r) => r.name === EXPECTED)?.hash : ranking[0].hash;
  check(expectedHash, `expected photo ${EXPECTED || ranking[0].name} is in the album`);
  if (EXPECTED) check(ranking[0].hash === expectedHash, `natively, ${EXPECTED} ranks first for ${QUERY}`);
  // Photos dropped in the worker-failure step: photos the album test did not use (or copies made
  // distinct by trailing bytes), and three that make the worker fail (test hooks, by name).
  const rest = fs.readdirSync(ALBUM).filter((f) => IMAGE.test(f) && !f.endsWith(".pil.png")).sort()
    .filter((f) => !album.includes(f));
  const extra = [];
  for (let i = 0; i < 6; i++) {
    const name = rest[i] || album[i % album.length];
    let bytes = fs.readFileSync(path.join(ALBUM, name));
    if (!rest[i]) bytes = Buffer.concat([bytes, Buffer.from(`extra ${i}`)]);
    extra.push({ name: `extra-${i}-${name}`, bytes });
  }
  const fault = (kind) => ({ name: `brivl-test-${kind}.jpg`, bytes: Buffer.concat([jpeg, Buffer.from(kind)]) });
  const crash = [extra[0], extra[1], extra[2], fault("hang"), extra[3], fault("abort"), extra[4], fault("panic"), extra[5]];
  // Every file of the dropped folder (relative path, bytes), to write into the origin-private file
  // system: its handle stands for the folder a person picks with showDirectoryPicker.
  const folder = [];
  const walk = (dir, rel) => {
    for (const f of fs.readdirSync(dir, { withFileTypes: true })) {
      if (f.isDirectory()) walk(path.join(dir, f.name), rel + f.name + "/");
      else folder.push({ path: rel + f.name, bytes: fs.readFileSync(path.join(dir, f.name)) });
    }
  };
  walk(drop, "");
  return { site, drop: path.dirname(drop), model, native, ranking, expectedHash, album, crash, folder };
}

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "brivl-webapp-"));
  const t = prepare(work);
  const { server, url } = await serve(t.site, 0, "127.0.0.1", { isolated: !ONE_THREAD });
  const origin = new URL(url).origin;
  log(`site at ${url}, mode ${MODE}, query ${QUERY}`);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...FLAGS, ...(MODE === "cpu" ? CPU_FLAGS : GPU_FLAGS)],
  });
  const context = await browser.newContext({ locale: "zh-CN", viewport: { width: 1280, height: 900 } });
  const requests = [];
  context.on("request", (r) => requests.push(r.url()));
  const problems = [];
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("dialog", (d) => d.accept());
  const shot = (name) => page.screenshot({ path: path.join(ART, `${name}.png`), fullPage: true });
  const status = (sel, attr) => page.getAttribute(sel, attr);

  try {
    // 1. The model loads from the site, is checked, and runs where the mode says.
    const t0 = Date.now();
    await page.goto(url);
    await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 300_000 });
    log(`model ready in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${await page.textContent("#backend")}`);
    check((await status("#backend", "data-gpu")) === (MODE === "cpu" ? "no" : "yes"), `engine runs on ${MODE === "cpu" ? "the CPU path" : "WebGPU"}`);
    check((await page.getAttribute("html", "lang")) === "zh-CN", "UI starts in Chinese for a zh-CN browser");
    const isolated = await page.evaluate(() => self.crossOriginIsolated);
    check(isolated === !ONE_THREAD, `the page is ${isolated ? "" : "not "}cross-origin isolated`);
    if (MODE === "cpu") {
      const cores = await page.evaluate(() => navigator.hardwareConcurrency);
      const backend = await status("#backend", "data-backend");
      const threads = isolated && cores > 1 ? Math.min(cores, 8) : 1;
      const want = threads > 1 ? new RegExp(`CPU, ${threads} threads`) : /CPU(?!, \d+ threads)/;
      check(want.test(backend), `the CPU path runs on ${threads} thread(s) of ${cores}: ${backend.trim()}`);
    }
    await shot("01-model-ready");

    // 2. A corrupt model file is refused with the reason; the loaded model stays in use.
    const bad = fs.readFileSync(t.model);
    bad[bad.length - 10] ^= 0xff;
    const badPath = path.join(work, "corrupt.safetensors");
    fs.writeFileSync(badPath, bad);
    await page.setInputFiles("#model-file", badPath);
    await page.waitForSelector('#model-status[data-state="refused"]', { timeout: 120_000 });
    const refusal = await page.textContent("#model-error");
    check(/corrupt|hash/i.test(refusal), `corrupt model refused with the reason: ${refusal.trim()}`);
    check((await page.$("#model-name")) !== null, "the previous model stays loaded");
    await shot("02-model-refused");

    // 2b. A good model file the user picks loads: the page never reads it (the engine worker
    // reads the File in slices) and it is kept in OPFS, streamed there, named by its content hash.
    const mine = path.join(work, "mine.safetensors");
    fs.copyFileSync(t.model, mine);
    await page.setInputFiles("#model-file", mine);
    await page.waitForSelector('#model-status[data-state="ready"] #model-name[data-from-cache="no"]', { timeout: 300_000 });
    const picked = await page.evaluate(async () => {
      const dir = await navigator.storage.getDirectory();
      const files = [];
      for await (const name of dir.keys()) if (name.startsWith("dropped-")) files.push(name);
      const entries = JSON.parse(localStorage.getItem("brivl.models") || "[]").filter((e) => e.origin === "dropped");
      const f = files.length ? await (await dir.getFileHandle(files[0])).getFile() : null;
      const d = f ? new Uint8Array(await crypto.subtle.digest("SHA-256", await f.arrayBuffer())) : [];
      return {
        files,
        entries: entries.map((e) => ({ key: e.key, hash: e.content_hash })),
        sha: [...d].map((b) => b.toString(16).padStart(2, "0")).join(""),
      };
    });
    const mineSha = crypto.createHash("sha256").update(fs.readFileSync(mine)).digest("hex");
    const [entry] = picked.entries;
    check(picked.files.length === 1 && picked.entries.length === 1 && entry.key === `opfs:${picked.files[0]}`
      && picked.files[0] === `dropped-${entry.hash.slice(0, 16)}.safetensors` && picked.sha === mineSha,
      `a picked model loads and is kept as ${picked.files.join(", ")} (its content hash), byte-identical; the refused one left nothing`);
    await page.click("#site-model");
    await page.waitForSelector('#model-status[data-state="ready"] #model-name[data-from-cache="yes"]', { timeout: 120_000 });
    check(true, "the site's model comes back from OPFS");

    // 3. Index a folder: sub-folders included, the duplicate embedded once, bad files listed.
    // Another tab of the site holds the indexing lock at first: this tab queues the files, says
    // so, and indexes nothing until the lock is free.
    const unique = t.native.photos.size;
    const other = await context.newPage();
    await other.goto(url + "favicon.svg");
    await other.evaluate(() => new Promise((held) => {
      navigator.locks.request("brivl-index", () => {
        held();
        return new Promise((release) => (window.__release = release));
      });
    }));
    await page.bringToFront();
    // The folder, as a handle: written into the origin-private file system, and handed out by
    // showDirectoryPicker (which a headless test cannot answer); the app reads files in place.
    await page.evaluate(async (files) => {
      const root = await navigator.storage.getDirectory();
      const album = await root.getDirectoryHandle("album", { create: true });
      for (const f of files) {
        const parts = f.path.split("/");
        let dir = album;
        for (const p of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(p, { create: true });
        const w = await (await dir.getFileHandle(parts[parts.length - 1], { create: true })).createWritable();
        await w.write(new Uint8Array(f.bytes));
        await w.close();
      }
      window.showDirectoryPicker = async () => album;
    }, t.folder.map((f) => ({ path: f.path, bytes: [...f.bytes] })));
    await page.click("#choose-folder");
    await page.waitForSelector('#index-status[data-state="waiting"] #other-tab', { timeout: 120_000 });
    await page.waitForTimeout(2000);
    check((await status("#index-status", "data-indexed")) === "0" && Number(await status("#index-status", "data-queued")) > unique - 1,
      "while another tab holds the indexing lock, this tab indexes nothing and says why");
    await other.evaluate(() => window.__release());
    await other.close();
    const t1 = Date.now();
    await page.waitForSelector('#index-status:not([data-indexed="0"])', { timeout: 300_000 });
    const first = (Date.now() - t1) / 1000;
    await page.waitForSelector(`#index-status[data-state="idle"][data-queued="0"][data-indexed="${unique}"]`, { timeout: 300_000 });
    const secs = (Date.now() - t1) / 1000;
    const rest = (unique - 1) / Math.max(secs - first, 1e-3);
    log(`indexed ${unique} photos in ${secs.toFixed(1)} s: the first after ${first.toFixed(1)} s, then ${rest.toFixed(2)} photos/s`);
    check((await status("#index-status", "data-failed")) === "1", "the corrupt photo is skipped");
    check((await status("#index-status", "data-not-photos")) === "1", "the non-image is counted as not a photo");
    // No copies: what is stored per photo is its int8 vector and its thumbnail, nothing of the file.
    const usage = await page.evaluate(() => new Promise((resolve, reject) => {
      const open = indexedDB.open("brivl");
      open.onsuccess = () => {
        const names = ["photos", "vectors", "thumbs", "queue", "failed", "roots", "meta"];
        const tx = open.result.transaction(names);
        const got = Object.fromEntries(names.map((n) => [n, tx.objectStore(n).getAll()]));
        tx.oncomplete = async () => {
          const out = {};
          for (const [n, r] of Object.entries(got)) out[n] = r.result;
          // Bytes held in each store's records: Blobs and typed arrays.
          const bytes = (v) => (v instanceof Blob ? v.size : ArrayBuffer.isView(v) ? v.byteLength : v && typeof v === "object" && !(v instanceof FileSystemHandle) ? Object.values(v).reduce((s, x) => s + bytes(x), 0) : 0);
          const per = Object.fromEntries(Object.entries(out).map(([n, rows]) => [n, rows.reduce((s, r) => s + bytes(r), 0)]));
          const est = await navigator.storage.estimate();
          open.result.close();
          resolve({ per, count: Object.fromEntries(Object.entries(out).map(([n, r]) => [n, r.length])), idb: (est.usageDetails || {}).indexedDB || 0,
            codeLens: [...new Set(out.vectors.map((v) => v.code.length))], maxThumb: Math.max(...out.thumbs.map((b) => b.size)) });
        };
      };
      open.onerror = () => reject(open.error);
    }));
    const fileBytes = t.folder.reduce((s, f) => s + f.bytes.length, 0);
    log(`stored: ${JSON.stringify(usage)}; the folder holds ${fileBytes} bytes`);
    check(usage.per.photos === 0 && usage.per.queue === 0 && usage.per.failed === 0 && usage.per.roots === 0 && usage.count.queue === 0,
      "no file bytes are stored: photo records, the queue and the folder list hold no Blob or buffer");
    check(usage.count.vectors === unique && usage.per.vectors === unique * usage.codeLens[0] && usage.codeLens.length === 1 && usage.count.thumbs === unique,
      `one int8 vector (${usage.codeLens[0]} bytes) and one thumbnail per photo`);
    check(usage.idb < usage.per.vectors + usage.per.thumbs + 512 * 1024,
      `IndexedDB uses ${usage.idb} bytes: the vectors (${usage.per.vectors}) and thumbnails (${usage.per.thumbs}) and little else`);
    const skipped = await page.textContent("#skipped");
    check(skipped.includes("<i>broken.jpg") && !skipped.includes("notes.txt"), "the corrupt photo is listed by name, the non-image is not");
    check((await page.$$("#skipped i")).length === 0, "file names render as text, not HTML");
    await page.click("#skipped summary");
    await shot("03-indexed");

    // A photo dropped on the drop zone under a new name is known by its content: not embedded again.
    const dropped = fs.readFileSync(path.join(ALBUM, t.album[0]));
    const dt = await page.evaluateHandle((bytes) => {
      const d = new DataTransfer();
      d.items.add(new File([new Uint8Array(bytes)], "dropped again.jpg"));
      return d;
    }, [...dropped]);
    await page.dispatchEvent("#dropzone", "drop", { dataTransfer: dt });
    await page.waitForFunction(() => /^1\D+0\D/.test(document.querySelector("#notice").textContent));
    await page.waitForSelector(`#index-status[data-state="idle"][data-queued="0"][data-indexed="${unique}"]`, { timeout: 120_000 });
    const dupNames = await page.evaluate((h) => new Promise((resolve) => {
      const open = indexedDB.open("brivl");
      open.onsuccess = () => {
        const r = open.result.transaction("photos").objectStore("photos").get(h);
        r.onsuccess = () => {
          open.result.close();
          resolve(r.result.names);
        };
      };
    }), sha256(dropped));
    check((await status("#index-status", "data-indexed")) === String(unique) && dupNames.includes("dropped again.jpg"),
      `a dropped duplicate is recognised by its content, not embedded twice (names: ${dupNames.join(", ")})`);

    // 4. An English query is translated offline into the Chinese the model reads (en-zh.tsv,
    // fetched from the site); then search in Chinese: same top-1 as brivl natively, every score
    // within the tolerance.
    await page.fill("#query", "a cat on a sofa");
    await page.waitForFunction(() => document.querySelector("#query-used").value === "一只猫在沙发上");
    check(true, "an English query is translated: 'a cat on a sofa' -> 一只猫在沙发上");
    await page.fill("#query", QUERY);
    check((await page.inputValue("#query-used")) === QUERY, "the query used is shown");
    await page.click("#search");
    await page.waitForSelector('#results[data-view="results"] li');
    const hits = await page.$$eval("#results li", (els) => els.map((e) => ({ hash: e.dataset.hash, score: Number(e.dataset.score) })));
    check(Number(await status("#results", "data-total")) === unique && hits.length >= Math.min(unique, 12),
      `${unique} results, one per distinct photo (${hits.length} cells on screen)`);
    check(hits[0].hash === t.expectedHash, `top-1 is ${t.native.photos.get(t.expectedHash).name}`);
    let worst = 0;
    let worstF32 = 0;
    for (const h of hits) {
      const n = t.ranking.find((r) => r.hash === h.hash);
      worst = Math.max(worst, Math.abs(n.score - h.score));
      worstF32 = Math.max(worstF32, Math.abs(n.f32 - h.score));
    }
    check(worst <= TOLERANCE, `scores match brivl natively on the stored int8 vectors (max difference ${worst.toExponential(2)}; ${worstF32.toExponential(2)} from the f32 embeddings)`);
    check(hits.every((h, i) => i === 0 || hits[i - 1].score >= h.score), "results are ordered by score");
    await shot("04-search");

    // 5. The large view, then similar photos from it (image to image on stored embeddings).
    await page.click("#results li:first-child .thumb");
    await page.waitForSelector('.large img[data-original="yes"]');
    check(true, "the large view shows the original, read through the folder handle");
    await shot("05-large");
    await page.keyboard.press("Escape");
    await page.waitForSelector(".large", { state: "detached" });
    await page.click("#results li:first-child .similar");
    await page.waitForFunction((h) => !document.querySelector(`#results li[data-hash="${h}"]`), t.expectedHash);
    const similar = await page.$$eval("#results li", (els) => els.map((e) => ({ hash: e.dataset.hash, score: Number(e.dataset.score) })));
    const from = t.native.photos.get(t.expectedHash).emb;
    const nativeSimilar = [...t.native.photos.entries()].filter(([h]) => h !== t.expectedHash)
      .map(([hash, p]) => ({ hash, score: dot(from, p.emb) })).sort((a, b) => b.score - a.score);
    check(Number(await status("#results", "data-total")) === unique - 1 && similar[0].hash === nativeSimilar[0].hash, "similar-photo search matches brivl natively");
    await shot("06-similar");

    // 6. Switch language; the phone layout.
    await page.click("#lang-switch");
    check((await page.getAttribute("html", "lang")) === "en", "language switches to English");
    await page.setViewportSize({ width: 390, height: 844 });
    await shot("07-phone-en");
    await page.setViewportSize({ width: 1280, height: 900 });

    // 7. Reload: the model comes from the cache, the index is intact, search gives the same.
    await page.reload();
    await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 300_000 });
    check((await status("#model-name", "data-from-cache")) === "yes", "second visit loads the model from OPFS");
    check(await page.evaluate(() => self.crossOriginIsolated), "reloaded through the service worker, the page is cross-origin isolated");
    await page.waitForSelector(`#index-status[data-indexed="${unique}"]`);
    await page.fill("#query", QUERY);
    await page.click("#search");
    await page.waitForSelector('#results[data-view="results"] li');
    const again = await page.$$eval("#results li", (els) => els.map((e) => ({ hash: e.dataset.hash, score: Number(e.dataset.score) })));
    check(again[0].hash === t.expectedHash && Math.abs(again[0].score - hits[0].score) < 1e-6, "after a reload the index answers the same");
    await shot("08-after-reload");

    // 7b. The site's model was downloaded by the engine worker into OPFS, byte for byte. A
    // download cut short (a tab closed mid-way leaves part of the file) does not load on the
    // next visit: the file is removed and downloaded again.
    const served = fs.readFileSync(t.model);
    const sha = crypto.createHash("sha256").update(served).digest("hex");
    const siteFile = `site-${sha.slice(0, 16)}.safetensors`;
    const opfsSha = (name) => page.evaluate(async (name) => {
      const f = await (await (await navigator.storage.getDirectory()).getFileHandle(name)).getFile();
      const d = new Uint8Array(await crypto.subtle.digest("SHA-256", await f.arrayBuffer()));
      return { size: f.size, sha: [...d].map((b) => b.toString(16).padStart(2, "0")).join("") };
    }, name);
    const kept = await opfsSha(siteFile);
    check(kept.size === served.length && kept.sha === sha, `the site's model is kept in OPFS as ${siteFile}, byte-identical`);
    await page.evaluate(async (name) => {
      const h = await (await navigator.storage.getDirectory()).getFileHandle(name);
      const w = await h.createWritable({ keepExistingData: true });
      await w.truncate(Math.floor((await h.getFile()).size / 2));
      await w.close();
      // Copies of an older version of the same site model: one in OPFS, one of an older release
      // (Cache Storage, key "models/<file>"). Once the site's model is in, both are forgotten.
      const list = JSON.parse(localStorage.getItem("brivl.models"));
      const site = list.find((e) => e.key === `opfs:${name}`);
      const old = await (await navigator.storage.getDirectory()).getFileHandle("site-0000000000000000.safetensors", { create: true });
      const ow = await old.createWritable();
      await ow.write(new Uint8Array(1000));
      await ow.close();
      list.push({ ...site, key: "opfs:site-0000000000000000.safetensors" }, { ...site, key: `models/${site.name}` });
      localStorage.setItem("brivl.models", JSON.stringify(list));
    }, siteFile);
    await page.reload();
    await page.waitForSelector('#model-status[data-state="ready"] #model-name[data-from-cache="no"]', { timeout: 300_000 });
    const again2 = await opfsSha(siteFile);
    check(again2.size === served.length && again2.sha === sha, "a model file cut short in OPFS is downloaded again, whole");
    const siteCopies = await page.evaluate(async () => {
      const names = [];
      for await (const [n] of (await navigator.storage.getDirectory()).entries()) if (n.startsWith("site-")) names.push(n);
      return { files: names, entries: JSON.parse(localStorage.getItem("brivl.models")).filter((e) => e.origin === "site").map((e) => e.key) };
    });
    check(siteCopies.files.length === 1 && siteCopies.entries.length === 1 && siteCopies.entries[0] === `opfs:${siteFile}`,
      `older copies of the site's model are forgotten, one is kept: ${JSON.stringify(siteCopies)}`);
    await page.waitForSelector(`#index-status[data-indexed="${unique}"]`);

    // 8. Cancel empties the queue and keeps what is indexed. Then pause mid-way and reload:
    // indexing resumes, nothing lost or doubled.
    // From an empty index, start indexing the dropped folder again.
    const reindex = async () => {
      await page.click("#clear");
      await page.waitForSelector('#index-status[data-indexed="0"]');
      await page.setInputFiles("#pick-folder", t.drop);
      await page.waitForSelector('#index-status[data-state="running"]');
    };
    await reindex();
    await page.click("#cancel");
    await page.waitForSelector('#index-status[data-state="idle"][data-queued="0"]');
    check(Number(await status("#index-status", "data-indexed")) <= unique, "cancel stops indexing and empties the queue");
    await reindex();
    await page.click("#pause");
    await page.waitForSelector('#index-status[data-state="paused"]');
    const before = Number(await status("#index-status", "data-indexed"));
    const queued = Number(await status("#index-status", "data-queued"));
    log(`paused with ${before} indexed, ${queued} queued`);
    await shot("09-paused");
    await page.reload();
    // Those files came without a folder handle: after the reload the app cannot read them, says
    // which, and asks for the folder again; given again, indexing goes on.
    await page.waitForSelector("#not-indexed", { timeout: 300_000 });
    const lost = Number(await status("#not-indexed", "data-count"));
    check(lost > 0 && lost === Number(await status("#index-status", "data-queued")), `after the reload ${lost} photos are listed as not indexed`);
    await page.setInputFiles("#pick-folder", t.drop);
    await page.waitForSelector(`#index-status[data-state="idle"][data-queued="0"][data-indexed="${unique}"]`, { timeout: 300_000 });
    check((await page.$("#not-indexed")) === null, "given the folder again, indexing resumes and finishes");
    const stored = await page.evaluate(() => new Promise((resolve, reject) => {
      const open = indexedDB.open("brivl");
      open.onsuccess = () => {
        const tx = open.result.transaction(["photos", "queue"]);
        const a = tx.objectStore("photos").count();
        const b = tx.objectStore("queue").count();
        tx.oncomplete = () => resolve([a.result, b.result]);
      };
      open.onerror = () => reject(open.error);
    }));
    check(stored[0] === unique && stored[1] === 0, `after the reload ${stored[0]} photos stored, ${stored[1]} queued`);

    // 9. Offline: the app shell comes from the service worker, the model from OPFS.
    await context.setOffline(true);
    await page.reload();
    await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 60_000 });
    await page.fill("#query", QUERY);
    await page.click("#search");
    await page.waitForSelector(`#results li:first-child[data-hash="${t.expectedHash}"]`);
    check(true, "offline, the app starts and searches");
    await shot("10-offline");
    await context.setOffline(false);

    // 10. The engine worker fails mid-album (test hooks, by file name): stuck (the watchdog stops
    // it), a wasm trap as on out-of-memory, a panic. Each of those photos is listed as failed
    // with the reason, the worker is restarted with the model, and every other photo is indexed;
    // a search while the worker is stuck gets an answer or an error, never hangs. After a reload
    // nothing is retried.
    const beforeCrash = problems.length;
    await page.goto(url + "?test_hooks=1");
    await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 300_000 });
    await page.waitForSelector(`#index-status[data-state="idle"][data-indexed="${unique}"]`);
    const t3 = Date.now();
    const crashDrop = await page.evaluateHandle((files) => {
      const d = new DataTransfer();
      for (const f of files) d.items.add(new File([new Uint8Array(f.bytes)], f.name, { type: "image/jpeg" }));
      return d;
    }, t.crash.slice(0, 1).map((f) => ({ name: f.name, bytes: [...f.bytes] })));
    // Two photos alone first (the worker's first photo gets a generous allowance, the second sets
    // the watchdog's median), then the rest in one batch, which the worker gets stuck on: each of
    // its photos is then tried alone.
    const dropFiles = (files) => page.evaluateHandle((files) => {
      const d = new DataTransfer();
      for (const f of files) d.items.add(new File([new Uint8Array(f.bytes)], f.name, { type: "image/jpeg" }));
      return d;
    }, files.map((f) => ({ name: f.name, bytes: [...f.bytes] })));
    await page.dispatchEvent("#dropzone", "drop", { dataTransfer: crashDrop });
    await page.waitForSelector(`#index-status[data-indexed="${unique + 1}"]`, { timeout: 300_000 });
    await page.dispatchEvent("#dropzone", "drop", { dataTransfer: await dropFiles(t.crash.slice(1, 2)) });
    await page.waitForSelector(`#index-status[data-indexed="${unique + 2}"]`, { timeout: 300_000 });
    const crashRest = await dropFiles(t.crash.slice(2));
    await page.dispatchEvent("#dropzone", "drop", { dataTransfer: crashRest });
    await page.waitForSelector('#index-status[data-state="running"]');
    await page.fill("#query", QUERY);
    await page.click("#search");
    await page.waitForFunction(() => document.querySelectorAll('#results[data-view="results"] li').length > 0 ||
      /search/.test(document.querySelector("#notice").textContent), null, { timeout: 300_000 });
    log(`search while the worker was stuck: ${await page.getAttribute("#results", "data-view")} ${await page.getAttribute("#results", "data-total")}, notice: ${await page.textContent("#notice")}`);
    check(true, "a search while the worker is stuck does not hang");
    const crashed = unique + 6;
    await page.waitForSelector(`#index-status[data-state="idle"][data-queued="0"][data-indexed="${crashed}"]`, { timeout: 600_000 });
    log(`worker failures: ${crashed - unique} photos indexed around 3 failures in ${((Date.now() - t3) / 1000).toFixed(1)} s`);
    check((await status("#index-status", "data-failed")) === "4", "the three photos the worker failed on are listed as failed");
    const failedList = await page.$$eval("#skipped li", (els) => els.map((e) => e.textContent));
    for (const kind of ["hang", "abort", "panic"]) {
      const line = failedList.find((l) => l.includes(`brivl-test-${kind}.jpg`)) || "";
      check(/the engine stopped while reading this photo: \S/.test(line), `${kind}: listed with the reason: ${line}`);
    }
    await shot("11-worker-failures");
    await page.reload();
    await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 300_000 });
    await page.waitForTimeout(1500);
    const afterCrash = await page.evaluate(() => new Promise((resolve, reject) => {
      const open = indexedDB.open("brivl");
      open.onsuccess = () => {
        const tx = open.result.transaction(["photos", "queue", "failed"]);
        const c = ["photos", "queue", "failed"].map((n) => tx.objectStore(n).count());
        tx.oncomplete = () => resolve(c.map((r) => r.result));
      };
      open.onerror = () => reject(open.error);
    }));
    check(afterCrash[0] === crashed && afterCrash[1] === 0 && afterCrash[2] === 4,
      `after a reload nothing is retried: ${afterCrash[0]} photos, ${afterCrash[1]} queued, ${afterCrash[2]} failed`);
    check((await status("#index-status", "data-state")) === "idle" && (await status("#index-status", "data-failed")) === "4",
      "the failed photos stay listed, indexing is idle");
    // The worker's own reports of the failures are expected here.
    log(`reports during the failures: ${problems.slice(beforeCrash).join(" | ").slice(0, 600)}`);
    problems.splice(beforeCrash, problems.length - beforeCrash,
      ...problems.slice(beforeCrash).filter((p) => !/panic|test fault|unreachable|RuntimeError|engine worker stopped/i.test(p)));

    // 11. Privacy: nothing left the origin; the policy was never violated.
    const outside = requests.filter((u) => !u.startsWith(origin) && !u.startsWith("blob:") && !u.startsWith("data:"));
    check(outside.length === 0, `no request left ${origin} (${requests.length} requests; outside: ${outside.join(", ")})`);
    const csp = await page.evaluate(() => window.__csp);
    check(csp.length === 0, `no Content-Security-Policy violation ${csp.join("; ")}`);
    // Offline, the manifest request fails by design (the cached model is used).
    const errors = problems.filter((p) => !/Failed to load resource|Failed to fetch|ERR_INTERNET_DISCONNECTED/.test(p));
    check(errors.length === 0, `no page errors ${errors.join(" | ")}`);
    log("all checks passed");
  } catch (e) {
    await shot("failure").catch(() => {});
    console.error(problems.join("\n"));
    throw e;
  } finally {
    await browser.close();
    server.close();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
