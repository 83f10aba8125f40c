// The origin private file system (OPFS), from the page: the models the user converted or dropped
// live here as files (the converter worker writes them with a sync access handle). Cache Storage
// keeps only the site's model in use (app/web/js/store.js).

async function root() {
  if (!navigator.storage || !navigator.storage.getDirectory) {
    throw new Error("this browser gives the page no private file system (OPFS) to keep models in");
  }
  return navigator.storage.getDirectory();
}

// The stored file `name` (a File: read it in slices or whole), or null.
export async function opfsFile(name) {
  try {
    const h = await (await root()).getFileHandle(name);
    return await h.getFile();
  } catch (e) {
    if (e && e.name === "NotFoundError") return null;
    throw e;
  }
}

// The bytes of `name`, or null.
export async function opfsBytes(name) {
  const f = await opfsFile(name);
  return f ? new Uint8Array(await f.arrayBuffer()) : null;
}

// Writes `file` (a File or Blob) as `name`, streamed: never held whole in memory here.
export async function opfsPut(name, file) {
  const h = await (await root()).getFileHandle(name, { create: true });
  const w = await h.createWritable();
  await file.stream().pipeTo(w);
}

// Removes `name`; a file a worker still holds open (a cancelled conversion) is retried briefly.
export async function opfsDelete(name) {
  const dir = await root();
  for (let i = 0; ; i++) {
    try {
      await dir.removeEntry(name);
      return;
    } catch (e) {
      if (e && e.name === "NotFoundError") return;
      if (i >= 20) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

// [{name, size, modified}] of every stored file.
export async function opfsList() {
  const out = [];
  for await (const [name, h] of (await root()).entries()) {
    if (h.kind !== "file") continue;
    const f = await h.getFile();
    out.push({ name, size: f.size, modified: f.lastModified });
  }
  return out;
}

// SHA-256 (hex) of stored file `name`, read in slices (the browser tests compare it with
// `brivl convert`'s output).
export async function opfsSha256Slices(name) {
  const f = await opfsFile(name);
  if (!f) return null;
  return hex(await crypto.subtle.digest("SHA-256", await f.arrayBuffer()));
}

function hex(buf) {
  return [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// {usage, quota, persisted} of this origin's storage (zeros where the browser does not say).
export async function storageInfo() {
  const s = navigator.storage;
  const est = s && s.estimate ? await s.estimate() : {};
  const persisted = s && s.persisted ? await s.persisted() : false;
  return { usage: est.usage || 0, quota: est.quota || 0, persisted };
}

// Asks the browser to keep this origin's storage under pressure; whether it agreed.
export async function requestPersist() {
  const s = navigator.storage;
  if (!s || !s.persist) return false;
  try {
    return await s.persist();
  } catch {
    return false;
  }
}
