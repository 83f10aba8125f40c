// Browser test of converting a checkpoint in the page: headless Debian Chromium driven by
// playwright-core.
//
//   node tests/browser/convert.test.mjs [--mode cpu|gpu]
//
// Drops the tiny fixture checkpoint, its vocabulary and config on the Model panel; the worker
// converts it (q8) into the origin private file system. Checks: the file is byte-identical to
// `brivl convert`'s (SHA-256), the model is listed and in use, its embeddings rank the fixture's
// photos as `brivl embed` does (scores within 1e-3), "Try the demo album" is offered with the
// site's demo model only; a wrong file and a vocabulary that does not fit are refused with the
// converter's own sentences; a slow conversion (test hook) is cancelled and leaves no file; f16
// converts byte-identically too; after a reload the converted model loads from OPFS without
// converting again; switching model with photos indexed asks first, saying how many need embedding
// again; deleting it frees its file and goes back to the site's model. No request
// leaves the origin. Screenshots go to tests/artifacts/convert-<mode>/.
//
// Needs: dist/ built by trunk, the `brivl` binary (BRIVL_BIN).

import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { quantizeI8 } from "../../app/web/js/store.js";
import { serve } from "../../www/tools/static-server.mjs";
import { CHROMIUM, CPU_FLAGS, FLAGS, GPU_FLAGS } from "./chromium.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const args = process.argv.slice(2);
const MODE = args.includes("--mode") ? args[args.indexOf("--mode") + 1] : "cpu";
// Scores against brivl embed. The CPU path multiplies q8 weights by inputs quantised to u8 per
// group of 32 (engine/src/cpu/int8): on the tiny model (32-wide embeddings) its scores move by up
// to 4.9e-3 (measured 2026-12-07), the GPU's by under 1e-3.
const TOLERANCE = MODE === "cpu" ? 1e-2 : 1e-3;
const DIST = path.resolve(ROOT, process.env.BRIVL_DIST || "dist");
const TARGET = process.env.CARGO_TARGET_DIR || path.join(ROOT, "target");
const BRIVL = process.env.BRIVL_BIN || path.join(TARGET, "debug", "brivl");
const ART = path.join(ROOT, "tests", "artifacts", `convert-${MODE}`);
const TINY = path.join(ROOT, "tests/fixtures/tiny");
const VOCAB = path.join(ROOT, "tests/fixtures/tokenizer/vocab.txt");
const QUERY = "海边的日落";
const MODE_FLAGS = MODE === "cpu" ? CPU_FLAGS : GPU_FLAGS;

const log = (...a) => console.log(`[convert ${MODE}]`, ...a);
function check(cond, msg) {
  if (!cond) throw new Error(`FAILED: ${msg}`);
  log(`ok: ${msg}`);
}
const sha256 = (bytes) => crypto.createHash("sha256").update(bytes).digest("hex");
const dot = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);

// `brivl convert` of the tiny fixture with the options its config.json names.
function nativeConvert(work, quant) {
  const out = path.join(work, `tiny-${quant}.safetensors`);
  execFileSync(BRIVL, [
    "convert", path.join(TINY, "brivl-tiny.pth"), "--vocab", VOCAB, "--quant", quant,
    "--image-size", "200", "--img-heads", "2", "--text-heads", "2", "--bert-heads", "2", "-o", out,
  ], { stdio: "inherit" });
  return out;
}

function prepare(work) {
  fs.rmSync(ART, { recursive: true, force: true });
  fs.mkdirSync(ART, { recursive: true });
  check(fs.existsSync(path.join(DIST, "index.html")), `built site at ${DIST}`);
  const site = path.join(work, "site");
  fs.cpSync(DIST, site, { recursive: true });
  execFileSync("bash", [path.join(ROOT, "www/tools/models-manifest.sh"), site]);
  const q8 = nativeConvert(work, "q8");
  const f16 = nativeConvert(work, "f16");
  // The photos to index, and brivl's embeddings of them and of the query.
  const photos = path.join(work, "photos");
  fs.mkdirSync(photos);
  for (const f of fs.readdirSync(path.join(TINY, "images")).filter((f) => /\.(jpe?g|png|webp)$/i.test(f) && !f.endsWith(".pil.png"))) {
    fs.copyFileSync(path.join(TINY, "images", f), path.join(photos, f));
  }
  const out = path.join(work, "native.jsonl");
  execFileSync(BRIVL, ["embed", "--model", q8, "--images", photos, "--text", QUERY, "--out", out], { stdio: "inherit" });
  const native = new Map();
  let text = null;
  for (const line of fs.readFileSync(out, "utf8").split("\n").filter(Boolean)) {
    const j = JSON.parse(line);
    if (j.kind === "image") native.set(sha256(fs.readFileSync(j.name)), j.embedding);
    if (j.kind === "text") text = j.embedding;
  }
  // The index holds int8 rows with a scale: each native embedding as the app stores it.
  const stored = (e) => {
    const { code, scale } = quantizeI8(new Float32Array(e));
    return Array.from(code, (c) => c * scale);
  };
  const scores = new Map([...native].map(([h, e]) => [h, dot(text, stored(e))]));
  // Inputs the converter must refuse, and one it converts slowly (test hook, by name).
  const vocabShort = path.join(work, "short", "vocab.txt");
  fs.mkdirSync(path.dirname(vocabShort));
  fs.writeFileSync(vocabShort, fs.readFileSync(VOCAB, "utf8").split("\n").slice(0, 2000).join("\n"));
  const notCkpt = path.join(work, "photo.pth");
  fs.copyFileSync(path.join(photos, fs.readdirSync(photos)[0]), notCkpt);
  const slow = path.join(work, "brivl-test-slow.pth");
  fs.copyFileSync(path.join(TINY, "brivl-tiny.pth"), slow);
  return { site, q8, f16, photos, scores, vocabShort, notCkpt, slow };
}

async function main() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "brivl-convert-"));
  const t = prepare(work);
  const { server, url } = await serve(t.site);
  const origin = new URL(url).origin;
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...FLAGS, ...MODE_FLAGS] });
  const context = await browser.newContext({ locale: "en-US", viewport: { width: 1280, height: 1000 } });
  const requests = [];
  context.on("request", (r) => requests.push(r.url()));
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  const dialogs = [];
  page.on("dialog", (d) => {
    dialogs.push(d.message());
    d.accept();
  });
  const shot = (name) => page.screenshot({ path: path.join(ART, `${name}.png`), fullPage: true });
  const opfsFiles = () => page.evaluate(async () => {
    const out = {};
    for await (const [name, h] of (await navigator.storage.getDirectory()).entries()) {
      const f = await h.getFile();
      const hash = await crypto.subtle.digest("SHA-256", await f.arrayBuffer());
      out[name] = [...new Uint8Array(hash)].map((b) => b.toString(16).padStart(2, "0")).join("");
    }
    return out;
  });
  // The site's model is kept in OPFS as site-<hash>.safetensors; the rest are conversions.
  const converted = async () => Object.keys(await opfsFiles()).filter((n) => !n.startsWith("site-"));
  const convert = async (files, quant) => {
    await page.setInputFiles("#convert-files", files);
    await page.selectOption("#convert-quant", quant);
    await page.click("#convert-start");
  };
  const activeKey = () => page.getAttribute('#model-list li[data-active="yes"]', "data-key");
  // The index as IndexedDB holds it: its meta record and every vector's model(s).
  const indexState = () => page.evaluate(async () => {
    const d = await new Promise((resolve, reject) => {
      const r = indexedDB.open("brivl");
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
    const all = (store) => new Promise((resolve, reject) => {
      const tx = d.transaction(store);
      const os = tx.objectStore(store);
      const [k, v] = [os.getAllKeys(), os.getAll()];
      tx.oncomplete = () => resolve(k.result.map((key, i) => [key, v.result[i]]));
      tx.onerror = () => reject(tx.error);
    });
    const meta = Object.fromEntries(await all("meta"));
    const vectors = (await all("vectors")).map(([, v]) => ({ model: v.model, next: v.next ? v.next.model : null }));
    d.close();
    return { meta, vectors };
  });

  try {
    // The site's demo model loads; the demo album is offered with it.
    await page.goto(url + "?test_hooks=1");
    await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 300_000 });
    check((await page.$("#demo")) !== null, "'Try the demo album' is offered with the demo model");
    check((await page.$$("#model-list li")).length === 1, "the list holds the site's model");

    // Refusals: the converter's own sentences, and nothing kept.
    await convert([t.notCkpt, VOCAB], "q8");
    await page.waitForSelector('#convert[data-state="failed"]', { timeout: 60_000 });
    let err = await page.textContent("#convert-error");
    check(/not a PyTorch checkpoint/.test(err), `a photo named .pth is refused: ${err.trim()}`);
    await convert([path.join(TINY, "brivl-tiny.pth"), t.vocabShort, path.join(TINY, "config.json")], "q8");
    await page.waitForSelector('#convert[data-state="failed"] #convert-error:has-text("vocabulary has 2000 entries")', { timeout: 60_000 });
    err = await page.textContent("#convert-error");
    check(true, `a vocabulary that does not fit is refused: ${err.trim()}`);
    check((await converted()).length === 0, "refused conversions leave no file");

    // Cancel mid-way: the worker stops and its partial file is removed.
    await convert([t.slow, VOCAB, path.join(TINY, "config.json")], "q8");
    await page.waitForSelector("#convert-progress", { timeout: 60_000 });
    await page.waitForFunction(() => / [1-9]\d* \/ \d+ /.test(document.querySelector("#convert-progress")?.textContent || ""), null, { timeout: 60_000 });
    const progress = await page.textContent("#convert-progress");
    check(/read .* \/ .* tensors .* left/.test(progress), `progress shows bytes read, tensors done and time left: ${progress}`);
    await shot("01-converting");
    await page.click("#convert-cancel");
    await page.waitForSelector('#convert[data-state="cancelled"]');
    await page.waitForFunction(async () => {
      const names = [];
      for await (const [name] of (await navigator.storage.getDirectory()).entries()) if (!name.startsWith("site-")) names.push(name);
      return names.length === 0;
    }, null, { timeout: 10_000 });
    check(true, "a cancelled conversion leaves no file");

    // Convert q8: byte-identical to brivl convert, listed, in use.
    const t0 = Date.now();
    await convert([path.join(TINY, "brivl-tiny.pth"), VOCAB, path.join(TINY, "config.json")], "q8");
    await page.waitForFunction(() => document.querySelector('#model-list li[data-active="yes"]')?.dataset.key?.startsWith("opfs:converted-"), null, { timeout: 120_000 });
    await page.waitForSelector('#model-status[data-state="ready"]');
    log(`converted and loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const q8Key = await activeKey();
    let files = await opfsFiles();
    const q8File = q8Key.slice("opfs:".length);
    check(files[q8File] === sha256(fs.readFileSync(t.q8)), `the converted file is byte-identical to brivl convert's (sha256 ${files[q8File].slice(0, 16)})`);
    const entry = await page.textContent('#model-list li[data-active="yes"]');
    check(/q8/.test(entry) && /200px/.test(entry) && /embedding 32/.test(entry) && /converted here/.test(entry), `listed with its details: ${entry.trim()}`);
    check((await page.$("#demo")) === null, "no demo album with a model that is not the demo");
    await shot("02-converted");

    // Its embeddings: the photos ranked as brivl embed ranks them.
    const q8Hash = await page.getAttribute("#model-name", "data-hash");
    await page.setInputFiles("#pick-folder", t.photos);
    await page.waitForSelector(`#index-status[data-state="idle"][data-queued="0"][data-indexed="${t.scores.size}"]`, { timeout: 300_000 });
    await page.fill("#query", QUERY);
    await page.click("#search");
    // Every cell scored: the query's results, not the album view they replace.
    await page.waitForFunction(() => {
      const cells = [...document.querySelectorAll('#results[data-view="results"] li')];
      return cells.length > 0 && cells.every((e) => e.dataset.score !== undefined);
    });
    const hits = await page.$$eval("#results li", (els) => els.map((e) => ({ hash: e.dataset.hash, score: Number(e.dataset.score) })));
    check(hits.length === t.scores.size, `${hits.length} results`);
    const worst = Math.max(...hits.map((h) => Math.abs(h.score - t.scores.get(h.hash))));
    check(worst <= TOLERANCE, `scores match brivl embed's embeddings as the index stores them (int8) with the converted model (max difference ${worst.toExponential(2)})`);
    const best = [...t.scores].sort((a, b) => b[1] - a[1])[0][0];
    check(hits[0].hash === best, "same top-1 as brivl");

    // f16: byte-identical as well. Indexing held still first, so the switch is seen half way.
    await page.evaluate(() => window.__brivl.pause());
    await convert([path.join(TINY, "brivl-tiny.pth"), VOCAB, path.join(TINY, "config.json")], "f16");
    await page.waitForFunction((k) => {
      const key = document.querySelector('#model-list li[data-active="yes"]')?.dataset.key;
      return key && key !== k && key.startsWith("opfs:converted-");
    }, q8Key, { timeout: 120_000 });
    const f16Key = await activeKey();
    check(dialogs.some((m) => m.startsWith(`${t.scores.size} photos of the index were embedded by another model`)),
      `switching model first says how many photos must be embedded again: ${dialogs.at(-1)}`);
    files = await opfsFiles();
    check(files[f16Key.slice(5)] === sha256(fs.readFileSync(t.f16)), "the f16 conversion is byte-identical to brivl convert's");

    // Switched, nothing embedded again yet: the q8 vectors are all still there, the photos wait.
    const n = t.scores.size;
    await page.waitForSelector(`#index-status[data-state="paused"][data-queued="${n}"][data-indexed="${n}"]`, { timeout: 60_000 })
      .catch(async (e) => { log(await page.$eval("#index-status", (x) => x.outerHTML)); throw e; });
    await page.waitForFunction((h) => document.querySelector("#model-name")?.dataset.hash !== h, q8Hash);
    const f16Hash = await page.getAttribute("#model-name", "data-hash");
    let db = await indexState();
    check(db.vectors.length === n && db.vectors.every((v) => v.model === q8Hash && !v.next) && db.meta.model === q8Hash && db.meta.next_model === f16Hash,
      `until the new model has embedded every photo, the old model's vectors are kept and the index stays the old model's (${JSON.stringify(db.meta)})`);
    // The tab closes half way: after a reload the f16 model is in use and the photos are embedded
    // again (from their thumbnails: these files came without a folder), then the q8 vectors go.
    await page.reload();
    for (const end = Date.now() + 300_000; Date.now() < end; await page.waitForTimeout(500)) {
      db = await indexState();
      if (db.meta.model === f16Hash) break;
    }
    await page.waitForSelector(`#index-status[data-state="idle"][data-queued="0"][data-indexed="${n}"]`, { timeout: 60_000 });
    check(db.vectors.length === n && db.vectors.every((v) => v.model === f16Hash && !v.next) && db.meta.model === f16Hash && !db.meta.next_model,
      "after the reload every photo was embedded again with the new model, and the index became its");
    await page.fill("#query", QUERY);
    await page.click("#search");
    await page.waitForFunction((k) => {
      const cells = [...document.querySelectorAll('#results[data-view="results"] li')];
      return cells.length === k && cells.every((e) => e.dataset.score !== undefined);
    }, n, { timeout: 60_000 });
    check(true, `all ${n} photos are found with the new model`);

    // Back to the q8 one, then reload: it loads from OPFS, no conversion.
    await page.click(`#model-list li[data-key="${q8Key}"] .model-use`);
    await page.waitForFunction((k) => document.querySelector('#model-list li[data-active="yes"]')?.dataset.key === k, q8Key, { timeout: 120_000 });
    await page.reload();
    await page.waitForSelector('#model-status[data-state="ready"] #model-name[data-from-cache="yes"]', { timeout: 120_000 });
    check((await activeKey()) === q8Key, "after a reload the converted model is in use again, read from OPFS");
    check((await page.getAttribute("#convert", "data-state")) === "idle", "nothing converted again");
    check((await page.$$("#model-list li")).length === 3, "the list holds the site's model and the two converted ones");
    const storage = await page.textContent("#storage");
    check(/Storage used: .+ of .+/.test(storage), `storage used and quota shown: ${storage.trim()}`);
    await shot("03-reloaded");

    // Delete both converted models: files gone, back to the site's model.
    for (const key of [f16Key, q8Key]) {
      await page.click(`#model-list li[data-key="${key}"] .model-delete`);
      await page.waitForSelector(`#model-list li[data-key="${key}"]`, { state: "detached" });
    }
    // The site's model (kept in OPFS as site-<hash>) in use again.
    await page.waitForFunction(() => document.querySelector('#model-list li[data-active="yes"]')?.dataset.key?.startsWith("opfs:site-"), null, { timeout: 120_000 });
    await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 120_000 });
    check((await converted()).length === 0, "deleting the converted models removes their files");
    check(Object.keys(await opfsFiles()).filter((n) => n.startsWith("site-")).length === 1, "the site's model stays kept in OPFS");
    check((await page.$("#demo")) !== null, "the demo model is back, and the demo album with it");
    await shot("04-deleted");

    const foreign = requests.filter((r) => !r.startsWith(origin) && !r.startsWith("blob:") && !r.startsWith("data:"));
    check(foreign.length === 0, `no request left the origin (${requests.length} requests)`);
    check(problems.length === 0, `no page errors${problems.length ? ": " + problems.join("; ") : ""}`);
  } catch (e) {
    await shot("failure").catch(() => {});
    throw e;
  } finally {
    await browser.close();
    server.close();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().then(
  () => log("all checks passed"),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
