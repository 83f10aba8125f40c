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

import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "../../www/tools/static-server.mjs";

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

// Resident memory of each of Chromium's processes (the browser and its children), in bytes.
function chromiumRss(browserPid) {
  const out = [];
  const walk = (pid) => {
    let status = "";
    try {
      status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    } catch {
      return;
    }
    const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] || 0) * 1024;
    const name = /Name:\s+(.*)/.exec(status)?.[1];
    out.push({ pid, name, rss });
    let kids = "";
    try {
      kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8");
    } catch {}
    for (const k of kids.split(/\s+/).filter(Boolean)) walk(Number(k));
  };
  walk(browserPid);
  return out;
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), "brivl-convert-bench-"));
const site = path.join(work, "site");
fs.cpSync(DIST, site, { recursive: true });
const { server, url } = await serve(site);
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-blink-features=WebGPU", "--no-first-run"],
});
const browserPid = browser.process ? browser.process().pid : null;
try {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 300_000 });
  await page.setInputFiles("#convert-files", [ckpt, VOCAB, config]);
  await page.selectOption("#convert-quant", QUANT);
  const sample = () => {
    const procs = browserPid ? chromiumRss(browserPid) : [];
    return { max: Math.max(0, ...procs.map((p) => p.rss)), sum: procs.reduce((s, p) => s + p.rss, 0) };
  };
  const before = sample();
  const peak = { ...before };
  const t0 = Date.now();
  await page.click("#convert-start");
  await page.waitForSelector('#convert[data-state="converting"]');
  let last = "";
  for (;;) {
    const state = await page.getAttribute("#convert", "data-state");
    const key = await page.getAttribute('#model-list li[data-active="yes"]', "data-key").catch(() => null);
    if (state === "failed") throw new Error(await page.textContent("#convert-error"));
    if (state === "idle" && key && key.startsWith("opfs:converted-")) break;
    const now = sample();
    peak.max = Math.max(peak.max, now.max);
    peak.sum = Math.max(peak.sum, now.sum);
    const line = await page.textContent("#convert-progress").catch(() => "");
    if (line && line !== last && Date.now() - (peak.printed || 0) > 10_000) {
      console.log(`${((Date.now() - t0) / 1000).toFixed(0)} s: ${line} (largest process ${(now.max / 1e6).toFixed(0)} MB)`);
      last = line;
      peak.printed = Date.now();
    }
    await page.waitForTimeout(500);
  }
  const convertSecs = (Date.now() - t0) / 1000;
  const key = await page.getAttribute('#model-list li[data-active="yes"]', "data-key");
  await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 600_000 });
  const loadSecs = (Date.now() - t0) / 1000 - convertSecs;
  const { sha, size } = await page.evaluate(async (name) => {
    const f = await (await (await navigator.storage.getDirectory()).getFileHandle(name)).getFile();
    const d = await crypto.subtle.digest("SHA-256", await f.arrayBuffer());
    return { sha: [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join(""), size: f.size };
  }, key.slice("opfs:".length));
  const mb = (b) => (b / 1e6).toFixed(0);
  console.log(`checkpoint: ${ckpt} (${mb(fs.statSync(ckpt).size)} MB), quant ${QUANT}`);
  console.log(`converted in the page in ${convertSecs.toFixed(1)} s (then loaded in ${loadSecs.toFixed(1)} s)`);
  console.log(`output ${mb(size)} MB; sha256 ${sha}`);
  console.log(`native ${mb(fs.statSync(NATIVE).size)} MB; sha256 ${nativeSha}: ${sha === nativeSha ? "IDENTICAL" : "DIFFERENT"}`);
  if (browserPid) {
    console.log(`peak RSS while converting: largest process ${mb(peak.max)} MB (${mb(peak.max - before.max)} MB over before), ` +
      `all processes ${mb(peak.sum)} MB (${mb(peak.sum - before.sum)} MB over before)`);
  }
  if (sha !== nativeSha) process.exitCode = 1;
} finally {
  await browser.close();
  server.close();
  fs.rmSync(work, { recursive: true, force: true });
}
