//! Bindings to `app/web/js/store.js`: IndexedDB (the index), folder
//! handles and traversal, hashing, which are plainest in the browser's own promise APIs.

use brivl_core::model_id::ModelId;
use js_sys::{Array, Function, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(module = "/js/store.js")]
extern "C" {
    #[wasm_bindgen(js_name = collectDropped)]
    pub fn collect_dropped(dt: &web_sys::DataTransfer) -> Promise;
    #[wasm_bindgen(js_name = filesFromInput)]
    pub fn files_from_input(list: &web_sys::FileList) -> Array;
    #[wasm_bindgen(js_name = hasFolderHandles)]
    pub fn has_folder_handles() -> bool;
    #[wasm_bindgen(js_name = pickFolder)]
    fn pick_folder_js() -> Promise;
    #[wasm_bindgen(js_name = enqueue)]
    fn enqueue_js(handles: &Array, files: &Array, max_bytes: f64, sniff_bytes: u32, is_photo: &Function) -> Promise;
    #[wasm_bindgen(js_name = nextBatch)]
    fn next_batch_js(count: u32, max_bytes: f64, skip: &Array) -> Promise;
    #[wasm_bindgen(js_name = unreachable)]
    fn unreachable_js() -> Promise;
    #[wasm_bindgen(js_name = rootsNeedingPermission)]
    fn roots_needing_permission_js() -> Promise;
    #[wasm_bindgen(js_name = allowRoots)]
    fn allow_roots_js() -> Promise;
    #[wasm_bindgen(js_name = beginAttempt)]
    fn begin_attempt_js(keys: &Array) -> Promise;
    #[wasm_bindgen(js_name = indexLock)]
    fn index_lock_js(wait: bool) -> Promise;
    #[wasm_bindgen(js_name = queueCount)]
    fn queue_count_js() -> Promise;
    #[wasm_bindgen(js_name = commitBatch)]
    fn commit_batch_js(items: &Array, model: &str, dim: u32) -> Promise;
    #[wasm_bindgen(js_name = reembedBatch)]
    fn reembed_batch_js(hashes: &Array, max_bytes: f64) -> Promise;
    #[wasm_bindgen(js_name = commitVectors)]
    fn commit_vectors_js(items: &Array, model: &str, dim: u32) -> Promise;
    #[wasm_bindgen(js_name = finishSwitch)]
    fn finish_switch_js(model: &str, dim: u32) -> Promise;
    #[wasm_bindgen(js_name = listPhotos)]
    fn list_photos_js() -> Promise;
    #[wasm_bindgen(js_name = thumbUrl)]
    fn thumb_url_js(hash: &str) -> Promise;
    #[wasm_bindgen(js_name = originalUrl)]
    fn original_url_js(hash: &str) -> Promise;
    #[wasm_bindgen(js_name = listFailures)]
    fn list_failures_js() -> Promise;
    #[wasm_bindgen(js_name = clearStores)]
    fn clear_stores_js(names: &Array) -> Promise;
    #[wasm_bindgen(js_name = getMeta)]
    fn get_meta_js(key: &str) -> Promise;
    #[wasm_bindgen(js_name = setMeta)]
    fn set_meta_js(key: &str, value: &JsValue) -> Promise;
    #[wasm_bindgen(js_name = fillSynthetic)]
    pub fn fill_synthetic_js(n: u32, model: &str, dim: u32, make: &Function, thumb: &Uint8Array) -> Promise;
    #[wasm_bindgen(js_name = dropOldModelCache)]
    pub fn drop_old_model_cache() -> Promise;
    #[wasm_bindgen(js_name = fetchBytes)]
    fn fetch_bytes_js(path: &str) -> Promise;
    #[wasm_bindgen(js_name = fetchText)]
    fn fetch_text_js(path: &str) -> Promise;
    #[wasm_bindgen(js_name = demoFiles)]
    pub fn demo_files() -> Promise;
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

/// What `enqueue` did with the files it was given.
pub struct Enqueued {
    pub queued: u32,
    /// Names already indexed or queued.
    pub known: u32,
    /// Files that are not photos at all (by their first bytes), left out.
    pub not_photos: Vec<String>,
    pub too_large: Vec<String>,
}

/// Queues the files under folder `handles` (kept, read in place later) and the loose `files`
/// (`{file, path}` objects, held for this visit). A file is sniffed first (its first
/// `SNIFF_BYTES`, the same test as the desktop indexer's): one that is not a photo is counted,
/// not read; nothing else is read until the file is embedded.
pub async fn enqueue(handles: &Array, files: &Array, max_bytes: f64) -> JsResult<Enqueued> {
    use brivl_engine::photo::{looks_like_photo, SNIFF_BYTES};
    let is_photo = Closure::<dyn Fn(Uint8Array) -> bool>::new(|head: Uint8Array| looks_like_photo(&head.to_vec()));
    let r = wait(enqueue_js(handles, files, max_bytes, SNIFF_BYTES as u32, is_photo.as_ref().unchecked_ref())).await;
    drop(is_photo);
    let r = r?;
    Ok(Enqueued {
        queued: get(&r, "queued").as_f64().unwrap_or(0.0) as u32,
        known: get(&r, "known").as_f64().unwrap_or(0.0) as u32,
        not_photos: Array::from(&get(&r, "notPhotos")).iter().filter_map(|v| v.as_string()).collect(),
        too_large: Array::from(&get(&r, "tooLarge")).iter().map(|v| get_str(&v, "name")).collect(),
    })
}

/// A folder the user picks (a handle), or `None` when they close the picker.
pub async fn pick_folder() -> JsResult<Option<JsValue>> {
    let h = wait(pick_folder_js()).await?;
    Ok((!h.is_null()).then_some(h))
}

/// A queued file, read: its content hash and bytes, or why it could not be read.
pub struct Queued {
    pub key: String,
    pub names: Vec<String>,
    pub read: Result<Read, String>,
}

pub struct Read {
    pub hash: String,
    pub bytes: Uint8Array,
    /// The content is indexed already.
    pub known: bool,
    /// The File itself when it has no folder handle (shown large during this visit).
    pub file: Option<web_sys::File>,
}

/// The next queued files that this visit can read, oldest first: up to `count` files or
/// `max_bytes`, leaving out the keys in `skip` (in flight).
pub async fn next_batch(count: u32, max_bytes: f64, skip: &[String]) -> JsResult<Vec<Queued>> {
    let skip: Array = skip.iter().map(|k| JsValue::from(k.as_str())).collect();
    queued(&wait(next_batch_js(count, max_bytes, &skip)).await?)
}

/// Stored photos (by content hash) read again to embed them with another model: from the
/// original through its folder when allowed and unchanged, else from the stored thumbnail. At
/// most `max_bytes` in all.
pub async fn reembed_batch(hashes: &[String], max_bytes: f64) -> JsResult<Vec<Queued>> {
    let hashes: Array = hashes.iter().map(|k| JsValue::from(k.as_str())).collect();
    queued(&wait(reembed_batch_js(&hashes, max_bytes)).await?)
}

fn queued(r: &JsValue) -> JsResult<Vec<Queued>> {
    Ok(Array::from(r)
        .iter()
        .map(|v| {
            let error = get(&v, "error");
            let read = match error.as_string() {
                Some(e) => Err(e),
                None => Ok(Read {
                    hash: get_str(&v, "hash"),
                    bytes: get(&v, "bytes").unchecked_into(),
                    known: get(&v, "known").as_bool().unwrap_or(false),
                    file: get(&v, "file").dyn_into().ok(),
                }),
            };
            Queued { key: get_str(&v, "key"), names: get_names(&v), read }
        })
        .collect())
}

/// Queued files this visit cannot read (added without a folder handle before a reload).
pub async fn unreachable() -> JsResult<Vec<String>> {
    Ok(Array::from(&wait(unreachable_js()).await?).iter().filter_map(|v| v.as_string()).collect())
}

/// Names of the folders whose read permission must be asked again.
pub async fn roots_needing_permission() -> JsResult<Vec<String>> {
    Ok(Array::from(&wait(roots_needing_permission_js()).await?).iter().map(|v| get_str(&v, "name")).collect())
}

/// Asks for those folders again (from a click); how many were granted.
pub async fn allow_roots() -> JsResult<u32> {
    Ok(wait(allow_roots_js()).await?.as_f64().unwrap_or(0.0) as u32)
}

/// How many times work on each queued file started before (this start is counted).
pub async fn begin_attempt(keys: &[String]) -> JsResult<Vec<u32>> {
    let arr: Array = keys.iter().map(|k| JsValue::from(k.as_str())).collect();
    Ok(Array::from(&wait(begin_attempt_js(&arr)).await?).iter().map(|v| v.as_f64().unwrap_or(0.0) as u32).collect())
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

/// A stored photo's metadata.
pub struct StoredPhoto {
    pub hash: String,
    pub names: Vec<String>,
    /// The model that made its embedding.
    pub model: ModelId,
    /// The second model whose embedding is kept beside it (while the index moves to it).
    pub next: Option<ModelId>,
    /// Its original is read through a folder handle.
    pub in_place: bool,
}

fn stored_photo(r: &JsValue) -> StoredPhoto {
    StoredPhoto {
        hash: get_str(r, "hash"),
        names: get_names(r),
        model: ModelId { hash: get_str(r, "model"), dim: get(r, "dim").as_f64().unwrap_or(0.0) as usize },
        next: get(r, "next")
            .as_string()
            .map(|hash| ModelId { hash, dim: get(r, "next_dim").as_f64().unwrap_or(0.0) as usize }),
        in_place: get(r, "root").as_string().is_some(),
    }
}

/// What a batch commits for one queued file.
pub enum Outcome {
    /// A new photo: its int8 vector, thumbnail and size.
    New {
        hash: String,
        code: Vec<i8>,
        scale: f32,
        thumb: Uint8Array,
        width: u32,
        height: u32,
    },
    /// Content already indexed: only the names are added.
    Known {
        hash: String,
    },
    Failed {
        reason: String,
    },
}

/// Stores a batch in one transaction and takes its files off the queue; returns the photo
/// records written (new ones and renamed ones).
pub async fn commit_batch(items: &[(String, Vec<String>, Outcome)], model: &ModelId) -> JsResult<Vec<StoredPhoto>> {
    let arr = Array::new();
    for (key, names, outcome) in items {
        let o = js_sys::Object::new();
        let set = |k: &str, v: &JsValue| {
            let _ = js_sys::Reflect::set(&o, &k.into(), v);
        };
        set("key", &key.as_str().into());
        set("names", &names.iter().map(|n| JsValue::from(n.as_str())).collect::<Array>());
        match outcome {
            Outcome::New { hash, code, scale, thumb, width, height } => {
                set("hash", &hash.as_str().into());
                set("code", &js_sys::Int8Array::from(code.as_slice()));
                set("scale", &(*scale).into());
                set("thumb", thumb);
                set("width", &(*width).into());
                set("height", &(*height).into());
                // Where the original lives: `root/path` keys come from folder handles.
                if let Some((root, _)) = key.split_once('/').filter(|(r, _)| *r != "visit") {
                    set("root", &root.into());
                    set("path", &names.first().map(String::as_str).unwrap_or("").into());
                }
            }
            Outcome::Known { hash } => set("hash", &hash.as_str().into()),
            Outcome::Failed { reason } => set("reason", &reason.as_str().into()),
        }
        arr.push(&o);
    }
    let r = wait(commit_batch_js(&arr, &model.hash, model.dim as u32)).await?;
    Ok(Array::from(&r).iter().map(|r| stored_photo(&r)).collect())
}

/// Stores the vectors of `model` made again for indexed photos (one transaction), beside those
/// of the model the index was built with; a photo that could not be embedded leaves the index and
/// is listed as failed. Returns the photo records written.
pub async fn commit_vectors(items: &[(String, Outcome)], model: &ModelId) -> JsResult<Vec<StoredPhoto>> {
    let arr = Array::new();
    for (hash, outcome) in items {
        let o = js_sys::Object::new();
        let set = |k: &str, v: &JsValue| {
            let _ = js_sys::Reflect::set(&o, &k.into(), v);
        };
        set("hash", &hash.as_str().into());
        match outcome {
            Outcome::New { code, scale, .. } => {
                set("code", &js_sys::Int8Array::from(code.as_slice()));
                set("scale", &(*scale).into());
            }
            Outcome::Failed { reason } => set("reason", &reason.as_str().into()),
            Outcome::Known { .. } => continue,
        }
        arr.push(&o);
    }
    let r = wait(commit_vectors_js(&arr, &model.hash, model.dim as u32)).await?;
    Ok(Array::from(&r).iter().map(|r| stored_photo(&r)).collect())
}

/// Every photo has a vector of `model`: the index becomes its, the other model's vectors go.
pub async fn finish_switch(model: &ModelId) -> JsResult<()> {
    wait(finish_switch_js(&model.hash, model.dim as u32)).await.map(drop)
}

pub async fn list_photos() -> JsResult<Vec<StoredPhoto>> {
    Ok(Array::from(&wait(list_photos_js()).await?).iter().map(|r| stored_photo(&r)).collect())
}

/// The thumbnail of a stored photo as an object URL.
pub async fn thumb_url(hash: &str) -> JsResult<Option<String>> {
    Ok(wait(thumb_url_js(hash)).await?.as_string())
}

/// The original of a stored photo as an object URL, read through its folder handle.
pub async fn original_url(hash: &str) -> JsResult<Option<String>> {
    Ok(wait(original_url_js(hash)).await?.as_string())
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

pub async fn delete_meta(key: &str) -> JsResult<()> {
    wait(set_meta_js(key, &JsValue::NULL)).await.map(drop)
}

/// GETs a same-origin path as bytes.
pub async fn fetch_bytes(path: &str) -> JsResult<Uint8Array> {
    Ok(wait(fetch_bytes_js(path)).await?.unchecked_into())
}

pub async fn fetch_text(path: &str) -> JsResult<String> {
    Ok(wait(fetch_text_js(path)).await?.as_string().unwrap_or_default())
}
