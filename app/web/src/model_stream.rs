//! A model file coming into the engine worker as a stream, never whole in the page: a file of
//! the origin private file system read in slices, or the site's model downloaded here and kept in
//! OPFS as it arrives. Either way its bytes go once into one buffer of the file's size
//! (`ModelStream`), the content hash is computed as each tensor's bytes come in, and a wrong file
//! is refused once its header is in.

use std::cell::Cell;

use brivl_engine::checkpoint::ReadAt;
use brivl_engine::model_file::{ModelFile, ModelStream, WriteAt};
use js_sys::Uint8Array;
use sha2::{Digest, Sha256};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{DedicatedWorkerGlobalScope, File, FileSystemFileHandle, ReadableStreamDefaultReader};

use crate::convert_worker::{js_message, opfs_root, FileSlices, OpfsFile};
use crate::protocol::{Download, Reply};

/// Bytes read from OPFS at once.
const PIECE: usize = 4 << 20;

/// At most this often a `LoadProgress` reply (ms).
const PROGRESS_MS: f64 = 100.0;

/// OPFS file `name`, read in slices into a `ModelStream`.
pub async fn read_opfs(scope: &DedicatedWorkerGlobalScope, name: &str) -> Result<ModelFile<'static>, String> {
    let root = opfs_root(scope).await?;
    let handle: FileSystemFileHandle = JsFuture::from(root.get_file_handle(name))
        .await
        .map_err(|e| format!("the model file {name} is not on this device any more: {}", js_message(e)))?
        .unchecked_into();
    let file: File = JsFuture::from(handle.get_file()).await.map_err(js_message)?.unchecked_into();
    let slices = FileSlices::new(file)?;
    let size = slices.size();
    let mut stream = ModelStream::new(size);
    let mut piece = vec![0u8; PIECE];
    let mut at = 0u64;
    while at < size {
        let n = PIECE.min((size - at) as usize);
        slices.read_exact_at(at, &mut piece[..n])?;
        stream.push(&piece[..n]).map_err(|e| e.to_string())?;
        at += n as u64;
    }
    drop(piece);
    stream.finish().map_err(|e| e.to_string())
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
    let mut stream = ModelStream::new(d.bytes as u64);
    let mut sha = Sha256::new();
    let mut reported = 0.0;
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| format!("{}: {}", d.path, js_message(e)))?;
        let get = |k: &str| js_sys::Reflect::get(&chunk, &k.into()).unwrap_or_default();
        if get("done").as_bool().unwrap_or(true) {
            break;
        }
        let bytes = get("value").unchecked_into::<Uint8Array>().to_vec();
        out.write_all_at(stream.received(), &bytes).map_err(|e| e.to_string())?;
        sha.update(&bytes);
        stream.push(&bytes).map_err(|e| e.to_string())?;
        let now = js_sys::Date::now();
        if now - reported >= PROGRESS_MS {
            reported = now;
            progress(Reply::LoadProgress { received: stream.received() as f64, total });
        }
    }
    let got: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if got != d.sha256 {
        return Err(format!("SHA-256 {got} differs from models.json's {} (corrupt or replaced download)", d.sha256));
    }
    progress(Reply::LoadProgress { received: stream.received() as f64, total: stream.received() as f64 });
    let file = stream.finish().map_err(|e| e.to_string())?;
    out.flush()?;
    Ok(file)
}
