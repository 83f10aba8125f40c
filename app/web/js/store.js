// Browser storage and file plumbing for the web app (imported by the Rust UI through wasm-bindgen).
// IndexedDB "brivl" holds the index; Cache Storage holds model files. Nothing here makes a request
// to another origin.

const DB_NAME = "brivl";
const DB_VERSION = 1;
// photos: one record per distinct photo content (key: SHA-256 of the file's bytes), with its
//         embedding, thumbnail, every file name it was seen under and the model that made it
//         ({model: content hash, dim: width}).
// queue:  photos waiting to be embedded, with the file's bytes (so a reload resumes the work) and
//         how many times work on them started.
// failed: photos that could not be indexed (not decodable, or the engine stopped on them), with
//         the reason.
// meta:   small settings (the model the index was built with).
const STORES = ["photos", "queue", "failed", "meta"];

let dbPromise = null;

function req(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onabort = () => reject(tx.error || new Error("transaction aborted"));
    tx.onerror = () => reject(tx.error);
  });
}

function db() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const open = indexedDB.open(DB_NAME, DB_VERSION);
      open.onupgradeneeded = () => {
        const d = open.result;
        for (const s of ["photos", "failed", "meta"]) {
          if (!d.objectStoreNames.contains(s)) d.createObjectStore(s);
        }
        if (!d.objectStoreNames.contains("queue")) {
          // `seq` keeps the order files were added in.
          d.createObjectStore("queue").createIndex("seq", "seq");
        }
      };
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
  }
  return dbPromise;
}

export async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// Every file under a drop, recursing into folders. Must be called synchronously from the drop
// handler (the DataTransfer empties once the handler returns); it returns a promise.
export function collectDropped(dataTransfer) {
  const entries = [];
  const loose = [];
  for (const item of dataTransfer.items) {
    if (item.kind !== "file") continue;
    const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
    if (entry) entries.push(entry);
    else {
      const f = item.getAsFile();
      if (f) loose.push({ file: f, path: f.name });
    }
  }
  return (async () => {
    const out = loose;
    async function walk(entry, prefix) {
      if (entry.isFile) {
        const file = await new Promise((res, rej) => entry.file(res, rej));
        out.push({ file, path: prefix + entry.name });
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        // readEntries returns at most ~100 entries a call; call until it returns none.
        for (;;) {
          const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
          if (batch.length === 0) break;
          for (const e of batch) await walk(e, prefix + entry.name + "/");
        }
      }
    }
    for (const e of entries) await walk(e, "");
    return out;
  })();
}

// Files from an <input type=file> (a folder picker gives every file below it, with its path).
export function filesFromInput(fileList) {
  return Array.from(fileList, (f) => ({ file: f, path: f.webkitRelativePath || f.name }));
}

function addName(names, name) {
  if (!names.includes(name)) names.push(name);
  return names;
}

// Hashes each file and queues the ones the index has not seen. A file whose content is already
// indexed, queued or failed only adds its name there (a renamed or copied photo is not embedded
// twice). Each file's first `sniffBytes` bytes are read first: one that `isPhoto(head)` says is not
// a photo at all (a README, a video, an empty file) is counted in `notPhotos` and never read whole;
// a photo over `maxBytes` is listed in `tooLarge`.
// Returns {queued, duplicates, notPhotos: [name], tooLarge: [{name, bytes}], seen: [{hash, file}]}.
export async function enqueueFiles(files, maxBytes, sniffBytes, isPhoto) {
  // Ask the browser not to evict the index under storage pressure (it may say no).
  if (navigator.storage && navigator.storage.persist) navigator.storage.persist().catch(() => {});
  const d = await db();
  let queued = 0;
  let duplicates = 0;
  const notPhotos = [];
  const tooLarge = [];
  const seen = [];
  for (const { file, path } of files) {
    const head = new Uint8Array(await file.slice(0, sniffBytes).arrayBuffer());
    if (!isPhoto(head)) {
      notPhotos.push(path);
      continue;
    }
    if (file.size > maxBytes) {
      tooLarge.push({ name: path, bytes: file.size });
      continue;
    }
    const hash = await sha256Hex(await file.arrayBuffer());
    seen.push({ hash, file });
    const tx = d.transaction(["photos", "queue", "failed"], "readwrite");
    const photos = tx.objectStore("photos");
    const queue = tx.objectStore("queue");
    const failed = tx.objectStore("failed");
    const [p, q, f] = await Promise.all([req(photos.get(hash)), req(queue.get(hash)), req(failed.get(hash))]);
    if (p) {
      photos.put(Object.assign(p, { names: addName(p.names, path) }), hash);
      duplicates++;
    } else if (q) {
      queue.put(Object.assign(q, { names: addName(q.names, path) }), hash);
      duplicates++;
    } else if (f) {
      failed.put(Object.assign(f, { names: addName(f.names, path) }), hash);
      duplicates++;
    } else {
      // A Blob copy of the bytes: the File handle itself does not survive a reload.
      const blob = new Blob([file], { type: file.type });
      queue.put({ hash, names: [path], blob, seq: Date.now() + queued / 1e6 }, hash);
      queued++;
    }
    await done(tx);
  }
  return { queued, duplicates, notPhotos, tooLarge, seen };
}

// Counts a start of work on the queued photo `hash` (kept across reloads) and returns how many
// starts there were before this one: a photo that never finishes (the tab closed or crashed while
// reading it) is not tried forever.
export async function beginAttempt(hash) {
  const d = await db();
  const tx = d.transaction("queue", "readwrite");
  const queue = tx.objectStore("queue");
  const q = await req(queue.get(hash));
  const before = (q && q.attempts) || 0;
  if (q) queue.put(Object.assign(q, { attempts: before + 1 }), hash);
  await done(tx);
  return before;
}

// One tab indexes at a time: the Web Lock "brivl-index". Resolves to a function that releases it,
// or to null when another tab holds it and `wait` is false (with `wait`, once the other tab lets
// go). Browsers without Web Locks index in every tab, as before.
export function indexLock(wait) {
  if (!navigator.locks) return Promise.resolve(() => {});
  return new Promise((resolve, reject) => {
    navigator.locks
      .request("brivl-index", wait ? {} : { ifAvailable: true }, (lock) => {
        if (!lock) {
          resolve(null);
          return undefined;
        }
        // Held until the returned promise settles, i.e. until the release function is called.
        return new Promise((release) => resolve(() => release()));
      })
      .catch(reject);
  });
}

// The oldest queued photo as {hash, names, bytes: Uint8Array}, or null.
export async function nextQueued() {
  const d = await db();
  const tx = d.transaction("queue", "readonly");
  const cursor = await req(tx.objectStore("queue").index("seq").openCursor());
  if (!cursor) return null;
  const { hash, names, blob } = cursor.value;
  return { hash, names, bytes: new Uint8Array(await blob.arrayBuffer()) };
}

export async function queueCount() {
  const d = await db();
  return req(d.transaction("queue").objectStore("queue").count());
}

// Stores a photo's embedding and thumbnail and takes it off the queue in one transaction, so a
// closed tab leaves it either queued or indexed, never both or neither. The record carries its
// model (content hash and width); it is refused when the index now belongs to another model
// (changed in another tab meanwhile), so one index never mixes two models.
export async function commitPhoto(hash, embedding, thumbJpeg, width, height, model, dim) {
  const d = await db();
  const tx = d.transaction(["photos", "queue", "meta"], "readwrite");
  const meta = tx.objectStore("meta");
  const [m, md] = await Promise.all([req(meta.get("model")), req(meta.get("dim"))]);
  if (m !== model || md !== String(dim)) {
    tx.abort();
    throw new Error("the index now belongs to another model (changed in another tab)");
  }
  const queue = tx.objectStore("queue");
  const q = await req(queue.get(hash));
  const names = q ? q.names : [];
  const thumb = new Blob([thumbJpeg], { type: "image/jpeg" });
  const record = { hash, names, embedding: new Float32Array(embedding), thumb, width, height, model, dim };
  tx.objectStore("photos").put(record, hash);
  queue.delete(hash);
  await done(tx);
  return record;
}

export async function commitFailure(hash, reason) {
  const d = await db();
  const tx = d.transaction(["failed", "queue"], "readwrite");
  const queue = tx.objectStore("queue");
  const q = await req(queue.get(hash));
  const names = q ? q.names : [];
  tx.objectStore("failed").put({ hash, names, reason }, hash);
  queue.delete(hash);
  await done(tx);
}

async function all(store) {
  const d = await db();
  return req(d.transaction(store).objectStore(store).getAll());
}

export function listPhotos() {
  return all("photos");
}

export function listFailures() {
  return all("failed");
}

export async function clearStores(names) {
  const d = await db();
  const tx = d.transaction(names, "readwrite");
  for (const n of names) tx.objectStore(n).clear();
  await done(tx);
}

export async function getMeta(key) {
  const d = await db();
  const v = await req(d.transaction("meta").objectStore("meta").get(key));
  return v === undefined ? null : v;
}

export async function setMeta(key, value) {
  const d = await db();
  const tx = d.transaction("meta", "readwrite");
  tx.objectStore("meta").put(value, key);
  await done(tx);
}

// ---- model files ----

const MODEL_CACHE = "brivl-models-v1";

// The bytes cached under `key` (a same-origin path), or null.
export async function cacheGet(key) {
  if (!("caches" in self)) return null;
  const c = await caches.open(MODEL_CACHE);
  const r = await c.match(key);
  return r ? new Uint8Array(await r.arrayBuffer()) : null;
}

export async function cachePut(key, bytes) {
  if (!("caches" in self)) return;
  const c = await caches.open(MODEL_CACHE);
  // Keep one model per key and no stale ones: the cache only ever holds what is in use.
  for (const k of await c.keys()) {
    if (new URL(k.url).pathname !== new URL(key, location.href).pathname) await c.delete(k);
  }
  await c.put(key, new Response(bytes, { headers: { "content-type": "application/octet-stream" } }));
}

export async function cacheDelete(key) {
  if (!("caches" in self)) return;
  const c = await caches.open(MODEL_CACHE);
  await c.delete(key);
}

// GETs a same-origin path as bytes, calling onProgress(received, total) as chunks arrive.
export async function fetchBytes(path, onProgress) {
  const r = await fetch(path, { cache: "no-cache" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  const total = Number(r.headers.get("content-length")) || 0;
  const reader = r.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done: end, value } = await reader.read();
    if (end) break;
    chunks.push(value);
    received += value.length;
    onProgress(received, total);
  }
  const out = new Uint8Array(received);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

export async function fetchText(path) {
  const r = await fetch(path, { cache: "no-cache" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.text();
}

// The site's demo album as {file, path} entries (names from demo/album/captions.tsv).
export async function demoFiles() {
  const tsv = await fetchText("demo/album/captions.tsv");
  const names = tsv.split("\n").map((l) => l.split("\t")[0].trim()).filter((n) => n && !n.startsWith("#"));
  const out = [];
  for (const name of names) {
    const r = await fetch("demo/album/" + encodeURIComponent(name));
    if (!r.ok) continue;
    out.push({ file: new File([await r.blob()], name), path: "demo/" + name });
  }
  return out;
}

export async function fileBytes(file) {
  return new Uint8Array(await file.arrayBuffer());
}

// Registers the offline service worker (app shell only; models live in Cache Storage above).
export function registerServiceWorker() {
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("sw.js").catch(() => {});
}
