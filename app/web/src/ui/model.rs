//! Getting the model into the worker: from the site's `models/` (listed in `models/models.json`
//! with size and SHA-256), from a file the user drops, or from a checkpoint converted in the page
//! (`models.rs`). Every model in use is kept in the origin private file system (the site's is
//! downloaded there by the engine worker itself, `crate::model_stream`), so a second visit needs
//! no download or conversion and works offline.

use std::rc::Rc;

use brivl_core::model_id::ModelId;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;

use super::engine::{engine, Engine};
use super::models::{self, ModelEntry};
use super::state::{ModelStatus, ReadyModel, State};
use super::{indexer, store};
use crate::protocol::{Download, LoadFrom, Reply, Request};

/// A worker that has not loaded a model after this long is taken as stuck (stopped, the load
/// refused with the reason): generous, since the full-size model's pipelines compile on a slow
/// adapter during the load.
const LOAD_LIMIT_MS: Option<f64> = Some(600_000.0);

/// One entry of `models/models.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiteModel {
    pub file: String,
    pub bytes: f64,
    pub sha256: String,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    models: Vec<SiteModel>,
}

/// The model last used, remembered in localStorage so the next visit loads it from the cache
/// (offline included). `key` is where it is kept (`opfs:<file>`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Remembered {
    key: String,
    name: String,
    bytes: f64,
    sha256: String,
    from_site: bool,
}

const REMEMBER: &str = "brivl.model";

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

fn remembered() -> Option<Remembered> {
    serde_json::from_str(&local_storage()?.get_item(REMEMBER).ok()??).ok()
}

fn remember(r: &Remembered) {
    if let Some(ls) = local_storage() {
        let _ = ls.set_item(REMEMBER, &serde_json::to_string(r).expect("serialises"));
    }
}

/// `?backend=cpu` in the address runs the CPU path even where WebGPU exists.
fn prefer_gpu() -> bool {
    let search = web_sys::window().and_then(|w| w.location().search().ok()).unwrap_or_default();
    !search.contains("backend=cpu")
}

/// The start-up load: the model used last time if it is still cached, else the site's default.
pub async fn load_startup(s: State) {
    let manifest = match store::fetch_text("models/models.json").await {
        Ok(text) => serde_json::from_str::<Manifest>(&text).ok(),
        Err(_) => None,
    };
    let site = manifest.and_then(|m| m.models.into_iter().next());
    if let Some(r) = remembered() {
        // A dropped model stays the user's choice; a site model while the site still lists it, or
        // when the site cannot be reached (offline).
        let current = !r.from_site || site.as_ref().is_none_or(|m| m.sha256 == r.sha256);
        if current && from_cache(s, &r).await {
            return;
        }
    }
    match site {
        Some(m) => load_site(s, m).await,
        None => s.model.set(ModelStatus::Idle),
    }
}

/// Back to the site's default model after a dropped one.
pub async fn use_site_model(s: State) {
    if let Some(ls) = local_storage() {
        let _ = ls.remove_item(REMEMBER);
    }
    load_startup(s).await;
}

/// Loads `r` from the origin private file system, if it is there. A site model kept there that
/// does not load (a download cut short by a closed tab) is removed, to be downloaded again.
async fn from_cache(s: State, r: &Remembered) -> bool {
    // Keys of older versions (Cache Storage paths) are not kept any more: downloaded again.
    if models::opfs_name(&r.key).is_none() || !models::model_exists(&r.key).await {
        return false;
    }
    if activate(s, r.clone(), Source::Kept, true).await || !r.from_site {
        return true;
    }
    let _ = models::delete_model_file(&r.key).await;
    false
}

/// A site model: from OPFS when it holds this version (named by its SHA-256), else downloaded by
/// the engine worker, which checks the SHA-256 against the manifest and keeps the file in OPFS as
/// it arrives.
pub async fn load_site(s: State, m: SiteModel) {
    let cached = Remembered {
        key: format!("opfs:site-{}.safetensors", &m.sha256[..m.sha256.len().min(16)]),
        name: m.file.clone(),
        bytes: m.bytes,
        sha256: m.sha256.clone(),
        from_site: true,
    };
    if from_cache(s, &cached).await {
        return;
    }
    s.model.set(ModelStatus::Downloading { name: m.file.clone(), received: 0.0, total: m.bytes });
    let download = Download {
        path: format!("models/{}", m.file),
        bytes: m.bytes,
        sha256: m.sha256.clone(),
        keep_as: models::opfs_name(&cached.key).unwrap_or_default().to_string(),
    };
    activate(s, cached, Source::Download(download), false).await;
}

/// A model file the user picked or dropped: loaded if the engine accepts it, then kept. The
/// page never reads it: the worker reads the `File` in slices, and the kept copy in OPFS is
/// written from it as a stream, named by the content hash the worker verified.
pub async fn load_file(s: State, file: web_sys::File) {
    let name = file.name();
    s.model.set(ModelStatus::Checking { name: name.clone() });
    let r = Remembered { key: String::new(), name, bytes: file.size(), sha256: String::new(), from_site: false };
    activate(s, r, Source::File(file), false).await;
}

/// A model of the device's list, loaded into the engine (a site model not kept any more is
/// downloaded again).
pub async fn load_kept(s: State, e: ModelEntry) {
    let r = Remembered {
        key: e.key.clone(),
        name: e.name.clone(),
        bytes: e.bytes,
        sha256: String::new(),
        from_site: e.origin == "site",
    };
    if r.from_site {
        return use_site_model(s).await;
    }
    if models::model_exists(&e.key).await {
        activate(s, r, Source::Kept, true).await;
    } else {
        refuse(s, &e.name, "it is no longer on this device".into());
    }
}

/// Where the worker gets a model from.
enum Source {
    /// A file the user gave, sent as a `File` (kept in OPFS once it loads).
    File(web_sys::File),
    /// The file kept under the model's key in OPFS, which the worker reads itself.
    Kept,
    /// The site's model, which the worker downloads and keeps.
    Download(Download),
}

/// Loads a model into the worker, showing a download's progress.
async fn load_into(s: State, engine: &Engine, r: &Remembered, source: Source) -> Result<Reply, String> {
    let (from, payload) = match source {
        Source::File(f) => (LoadFrom::File, Some(JsValue::from(f))),
        Source::Kept => {
            let name = models::opfs_name(&r.key).ok_or("the model file is not kept on this device")?;
            (LoadFrom::Opfs { file: name.into() }, None)
        }
        Source::Download(d) => (LoadFrom::Download(d), None),
    };
    let req = Request::Load { prefer_gpu: prefer_gpu(), from };
    let name = r.name.clone();
    let shown = move |reply| {
        if let Reply::LoadProgress { received, total } = reply {
            s.model.set(if received >= total {
                ModelStatus::Loading { name: name.clone() }
            } else {
                ModelStatus::Downloading { name: name.clone(), received, total }
            });
        }
    };
    Ok(engine.call_reporting(&req, payload, LOAD_LIMIT_MS, shown).await.map_err(String::from)?.reply)
}

/// Shows why a model was not loaded (the one in use stays); false, for `activate`.
fn refuse(s: State, name: &str, error: String) -> bool {
    let previous = s.in_use.get_untracked();
    s.model.set(ModelStatus::Refused { name: name.to_string(), error, previous });
    false
}

/// Loads the model into the worker; on success keeps dropped bytes, remembers the choice and
/// starts indexing what is queued. Whether it loaded.
async fn activate(s: State, mut r: Remembered, source: Source, from_cache: bool) -> bool {
    if !matches!(source, Source::Download(_)) {
        s.model.set(ModelStatus::Loading { name: r.name.clone() });
    }
    let to_keep = match &source {
        Source::File(f) => Some(f.clone()),
        _ => None,
    };
    let engine = match engine().await {
        Ok(e) => e,
        Err(e) => return refuse(s, &r.name, e),
    };
    let reply = match load_into(s, &engine, &r, source).await {
        Ok(a) => a,
        Err(e) => return refuse(s, &r.name, e),
    };
    let Reply::Loaded { backend, on_gpu, gpu_error, content_hash, dim, weights, image_size, memory } = reply else {
        return refuse(s, &r.name, "unexpected reply from the engine".into());
    };
    if let Some(file) = to_keep {
        r.key = format!("opfs:dropped-{}.safetensors", &content_hash[..content_hash.len().min(16)]);
        if let Err(e) = models::keep_model(&r.key, &file).await {
            web_sys::console::warn_1(&format!("brivl: model not kept: {e}").into());
        }
    }
    remember(&r);
    if r.from_site {
        models::drop_older_site_copies(&r.name, &r.key).await;
    }
    let demo = r.from_site && models::is_demo(&r.name);
    let origin = if r.from_site {
        "site"
    } else if r.key.starts_with("opfs:converted-") {
        "converted"
    } else {
        "dropped"
    };
    models::upsert(ModelEntry {
        key: r.key.clone(),
        name: r.name.clone(),
        bytes: r.bytes,
        content_hash: content_hash.clone(),
        weights: weights.unwrap_or_default(),
        image_size: image_size.unwrap_or(0),
        dim,
        demo,
        origin: origin.into(),
    });
    let id = ModelId { hash: content_hash.clone(), dim };
    *engine.loaded.borrow_mut() = Some(id.clone());
    let ready = ReadyModel {
        name: r.name,
        bytes: r.bytes,
        backend,
        on_gpu,
        gpu_note: gpu_error,
        hash: content_hash,
        dim,
        cache_key: r.key,
        from_cache,
        demo,
        worker_memory: memory,
    };
    s.in_use.set(Some(ready.clone()));
    s.model.set(ModelStatus::Ready(ready));
    indexer::adopt_model(s, id).await;
    true
}

thread_local! {
    /// Held while the model is loaded into a restarted worker, so concurrent callers share it.
    static RELOADING: Rc<futures::lock::Mutex<()>> = Rc::default();
}

/// The engine worker with the model in use loaded. A worker that died was restarted by
/// `engine()`; the model goes into the new one again from OPFS (where every model in use is
/// kept), so indexing and search go on.
pub async fn ready_engine(s: State) -> Result<Rc<Engine>, String> {
    let lock = RELOADING.with(Rc::clone);
    let _guard = lock.lock().await;
    let m = s.in_use.get_untracked().ok_or_else(|| "no model is loaded".to_string())?;
    let e = engine().await?;
    if e.loaded.borrow().as_ref() == Some(&m.id()) {
        return Ok(e);
    }
    let lost = |why: String| {
        let error = format!("the engine was restarted and the model could not be loaded again: {why}");
        s.in_use.set(None);
        s.model.set(ModelStatus::Refused { name: m.name.clone(), error: error.clone(), previous: None });
        error
    };
    if !models::model_exists(&m.cache_key).await {
        return Err(lost("it is no longer on this device; load it again".into()));
    }
    let r = Remembered {
        key: m.cache_key.clone(),
        name: m.name.clone(),
        bytes: m.bytes,
        sha256: String::new(),
        from_site: false,
    };
    let reply = load_into(s, &e, &r, Source::Kept).await.map_err(lost)?;
    match reply {
        Reply::Loaded { content_hash, dim, .. } if (ModelId { hash: content_hash.clone(), dim }) == m.id() => {
            *e.loaded.borrow_mut() = Some(m.id());
            Ok(e)
        }
        _ => Err(lost("the cached copy is not the model in use".into())),
    }
}
