//! Indexing: folders (handles) and files in -> queue of paths (IndexedDB; no file bytes) ->
//! batches read and hashed -> worker (decode, thumbnail, embed the batch) -> int8 vectors,
//! thumbnails and names (one IndexedDB transaction per batch) -> the search worker.
//!
//! Pipelined: while the worker embeds a batch, the next one is read from disk and hashed and the
//! previous one is committed. One tab indexes at a time (the Web Lock "brivl-index"). A worker
//! that dies or is stuck on a batch is restarted and the batch is tried one photo at a time, so
//! the photo it failed on is recorded as failed with the reason and indexing goes on.
//!
//! Another model: the photos are embedded again with it once the queue is empty (from their
//! originals where readable, else from their thumbnails), each new vector stored beside the old
//! model's, which is dropped only when every photo has the new one (`store::finish_switch`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use brivl_core::encoding::quantize_i8;
use brivl_core::model_id::ModelId;
use js_sys::{Array, Uint8Array};
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::engine::{floats, CallError};
use super::model::ready_engine;
use super::state::{now_ms, Album, Failure, Photo, RunState, State};
use super::store::{Outcome, Queued};
use super::{index_worker, store, test_hooks};
use crate::i18n::Key;
use crate::protocol::{PhotoResult, Reply, Request, TestFault};
use crate::watchdog::{Watchdog, FLOOR_MS};

/// Longer side of the stored thumbnails (grid and large view without the original).
const THUMB_SIZE: u32 = 384;
/// Files past this size are not queued.
const MAX_FILE_BYTES: f64 = 200e6;
/// Photos embedded together, and the most file bytes a batch holds in memory.
const BATCH: u32 = 8;
const BATCH_BYTES: f64 = 64e6;
/// A queued file that work started on this many times without finishing (the tab was closed or
/// crashed each time) is recorded as failed instead of tried again.
const MAX_STARTS: u32 = 3;
/// The watchdog's floor with `?test_hooks=1` (the browser test makes a worker hang).
const TEST_FLOOR_MS: f64 = 10_000.0;

thread_local! {
    static LOOP_RUNNING: Cell<bool> = const { Cell::new(false) };
    /// Set by `start`: work may have arrived while the loop was finishing.
    static KICKED: Cell<bool> = const { Cell::new(false) };
    static WATCHDOG: RefCell<Watchdog> = RefCell::default();
    /// One shared copy of each model hash the photos name.
    static MODEL_NAMES: RefCell<HashMap<String, Arc<str>>> = RefCell::default();
    /// Photos that could not be read to embed again this visit (not tried again until a reload).
    static NOT_READ_AGAIN: RefCell<HashSet<String>> = RefCell::default();
}

fn model_name(hash: String) -> Arc<str> {
    MODEL_NAMES.with(|m| m.borrow_mut().entry(hash).or_insert_with_key(|h| h.as_str().into()).clone())
}

fn object_url(blob: &web_sys::Blob) -> String {
    web_sys::Url::create_object_url_with_blob(blob).unwrap_or_default()
}

fn photo_from(p: store::StoredPhoto) -> Photo {
    let embedded_by = std::iter::once(p.model).chain(p.next).map(|m| model_name(m.hash)).collect();
    Photo { hash: p.hash.into(), names: p.names, in_place: p.in_place, embedded_by }
}

/// Reads the stored photo list (start-up, and after another tab indexed), with the models each
/// has an embedding of. The search worker reads the vectors meanwhile: of the model in use, or
/// before one is loaded, of the model the index was built with.
pub async fn load_index(s: State) {
    let model = match s.in_use.with_untracked(|m| m.as_ref().map(|m| m.id())) {
        Some(m) => Some(m),
        None => built_with().await,
    };
    let vectors = async {
        if let Some(m) = &model {
            if let Err(e) = index_worker::load(s, m).await {
                s.notice.set(format!("search: {e}"));
            }
        }
    };
    let photos = async {
        match store::list_photos().await {
            Ok(list) => s.photos.set(Album::from_list(list.into_iter().map(photo_from).collect())),
            Err(e) => s.notice.set(format!("index: {e}")),
        }
    };
    futures::join!(vectors, photos);
    if let Ok(f) = store::list_failures().await {
        s.failures.set(f.into_iter().map(|(names, reason)| Failure { names, reason }).collect());
    }
    refresh_queue(s).await;
}

/// The model the stored index was built with (its metadata).
async fn built_with() -> Option<ModelId> {
    let hash = store::get_meta("model").await.ok().flatten();
    let dim = store::get_meta("dim").await.ok().flatten().and_then(|d| d.parse().ok());
    hash.zip(dim).map(|(hash, dim)| ModelId { hash, dim })
}

/// The queue's length, the files in it this visit cannot read and the folders to allow again.
async fn refresh_queue(s: State) {
    let remaining = remaining(s).await;
    s.progress.update(|p| p.remaining = remaining);
    s.unreachable.set(store::unreachable().await.unwrap_or_default());
    s.need_permission.set(store::roots_needing_permission().await.unwrap_or_default());
}

/// How many photos of the index have no embedding of the model with this content hash.
pub fn lacking_count(s: State, hash: &str) -> usize {
    s.photos.with_untracked(|a| a.lacking(hash).count())
}

/// What is left to embed: the queue, and the photos the model in use has not embedded yet.
async fn remaining(s: State) -> usize {
    let again = s.in_use.with_untracked(|m| m.as_ref().map(|m| m.hash.clone())).map_or(0, |h| lacking_count(s, &h));
    store::queue_count().await.unwrap_or(0) + again
}

/// Called when a model is ready. An index built by another model is embedded again with this one
/// (after the queue); the other model's vectors stay until that is complete, so a closed tab or a
/// switch back loses nothing. The search worker reads this model's vectors (those done so far),
/// then indexing resumes where it stopped.
pub async fn adopt_model(s: State, model: ModelId) {
    let lacking = lacking_count(s, &model.hash);
    let built = built_with().await;
    if s.photos.with_untracked(Album::is_empty) || (lacking == 0 && built.as_ref() != Some(&model)) {
        let _ = store::finish_switch(&model).await;
    } else if built.as_ref() != Some(&model) {
        let _ = store::set_meta("next_model", &model.hash).await;
        let _ = store::set_meta("next_dim", &model.dim.to_string()).await;
    }
    if lacking > 0 {
        s.notice.set(format!("{lacking} {}", s.t_untracked(Key::NoticeOtherModel)));
    }
    // Read again unless the worker already holds this model's index (read at start-up).
    if !index_worker::holds(&model) {
        if let Err(e) = index_worker::load(s, &model).await {
            s.notice.set(format!("search: {e}"));
        }
    }
    refresh_queue(s).await;
    start(s);
}

/// Queues what the user gave: folder or file handles (`handles`, read in place) and loose files
/// (`{file, path}` objects, held for this visit), then indexes them.
pub async fn add(s: State, handles: Array, files: Array) {
    if handles.length() == 0 && files.length() == 0 {
        return;
    }
    s.notice.set(s.t_untracked(Key::NoticeReading).into());
    match store::enqueue(&handles, &files, MAX_FILE_BYTES).await {
        Ok(e) => {
            let t = |k| s.t_untracked(k);
            let mut msg = format!("{} {}, {} {}", e.queued, t(Key::NoticeNew), e.known, t(Key::NoticeKnown));
            if !e.not_photos.is_empty() {
                let n = e.not_photos.len();
                s.not_photos.update(|c| *c += n);
                msg.push_str(&format!(", {n} {}", t(Key::NoticeNotPhotos)));
            }
            if !e.too_large.is_empty() {
                let n = e.too_large.len();
                msg.push_str(&format!(", {n} {}: {}", t(Key::NoticeTooLarge), e.too_large.join(", ")));
            }
            s.notice.set(msg);
        }
        Err(e) => s.notice.set(format!("could not add files: {e}")),
    }
    refresh_queue(s).await;
    start(s);
}

/// Loose files (`{file, path}` objects) only.
pub async fn add_files(s: State, files: Array) {
    add(s, Array::new(), files).await
}

/// Starts the indexing loop if a model is ready and indexing is not paused. A loop still running
/// (finishing its last batch after a cancel, or seeing an empty queue) goes on with the new work.
pub fn start(s: State) {
    if s.in_use.with_untracked(Option::is_none) || s.progress.get_untracked().state == RunState::Paused {
        return;
    }
    KICKED.set(true);
    if LOOP_RUNNING.get() {
        s.progress.update(|p| p.state = RunState::Running);
        return;
    }
    LOOP_RUNNING.set(true);
    spawn_local(async move {
        // One tab indexes at a time: this one waits while another holds the lock, then reads
        // what that tab stored before going on with the queue (shared by every tab).
        let release = match store::index_lock(false).await {
            Ok(Some(release)) => Some(release),
            Ok(None) => {
                s.other_tab.set(true);
                let release = store::index_lock(true).await;
                s.other_tab.set(false);
                load_index(s).await;
                release.ok().flatten()
            }
            Err(e) => {
                s.notice.set(format!("indexing lock: {e}"));
                None
            }
        };
        while KICKED.replace(false) {
            run(s).await;
            if s.progress.get_untracked().state == RunState::Paused {
                break;
            }
        }
        if let Some(release) = release {
            let _ = release.call0(&wasm_bindgen::JsValue::NULL);
        }
        LOOP_RUNNING.set(false);
    });
}

pub fn pause(s: State) {
    s.progress.update(|p| p.state = RunState::Paused);
}

pub fn resume(s: State) {
    s.progress.update(|p| p.state = RunState::Idle);
    start(s);
}

/// Empties the queue; what is indexed stays.
pub async fn cancel(s: State) {
    s.progress.update(|p| p.state = RunState::Idle);
    let _ = store::clear_stores(&["queue"]).await;
    s.progress.update(|p| p.remaining = 0);
    s.unreachable.set(Vec::new());
    s.notice.set(s.t_untracked(Key::NoticeCancelled).into());
}

/// Deletes the whole index (photos, vectors, thumbnails, queue, skipped list, folders).
pub async fn clear(s: State) {
    s.progress.update(|p| p.state = RunState::Idle);
    let _ = store::clear_stores(&["photos", "vectors", "thumbs", "queue", "failed", "roots"]).await;
    let _ = store::delete_meta("next_model").await;
    let _ = index_worker::clear().await;
    for url in s.originals.get_untracked().values() {
        let _ = web_sys::Url::revoke_object_url(url);
    }
    s.originals.set(Default::default());
    s.photos.set(Album::default());
    s.failures.set(Vec::new());
    s.unreachable.set(Vec::new());
    s.need_permission.set(Vec::new());
    s.results.set(Default::default());
    s.last_query.set(None);
    s.progress.update(|p| {
        p.remaining = 0;
        p.done = 0;
    });
}

/// A batch on its way: the files read, what each became.
type Done = Vec<(String, Vec<String>, Outcome)>;

/// Reads the next batch, leaving out the keys in flight.
async fn fetch(skip: &[String]) -> Result<Vec<Queued>, String> {
    store::next_batch(BATCH, BATCH_BYTES, skip).await
}

async fn run(s: State) {
    s.progress.update(|p| {
        p.state = RunState::Running;
        p.done = 0;
        p.started_ms = now_ms();
    });
    let mut next = fetch(&[]).await;
    let mut committing: Done = Vec::new();
    loop {
        let batch = match next {
            Ok(b) => b,
            Err(e) => {
                s.notice.set(format!("queue: {e}"));
                break;
            }
        };
        let running = s.progress.get_untracked().state == RunState::Running;
        let Some(model) = s.in_use.with_untracked(|m| m.as_ref().map(|m| m.id())) else { break };
        if batch.is_empty() || !running {
            commit(s, std::mem::take(&mut committing), &model).await;
            break;
        }
        // Three stages at once: the previous batch is committed, this one embedded, the next read.
        let mut skip: Vec<String> = batch.iter().map(|q| q.key.clone()).collect();
        skip.extend(committing.iter().map(|(k, ..)| k.clone()));
        let n = batch.len();
        let (_, embedded, fetched) =
            futures::join!(commit(s, std::mem::take(&mut committing), &model), embed(s, batch), fetch(&skip));
        committing = match embedded {
            Ok(done) => done,
            Err(e) => {
                s.notice.set(e);
                break;
            }
        };
        next = fetched;
        s.progress.update(|p| p.done += n);
    }
    if s.progress.get_untracked().state == RunState::Running && store::queue_count().await == Ok(0) {
        embed_again(s).await;
    }
    refresh_queue(s).await;
    s.progress.update(|p| {
        if p.state == RunState::Running {
            p.state = RunState::Idle;
        }
    });
}

/// Stores a batch (one transaction), then tells the page and the search worker.
async fn commit(s: State, done: Done, model: &ModelId) {
    if done.is_empty() {
        return;
    }
    let records = match store::commit_batch(&done, model).await {
        Ok(r) => r,
        Err(e) => {
            s.notice.set(format!("could not store a batch: {e}"));
            return;
        }
    };
    let (mut hashes, mut codes, mut scales) = (Vec::new(), Vec::new(), Vec::new());
    for (_, names, outcome) in done {
        match outcome {
            Outcome::New { hash, code, scale, .. } => {
                hashes.push(hash);
                codes.extend_from_slice(&code);
                scales.push(scale);
            }
            Outcome::Failed { reason } => s.failures.update(|f| f.push(Failure { names, reason })),
            Outcome::Known { .. } => {}
        }
    }
    s.photos.update(|a| {
        for r in records {
            a.upsert(photo_from(r));
        }
    });
    if let Err(e) = index_worker::add(hashes, &codes, &scales).await {
        s.notice.set(format!("search: {e}"));
    }
    let remaining = remaining(s).await;
    s.progress.update(|p| p.remaining = remaining);
}

/// Embeds the photos the model in use has no embedding of, batch by batch, then gives the index
/// to that model. Stops when paused or when the model changes.
async fn embed_again(s: State) {
    loop {
        let Some(model) = s.in_use.with_untracked(|m| m.as_ref().map(|m| m.id())) else { return };
        if s.progress.get_untracked().state != RunState::Running {
            return;
        }
        let hashes: Vec<String> = s.photos.with_untracked(|a| {
            NOT_READ_AGAIN.with(|skip| {
                let skip = skip.borrow();
                a.lacking(&model.hash)
                    .map(|p| p.hash.to_string())
                    .filter(|h| !skip.contains(h))
                    .take(BATCH as usize)
                    .collect()
            })
        });
        if hashes.is_empty() {
            if lacking_count(s, &model.hash) == 0 && built_with().await.as_ref() != Some(&model) {
                if let Err(e) = store::finish_switch(&model).await {
                    s.notice.set(format!("index: {e}"));
                    return;
                }
                let name = model_name(model.hash.clone());
                s.photos.update(|a| a.list.iter_mut().for_each(|p| p.embedded_by = vec![name.clone()]));
                s.notice.set(String::new());
            }
            return;
        }
        let batch = match store::reembed_batch(&hashes, BATCH_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                s.notice.set(format!("index: {e}"));
                return;
            }
        };
        // Read in order up to the byte budget: those passed over before the last one read are gone
        // from the store (another tab), and not asked for again this visit.
        let read: HashSet<&str> = batch.iter().map(|q| q.key.as_str()).collect();
        let tried = batch.last().and_then(|q| hashes.iter().position(|h| *h == q.key)).map_or(hashes.len(), |i| i + 1);
        NOT_READ_AGAIN.with(|skip| {
            skip.borrow_mut().extend(hashes[..tried].iter().filter(|h| !read.contains(h.as_str())).cloned())
        });
        let mut done: Vec<(String, Outcome)> = Vec::new();
        let mut todo = Vec::new();
        for q in batch {
            match q.read {
                Ok(r) => todo.push((q.key, q.names, r.hash, r.bytes)),
                Err(reason) => done.push((q.key, Outcome::Failed { reason })),
            }
        }
        let n = todo.len() + done.len();
        done.extend(embed_each(s, &todo).await.into_iter().map(|(k, _, o)| (k, o)));
        let records = match store::commit_vectors(&done, &model).await {
            Ok(r) => r,
            Err(e) => {
                s.notice.set(format!("could not store a batch: {e}"));
                return;
            }
        };
        let (mut hashes, mut codes, mut scales) = (Vec::new(), Vec::new(), Vec::new());
        for (hash, outcome) in done {
            match outcome {
                Outcome::New { code, scale, .. } => {
                    hashes.push(hash);
                    codes.extend_from_slice(&code);
                    scales.push(scale);
                }
                Outcome::Failed { reason } => {
                    let names = s.photos.with_untracked(|a| a.get(&hash).map(|p| p.names.clone())).unwrap_or_default();
                    s.failures.update(|f| f.push(Failure { names, reason }));
                    s.photos.update(|a| a.remove(&hash));
                }
                Outcome::Known { .. } => {}
            }
        }
        s.photos.update(|a| records.into_iter().for_each(|r| a.upsert(photo_from(r))));
        if let Err(e) = index_worker::add(hashes, &codes, &scales).await {
            s.notice.set(format!("search: {e}"));
        }
        let remaining = remaining(s).await;
        s.progress.update(|p| {
            p.done += n;
            p.remaining = remaining;
        });
    }
}

/// What to do with each file of a batch: known content and unreadable files are settled here,
/// the rest go to the worker. Content met twice in flight is embedded once.
async fn embed(s: State, batch: Vec<Queued>) -> Result<Done, String> {
    let keys: Vec<String> = batch.iter().map(|q| q.key.clone()).collect();
    let starts = store::begin_attempt(&keys).await.unwrap_or_default();
    let mut done: Done = Vec::new();
    let mut todo: Vec<(String, Vec<String>, String, Uint8Array)> = Vec::new();
    let mut seen = HashSet::new();
    for (i, q) in batch.into_iter().enumerate() {
        let settled = match q.read {
            Err(reason) => Some(Outcome::Failed { reason }),
            Ok(r) => {
                if let Some(f) = &r.file {
                    s.originals.update(|o| {
                        o.entry(r.hash.clone()).or_insert_with(|| object_url(f));
                    });
                }
                let known = r.known || s.photos.with_untracked(|a| a.by_hash.contains_key(r.hash.as_str()));
                if known || !seen.insert(r.hash.clone()) {
                    Some(Outcome::Known { hash: r.hash })
                } else if starts.get(i).copied().unwrap_or(0) >= MAX_STARTS {
                    let n = starts[i];
                    Some(Outcome::Failed {
                        reason: format!("work on this photo started {n} times and never finished; not tried again"),
                    })
                } else {
                    todo.push((q.key.clone(), q.names.clone(), r.hash, r.bytes));
                    None
                }
            }
        };
        if let Some(o) = settled {
            done.push((q.key, q.names, o));
        }
    }
    done.extend(embed_each(s, &todo).await);
    Ok(done)
}

/// Embeds files as one batch; when the worker dies or is stuck on it, each photo again on its own
/// (a fresh worker), so only the one it fails on is recorded as failed.
async fn embed_each(s: State, todo: &[(String, Vec<String>, String, Uint8Array)]) -> Done {
    if todo.is_empty() {
        return Vec::new();
    }
    match embed_files(s, todo).await {
        Ok(outcomes) => todo.iter().zip(outcomes).map(|((k, n, ..), o)| (k.clone(), n.clone(), o)).collect(),
        Err(CallError::Stopped(_)) | Err(CallError::Refused(_)) if todo.len() > 1 => {
            let mut done = Vec::new();
            for one in todo.chunks(1) {
                let o = match embed_files(s, one).await {
                    Ok(mut o) => o.pop().unwrap_or(Outcome::Failed { reason: "no result".into() }),
                    Err(e) => Outcome::Failed { reason: reason(e) },
                };
                done.push((one[0].0.clone(), one[0].1.clone(), o));
            }
            done
        }
        Err(e) => {
            let r = reason(e);
            todo.iter().map(|(k, n, ..)| (k.clone(), n.clone(), Outcome::Failed { reason: r.clone() })).collect()
        }
    }
}

fn reason(e: CallError) -> String {
    match e {
        CallError::Refused(r) => r,
        CallError::Stopped(r) => format!("the engine stopped while reading this photo: {r}"),
    }
}

/// Sends files to the engine worker as one batch; each becomes a new photo or a refusal.
async fn embed_files(s: State, files: &[(String, Vec<String>, String, Uint8Array)]) -> Result<Vec<Outcome>, CallError> {
    let eng = ready_engine(s).await.map_err(CallError::Stopped)?;
    let floor = if test_hooks() { TEST_FLOOR_MS } else { FLOOR_MS };
    let first = eng.embedded.get() == 0;
    let per_photo = WATCHDOG.with(|w| w.borrow().limit_ms(false, floor));
    let first_allowance = WATCHDOG.with(|w| w.borrow().limit_ms(first, floor));
    let limit = first_allowance + per_photo * (files.len() - 1) as f64;
    let test_faults: Vec<Option<TestFault>> = if test_hooks() {
        files.iter().map(|(_, names, ..)| names.iter().find_map(|n| TestFault::from_name(n))).collect()
    } else {
        Vec::new()
    };
    let test_faults = if test_faults.iter().all(Option::is_none) { Vec::new() } else { test_faults };
    let req = Request::EmbedImages { thumb_size: THUMB_SIZE, test_faults };
    // The worker takes copies: the bytes stay here for a retry one by one.
    let payloads = files.iter().map(|(.., b)| Uint8Array::new(b)).collect();
    let t0 = now_ms();
    let answer = eng.call_many(&req, payloads, Some(limit)).await?;
    let ms = now_ms() - t0;
    if !first {
        WATCHDOG.with(|w| w.borrow_mut().record(ms / files.len() as f64));
    }
    eng.embedded.set(eng.embedded.get() + files.len() as u32);
    let Reply::Images { photos } = answer.reply else {
        return Err(CallError::Refused("unexpected reply from the engine".into()));
    };
    let mut buffers = answer.buffers.into_iter();
    let mut out = Vec::with_capacity(files.len());
    for ((_, _, hash, _), r) in files.iter().zip(photos) {
        out.push(match r {
            PhotoResult::Refused { error } => Outcome::Failed { reason: error },
            PhotoResult::Read { width, height } => {
                let (Some(emb), Some(thumb)) = (buffers.next(), buffers.next()) else {
                    return Err(CallError::Refused("the engine sent too few embeddings".into()));
                };
                let (code, scale) = quantize_i8(&floats(&emb));
                Outcome::New { hash: hash.clone(), code, scale, thumb, width, height }
            }
        });
    }
    if out.len() != files.len() {
        return Err(CallError::Refused("the engine answered for too few photos".into()));
    }
    Ok(out)
}

/// Asks again for read access to the folders given before (from a click), then goes on.
pub async fn allow_folders(s: State) {
    match store::allow_roots().await {
        Ok(_) => {
            refresh_queue(s).await;
            start(s);
        }
        Err(e) => s.notice.set(format!("folder access: {e}")),
    }
}

/// Test hook: `n` synthetic photos (int8 rows from `make(i)`) of `model` written straight to the
/// index (which then belongs to that model), read again by the page and the search worker.
pub async fn fill_synthetic(
    s: State,
    n: u32,
    model: ModelId,
    make: js_sys::Function,
    thumb: Uint8Array,
) -> Result<(), String> {
    store::set_meta("model", &model.hash).await?;
    store::set_meta("dim", &model.dim.to_string()).await?;
    store::delete_meta("next_model").await?;
    store::wait(store::fill_synthetic_js(n, &model.hash, model.dim as u32, &make, &thumb)).await?;
    load_index(s).await;
    Ok(())
}
