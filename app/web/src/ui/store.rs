//! Bindings to `app/web/js/store.js`: IndexedDB (the index), Cache Storage (model files), folder
//! traversal and hashing, which are plainest in the browser's own promise APIs.

use brivl_core::model_id::ModelId;
use js_sys::{Array, Float32Array, Function, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(module = "/js/store.js")]
extern "C" {
    #[wasm_bindgen(js_name = sha256Hex)]
    fn sha256_hex_js(bytes: &Uint8Array) -> Promise;
    #[wasm_bindgen(js_name = collectDropped)]
    pub fn collect_dropped(dt: &web_sys::DataTransfer) -> Promise;
    #[wasm_bindgen(js_name = filesFromInput)]
    pub fn files_from_input(list: &web_sys::FileList) -> Array;
    #[wasm_bindgen(js_name = enqueueFiles)]
    fn enqueue_files_js(files: &Array, max_bytes: f64, sniff_bytes: u32, is_photo: &Function) -> Promise;
    #[wasm_bindgen(js_name = beginAttempt)]
    fn begin_attempt_js(hash: &str) -> Promise;
    #[wasm_bindgen(js_name = indexLock)]
    fn index_lock_js(wait: bool) -> Promise;
    #[wasm_bindgen(js_name = nextQueued)]
    fn next_queued_js() -> Promise;
    #[wasm_bindgen(js_name = queueCount)]
    fn queue_count_js() -> Promise;
    #[wasm_bindgen(js_name = commitPhoto)]
    fn commit_photo_js(
        hash: &str,
        emb: &Float32Array,
        thumb: &Uint8Array,
        w: u32,
        h: u32,
        model: &str,
        dim: u32,
    ) -> Promise;
    #[wasm_bindgen(js_name = commitFailure)]
    fn commit_failure_js(hash: &str, reason: &str) -> Promise;
    #[wasm_bindgen(js_name = listPhotos)]
    fn list_photos_js() -> Promise;
    #[wasm_bindgen(js_name = listFailures)]
    fn list_failures_js() -> Promise;
    #[wasm_bindgen(js_name = clearStores)]
    fn clear_stores_js(names: &Array) -> Promise;
    #[wasm_bindgen(js_name = getMeta)]
    fn get_meta_js(key: &str) -> Promise;
    #[wasm_bindgen(js_name = setMeta)]
    fn set_meta_js(key: &str, value: &JsValue) -> Promise;
    #[wasm_bindgen(js_name = cacheGet)]
    fn cache_get_js(key: &str) -> Promise;
    #[wasm_bindgen(js_name = cachePut)]
    fn cache_put_js(key: &str, bytes: &Uint8Array) -> Promise;
    #[wasm_bindgen(js_name = cacheDelete)]
    fn cache_delete_js(key: &str) -> Promise;
    #[wasm_bindgen(js_name = fetchBytes)]
    fn fetch_bytes_js(path: &str, on_progress: &Function) -> Promise;
    #[wasm_bindgen(js_name = fetchText)]
    fn fetch_text_js(path: &str) -> Promise;
    #[wasm_bindgen(js_name = demoFiles)]
    pub fn demo_files() -> Promise;
    #[wasm_bindgen(js_name = fileBytes)]
    fn file_bytes_js(file: &web_sys::File) -> Promise;
    #[wasm_bindgen(js_name = registerServiceWorker)]
    pub fn register_service_worker();
}

pub type JsResult<T> = Result<T, String>;

pub fn js_err(e: JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

use wasm_bindgen::JsCast;

pub async fn wait(p: Promise) -> JsResult<JsValue> {
    JsFuture::from(p).await.map_err(js_err)
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    js_sys::Reflect::get(obj, &key.into()).unwrap_or(JsValue::UNDEFINED)
}

fn get_str(obj: &JsValue, key: &str) -> String {
    get(obj, key).as_string().unwrap_or_default()
}

fn get_names(obj: &JsValue) -> Vec<String> {
    Array::from(&get(obj, "names")).iter().filter_map(|v| v.as_string()).collect()
}

pub async fn sha256_hex(bytes: &Uint8Array) -> JsResult<String> {
    Ok(wait(sha256_hex_js(bytes)).await?.as_string().unwrap_or_default())
}

pub struct Enqueued {
    pub queued: u32,
    pub duplicates: u32,
    /// Files that are not photos at all (by their first bytes), left out.
    pub not_photos: Vec<String>,
    pub too_large: Vec<String>,
    /// Every file hashed, with its content hash (for showing originals during this session).
    pub seen: Vec<(String, web_sys::File)>,
}

/// `files` holds `{file, path}` objects (from `collect_dropped` or `files_from_input`). A file is
/// sniffed first (its first `SNIFF_BYTES`, the same test as the desktop indexer's): one that is
/// not a photo is counted, not read.
pub async fn enqueue_files(files: &Array, max_bytes: f64) -> JsResult<Enqueued> {
    use brivl_engine::photo::{looks_like_photo, SNIFF_BYTES};
    let is_photo = Closure::<dyn Fn(Uint8Array) -> bool>::new(|head: Uint8Array| looks_like_photo(&head.to_vec()));
    let r = wait(enqueue_files_js(files, max_bytes, SNIFF_BYTES as u32, is_photo.as_ref().unchecked_ref())).await;
    drop(is_photo);
    let r = r?;
    Ok(Enqueued {
        queued: get(&r, "queued").as_f64().unwrap_or(0.0) as u32,
        duplicates: get(&r, "duplicates").as_f64().unwrap_or(0.0) as u32,
        not_photos: Array::from(&get(&r, "notPhotos")).iter().filter_map(|v| v.as_string()).collect(),
        too_large: Array::from(&get(&r, "tooLarge")).iter().map(|v| get_str(&v, "name")).collect(),
        seen: Array::from(&get(&r, "seen"))
            .iter()
            .map(|v| (get_str(&v, "hash"), get(&v, "file").unchecked_into()))
            .collect(),
    })
}

pub struct Queued {
    pub hash: String,
    pub names: Vec<String>,
    pub bytes: Uint8Array,
}

pub async fn next_queued() -> JsResult<Option<Queued>> {
    let r = wait(next_queued_js()).await?;
    if r.is_null() || r.is_undefined() {
        return Ok(None);
    }
    Ok(Some(Queued { hash: get_str(&r, "hash"), names: get_names(&r), bytes: get(&r, "bytes").unchecked_into() }))
}

/// How many times work on the queued photo started before (this start is counted).
pub async fn begin_attempt(hash: &str) -> JsResult<u32> {
    Ok(wait(begin_attempt_js(hash)).await?.as_f64().unwrap_or(0.0) as u32)
}

/// The indexing lock (one tab indexes at a time): a function that releases it, or `None` when
/// another tab holds it and `wait` is false.
pub async fn index_lock(wait_for_it: bool) -> JsResult<Option<Function>> {
    let r = wait(index_lock_js(wait_for_it)).await?;
    Ok(r.dyn_into::<Function>().ok())
}

pub async fn queue_count() -> JsResult<usize> {
    Ok(wait(queue_count_js()).await?.as_f64().unwrap_or(0.0) as usize)
}

/// A stored photo as the UI keeps it in memory.
pub struct StoredPhoto {
    pub hash: String,
    pub names: Vec<String>,
    pub embedding: Vec<f32>,
    /// The model that made the embedding (records from before it was stored: their width).
    pub model: ModelId,
    pub thumb: web_sys::Blob,
}

fn stored_photo(r: &JsValue) -> StoredPhoto {
    let embedding = Float32Array::new(&get(r, "embedding")).to_vec();
    let dim = get(r, "dim").as_f64().map(|d| d as usize).unwrap_or(embedding.len());
    StoredPhoto {
        hash: get_str(r, "hash"),
        names: get_names(r),
        model: ModelId { hash: get_str(r, "model"), dim },
        embedding,
        thumb: get(r, "thumb").unchecked_into(),
    }
}

/// Stores an embedded photo and takes it off the queue (one transaction); returns the record.
pub async fn commit_photo(
    hash: &str,
    embedding: &[f32],
    thumb: &Uint8Array,
    width: u32,
    height: u32,
    model: &ModelId,
) -> JsResult<StoredPhoto> {
    let emb = Float32Array::from(embedding);
    let r = wait(commit_photo_js(hash, &emb, thumb, width, height, &model.hash, model.dim as u32)).await?;
    Ok(stored_photo(&r))
}

pub async fn commit_failure(hash: &str, reason: &str) -> JsResult<()> {
    wait(commit_failure_js(hash, reason)).await.map(drop)
}

pub async fn list_photos() -> JsResult<Vec<StoredPhoto>> {
    Ok(Array::from(&wait(list_photos_js()).await?).iter().map(|r| stored_photo(&r)).collect())
}

/// Files that could not be indexed: (names, reason).
pub async fn list_failures() -> JsResult<Vec<(Vec<String>, String)>> {
    Ok(Array::from(&wait(list_failures_js()).await?).iter().map(|r| (get_names(&r), get_str(&r, "reason"))).collect())
}

pub async fn clear_stores(names: &[&str]) -> JsResult<()> {
    let arr: Array = names.iter().map(|n| JsValue::from(*n)).collect();
    wait(clear_stores_js(&arr)).await.map(drop)
}

pub async fn get_meta(key: &str) -> JsResult<Option<String>> {
    Ok(wait(get_meta_js(key)).await?.as_string())
}

pub async fn set_meta(key: &str, value: &str) -> JsResult<()> {
    wait(set_meta_js(key, &value.into())).await.map(drop)
}

pub async fn cache_get(key: &str) -> JsResult<Option<Uint8Array>> {
    let r = wait(cache_get_js(key)).await?;
    Ok(if r.is_null() { None } else { Some(r.unchecked_into()) })
}

pub async fn cache_put(key: &str, bytes: &Uint8Array) -> JsResult<()> {
    wait(cache_put_js(key, bytes)).await.map(drop)
}

pub async fn cache_delete(key: &str) -> JsResult<()> {
    wait(cache_delete_js(key)).await.map(drop)
}

/// GETs a same-origin path, calling `progress(received, total)` as bytes arrive.
pub async fn fetch_bytes(path: &str, progress: impl FnMut(f64, f64) + 'static) -> JsResult<Uint8Array> {
    let cb = Closure::<dyn FnMut(f64, f64)>::new(progress);
    let r = wait(fetch_bytes_js(path, cb.as_ref().unchecked_ref())).await;
    drop(cb);
    Ok(r?.unchecked_into())
}

pub async fn fetch_text(path: &str) -> JsResult<String> {
    Ok(wait(fetch_text_js(path)).await?.as_string().unwrap_or_default())
}

pub async fn file_bytes(file: &web_sys::File) -> JsResult<Uint8Array> {
    Ok(wait(file_bytes_js(file)).await?.unchecked_into())
}
