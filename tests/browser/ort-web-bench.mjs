// Benchmark (not CI): the app's engine in headless Chromium against onnxruntime-web on the same
// full-size BriVL towers, in one browser run (tests/bench/browser_vs_ort_web.sh prepares what it
// needs and runs it):
//   cpu: the app's CPU path (the engine worker's wasm, q8, one thread) against onnxruntime-web's
//        wasm EP (f32 ONNX, numThreads 1);
//   threads: the same on every CPU: the engine's threaded build (wasm threads, a pool of as many
//        workers as CPUs) against the wasm EP with numThreads = the CPU count (the page is
//        cross-origin isolated: the static server sends COOP/COEP);
//   gpu: the app's WebGPU path against onnxruntime-web's WebGPU EP (both on SwiftShader here).
// The engine is the app's own worker (dist/brivl-worker_loader.js, built by trunk), given the model
// file and asked in the app's protocol to embed one photo (a JPEG, as the indexer sends it) and
// one query; onnxruntime-web runs one session per tower, created once. Each: one warm-up run, then
// the median of REPEATS; batch 1. Prints ms per image and per query, and brivl / peer.
//
//   node tests/browser/ort-web-bench.mjs [--phases cpu,threads,gpu]
//
// Env: FULL (/tmp/brivl-full: brivl-q8.safetensors, onnx/{image,text}.onnx), MODEL (the brivl
//      model file; default FULL/brivl-q8.safetensors), FEEDS (a JSON file of
//      the text input, from `ort_peer.py feeds`), PHOTO (www/demo/album/scene-000.jpg), REPEATS (3),
//      GPU_REPEATS (REPEATS), BRIVL_DIST (dist), CHROMIUM, PEER (0: brivl alone, to compare two
//      brivl builds one after the other; no ratio is printed then).

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";
import { serve } from "../../www/tools/static-server.mjs";
import { CHROMIUM, FLAGS, GPU_FLAGS } from "./chromium.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const args = process.argv.slice(2);
const PHASES = (args.includes("--phases") ? args[args.indexOf("--phases") + 1] : "cpu,threads,gpu").split(",");
const THREADS = Math.min(os.cpus().length, 8);
const FULL = process.env.FULL || "/tmp/brivl-full";
const DIST = path.resolve(ROOT, process.env.BRIVL_DIST || "dist");
const PHOTO = path.resolve(ROOT, process.env.PHOTO || "www/demo/album/scene-000.jpg");
const REPEATS = Number(process.env.REPEATS || 3);
const GPU_REPEATS = Number(process.env.GPU_REPEATS || REPEATS);
const PEER = process.env.PEER !== "0";
const FEEDS = JSON.parse(fs.readFileSync(process.env.FEEDS || path.join(FULL, "onnx", "feeds.json"), "utf8"));
// The app's thumbnail side (app/web/src/ui/indexer.rs): the photo is embedded as the indexer asks.
const THUMB_SIZE = 384;
const ORT_DIST = path.dirname(createRequire(import.meta.url).resolve("onnxruntime-web/wasm"));
const ORT_VERSION = JSON.parse(fs.readFileSync(path.join(ORT_DIST, "..", "package.json"), "utf8")).version;

const files = {
  model: process.env.MODEL || path.join(FULL, "brivl-q8.safetensors"),
  image: path.join(FULL, "onnx", "image.onnx"),
  text: path.join(FULL, "onnx", "text.onnx"),
};
for (const f of [...Object.values(files), PHOTO, path.join(DIST, "brivl-worker_loader.js")]) {
  if (!fs.existsSync(f)) throw new Error(`missing ${f}`);
}

// The site: the built app's worker files, onnxruntime-web's dist, the page and the data, linked.
const work = fs.mkdtempSync(path.join(os.tmpdir(), "brivl-ort-web-bench-"));
const site = path.join(work, "site");
fs.mkdirSync(path.join(site, "data"), { recursive: true });
for (const f of fs.readdirSync(DIST)) fs.symlinkSync(path.join(DIST, f), path.join(site, f));
fs.symlinkSync(ORT_DIST, path.join(site, "ort"));
for (const f of ["ort-web-bench.html", "ort-web-bench-page.js"]) fs.symlinkSync(path.join(HERE, f), path.join(site, f));
for (const [k, f] of Object.entries(files)) fs.symlinkSync(f, path.join(site, "data", `${k}${path.extname(f)}`));
fs.symlinkSync(PHOTO, path.join(site, "data", "photo.jpg"));

const { server, url } = await serve(site);
// One browser with WebGPU (SwiftShader): the CPU phase asks the engine for its CPU path and
// onnxruntime-web for its wasm EP, as a browser without WebGPU gets.
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...FLAGS, ...GPU_FLAGS] });
const results = {};
const load0 = os.loadavg()[0];
try {
  const page = await browser.newPage();
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") console.log(`  [page ${m.type()}] ${m.text().slice(0, 300)}`);
  });
  page.on("pageerror", (e) => console.log(`  [page error] ${e}`));
  // A fresh page load per measurement: nothing of the last one is held.
  const fresh = async () => {
    await page.goto(`${url}ort-web-bench.html`);
    await page.waitForSelector('body[data-ready="yes"]', { state: "attached" });
  };
  const brivl = async (gpu, repeats, threaded = false) => {
    await fresh();
    return page.evaluate((o) => window.benchBrivl(o), {
      gpu, threaded, modelUrl: "data/model.safetensors", photoUrl: "data/photo.jpg", text: FEEDS.text, repeats, thumbSize: THUMB_SIZE,
    });
  };
  const peer = async (ep, repeats, threads = 1) => {
    await fresh();
    return page.evaluate((o) => window.benchOrt(o), {
      ep, imageUrl: "data/image.onnx", textUrl: "data/text.onnx", imageSize: FEEDS.image_size,
      ids: FEEDS.ids, mask: FEEDS.mask, repeats, threads,
    });
  };
  const run = async (name, f) => {
    const t = Date.now();
    console.log(`== ${name}`);
    try {
      results[name] = await f();
      console.log(`   ${JSON.stringify(results[name], (k, v) => (typeof v === "number" ? Math.round(v) : v))}`);
    } catch (e) {
      results[name] = { error: String(e.message || e).split("\n")[0] };
      console.log(`   FAILED: ${results[name].error}`);
    }
    console.log(`   (${((Date.now() - t) / 1000).toFixed(0)} s)`);
  };
  if (PHASES.includes("cpu")) {
    await run("brivl cpu", () => brivl(false, REPEATS));
    if (PEER) await run("ort wasm", () => peer("wasm", REPEATS));
  }
  if (PHASES.includes("threads")) {
    await run(`brivl cpu, ${THREADS} threads`, () => brivl(false, REPEATS, true));
    if (PEER) await run(`ort wasm, ${THREADS} threads`, () => peer("wasm", REPEATS, THREADS));
  }
  if (PHASES.includes("gpu")) {
    await run("brivl webgpu", () => brivl(true, GPU_REPEATS));
    if (PEER) await run("ort webgpu", () => peer("webgpu", GPU_REPEATS));
  }
  const adapter = PHASES.includes("gpu")
    ? await page.evaluate(async () => {
      const a = await navigator.gpu?.requestAdapter();
      return a ? `${a.info?.vendor || "?"} ${a.info?.architecture || ""} ${a.info?.description || ""}`.trim() : "none";
    })
    : "";

  const cpuModel = fs.readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1] || "?";
  console.log(`\n${new Date().toISOString().slice(0, 10)}, ${cpuModel}, ${os.cpus().length} CPUs, Chromium ${browser.version()}, ` +
    `onnxruntime-web ${ORT_VERSION}${adapter ? `, WebGPU adapter: ${adapter}` : ""}`);
  console.log(`load average (1 min) ${load0.toFixed(1)} at the start, ${os.loadavg()[0].toFixed(1)} at the end; ` +
    `crossOriginIsolated: ${await page.evaluate(() => crossOriginIsolated)}`);
  console.log(`batch 1, median of ${REPEATS} (WebGPU: ${GPU_REPEATS}) after one warm-up; ratio = brivl / onnxruntime-web (> 1: brivl slower)`);
  const ms = (r, k) => (r && !r.error ? r[k].median : NaN);
  const cell = (v) => (Number.isFinite(v) ? `${v.toFixed(0)} ms` : PEER ? "failed" : "-");
  const rows = [
    ["cpu", "brivl cpu", "ort wasm", "CPU path vs wasm EP, 1 thread"],
    ["threads", `brivl cpu, ${THREADS} threads`, `ort wasm, ${THREADS} threads`, `CPU path vs wasm EP, ${THREADS} threads`],
    ["gpu", "brivl webgpu", "ort webgpu", "WebGPU vs WebGPU EP"],
  ].filter(([p]) => PHASES.includes(p));
  console.log(`${"".padEnd(44)}${"brivl".padStart(12)}${"onnxruntime-web".padStart(18)}${"ratio".padStart(9)}`);
  for (const [, b, o, label] of rows) {
    for (const [k, unit] of [["image", "per image"], ["text", "per query"]]) {
      const x = ms(results[b], k);
      const y = ms(results[o], k);
      const ratio = Number.isFinite(x / y) ? `${(x / y).toFixed(2)}x` : "-";
      console.log(`${`${label}, ${unit}`.padEnd(44)}${cell(x).padStart(12)}${cell(y).padStart(18)}${ratio.padStart(9)}`);
    }
  }
  for (const [k, r] of Object.entries(results)) if (r.error) console.log(`${k} failed: ${r.error}`);
  fs.writeFileSync(path.join(FULL, "bench-browser.json"), JSON.stringify({ results, chromium: browser.version(), ort: ORT_VERSION }, null, 1));
} finally {
  await browser.close();
  server.close();
  fs.rmSync(work, { recursive: true, force: true });
}
