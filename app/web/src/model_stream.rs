//! A model file coming into the engine worker, never whole in the page nor in the worker's
//! memory: a file of the origin private file system read in slices (`ModelFile::from_reader`:
//! verified reading one slice at a time, each tensor read again when the engine loads it), or the
//! site's model downloaded here into OPFS and then read the same way. A wrong download is refused
//! once its header is in.

use std::cell::Cell;

use brivl_engine::model_file::{ModelFile, ModelHeader, WriteAt};
use js_sys::Uint8Array;
use sha2::{Digest, Sha256};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{DedicatedWorkerGlobalScope, File, FileSystemFileHandle, ReadableStreamDefaultReader};

use crate::convert_worker::{js_message, opfs_root, FileSlices, OpfsFile};
use crate::protocol::{Download, Reply};

/// At most this often a `LoadProgress` reply (ms).
const PROGRESS_MS: f64 = 100.0;

/// A model `File` the user gave, verified and read in slices as the engine loads it.
pub fn read_file(file: File) -> Result<ModelFile<'static>, String> {
    ModelFile::from_reader(FileSlices::new(file)?).map_err(|e| e.to_string())
}

/// OPFS file `name`, verified and read in slices as the engine loads it.
pub async fn read_opfs(scope: &DedicatedWorkerGlobalScope, name: &str) -> Result<ModelFile<'static>, String> {
    let root = opfs_root(scope).await?;
    let handle: FileSystemFileHandle = JsFuture::from(root.get_file_handle(name))
        .await
        .map_err(|e| format!("the model file {name} is not on this device any more: {}", js_message(e)))?
        .unchecked_into();
    let file: File = JsFuture::from(handle.get_file()).await.map_err(js_message)?.unchecked_into();
    read_file(file)
}

/// The site's model: fetched here, its SHA-256 checked against `models.json`'s, written to OPFS
/// file `d.keep_as` as it arrives (removed again if anything is wrong), with progress.
pub async fn download(
    scope: &DedicatedWorkerGlobalScope,
    d: &Download,
    progress: impl Fn(Reply),
) -> Result<ModelFile<'static>, String> {
    let root = opfs_root(scope).await?;
    let created = Cell::new(false);
    let result = download_into(scope, &root, d, &created, progress).await;
    if result.is_err() && created.get() {
        let _ = JsFuture::from(root.remove_entry(&d.keep_as)).await;
    }
    result
}

async fn download_into(
    scope: &DedicatedWorkerGlobalScope,
    root: &web_sys::FileSystemDirectoryHandle,
    d: &Download,
    created: &Cell<bool>,
    progress: impl Fn(Reply),
) -> Result<ModelFile<'static>, String> {
    let init = web_sys::RequestInit::new();
    init.set_cache(web_sys::RequestCache::NoCache);
    let response: web_sys::Response = JsFuture::from(scope.fetch_with_str_and_init(&d.path, &init))
        .await
        .map_err(|e| format!("{}: {}", d.path, js_message(e)))?
        .unchecked_into();
    if !response.ok() {
        return Err(format!("{}: HTTP {}", d.path, response.status()));
    }
    // The manifest's size bounds the download (and is its progress' total): Content-Length may
    // be the compressed size, where a host compresses the file on the way.
    let total = d.bytes;
    let body = response.body().ok_or_else(|| format!("{}: the response has no body", d.path))?;
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut out = OpfsFile::create(root, &d.keep_as, created).await?;
    // A wrong file is refused once its header is in, before the rest comes.
    let mut header = ModelHeader::new(d.bytes as u64);
    let mut received = 0u64;
    let mut sha = Sha256::new();
    let mut reported = 0.0;
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| format!("{}: {}", d.path, js_message(e)))?;
        let get = |k: &str| js_sys::Reflect::get(&chunk, &k.into()).unwrap_or_default();
        if get("done").as_bool().unwrap_or(true) {
            break;
        }
        let bytes = get("value").unchecked_into::<Uint8Array>().to_vec();
        if received + bytes.len() as u64 > d.bytes as u64 {
            return Err(format!("{}: longer than the {} bytes models.json gives", d.path, d.bytes));
        }
        out.write_all_at(received, &bytes).map_err(|e| e.to_string())?;
        sha.update(&bytes);
        header.push(&bytes).map_err(|e| e.to_string())?;
        received += bytes.len() as u64;
        let now = js_sys::Date::now();
        if now - reported >= PROGRESS_MS {
            reported = now;
            progress(Reply::LoadProgress { received: received as f64, total });
        }
    }
    let got: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if got != d.sha256 {
        return Err(format!("SHA-256 {got} differs from models.json's {} (corrupt or replaced download)", d.sha256));
    }
    progress(Reply::LoadProgress { received: received as f64, total: received as f64 });
    out.flush()?;
    // Closed (its lock released), then verified and loaded from OPFS like a kept model.
    drop(out);
    read_opfs(scope, &d.keep_as).await
}
