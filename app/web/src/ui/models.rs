//! The models this device keeps, and converting the released checkpoint in the page.
//!
//! Converted and dropped models are files in the origin private file system (`app/web/js/opfs.js`;
//! key `opfs:<file>`), the site's model in use too (`site-<SHA-256 prefix>.safetensors`). The
//! list (name, size, weight format, image size, embedding width, origin) is kept in localStorage.
//! A conversion runs in a worker of its own (`crate::convert_worker`), so cancelling it is
//! terminating that worker; its partial file is then removed.

use std::cell::RefCell;

use js_sys::{Array, Promise};
use leptos::ev;
use leptos::html;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, Worker, WorkerOptions, WorkerType};

use super::state::{format_bytes, format_duration, now_ms, State};
use super::store::{wait, JsResult};
use crate::i18n::Key;
use crate::protocol::{ConvertOptions, Reply, Request};

#[wasm_bindgen(module = "/js/opfs.js")]
extern "C" {
    #[wasm_bindgen(js_name = opfsExists)]
    fn opfs_exists_js(name: &str) -> Promise;
    #[wasm_bindgen(js_name = opfsPut)]
    fn opfs_put_js(name: &str, data: &JsValue) -> Promise;
    #[wasm_bindgen(js_name = opfsDelete)]
    fn opfs_delete_js(name: &str) -> Promise;
    #[wasm_bindgen(js_name = opfsList)]
    fn opfs_list_js() -> Promise;
    #[wasm_bindgen(js_name = storageInfo)]
    fn storage_info_js() -> Promise;
    #[wasm_bindgen(js_name = requestPersist)]
    fn request_persist_js() -> Promise;
}

/// Where a model file is kept: `opfs:<file>` (other keys are Cache Storage paths of older
/// versions, no longer kept).
pub fn opfs_name(key: &str) -> Option<&str> {
    key.strip_prefix("opfs:")
}

/// Whether the model file kept under `key` is there.
pub async fn model_exists(key: &str) -> bool {
    match opfs_name(key) {
        Some(name) => wait(opfs_exists_js(name)).await.ok().and_then(|v| v.as_bool()).unwrap_or(false),
        None => false,
    }
}

/// Keeps `bytes` (a dropped model) under `key` in OPFS.
/// Writes `file` into OPFS under `key`, streamed (never whole in memory).
pub async fn keep_model(key: &str, file: &web_sys::Blob) -> JsResult<()> {
    let name = opfs_name(key).ok_or_else(|| format!("{key}: not a private file system key"))?;
    wait(opfs_put_js(name, file)).await.map(|_| ())
}

pub async fn delete_model_file(key: &str) -> JsResult<()> {
    match opfs_name(key) {
        Some(name) => wait(opfs_delete_js(name)).await.map(|_| ()),
        None => Ok(()),
    }
}

/// One model of the list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub key: String,
    pub name: String,
    pub bytes: f64,
    pub content_hash: String,
    /// "f32", "f16" or "q8" ("" until known).
    pub weights: String,
    pub image_size: usize,
    pub dim: usize,
    pub demo: bool,
    /// "site", "converted" or "dropped".
    pub origin: String,
}

const LIST: &str = "brivl.models";

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

pub fn entries() -> Vec<ModelEntry> {
    local_storage()
        .and_then(|ls| ls.get_item(LIST).ok().flatten())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

fn save(list: &[ModelEntry]) {
    if let Some(ls) = local_storage() {
        let _ = ls.set_item(LIST, &serde_json::to_string(list).expect("serialises"));
    }
}

thread_local! {
    /// The list as shown; set whenever the stored list changes.
    static SHOWN: RefCell<Option<RwSignal<Vec<ModelEntry>>>> = const { RefCell::new(None) };
}

fn publish(list: Vec<ModelEntry>) {
    save(&list);
    if let Some(sig) = SHOWN.with(|s| *s.borrow()) {
        sig.set(list);
    }
}

/// Adds `e`, or updates the entry with its key (a site model keeps one entry per file).
pub fn upsert(e: ModelEntry) {
    let mut list = entries();
    match list.iter_mut().find(|x| x.key == e.key) {
        Some(x) => *x = e,
        None => list.push(e),
    }
    publish(list);
}

/// Forgets the other copies of site model `name` (an older version, or an entry of an older
/// release kept elsewhere), so the device keeps one: `key`'s.
pub async fn drop_older_site_copies(name: &str, key: &str) {
    let (older, kept): (Vec<_>, Vec<_>) =
        entries().into_iter().partition(|e| e.origin == "site" && e.name == name && e.key != key);
    for e in &older {
        let _ = delete_model_file(&e.key).await;
    }
    if !older.is_empty() {
        publish(kept);
        refresh_storage();
    }
}

/// Whether the site's model `file` is the demo model (its name says so: `brivl-demo-*`).
pub fn is_demo(file: &str) -> bool {
    file.contains("demo")
}

/// Removes a model from the device. The model in use goes back to the site's.
async fn delete(s: State, e: ModelEntry) {
    let in_use = s.in_use.get_untracked().is_some_and(|m| m.cache_key == e.key);
    if let Err(err) = delete_model_file(&e.key).await {
        s.notice.set(format!("{}: {err}", e.name));
        return;
    }
    publish(entries().into_iter().filter(|x| x.key != e.key).collect());
    if in_use {
        super::model::use_site_model(s).await;
    }
    refresh_storage();
}

/// Loads a model of the list into the engine, once the user agrees when the index holds photos
/// another model embedded (they must be embedded again with this one).
async fn use_model(s: State, e: ModelEntry) {
    let others = super::indexer::lacking_count(s, &e.content_hash);
    if others > 0 {
        let question =
            format!("{others} {} {}. {}", s.t_untracked(Key::SwitchAgain), e.name, s.t_untracked(Key::SwitchUse));
        let yes = web_sys::window().and_then(|w| w.confirm_with_message(&question).ok()).unwrap_or(false);
        if !yes {
            return;
        }
    }
    super::model::load_kept(s, e).await;
}

/// Files of the private file system that no entry names and that nothing wrote for ten minutes:
/// what a tab closed during a conversion left. Removed at start-up.
pub async fn sweep_leftovers() {
    let Ok(list) = wait(opfs_list_js()).await else { return };
    let known: Vec<String> = entries().iter().filter_map(|e| opfs_name(&e.key).map(str::to_string)).collect();
    for f in list.unchecked_into::<Array>().iter() {
        let get = |k: &str| js_sys::Reflect::get(&f, &k.into()).ok();
        let name = get("name").and_then(|v| v.as_string()).unwrap_or_default();
        let modified = get("modified").and_then(|v| v.as_f64()).unwrap_or(0.0);
        if !name.is_empty() && !known.contains(&name) && now_ms() - modified > 600_000.0 {
            let _ = wait(opfs_delete_js(&name)).await;
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Storage {
    usage: f64,
    quota: f64,
    persisted: bool,
}

thread_local! {
    static STORAGE: RefCell<Option<RwSignal<Storage>>> = const { RefCell::new(None) };
}

fn refresh_storage() {
    let Some(sig) = STORAGE.with(|s| *s.borrow()) else { return };
    spawn_local(async move {
        if let Ok(v) = wait(storage_info_js()).await {
            let get = |k: &str| js_sys::Reflect::get(&v, &k.into()).ok();
            sig.set(Storage {
                usage: get("usage").and_then(|v| v.as_f64()).unwrap_or(0.0),
                quota: get("quota").and_then(|v| v.as_f64()).unwrap_or(0.0),
                persisted: get("persisted").and_then(|v| v.as_bool()).unwrap_or(false),
            });
        }
    });
}

/// The list: each model with its details, one in use, each deletable; storage used and quota.
#[component]
pub fn ModelList() -> impl IntoView {
    let s = expect_context::<State>();
    let list = RwSignal::new(entries());
    SHOWN.with(|x| *x.borrow_mut() = Some(list));
    let storage = RwSignal::new(Storage::default());
    STORAGE.with(|x| *x.borrow_mut() = Some(storage));
    spawn_local(async move {
        // Models worth gigabytes: ask the browser not to evict them under storage pressure.
        let _ = wait(request_persist_js()).await;
        refresh_storage();
    });
    let row = move |e: ModelEntry| {
        let key = e.key.clone();
        let active = Memo::new(move |_| s.in_use.with(|m| m.as_ref().is_some_and(|m| m.cache_key == key)));
        let origin = match e.origin.as_str() {
            "site" => Key::ModelsSite,
            "converted" => Key::ModelsConverted,
            _ => Key::ModelsDropped,
        };
        let details = {
            let e = e.clone();
            move || {
                let mut parts = vec![format_bytes(e.bytes)];
                if !e.weights.is_empty() {
                    parts.push(e.weights.clone());
                }
                if e.image_size > 0 {
                    parts.push(format!("{} {}px", s.t(Key::ModelsImage), e.image_size));
                }
                if e.dim > 0 {
                    parts.push(format!("{} {}", s.t(Key::ModelsWidth), e.dim));
                }
                parts.push(s.t(origin).to_string());
                format!(" · {}", parts.join(" · "))
            }
        };
        let (for_use, for_delete) = (e.clone(), e.clone());
        view! {
            <li class="model-entry" data-key=e.key.clone() data-active=move || if active.get() { "yes" } else { "no" }>
                <strong class="model-entry-name">{e.name.clone()}</strong>
                {details}
                {e.demo.then(|| view! { <span class="badge">{move || format!(" · {}", s.t(Key::ModelsDemo))}</span> })}
                {move || active.get().then(|| view! { <span class="badge ok">{format!(" · {}", s.t(Key::ModelsActive))}</span> })}
                " "
                <button class="model-use" disabled=active on:click=move |_| spawn_local(use_model(s, for_use.clone()))>
                    {move || s.t(Key::ModelsUse)}
                </button>
                <button class="model-delete" on:click=move |_| spawn_local(delete(s, for_delete.clone()))>
                    {move || s.t(Key::ModelsDelete)}
                </button>
            </li>
        }
    };
    view! {
        <div id="models">
            <h3>{move || s.t(Key::ModelsHeading)}</h3>
            <ul id="model-list">
                <For each=move || list.get() key=|e| (e.key.clone(), e.content_hash.clone()) children=row />
            </ul>
            <p id="storage" class="detail">
                {move || {
                    let st = storage.get();
                    let kept = if st.persisted { Key::ModelsPersistent } else { Key::ModelsNotPersistent };
                    format!(
                        "{}: {} {} {} · {}",
                        s.t(Key::ModelsStorage),
                        format_bytes(st.usage),
                        s.t(Key::ModelsOf),
                        format_bytes(st.quota),
                        s.t(kept)
                    )
                }}
            </p>
        </div>
    }
}

/// Where a conversion is.
#[derive(Clone, Debug, PartialEq)]
enum Job {
    Idle,
    Running { read: f64, size: f64, done: usize, steps: usize, started_ms: f64, memory: f64 },
    Failed(String),
    Cancelled,
}

impl Job {
    fn code(&self) -> &'static str {
        match self {
            Job::Idle => "idle",
            Job::Running { .. } => "converting",
            Job::Failed(_) => "failed",
            Job::Cancelled => "cancelled",
        }
    }
}

/// The conversion worker in flight, and its output file (removed if it is cancelled).
struct Running {
    worker: Worker,
    out_file: String,
    _onmessage: Closure<dyn FnMut(MessageEvent)>,
    _onerror: Closure<dyn FnMut(web_sys::ErrorEvent)>,
}

thread_local! {
    static RUNNING: RefCell<Option<Running>> = const { RefCell::new(None) };
}

/// The files chosen for a conversion.
#[derive(Clone, Default)]
struct Inputs {
    checkpoint: Option<web_sys::File>,
    vocab: Option<web_sys::File>,
    config: Option<web_sys::File>,
}

impl Inputs {
    fn add(&mut self, f: web_sys::File) {
        let name = f.name().to_ascii_lowercase();
        if name.ends_with(".json") {
            self.config = Some(f);
        } else if name.ends_with(".txt") {
            self.vocab = Some(f);
        } else {
            // The checkpoint whatever its name: the converter says if it is not one.
            self.checkpoint = Some(f);
        }
    }
}

async fn file_text(f: &web_sys::File) -> JsResult<String> {
    wait(f.text()).await.map(|v| v.as_string().unwrap_or_default())
}

/// Converts the chosen checkpoint in a worker of its own; on success lists the model and loads it.
async fn convert(s: State, job: RwSignal<Job>, inputs: Inputs, quant: String) {
    let (Some(ckpt), Some(vocab)) = (inputs.checkpoint, inputs.vocab) else {
        job.set(Job::Failed(s.t_untracked(Key::ConvertNeedBoth).into()));
        return;
    };
    let vocab = match file_text(&vocab).await {
        Ok(v) => v,
        Err(e) => return job.set(Job::Failed(format!("{}: {e}", vocab.name()))),
    };
    let config_json = match &inputs.config {
        Some(f) => match file_text(f).await {
            Ok(t) => Some(t),
            Err(e) => return job.set(Job::Failed(format!("{}: {e}", f.name()))),
        },
        None => None,
    };
    let stem = ckpt.name().trim_end_matches(".pth").trim_end_matches(".pt").to_string();
    let out_file = format!("converted-{}-{quant}.safetensors", now_ms() as u64);
    let name = format!("{stem}-{quant}.safetensors");
    // Test hook: a checkpoint named `...brivl-test-slow...` converts slowly, to be cancelled.
    let test_step_ms = (super::test_hooks() && ckpt.name().contains("brivl-test-slow")).then_some(100);
    let opts = ConvertOptions { quant: quant.clone(), vocab, config_json, out_file: out_file.clone(), test_step_ms };
    job.set(Job::Running { read: 0.0, size: ckpt.size(), done: 0, steps: 0, started_ms: now_ms(), memory: 0.0 });

    let (tx, rx) = futures::channel::oneshot::channel::<Result<Reply, String>>();
    let tx = std::rc::Rc::new(RefCell::new(Some(tx)));
    let finish = {
        let tx = tx.clone();
        move |r: Result<Reply, String>| {
            if let Some(tx) = tx.borrow_mut().take() {
                let _ = tx.send(r);
            }
        }
    };
    let wopts = WorkerOptions::new();
    wopts.set_type(WorkerType::Module);
    let worker = match Worker::new_with_options("./brivl-worker_loader.js", &wopts) {
        Ok(w) => w,
        Err(e) => return job.set(Job::Failed(format!("cannot start the converter: {e:?}"))),
    };
    let request = serde_json::to_string(&Request::Convert(opts)).expect("serialises");
    let onmessage = {
        let (worker, finish) = (worker.clone(), finish.clone());
        Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Ok(msg) = ev.data().dyn_into::<Array>() else { return };
            let reply = msg.get(1).as_string().and_then(|j| serde_json::from_str::<Reply>(&j).ok());
            match reply {
                Some(Reply::Ready) => {
                    let _ = worker.post_message(&Array::of3(&1.into(), &request.clone().into(), &ckpt));
                }
                Some(Reply::ConvertProgress { read, size, steps_done, steps, memory }) => job.update(|j| {
                    if let Job::Running { started_ms, .. } = *j {
                        *j = Job::Running { read, size, done: steps_done, steps, started_ms, memory };
                    }
                }),
                Some(Reply::Crashed { error }) => finish(Err(error)),
                Some(r) => finish(Ok(r)),
                None => finish(Err("unreadable message from the converter".into())),
            }
        })
    };
    let onerror = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |ev: web_sys::ErrorEvent| {
        ev.prevent_default();
        let msg = ev.message();
        finish(Err(if msg.contains("unreachable") || msg.is_empty() {
            format!("the converter stopped ({msg}): out of memory?")
        } else {
            msg
        }));
    });
    worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    worker.set_onerror(Some(onerror.as_ref().unchecked_ref()));
    RUNNING.with(|r| {
        *r.borrow_mut() = Some(Running { worker, out_file: out_file.clone(), _onmessage: onmessage, _onerror: onerror })
    });

    let result = rx.await;
    let running = RUNNING.with(|r| r.borrow_mut().take());
    if let Some(r) = &running {
        r.worker.terminate();
    }
    match result {
        // Cancelled: `cancel` has taken care of it.
        Err(_) => {}
        Ok(Ok(Reply::Converted { file, bytes, content_hash, weights, image_size, dim, .. })) => {
            job.set(Job::Idle);
            let e = ModelEntry {
                key: format!("opfs:{file}"),
                name,
                bytes,
                content_hash,
                weights,
                image_size,
                dim,
                demo: false,
                origin: "converted".into(),
            };
            upsert(e.clone());
            refresh_storage();
            use_model(s, e).await;
        }
        Ok(Ok(Reply::Failed { error })) | Ok(Err(error)) => {
            // The worker removes its partial file on an error it reports; not after a crash.
            if running.is_some() {
                let _ = wait(opfs_delete_js(&out_file)).await;
            }
            job.set(Job::Failed(error));
        }
        Ok(Ok(_)) => job.set(Job::Failed("unexpected reply from the converter".into())),
    }
}

/// Stops the conversion in flight and removes its partial file.
async fn cancel(job: RwSignal<Job>) {
    let Some(r) = RUNNING.with(|r| r.borrow_mut().take()) else { return };
    r.worker.terminate();
    job.set(Job::Cancelled);
    if let Err(e) = wait(opfs_delete_js(&r.out_file)).await {
        web_sys::console::warn_1(&format!("brivl: partial model not removed: {e}").into());
    }
    refresh_storage();
}

/// Drop or pick the checkpoint, its vocabulary (and config); choose the weight format; convert
/// with progress, time left and cancel.
#[component]
pub fn ConvertBox() -> impl IntoView {
    let s = expect_context::<State>();
    let job = RwSignal::new(Job::Idle);
    // Files are browser objects: kept in a thread-local signal.
    let inputs = RwSignal::new_local(Inputs::default());
    let quant = RwSignal::new("q8".to_string());
    let picker = NodeRef::<html::Input>::new();
    let take = move |list: Option<web_sys::FileList>| {
        let Some(list) = list else { return };
        inputs.update(|i| {
            for k in 0..list.length() {
                if let Some(f) = list.get(k) {
                    i.add(f);
                }
            }
        });
    };
    let on_drop = move |e: ev::DragEvent| {
        e.prevent_default();
        // The model panel's own drop loads a model file; these are conversion inputs.
        e.stop_propagation();
        take(e.data_transfer().and_then(|d| d.files()));
    };
    let chosen = move || {
        inputs.with(|i| {
            [&i.checkpoint, &i.vocab, &i.config]
                .into_iter()
                .flatten()
                .map(|f| format!("{} ({})", f.name(), format_bytes(f.size())))
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    let running = move || matches!(job.get(), Job::Running { .. });
    let status = move || match job.get() {
        Job::Idle => None,
        Job::Running { read, size, done, steps, started_ms, memory } => {
            let frac = if steps > 0 { done as f64 / steps as f64 } else { 0.0 };
            let elapsed = (now_ms() - started_ms) / 1000.0;
            let left = (frac > 0.0).then(|| format_duration(elapsed * (1.0 - frac) / frac));
            let line = format!(
                "{} {} / {} · {done} / {steps} {}{}",
                s.t(Key::ConvertRead),
                format_bytes(read),
                format_bytes(size),
                s.t(Key::ConvertSteps),
                left.map(|l| format!(" · {l} {}", s.t(Key::TimeLeft))).unwrap_or_default()
            );
            Some(
                view! {
                    <progress max="1" value=frac aria-label=s.t(Key::ConvertHeading)></progress>
                    <p id="convert-progress" data-memory=memory>{line}</p>
                }
                .into_any(),
            )
        }
        Job::Failed(e) => Some(
            view! {
                <p class="error" role="alert" id="convert-error">
                    <strong>{format!("{}: ", s.t(Key::ConvertFailed))}</strong>{e}
                </p>
            }
            .into_any(),
        ),
        Job::Cancelled => Some(view! { <p id="convert-cancelled">{s.t(Key::ConvertCancelled)}</p> }.into_any()),
    };
    let start = move |_| {
        let (i, q) = (inputs.get_untracked(), quant.get_untracked());
        spawn_local(convert(s, job, i, q));
    };
    view! {
        <div
            id="convert"
            class="drop-sub"
            data-state=move || job.with(Job::code)
            on:dragover=|e: ev::DragEvent| e.prevent_default()
            on:drop=on_drop
        >
            <h3>{move || s.t(Key::ConvertHeading)}</h3>
            <p class="detail">{move || s.t(Key::ConvertHelp)}</p>
            <div class="row">
                <button on:click=move |_| { if let Some(i) = picker.get() { i.click(); } }>{move || s.t(Key::ConvertPick)}</button>
                <input
                    type="file"
                    id="convert-files"
                    class="visually-hidden"
                    tabindex="-1"
                    multiple
                    accept=".pth,.pt,.txt,.json"
                    aria-label=move || s.t(Key::ConvertPickLabel)
                    node_ref=picker
                    on:change=move |_| take(picker.get().and_then(|i| i.files()))
                />
                <label>
                    {move || s.t(Key::ConvertWeights)} " "
                    <select id="convert-quant" on:change=move |e| quant.set(event_target_value(&e)) prop:value=move || quant.get()>
                        <option value="q8">"q8"</option>
                        <option value="f16">"f16"</option>
                        <option value="f32">"f32"</option>
                    </select>
                </label>
                <button id="convert-start" disabled=move || running() || inputs.with(|i| i.checkpoint.is_none()) on:click=start>
                    {move || s.t(Key::ConvertStart)}
                </button>
                <button id="convert-cancel" disabled=move || !running() on:click=move |_| spawn_local(cancel(job))>
                    {move || s.t(Key::Cancel)}
                </button>
            </div>
            <p id="convert-chosen" class="detail">{chosen}</p>
            {status}
        </div>
    }
}
