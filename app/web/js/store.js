// Browser storage and file plumbing for the web app (imported by the Rust UI through wasm-bindgen).
// IndexedDB "brivl" holds the index (models live in OPFS: opfs.js). Nothing here makes a request
// to another origin.

const DB_NAME = "brivl";
// Version 2 of the stored format (version 1 kept each photo's f32 embedding and thumbnail in one
// record, and a Blob copy of every queued file; it is migrated on open, nothing lost).
const DB_VERSION = 2;
// photos:  one record per distinct photo content (key: SHA-256 of the file's bytes): every file
//          name it was seen under, where its original lives (`root` id and `path` when it came
//          through a folder handle), its size and the model that made its embedding
//          ({model: content hash, dim: width}; `next`/`next_dim` while a second model's is
//          kept beside it, see `vectors`). Small: the page lists them all at start.
// vectors: the embedding as int8 codes with one f32 scale (`v ~ code * scale`), read by the
//          search worker (2 KiB per photo at 2048 wide). While the index moves to another model
//          (meta `next_model`), a record also holds that model's vector in `next`: the old
//          model's stay searchable until every photo has the new one (`finishSwitch`).
// thumbs:  the JPEG thumbnail (a Blob), read as the results grid scrolls to it.
// queue:   files waiting to be embedded, by `root/path` (no bytes: the file is read when it is
//          embedded, through its folder's handle, or from the File held for this visit), and how
//          many times work on them started.
// failed:  files that could not be indexed, with the reason.
// roots:   folder (or file) handles the user gave, so files are read in place after a reload.
// meta:    small settings (`model`/`dim`: the model the index was built with; `next_model`/
//          `next_dim`: the model it is being embedded again with).
const STORES = ["photos", "vectors", "thumbs", "queue", "failed", "roots", "meta"];

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

// f32 -> int8 codes and scale, as brivl_core::encoding::quantize_i8 (f32 arithmetic, rounding
// half away from zero): used only to migrate version 1 records, whose f32 embeddings are gone
// after it.
export function quantizeI8(v) {
  let max = 0;
  let bad = false;
  for (const x of v) {
    if (Number.isNaN(x)) bad = true;
    max = Math.max(max, Math.abs(x));
  }
  const code = new Int8Array(v.length);
  if (max === 0 || !Number.isFinite(max) || bad) return { code, scale: 0 };
  const inv = Math.fround(127 / max);
  for (let i = 0; i < v.length; i++) {
    const y = Math.fround(v[i] * inv);
    const r = Math.sign(y) * Math.round(Math.abs(y));
    code[i] = Math.max(-127, Math.min(127, r));
  }
  return { code, scale: Math.fround(max / 127) };
}

// Version 1 -> 2, inside the upgrade transaction: each photo record is split into its metadata,
// its int8 vector and its thumbnail. Queued Blob copies stay readable until they are embedded.
function migrateV1(tx) {
  const photos = tx.objectStore("photos");
  const vectors = tx.objectStore("vectors");
  const thumbs = tx.objectStore("thumbs");
  let seq = 0;
  photos.openCursor().onsuccess = (e) => {
    const c = e.target.result;
    if (!c) return;
    const r = c.value;
    if (r.embedding) {
      const emb = new Float32Array(r.embedding.buffer || r.embedding);
      const { code, scale } = quantizeI8(emb);
      const dim = r.dim || emb.length;
      vectors.put({ code, scale, model: r.model || "", dim }, r.hash);
      if (r.thumb) thumbs.put(r.thumb, r.hash);
      c.update({ hash: r.hash, names: r.names || [], model: r.model || "", dim, width: r.width, height: r.height, seq: seq++, v: 2 });
    }
    c.continue();
  };
}

function db() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const open = indexedDB.open(DB_NAME, DB_VERSION);
      open.onupgradeneeded = (ev) => {
        const d = open.result;
        for (const s of ["photos", "vectors", "thumbs", "failed", "roots", "meta"]) {
          if (!d.objectStoreNames.contains(s)) d.createObjectStore(s);
        }
        if (!d.objectStoreNames.contains("queue")) {
          // `seq` keeps the order files were added in.
          d.createObjectStore("queue").createIndex("seq", "seq");
        }
        const photos = open.transaction.objectStore("photos");
        // A file name already indexed is found without reading the file.
        if (!photos.indexNames.contains("names")) photos.createIndex("names", "names", { multiEntry: true });
        if (ev.oldVersion === 1) migrateV1(open.transaction);
      };
      open.onsuccess = () => {
        const d = open.result;
        // Another tab upgrading the format: let it, this tab's next call opens the new one.
        d.onversionchange = () => {
          d.close();
          dbPromise = null;
        };
        resolve(d);
      };
      open.onerror = () => reject(open.error);
      open.onblocked = () => reject(new Error("the index is being upgraded by another tab of this site; close it and reload"));
    });
  }
  return dbPromise;
}

export async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---- what the user gives: folders (handles where the browser has them) or files ----

// The files held for this visit (no handle: from a file input or a plain drop), by queue key.
const visitFiles = new Map();
// Handles by root id, once read from the database.
const rootHandles = new Map();

function rootId() {
  return crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2);
}

// Whether the browser can give folder handles (Chromium: showDirectoryPicker).
export function hasFolderHandles() {
  return typeof self.showDirectoryPicker === "function";
}

// Asks for a folder (read only) and returns its handle, or null when the user closes the picker.
export async function pickFolder() {
  try {
    return await self.showDirectoryPicker({ id: "brivl-album", mode: "read" });
  } catch (e) {
    if (e && e.name === "AbortError") return null;
    throw e;
  }
}

// Every dropped item: its file-system handle where the browser gives one (Chromium), else the
// entry or file. Must be called synchronously from the drop handler (the DataTransfer empties
// once it returns); resolves to {handles: [FileSystemHandle], files: [{file, path}]}.
export function collectDropped(dataTransfer) {
  const handles = [];
  const entries = [];
  const loose = [];
  for (const item of dataTransfer.items) {
    if (item.kind !== "file") continue;
    if (item.getAsFileSystemHandle) {
      handles.push(item.getAsFileSystemHandle().catch(() => null));
      // A DataTransfer made by script has no handles: keep its file too.
      const f = item.getAsFile();
      if (f) loose.push({ file: f, path: f.name });
      continue;
    }
    const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
    if (entry) entries.push(entry);
    else {
      const f = item.getAsFile();
      if (f) loose.push({ file: f, path: f.name });
    }
  }
  return (async () => {
    const got = (await Promise.all(handles)).filter(Boolean);
    if (got.length > 0) return { handles: got, files: [] };
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
    return { handles: [], files: out };
  })();
}

// Files from an <input type=file> (a folder picker gives every file below it, with its path).
export function filesFromInput(fileList) {
  return Array.from(fileList, (f) => ({ file: f, path: f.webkitRelativePath || f.name }));
}

// Every file below a handle as {path, handle}; hidden entries skipped.
async function* walkHandle(h, prefix) {
  if (h.kind === "file") {
    yield { path: prefix + h.name, handle: h };
    return;
  }
  for await (const [name, child] of h.entries()) {
    if (name.startsWith(".")) continue;
    yield* walkHandle(child, prefix + h.name + "/");
  }
}

function addName(names, name) {
  if (!names.includes(name)) names.push(name);
  return names;
}

// Queues the files below `handles` (kept in `roots`, so they are read in place after a reload)
// and the loose `files` (held in memory for this visit). A name already indexed or queued is
// skipped. Each file's first `sniffBytes` are read: one that `isPhoto(head)` says is not a photo
// is counted, a photo over `maxBytes` listed. Nothing else is read until the file is embedded.
// Returns {queued, known, notPhotos: [name], tooLarge: [{name, bytes}]}.
export async function enqueue(handles, files, maxBytes, sniffBytes, isPhoto) {
  // Ask the browser not to evict the index under storage pressure (it may say no).
  if (navigator.storage && navigator.storage.persist) navigator.storage.persist().catch(() => {});
  const d = await db();
  const out = { queued: 0, known: 0, notPhotos: [], tooLarge: [] };
  let seq = Date.now();
  const pending = [];
  const flush = async () => {
    const tx = d.transaction(["photos", "queue", "failed"], "readwrite");
    const names = tx.objectStore("photos").index("names");
    const queue = tx.objectStore("queue");
    const failed = tx.objectStore("failed");
    const checks = pending.map(async (p) => {
      const [ph, q, f] = await Promise.all([req(names.getKey(p.name)), req(queue.getKey(p.key)), req(failed.getKey(p.key))]);
      if (ph !== undefined || q !== undefined || f !== undefined) {
        out.known++;
        return;
      }
      queue.put({ key: p.key, root: p.root, path: p.path, names: [p.name], seq: seq++ }, p.key);
      out.queued++;
    });
    await Promise.all(checks);
    await done(tx);
    pending.length = 0;
  };
  const consider = async (file, name, key, root, path) => {
    const head = new Uint8Array(await file.slice(0, sniffBytes).arrayBuffer());
    if (!isPhoto(head)) {
      out.notPhotos.push(name);
      return;
    }
    if (file.size > maxBytes) {
      out.tooLarge.push({ name, bytes: file.size });
      return;
    }
    pending.push({ key, root, path, name });
    if (pending.length >= 500) await flush();
  };
  const known = await req(d.transaction("roots").objectStore("roots").getAll());
  for (const h of handles) {
    // The same folder given again keeps its id (its queued and indexed files are recognised).
    let id = null;
    for (const r of known) if (r.handle && (await r.handle.isSameEntry(h).catch(() => false))) id = r.id;
    if (!id) {
      id = rootId();
      const tx = d.transaction("roots", "readwrite");
      tx.objectStore("roots").put({ id, name: h.name, kind: h.kind, handle: h }, id);
      await done(tx);
    }
    rootHandles.set(id, h);
    for await (const { path, handle } of walkHandle(h, "")) {
      await consider(await handle.getFile(), path, id + "/" + path, id, path);
    }
  }
  for (const { file, path } of files) {
    const key = "visit/" + path;
    visitFiles.set(key, file);
    await consider(file, path, key, null, path);
  }
  if (pending.length) await flush();
  return out;
}

// The handle of root `id` (from the database after a reload), or null.
async function rootHandle(id) {
  if (rootHandles.has(id)) return rootHandles.get(id);
  const d = await db();
  const r = await req(d.transaction("roots").objectStore("roots").get(id));
  const h = r ? r.handle : null;
  rootHandles.set(id, h);
  return h;
}

// The folders given before whose read permission must be asked again (after a reload the browser
// asks the user): [{id, name}]. Asking needs a click: see `allowRoots`.
export async function rootsNeedingPermission() {
  const d = await db();
  const roots = await req(d.transaction("roots").objectStore("roots").getAll());
  const out = [];
  for (const r of roots) {
    if (!r.handle || !r.handle.queryPermission) continue;
    const p = await r.handle.queryPermission({ mode: "read" });
    if (p !== "granted") out.push({ id: r.id, name: r.name });
  }
  return out;
}

// Asks read permission again for every folder that needs it (call from a click). Returns how many
// were granted.
export async function allowRoots() {
  const d = await db();
  const roots = await req(d.transaction("roots").objectStore("roots").getAll());
  let granted = 0;
  for (const r of roots) {
    if (!r.handle || !r.handle.requestPermission) continue;
    if ((await r.handle.requestPermission({ mode: "read" })) === "granted") granted++;
  }
  return granted;
}

async function fileAt(root, path) {
  const h = await rootHandle(root);
  if (!h) throw new Error("its folder is no longer known to this site; add it again");
  if (h.kind === "file") return h.getFile();
  const parts = path.split("/").slice(1);
  let dir = h;
  for (const p of parts.slice(0, -1)) dir = await dir.getDirectoryHandle(p);
  return (await dir.getFileHandle(parts[parts.length - 1])).getFile();
}

// The bytes of a queued file: through its folder's handle, the File held for this visit, or a
// version 1 Blob copy. null when it is not reachable now (a file given without a handle before a
// reload); throws when its folder denies reading or the file is gone.
async function queuedFile(q) {
  if (q.blob) return q.blob;
  if (q.root) return fileAt(q.root, q.path);
  return visitFiles.get(q.key) || null;
}

// The next queued files, oldest first, up to `count` files or `maxBytes` in all, each read whole:
// [{key, names, bytes: Uint8Array, hash, known}] (`known`: the content is indexed already), or
// [{key, names, error}] for one that cannot be read. Files without a handle that this visit does
// not hold are skipped (see `unreachable`), and so are the keys in `skip` (in flight).
export async function nextBatch(count, maxBytes, skip) {
  const skipping = new Set(skip);
  const d = await db();
  const tx = d.transaction("queue", "readonly");
  const items = [];
  await new Promise((resolve, reject) => {
    const r = tx.objectStore("queue").index("seq").openCursor();
    r.onerror = () => reject(r.error);
    r.onsuccess = () => {
      const c = r.result;
      if (!c || items.length >= count * 8) return resolve();
      // Version 1 queue records were keyed by content hash and held a Blob copy.
      const q = c.value;
      const key = q.key || c.primaryKey;
      // In flight, or added without a handle before a reload (unreachable now).
      if (skipping.has(key) || (!q.blob && !q.root && !visitFiles.has(key))) return c.continue();
      items.push(Object.assign(q, { key: q.key || c.primaryKey, path: q.path || q.names[0] }));
      c.continue();
    };
  });
  const out = [];
  let bytes = 0;
  for (const q of items) {
    if (out.length >= count || (out.length > 0 && bytes >= maxBytes)) break;
    let file;
    try {
      file = await queuedFile(q);
    } catch (e) {
      out.push({ key: q.key, names: q.names, error: String(e && e.message ? e.message : e) });
      continue;
    }
    if (!file) continue;
    const buf = await file.arrayBuffer();
    const hash = await sha256Hex(buf);
    bytes += buf.byteLength;
    out.push({ key: q.key, names: q.names, bytes: new Uint8Array(buf), hash, file: q.root ? null : file });
  }
  // Which contents are indexed already (a renamed or copied photo is not embedded twice).
  const t2 = d.transaction("photos");
  const photos = t2.objectStore("photos");
  await Promise.all(out.filter((o) => o.hash).map(async (o) => { o.known = (await req(photos.getKey(o.hash))) !== undefined; }));
  return out;
}

// Queued files this visit cannot read (given without a handle before a reload): [names].
export async function unreachable() {
  const d = await db();
  const all = await req(d.transaction("queue").objectStore("queue").getAll());
  return all.filter((q) => !q.blob && !q.root && !visitFiles.has(q.key)).map((q) => q.path);
}

// Counts a start of work on the queued files `keys` (kept across reloads) and returns how many
// starts each had before this one: a file that never finishes (the tab closed or crashed while
// reading it) is not tried forever.
export async function beginAttempt(keys) {
  const d = await db();
  const tx = d.transaction("queue", "readwrite");
  const queue = tx.objectStore("queue");
  const before = await Promise.all(keys.map(async (k) => {
    const q = await req(queue.get(k));
    const n = (q && q.attempts) || 0;
    if (q) queue.put(Object.assign(q, { attempts: n + 1 }), k);
    return n;
  }));
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

export async function queueCount() {
  const d = await db();
  return req(d.transaction("queue").objectStore("queue").count());
}

// Stores a batch in one transaction and takes its files off the queue, so a closed tab leaves
// each either queued or indexed, never both or neither. `done`: [{key, hash, names, code, scale,
// thumb, width, height, root, path}] new photos, [{key, hash, names}] for known content (only
// its names are added), [{key, names, reason}] failures. The records carry their model; the
// batch is refused when the index now belongs to another model (changed in another tab).
// Returns the photo records written (new and renamed), without their vectors and thumbnails.
export async function commitBatch(items, model, dim) {
  const d = await db();
  const tx = d.transaction(["photos", "vectors", "thumbs", "queue", "failed", "meta"], "readwrite");
  const meta = tx.objectStore("meta");
  if (!(await accepts(meta, model, dim))) {
    tx.abort();
    throw new Error("the index now belongs to another model (changed in another tab)");
  }
  const photos = tx.objectStore("photos");
  const queue = tx.objectStore("queue");
  const written = [];
  let seq = Date.now() * 1000;
  await Promise.all(items.map(async (it) => {
    queue.delete(it.key);
    if (it.reason !== undefined) {
      tx.objectStore("failed").put({ names: it.names, reason: it.reason }, it.key);
      return;
    }
    const old = await req(photos.get(it.hash));
    if (old) {
      for (const n of it.names) addName(old.names, n);
      photos.put(old, it.hash);
      written.push(old);
      return;
    }
    const rec = { hash: it.hash, names: it.names, model, dim, width: it.width, height: it.height, root: it.root, path: it.path, seq: seq++, v: 2 };
    photos.put(rec, it.hash);
    tx.objectStore("vectors").put({ code: new Int8Array(it.code), scale: it.scale, model, dim }, it.hash);
    tx.objectStore("thumbs").put(new Blob([it.thumb], { type: "image/jpeg" }), it.hash);
    written.push(rec);
  }));
  await done(tx);
  return written;
}

// Whether the index takes vectors of `model`: the one it was built with, or the one it is being
// embedded again with.
async function accepts(meta, model, dim) {
  const [m, md, n, nd] = await Promise.all(["model", "dim", "next_model", "next_dim"].map((k) => req(meta.get(k))));
  return (m === model && md === String(dim)) || (n === model && nd === String(dim));
}

// The vector of `model` a record holds, in either slot, or null.
function slotOf(v, model, dim) {
  for (const x of [v, v && v.next]) {
    if (x && x.model === model && x.dim === dim && x.code && x.code.length === dim) return x;
  }
  return null;
}

// The bytes to embed stored photos again from (another model now): the original through its
// folder's handle when reading it is allowed and its content is unchanged, else the stored
// thumbnail (what the page keeps of files given without a folder). [{key: hash, names, hash,
// bytes, from: "original" | "thumbnail"}], or [{key, names, error}]; at most `maxBytes` in all.
export async function reembedBatch(hashes, maxBytes) {
  const d = await db();
  const out = [];
  let bytes = 0;
  for (const hash of hashes) {
    if (out.length > 0 && bytes >= maxBytes) break;
    const t = d.transaction(["photos", "thumbs"]);
    const [p, thumb] = await Promise.all([req(t.objectStore("photos").get(hash)), req(t.objectStore("thumbs").get(hash))]);
    if (!p) continue;
    let buf = null;
    let from = "original";
    if (p.root) {
      try {
        const h = await rootHandle(p.root);
        if (h && (!h.queryPermission || (await h.queryPermission({ mode: "read" })) === "granted")) {
          const b = await (await fileAt(p.root, p.path)).arrayBuffer();
          if ((await sha256Hex(b)) === hash) buf = b;
        }
      } catch {
        // Gone or not readable now: the thumbnail below.
      }
    }
    if (!buf && thumb) {
      buf = await thumb.arrayBuffer();
      from = "thumbnail";
    }
    if (!buf) {
      out.push({ key: hash, names: p.names, error: "neither its original nor its thumbnail can be read to embed it with this model" });
      continue;
    }
    bytes += buf.byteLength;
    out.push({ key: hash, names: p.names, hash, bytes: new Uint8Array(buf), from });
  }
  return out;
}

// Stores vectors of `model` made again for photos already indexed (one transaction): [{hash,
// code, scale}], or [{hash, reason}] for one that could not be embedded (it leaves the index and
// is listed as failed). The vector goes beside the index's own model's, which stays until
// `finishSwitch`. Returns the photo records written.
export async function commitVectors(items, model, dim) {
  const d = await db();
  const tx = d.transaction(["photos", "vectors", "thumbs", "failed", "meta"], "readwrite");
  const meta = tx.objectStore("meta");
  if (!(await accepts(meta, model, dim))) {
    tx.abort();
    throw new Error("the index now belongs to another model (changed in another tab)");
  }
  const built = await req(meta.get("model"));
  const photos = tx.objectStore("photos");
  const vectors = tx.objectStore("vectors");
  const written = [];
  await Promise.all(items.map(async (it) => {
    const [p, v] = await Promise.all([req(photos.get(it.hash)), req(vectors.get(it.hash))]);
    if (!p) return;
    if (it.reason !== undefined) {
      tx.objectStore("failed").put({ names: p.names, reason: it.reason }, `model/${it.hash}`);
      for (const st of ["photos", "vectors", "thumbs"]) tx.objectStore(st).delete(it.hash);
      return;
    }
    const fresh = { code: new Int8Array(it.code), scale: it.scale, model, dim };
    let rec;
    if (v && v.model === model) rec = Object.assign(fresh, v.next ? { next: v.next } : {});
    else if (v && v.model === built && built !== model) rec = Object.assign(v, { next: fresh });
    else rec = fresh;
    vectors.put(rec, it.hash);
    Object.assign(p, { model: rec.model, dim: rec.dim });
    delete p.next;
    delete p.next_dim;
    if (rec.next) Object.assign(p, { next: rec.next.model, next_dim: rec.next.dim });
    photos.put(p, it.hash);
    written.push(p);
  }));
  await done(tx);
  return written;
}

// Every photo has a vector of `model`: the index now belongs to it and the other model's vectors
// go. Record by record in pages (a tab closed half way leaves records readable with either
// form), the index's metadata last.
export async function finishSwitch(model, dim) {
  const d = await db();
  const PAGE = 500;
  let last = null;
  for (;;) {
    const tx = d.transaction(["photos", "vectors"], "readwrite");
    const vectors = tx.objectStore("vectors");
    const photos = tx.objectStore("photos");
    const range = last === null ? null : IDBKeyRange.lowerBound(last, true);
    const [keys, vals] = await Promise.all([req(vectors.getAllKeys(range, PAGE)), req(vectors.getAll(range, PAGE))]);
    if (keys.length === 0) break;
    last = keys[keys.length - 1];
    await Promise.all(keys.map(async (k, i) => {
      const keep = slotOf(vals[i], model, dim);
      if (!keep) return;
      if (keep !== vals[i] || vals[i].next) vectors.put({ code: keep.code, scale: keep.scale, model, dim }, k);
      const p = await req(photos.get(k));
      if (p && (p.model !== model || p.next)) {
        delete p.next;
        delete p.next_dim;
        photos.put(Object.assign(p, { model, dim }), k);
      }
    }));
    await done(tx);
    if (keys.length < PAGE) break;
  }
  const tx = d.transaction("meta", "readwrite");
  const meta = tx.objectStore("meta");
  meta.put(model, "model");
  meta.put(String(dim), "dim");
  meta.delete("next_model");
  meta.delete("next_dim");
  await done(tx);
}

// Every photo record (metadata only), in the order they were added.
export async function listPhotos() {
  const rows = await all("photos");
  rows.sort((a, b) => (a.seq || 0) - (b.seq || 0));
  return rows;
}

// Every stored vector of `model` (width `dim`), page by page: `onPage(hashes, codes: Int8Array
// (n * dim), scales: Float32Array)`. Returns how many records belong to another model.
export async function loadVectors(model, dim, onPage) {
  const d = await db();
  const PAGE = 2048;
  let other = 0;
  let last = null;
  for (;;) {
    const tx = d.transaction("vectors");
    const store = tx.objectStore("vectors");
    const range = last === null ? null : IDBKeyRange.lowerBound(last, true);
    const [keys, vals] = await Promise.all([req(store.getAllKeys(range, PAGE)), req(store.getAll(range, PAGE))]);
    if (keys.length === 0) break;
    last = keys[keys.length - 1];
    const hashes = [];
    const codes = new Int8Array(keys.length * dim);
    const scales = new Float32Array(keys.length);
    let n = 0;
    for (let i = 0; i < keys.length; i++) {
      const v = slotOf(vals[i], model, dim);
      if (!v) {
        other++;
        continue;
      }
      codes.set(v.code, n * dim);
      scales[n] = v.scale;
      hashes.push(keys[i]);
      n++;
    }
    onPage(hashes, codes.subarray(0, n * dim), scales.subarray(0, n));
    if (keys.length < PAGE) break;
  }
  return other;
}

// The thumbnail of `hash` as an object URL, or null.
export async function thumbUrl(hash) {
  const d = await db();
  const b = await req(d.transaction("thumbs").objectStore("thumbs").get(hash));
  return b ? URL.createObjectURL(b) : null;
}

// The original of a stored photo as an object URL: through its folder's handle, or null (no
// handle, or the folder is not readable now).
export async function originalUrl(hash) {
  const d = await db();
  const p = await req(d.transaction("photos").objectStore("photos").get(hash));
  if (!p || !p.root) return null;
  try {
    const h = await rootHandle(p.root);
    if (!h || (h.queryPermission && (await h.queryPermission({ mode: "read" })) !== "granted")) return null;
    return URL.createObjectURL(await fileAt(p.root, p.path));
  } catch {
    return null;
  }
}

async function all(store) {
  const d = await db();
  return req(d.transaction(store).objectStore(store).getAll());
}

export function listFailures() {
  return all("failed");
}

export async function clearStores(names) {
  const d = await db();
  const tx = d.transaction(names, "readwrite");
  for (const n of names) tx.objectStore(n).clear();
  await done(tx);
  if (names.includes("queue")) visitFiles.clear();
}

export async function getMeta(key) {
  const d = await db();
  const v = await req(d.transaction("meta").objectStore("meta").get(key));
  return v === undefined ? null : v;
}

// `value` null deletes the key.
export async function setMeta(key, value) {
  const d = await db();
  const tx = d.transaction("meta", "readwrite");
  if (value === null) tx.objectStore("meta").delete(key);
  else tx.objectStore("meta").put(value, key);
  await done(tx);
}

// ---- tests only (the page exposes these with ?test_hooks=1) ----

// Writes `n` synthetic photo records of `model` (width `dim`) in batches: `make(i)` gives
// {code: Int8Array, scale}; each gets a tiny thumbnail and the name synthetic/<i>.jpg.
export async function fillSynthetic(n, model, dim, make, thumbJpeg) {
  const d = await db();
  const BATCH = 1000;
  const thumb = new Blob([thumbJpeg], { type: "image/jpeg" });
  for (let at = 0; at < n; at += BATCH) {
    const tx = d.transaction(["photos", "vectors", "thumbs"], "readwrite");
    for (let i = at; i < Math.min(n, at + BATCH); i++) {
      const { code, scale } = make(i);
      // 64 hex digits, as long as a real content hash (the memory figures depend on it).
      const hash = i.toString(16).padStart(64, "0");
      tx.objectStore("photos").put({ hash, names: [`synthetic/${i}.jpg`], model, dim, width: 8, height: 8, seq: i, v: 2 }, hash);
      tx.objectStore("vectors").put({ code, scale, model, dim }, hash);
      tx.objectStore("thumbs").put(thumb, hash);
    }
    await done(tx);
  }
}

// ---- model files ----

// Versions before 2026-12 kept the site's model in Cache Storage; it lives in OPFS now.
export async function dropOldModelCache() {
  if ("caches" in self) await caches.delete("brivl-models-v1");
}

// GETs a same-origin path as bytes.
export async function fetchBytes(path) {
  const r = await fetch(path, { cache: "no-cache" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
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

// Registers the offline service worker (app shell only; models live in OPFS).
export function registerServiceWorker() {
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("sw.js").catch(() => {});
}
