// The origin private file system (OPFS), from the page: every model kept on the device lives here
// as a file (converted, dropped, and the site's in use; the workers write them with sync access
// handles and read them in slices).

async function root() {
  if (!navigator.storage || !navigator.storage.getDirectory) {
    throw new Error("this browser gives the page no private file system (OPFS) to keep models in");
  }
  return navigator.storage.getDirectory();
}

// The stored file `name` (a File), or null.
async function opfsFile(name) {
  try {
    const h = await (await root()).getFileHandle(name);
    return await h.getFile();
  } catch (e) {
    if (e && e.name === "NotFoundError") return null;
    throw e;
  }
}

// Whether `name` is stored.
export async function opfsExists(name) {
  return (await opfsFile(name)) !== null;
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
