// Benchmark (not CI): converts the full-size random checkpoint (tests/reference/full_size.sh) in
// headless Chromium, as a user would on the Model panel, and prints the time, the browser's peak
// memory and whether the file written to OPFS is byte-identical to the native converter's.
//
//   node tests/browser/convert-bench.mjs [--quant q8]
//
// Env: FULL (/tmp/brivl-full: brivl-full.pth, config.json), VOCAB (../shared/vocab/zh-bert-vocab.txt),
//      NATIVE (the native output to compare with; default $FULL/brivl-<quant>.safetensors, made
//      with BRIVL_BIN convert when missing), BRIVL_DIST (dist), CHROMIUM.
//
// Peak memory: Chromium's processes' resident memory (VmRSS) sampled every 0.5 s while the
// conversion runs (the worker runs in the page's renderer process): the largest process and the
// sum over all, minus what they held before the conversion started.
//
// Then the browser is started again on the same profile, once on the CPU path and once on WebGPU
// (SwiftShader): the converted model loads from OPFS (read in slices by the engine worker, hashed
// on the way); printed: the time to a ready model and the worker's WebAssembly memory. Last, the
// converted model is made the site's model (models/models.json) and a fresh profile opens the page
// on each path: the engine worker downloads it into OPFS, checking its SHA-256 and content hash as
// it arrives; the same figures are printed.

import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "../../www/tools/static-server.mjs";
import { CPU_FLAGS, GPU_FLAGS } from "./chromium.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const args = process.argv.slice(2);
const QUANT = args.includes("--quant") ? args[args.indexOf("--quant") + 1] : "q8";
const FULL = process.env.FULL || "/tmp/brivl-full";
const VOCAB = process.env.VOCAB || path.resolve(ROOT, "../shared/vocab/zh-bert-vocab.txt");
const NATIVE = process.env.NATIVE || path.join(FULL, `brivl-${QUANT}.safetensors`);
const DIST = path.resolve(ROOT, process.env.BRIVL_DIST || "dist");
const BRIVL = process.env.BRIVL_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "release", "brivl");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

const ckpt = path.join(FULL, "brivl-full.pth");
const config = path.join(FULL, "config.json");
for (const f of [ckpt, config, VOCAB, path.join(DIST, "index.html")]) {
  if (!fs.existsSync(f)) throw new Error(`missing ${f}`);
}

function sha256File(p) {
  const h = crypto.createHash("sha256");
  const fd = fs.openSync(p, "r");
  const buf = Buffer.alloc(16 << 20);
  for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0;) h.update(buf.subarray(0, n));
  fs.closeSync(fd);
  return h.digest("hex");
}

if (!fs.existsSync(NATIVE)) {
  const c = JSON.parse(fs.readFileSync(config, "utf8"));
  execFileSync(BRIVL, ["convert", ckpt, "--vocab", VOCAB, "--quant", QUANT, "-o", NATIVE,
    "--image-size", c.image_size, "--box-grid", c.box_grid, "--pool-grid", c.pool_grid, "--img-heads", c.img_att_heads,
    "--text-heads", c.text_att_heads, "--bert-heads", c.bert_heads, "--max-text-len", c.max_text_len].map(String),
  { stdio: "inherit" });
}
const nativeSha = sha256File(NATIVE);

// Resident memory of the Chromium this script launched (every descendant of this process; other
// browsers on the machine are not counted), in bytes per process.
function chromiumRss() {
  const procs = [];
  for (const d of fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const status = fs.readFileSync(`/proc/${d}/status`, "utf8");
      const ppid = Number(/PPid:\s+(\d+)/.exec(status)?.[1]);
      const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] || 0) * 1024;
      const type = /--type=([a-z-]+)/.exec(fs.readFileSync(`/proc/${d}/cmdline`, "utf8"))?.[1] || "browser";
      procs.push({ pid: Number(d), ppid, rss, name: type });
    } catch {}
  }
  const ours = new Set([process.pid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of procs) {
      if (!ours.has(p.pid) && ours.has(p.ppid)) {
        ours.add(p.pid);
        grew = true;
      }
    }
  }
  return procs.filter((p) => p.pid !== process.pid && ours.has(p.pid));
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "brivl-convert-bench-"));
const site = path.join(work, "site");
fs.cpSync(DIST, site, { recursive: true });
const { server, url } = await serve(site);
// A profile on disk, as a user's: an incognito context (playwright's default) keeps OPFS in memory.
const launch = (flags, profile = "profile") => chromium.launchPersistentContext(path.join(work, profile), {
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--no-first-run", ...flags],
});
const mb = (b) => (b / 1e6).toFixed(0);
let browser = await launch(CPU_FLAGS);
try {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 300_000 });
  await page.setInputFiles("#convert-files", [ckpt, VOCAB, config]);
  await page.selectOption("#convert-quant", QUANT);
  const sample = () => {
    const procs = chromiumRss();
    const top = procs.reduce((a, b) => (b.rss > a.rss ? b : a), { rss: 0 });
    return { max: top.rss, top: `${top.name} ${top.pid}`, sum: procs.reduce((s, p) => s + p.rss, 0) };
  };
  const before = sample();
  const peak = { ...before };
  const t0 = Date.now();
  await page.click("#convert-start");
  await page.waitForSelector('#convert[data-state="converting"]');
  let last = "";
  for (;;) {
    // A sample counts when the page still converts after it was taken (the converted model's
    // load, which follows at once, is not the conversion's memory).
    const now = sample();
    const state = await page.getAttribute("#convert", "data-state");
    if (state === "failed") throw new Error(await page.textContent("#convert-error"));
    // Idle again: the file is complete (the model is loaded next).
    if (state === "idle") break;
    if (now.max > peak.max) [peak.max, peak.top] = [now.max, now.top];
    peak.sum = Math.max(peak.sum, now.sum);
    peak.samples = (peak.samples || 0) + 1;
    const line = await page.textContent("#convert-progress").catch(() => "");
    peak.wasm = Number(await page.getAttribute("#convert-progress", "data-memory").catch(() => 0)) || peak.wasm || 0;
    if (line && line !== last && Date.now() - (peak.printed || 0) > 10_000) {
      console.log(`${((Date.now() - t0) / 1000).toFixed(0)} s: ${line} (largest process ${(now.max / 1e6).toFixed(0)} MB)`);
      last = line;
      peak.printed = Date.now();
    }
    await page.waitForTimeout(500);
  }
  const convertSecs = (Date.now() - t0) / 1000;
  await page.waitForFunction(() => document.querySelector('#model-list li[data-active="yes"]')?.dataset.key?.startsWith("opfs:converted-"),
    null, { timeout: 600_000 });
  const key = await page.getAttribute('#model-list li[data-active="yes"]', "data-key");
  const loadSecs = (Date.now() - t0) / 1000 - convertSecs;
  const { sha, size } = await page.evaluate(async (name) => {
    const f = await (await (await navigator.storage.getDirectory()).getFileHandle(name)).getFile();
    const d = await crypto.subtle.digest("SHA-256", await f.arrayBuffer());
    return { sha: [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join(""), size: f.size };
  }, key.slice("opfs:".length));
  console.log(`checkpoint: ${ckpt} (${mb(fs.statSync(ckpt).size)} MB), quant ${QUANT}`);
  console.log(`converted in the page in ${convertSecs.toFixed(1)} s (then loaded in ${loadSecs.toFixed(1)} s)`);
  console.log(`output ${mb(size)} MB; sha256 ${sha}`);
  console.log(`native ${mb(fs.statSync(NATIVE).size)} MB; sha256 ${nativeSha}: ${sha === nativeSha ? "IDENTICAL" : "DIFFERENT"}`);
  {
    console.log(`peak RSS while converting: largest process ${mb(peak.max)} MB (${peak.top}; ${mb(peak.max - before.max)} MB over before), ` +
      `all processes ${mb(peak.sum)} MB (${mb(peak.sum - before.sum)} MB over before); ` +
      `the converter's WebAssembly memory ${mb(peak.wasm)} MB; ${peak.samples} samples`);
  }
  if (sha !== nativeSha) process.exitCode = 1;

  // The converted model loads from OPFS after a restart, on each path; then, as the site's model,
  // it is downloaded by a fresh profile.
  const runs = [["CPU path", CPU_FLAGS, "profile", "yes"], ["WebGPU (SwiftShader)", GPU_FLAGS, "profile", "yes"],
    ["downloaded, CPU path", CPU_FLAGS, "fresh-cpu", "no"], ["downloaded, WebGPU (SwiftShader)", GPU_FLAGS, "fresh-gpu", "no"]];
  for (const [mode, flags, profile, fromCache] of runs) {
    if (profile.startsWith("fresh") && !fs.existsSync(path.join(site, "models", "bench.safetensors"))) {
      fs.copyFileSync(NATIVE, path.join(site, "models", "bench.safetensors"));
      fs.writeFileSync(path.join(site, "models", "models.json"),
        JSON.stringify({ models: [{ file: "bench.safetensors", bytes: fs.statSync(NATIVE).size, sha256: nativeSha }] }));
    }
    await browser.close();
    browser = await launch(flags, profile);
    const p = await browser.newPage();
    const t1 = Date.now();
    await p.goto(url);
    await p.waitForSelector(`#model-status[data-state="ready"] #model-name[data-from-cache="${fromCache}"]`, { timeout: 600_000 });
    const secs = (Date.now() - t1) / 1000;
    const memory = Number(await p.getAttribute("#model-name", "data-worker-memory"));
    const status = (await p.textContent("#model-status")).replace(/\s+/g, " ").trim();
    console.log(`${mode}: page opened to model ready${fromCache === "yes" ? " from OPFS" : ""} in ${secs.toFixed(1)} s; ` +
      `the engine worker's WebAssembly memory ${mb(memory)} MB for a ${mb(size)} MB file (${status.slice(0, 120)})`);
  }
} finally {
  await browser.close();
  server.close();
  fs.rmSync(work, { recursive: true, force: true });
}
