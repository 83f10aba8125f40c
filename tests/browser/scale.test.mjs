// The web app at an album's scale, in headless Chromium. The index is the subject, not the
// engine: the site has no model, and the synthetic photos belong to a made-up model as wide as
// BriVL's embeddings (2048), so memory and speed are those of a real album.
//
//   node tests/browser/scale.test.mjs [--photos 20000] [--queries 5]      (CI: tests/run.sh)
//   node tests/browser/scale.test.mjs --photos 100000 --queries 200       (the benchmark, README)
//
// 1. An index in the version 1 format (f32 embeddings and thumbnails in one record) is written
//    as the previous release did, and the app migrates it: every photo kept, its vector now int8,
//    search still finds the same photo first.
// 2. A test-only hook fills the index with N synthetic photos (int8 rows with a scale, made from
//    a seed: tests/browser/synthetic.mjs), read by the search worker.
// 3. Queries ranked by the search worker equal the exact ranking of the same vectors computed
//    here in Node (same hashes in the same order, scores within 1e-4).
// 4. The grid is virtualised (a few dozen cells in the document for N photos), "show more" adds
//    a page, the "all photos" view scrolls to the oldest photo.
// 5. Memory: the page's and the search worker's wasm memory and JS heaps, per photo, within the
//    budget (300 MB for 100,000 photos: 3,000 bytes a photo, baseline apart), and in all.
// 6. Reload: the index is searchable again (time from reload to searchable), with the same results.
// Prints: fill time, page memory, reload-to-searchable, ranking latency p50/p95 (worker and round
// trip).
//
// Needs: dist/ built by trunk.

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "../../www/tools/static-server.mjs";
import { exactTop, synthHash, synthQuery, synthRow, synthRows } from "./synthetic.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const args = process.argv.slice(2);
const arg = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const N = Number(arg("--photos", 20000));
const QUERIES = Number(arg("--queries", 5));
const K = 50;
const SEED = 16;
// BriVL's embedding width, and a made-up model identity for the synthetic photos.
const DIM = 2048;
const MODEL_ID = "synthetic-" + "0".repeat(54);
const DIST = path.resolve(ROOT, process.env.BRIVL_DIST || "dist");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ART = path.join(ROOT, "tests", "artifacts", "scale");
// The budget: 300 MB of page memory for 100,000 photos.
const BYTES_PER_PHOTO = 3000;
const BUDGET_100K = 300e6;

function log(...a) {
  console.log("[scale]", ...a);
}

function check(cond, msg) {
  if (!cond) throw new Error(`FAILED: ${msg}`);
  log(`ok: ${msg}`);
}

const mb = (b) => (b / 1e6).toFixed(1) + " MB";
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

function site(work) {
  const dir = path.join(work, "site");
  fs.cpSync(DIST, dir, { recursive: true });
  const models = path.join(dir, "models");
  for (const f of fs.readdirSync(models)) if (f.endsWith(".safetensors")) fs.rmSync(path.join(models, f));
  execFileSync("bash", [path.join(ROOT, "www/tools/models-manifest.sh"), dir]);
  return dir;
}

// Memory the index costs the page: both wasm memories (the page's and the search worker's) and
// both JS heaps (precise with --enable-precise-memory-info). The engine worker (the model) is
// apart: it does not grow with the album.
async function memory(page) {
  // Garbage collected first: what is left is what the page holds.
  const st = await page.evaluate(() => window.__brivl.stats());
  const pageHeap = await page.evaluate(() => {
    if (self.gc) self.gc();
    return performance.memory ? performance.memory.usedJSHeapSize : 0;
  });
  let workerHeap = 0;
  for (const w of page.workers()) {
    if (!/brivl-search/.test(w.url())) continue;
    workerHeap += await w.evaluate(() => {
      if (self.gc) self.gc();
      return performance.memory ? performance.memory.usedJSHeapSize : 0;
    }).catch(() => 0);
  }
  const total = st.pageWasmMemory + st.searchWorkerMemory + pageHeap + workerHeap;
  return { ...st, pageHeap, workerHeap, total };
}

async function main() {
  fs.rmSync(ART, { recursive: true, force: true });
  fs.mkdirSync(ART, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "brivl-scale-"));
  const { server, url } = await serve(site(work));
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--no-first-run", "--disable-background-networking", "--disable-component-update",
      "--disable-blink-features=WebGPU", "--enable-precise-memory-info", "--js-flags=--expose-gc"],
  });
  const context = await browser.newContext({ locale: "en-US", viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(m.text());
  });
  page.on("dialog", (d) => d.accept());
  const app = url + "?test_hooks=1";
  const ready = async () => {
    await page.waitForSelector('#index-status[data-searchable="yes"]', { timeout: 300_000 });
  };
  try {
    const meta = { model: MODEL_ID, dim: DIM };
    log(`${N} synthetic photos, ${DIM} wide`);

    // 1. A version 1 index (as the previous release wrote it) is migrated, nothing lost.
    const V1 = 300;
    const v1 = Array.from({ length: V1 }, (_, i) => {
      const r = synthRow(100000 + i, DIM, SEED);
      return Array.from(r.code, (c) => c * r.scale);
    });
    await page.goto(url + "favicon.svg");
    await page.evaluate(({ v1, model, dim }) => new Promise((resolve, reject) => {
      const del = indexedDB.deleteDatabase("brivl");
      del.onsuccess = () => {
        const open = indexedDB.open("brivl", 1);
        open.onupgradeneeded = () => {
          const d = open.result;
          for (const s of ["photos", "failed", "meta"]) d.createObjectStore(s);
          d.createObjectStore("queue").createIndex("seq", "seq");
        };
        open.onsuccess = () => {
          const tx = open.result.transaction(["photos", "meta"], "readwrite");
          v1.forEach((e, i) => {
            const hash = "v1-" + String(i).padStart(4, "0");
            tx.objectStore("photos").put({
              hash, names: [`old/${i}.jpg`], embedding: new Float32Array(e),
              thumb: new Blob([new Uint8Array([0xff, 0xd8, 0xff, 0xd9])], { type: "image/jpeg" }),
              width: 8, height: 8, model, dim,
            }, hash);
          });
          tx.objectStore("meta").put(model, "model");
          tx.objectStore("meta").put(String(dim), "dim");
          tx.oncomplete = () => {
            open.result.close();
            resolve();
          };
          tx.onerror = () => reject(tx.error);
        };
        open.onerror = () => reject(open.error);
      };
      del.onerror = () => reject(del.error);
    }), { v1, model: meta.model, dim: DIM });
    await page.goto(app);
    await ready();
    await page.waitForSelector(`#index-status[data-indexed="${V1}"]`, { timeout: 60_000 });
    const migrated = await page.evaluate(() => new Promise((resolve) => {
      const open = indexedDB.open("brivl");
      open.onsuccess = () => {
        const tx = open.result.transaction(["photos", "vectors", "thumbs"]);
        const p = tx.objectStore("photos").getAll();
        const v = tx.objectStore("vectors").count();
        const t = tx.objectStore("thumbs").count();
        tx.oncomplete = () => {
          open.result.close();
          resolve({ version: open.result.version, photos: p.result.length, withF32: p.result.filter((r) => r.embedding).length, vectors: v.result, thumbs: t.result });
        };
      };
    }));
    check(migrated.version === 2 && migrated.photos === V1 && migrated.vectors === V1 && migrated.thumbs === V1 && migrated.withF32 === 0,
      `a version 1 index is migrated: ${JSON.stringify(migrated)}`);
    {
      const q = synthQuery(DIM, SEED, 100000 + 17);
      const got = await page.evaluate(({ q }) => window.__brivl.searchVector(new Float32Array(q), 10), { q: [...q] });
      const exact = v1.map((e, i) => ({ hash: "v1-" + String(i).padStart(4, "0"), score: e.reduce((s, x, j) => s + x * q[j], 0) }))
        .sort((a, b) => b.score - a.score);
      const worst = Math.max(...got.hits.map(([h, s]) => Math.abs(s - exact.find((e) => e.hash === h).score)));
      check(got.hits[0][0] === exact[0].hash && worst < 0.01,
        `after the migration the same photo ranks first (${exact[0].hash}), scores within ${worst.toExponential(1)} of the f32 ones`);
    }
    await page.click("#clear");
    await page.waitForSelector('#index-status[data-indexed="0"]');

    // 2. N synthetic photos through the test hook; memory measured on a fresh page first.
    await page.reload();
    await page.waitForSelector('#index-status[data-indexed="0"]');
    await page.waitForFunction(() => window.__brivl);
    await page.waitForTimeout(1000);
    const before = await memory(page);
    await page.evaluate(`window.__synthRow = ${synthRow.toString()}`);
    const tFill = Date.now();
    await page.evaluate(({ n, model, dim, seed }) => window.__brivl.fillSynthetic(n, model, dim, (i) => window.__synthRow(i, dim, seed),
      new Uint8Array([0xff, 0xd8, 0xff, 0xd9])), { n: N, model: MODEL_ID, dim: DIM, seed: SEED });
    await page.waitForSelector(`#index-status[data-indexed="${N}"][data-searchable="yes"]`, { timeout: 600_000 });
    const fillS = (Date.now() - tFill) / 1000;
    log(`filled ${N} photos in ${fillS.toFixed(1)} s`);

    // 3. Rankings against Node's exact ranking of the same vectors.
    const rows = synthRows(N, DIM, SEED);
    const workerMs = [];
    const tripMs = [];
    for (let qi = 0; qi < QUERIES; qi++) {
      const q = synthQuery(DIM, SEED + 100 + qi, (qi * 7919) % N);
      const t0 = Date.now();
      const got = await page.evaluate(({ q, k }) => window.__brivl.searchVector(new Float32Array(q), k), { q: [...q], k: K });
      tripMs.push(Date.now() - t0);
      workerMs.push(got.ms);
      if (qi < 5) {
        const want = exactTop(q, rows, DIM, K);
        const same = got.hits.length === K && got.hits.every(([h], i) => h === want[i].hash);
        const worst = Math.max(...got.hits.map(([, s], i) => Math.abs(s - want[i].score)));
        check(same && worst < 1e-4, `query ${qi}: the top ${K} equal Node's exact ranking (worst score difference ${worst.toExponential(1)})`);
      }
    }
    const afterFill = await memory(page);
    log(`ranking ${N} photos: worker p50 ${pct(workerMs, 50).toFixed(1)} ms, p95 ${pct(workerMs, 95).toFixed(1)} ms; ` +
      `round trip p50 ${pct(tripMs, 50)} ms, p95 ${pct(tripMs, 95)} ms (${QUERIES} queries)`);

    // 4. The grid: all photos, a similar-photo search, show more; only what is on screen is in
    // the document.
    await page.waitForSelector(`#results[data-total="${N}"] li`);
    const allCells = await page.$$eval("#results li", (els) => els.length);
    check(allCells > 0 && allCells <= 100, `all ${N} photos: ${allCells} cells in the document`);
    await page.click("#results li:first-child .similar");
    await page.waitForSelector('#results[data-total="60"] li', { state: "attached" });
    const cells = await page.$$eval("#results li", (els) => els.length);
    check(cells > 0 && cells < 60, `a similar-photo search shows 60 results, ${cells} cells in the document`);
    await page.click("#show-more");
    await page.waitForSelector('#results[data-total="120"]', { state: "attached" });
    check(true, "show more adds a page");
    await page.click("#all-photos");
    await page.waitForSelector(`#results[data-total="${N}"]`, { state: "attached" });
    await page.waitForSelector("#results li img");
    await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
    await page.waitForSelector(`#results li[data-hash="${synthHash(0)}"] img`, { timeout: 30_000 });
    check(true, "scrolled to the end, the oldest photo and its thumbnail are there");
    await page.screenshot({ path: path.join(ART, "all-photos-end.png") });

    // 5. Memory.
    const perPhoto = (afterFill.total - before.total) / N;
    log(`memory before ${mb(before.total)}, with ${N} photos ${mb(afterFill.total)} ` +
      `(page wasm ${mb(afterFill.pageWasmMemory)}, search worker wasm ${mb(afterFill.searchWorkerMemory)}, ` +
      `page JS ${mb(afterFill.pageHeap)}, worker JS ${mb(afterFill.workerHeap)}; index ${mb(afterFill.indexBytes)}): ${perPhoto.toFixed(0)} bytes a photo`);
    check(perPhoto < BYTES_PER_PHOTO, `the index costs ${perPhoto.toFixed(0)} bytes a photo (< ${BYTES_PER_PHOTO})`);
    check(before.total + perPhoto * 100000 < BUDGET_100K && afterFill.total < BUDGET_100K,
      `100,000 photos would take ${mb(before.total + perPhoto * 100000)} (< ${mb(BUDGET_100K)}); now ${mb(afterFill.total)}`);

    // 6. Reload: searchable again, same results.
    const tReload = Date.now();
    await page.reload();
    await page.waitForSelector(`#index-status[data-indexed="${N}"][data-searchable="yes"]`, { timeout: 600_000 });
    const reloadS = (Date.now() - tReload) / 1000;
    const q = synthQuery(DIM, SEED + 100, 0);
    const again = await page.evaluate(({ q, k }) => window.__brivl.searchVector(new Float32Array(q), k), { q: [...q], k: K });
    const want = exactTop(q, rows, DIM, K);
    check(again.hits.every(([h], i) => h === want[i].hash), "after a reload the index answers the same");
    const afterReload = await memory(page);
    log(`reload to searchable: ${reloadS.toFixed(1)} s (model from the cache and ${N} vectors); memory ${mb(afterReload.total)}`);
    check(afterReload.total < BUDGET_100K, `after the reload ${mb(afterReload.total)} (< ${mb(BUDGET_100K)})`);
    const errors = problems.filter((p) => !/Failed to load resource/.test(p));
    check(errors.length === 0, `no page errors ${errors.join(" | ")}`);
    console.log(JSON.stringify({ photos: N, dim: DIM, fill_s: fillS, reload_to_searchable_s: reloadS, memory_bytes: afterFill.total,
      memory_after_reload_bytes: afterReload.total, bytes_per_photo: Math.round(perPhoto), rank_ms_p50: pct(workerMs, 50),
      rank_ms_p95: pct(workerMs, 95), round_trip_ms_p50: pct(tripMs, 50), round_trip_ms_p95: pct(tripMs, 95), queries: QUERIES }));
    log("all checks passed");
  } catch (e) {
    await page.screenshot({ path: path.join(ART, "failure.png"), fullPage: false }).catch(() => {});
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
