// The page of the browser peer benchmark (tests/browser/ort-web-bench.mjs serves it beside the
// built app): times the app's engine worker, spoken to in the app's worker protocol
// (app/web/src/protocol.rs), and onnxruntime-web on the same towers. Each phase runs in a fresh
// load of this page, so one phase's memory is gone before the next.

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

// Warm-up once, then `repeats` timed runs of `f`; milliseconds.
async function time(f, repeats) {
  const warm = performance.now();
  await f();
  const warmup = performance.now() - warm;
  const runs = [];
  for (let i = 0; i < repeats; i++) {
    const t = performance.now();
    await f();
    runs.push(performance.now() - t);
  }
  return { warmup, runs, median: median(runs) };
}

// The app's engine worker (the file trunk builds and the app starts; `threaded`: the build with
// wasm threads that cross-origin isolated pages start, its pool as wide as the CPU count), with
// the app's messages: [id, json, ...payloads] each way; message id 0 is Ready.
function engineWorker(threaded) {
  const file = threaded ? "./brivl-worker-mt_loader.js" : "./brivl-worker_loader.js";
  const worker = new Worker(file, { type: "module" });
  const pending = new Map();
  let ready;
  const readyP = new Promise((r, reject) => {
    ready = r;
    setTimeout(() => reject(new Error("the engine worker did not start in 60 s")), 60_000);
  });
  let next = 1;
  worker.onmessage = (ev) => {
    const [id, json, ...payloads] = ev.data;
    const reply = JSON.parse(json);
    if (reply.op === "crashed") for (const p of pending.values()) p.reject(new Error(reply.error));
    if (id === 0 && reply.op === "ready") ready();
    const p = pending.get(id);
    if (!p) return;
    pending.delete(id);
    if (reply.op === "failed" || reply.op === "crashed") p.reject(new Error(reply.error));
    else p.resolve({ reply, payloads });
  };
  worker.onerror = (e) => {
    for (const p of pending.values()) p.reject(new Error(`engine worker failed: ${e.message}`));
  };
  const request = (req, payloads = []) =>
    new Promise((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve, reject });
      // Byte arrays are moved; a File goes as a handle to the file.
      worker.postMessage([id, JSON.stringify(req), ...payloads], payloads.filter((p) => p.buffer).map((p) => p.buffer));
    });
  return { request, ready: readyP, terminate: () => worker.terminate() };
}

// The app's path: the model file given to the worker as the app gives it, one photo (a JPEG file:
// decoded, resized, embedded, thumbnailed, as the indexer asks) and one query.
window.benchBrivl = async ({ gpu, threaded, modelUrl, photoUrl, text, repeats, thumbSize }) => {
  const w = engineWorker(threaded);
  try {
    await w.ready;
    const model = new File([await (await fetch(modelUrl)).blob()], "model.safetensors");
    const t0 = performance.now();
    const { reply: loaded } = await w.request({ op: "load", prefer_gpu: gpu, from: "file" }, [model]);
    const loadMs = performance.now() - t0;
    if (loaded.on_gpu !== gpu) throw new Error(`asked for ${gpu ? "WebGPU" : "the CPU path"}, got ${loaded.backend} (${loaded.gpu_error})`);
    const photo = new Uint8Array(await (await fetch(photoUrl)).arrayBuffer());
    const image = await time(async () => {
      const { reply } = await w.request({ op: "embed_images", thumb_size: thumbSize }, [photo.slice()]);
      if (!reply.photos?.[0]?.read) throw new Error(`photo not read: ${JSON.stringify(reply)}`);
    }, repeats);
    const query = await time(() => w.request({ op: "embed_text", text }), repeats);
    // The worker's wasm memory after loading (bytes): the model given as a File is read in slices.
    return { backend: loaded.backend, weights: loaded.weights, loadMs, memory: loaded.memory, image, text: query };
  } finally {
    w.terminate();
  }
};

// onnxruntime-web on the f32 ONNX towers: one session per tower, created once; batch 1.
window.benchOrt = async ({ ep, imageUrl, textUrl, imageSize, ids, mask, repeats, threads }) => {
  const ort = await import(ep === "webgpu" ? "./ort/ort.webgpu.min.mjs" : "./ort/ort.wasm.min.mjs");
  // The runtime's own wasm files from this origin, not a CDN.
  ort.env.wasm.wasmPaths = new URL("./ort/", location.href).href;
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = false;
  // Its warnings (nodes placed on the CPU by design) come as console errors.
  ort.env.logLevel = "error";
  const opts = { executionProviders: [ep], graphOptimizationLevel: "all", logSeverityLevel: 3 };
  // Deterministic pixels in the normalised range (the values do not change the work done).
  const n = 3 * imageSize * imageSize;
  const pixels = new Float32Array(n);
  for (let i = 0; i < n; i++) pixels[i] = Math.sin(i * 0.7) * 2;
  const out = { version: ort.env.versions?.web || "?" };
  {
    const t0 = performance.now();
    const s = await ort.InferenceSession.create(imageUrl, opts);
    out.imageSessionMs = performance.now() - t0;
    const feeds = { pixels: new ort.Tensor("float32", pixels, [1, 3, imageSize, imageSize]) };
    out.image = await time(() => s.run(feeds), repeats);
    await s.release();
  }
  {
    const t0 = performance.now();
    const s = await ort.InferenceSession.create(textUrl, opts);
    out.textSessionMs = performance.now() - t0;
    const big = (a) => BigInt64Array.from(a, (x) => BigInt(x));
    const feeds = {
      ids: new ort.Tensor("int64", big(ids), [1, ids.length]),
      mask: new ort.Tensor("int64", big(mask), [1, mask.length]),
    };
    out.text = await time(() => s.run(feeds), repeats);
    await s.release();
  }
  return out;
};

document.body.dataset.ready = "yes";
