//! Indexing: files in -> queue (IndexedDB) -> worker (decode, embed, thumbnail) -> photos
//! (IndexedDB). One photo at a time, so pause and cancel take effect after the current one; one
//! tab at a time (the Web Lock "brivl-index"). A worker that dies or is stuck on a photo is
//! restarted, that photo is recorded as failed with the reason, and indexing goes on.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use brivl_core::model_id::ModelId;
use js_sys::Array;
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::engine::{floats, CallError};
use super::model::ready_engine;
use super::state::{now_ms, Failure, Photo, RunState, State};
use super::{store, test_hooks};
use crate::i18n::Key;
use crate::protocol::{Reply, Request, TestFault};
use crate::watchdog::{Watchdog, FLOOR_MS};

/// Longer side of the stored thumbnails (grid and large view after a reload).
const THUMB_SIZE: u32 = 384;
/// Files past this size are not copied into the queue.
const MAX_FILE_BYTES: f64 = 200e6;
/// A queued photo that work started on this many times without finishing (the tab was closed or
/// crashed each time) is recorded as failed instead of tried again.
const MAX_STARTS: u32 = 3;
/// The watchdog's floor with `?test_hooks=1` (the browser test makes a worker hang).
const TEST_FLOOR_MS: f64 = 10_000.0;

thread_local! {
    static LOOP_RUNNING: Cell<bool> = const { Cell::new(false) };
    /// Set by `start`: work may have arrived while the loop was finishing.
    static KICKED: Cell<bool> = const { Cell::new(false) };
    static WATCHDOG: RefCell<Watchdog> = RefCell::default();
}

fn object_url(blob: &web_sys::Blob) -> String {
    web_sys::Url::create_object_url_with_blob(blob).unwrap_or_default()
}

fn photo_from(p: store::StoredPhoto) -> Photo {
    Photo {
        thumb_url: object_url(&p.thumb),
        hash: p.hash,
        names: p.names,
        embedding: Arc::new(p.embedding),
        model: p.model,
    }
}

/// Reads the stored index into memory (start-up, and after another tab indexed).
pub async fn load_index(s: State) {
    match store::list_photos().await {
        Ok(list) => {
            for p in s.photos.get_untracked() {
                let _ = web_sys::Url::revoke_object_url(&p.thumb_url);
            }
            s.photos.set(list.into_iter().map(photo_from).collect())
        }
        Err(e) => s.notice.set(format!("index: {e}")),
    }
    if let Ok(f) = store::list_failures().await {
        s.failures.set(f.into_iter().map(|(names, reason)| Failure { names, reason }).collect());
    }
    let remaining = store::queue_count().await.unwrap_or(0);
    s.progress.update(|p| p.remaining = remaining);
}

/// Called when a model is ready: an index built by another model (by its metadata or by any of
/// its records) is dropped (its embeddings live in another space), then indexing resumes where it
/// stopped.
pub async fn adopt_model(s: State, model: ModelId) {
    let hash = store::get_meta("model").await.ok().flatten();
    let dim = store::get_meta("dim").await.ok().flatten().and_then(|d| d.parse().ok());
    let built_with = hash.zip(dim).map(|(hash, dim)| ModelId { hash, dim });
    let stale = s.photos.with_untracked(|p| {
        !p.is_empty()
            && (built_with.as_ref().is_none_or(|b| b.accepts(&model).is_err())
                || p.iter().any(|p| model.accepts(&p.model).is_err()))
    });
    if stale {
        let _ = store::clear_stores(&["photos"]).await;
        s.photos.set(Vec::new());
        s.notice.set(s.t_untracked(Key::NoticeOtherModel).into());
    }
    let _ = store::set_meta("model", &model.hash).await;
    let _ = store::set_meta("dim", &model.dim.to_string()).await;
    start(s);
}

/// Hashes and queues files (`{file, path}` objects), then indexes them.
pub async fn add_files(s: State, files: Array) {
    let n = files.length();
    if n == 0 {
        return;
    }
    s.notice.set(format!("{n} · {}", s.t_untracked(Key::NoticeReading)));
    match store::enqueue_files(&files, MAX_FILE_BYTES).await {
        Ok(e) => {
            s.originals.update(|o| {
                for (hash, file) in &e.seen {
                    o.entry(hash.clone()).or_insert_with(|| object_url(file));
                }
            });
            let t = |k| s.t_untracked(k);
            let mut msg = format!("{} {}, {} {}", e.queued, t(Key::NoticeNew), e.duplicates, t(Key::NoticeKnown));
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
    let remaining = store::queue_count().await.unwrap_or(0);
    s.progress.update(|p| p.remaining = remaining);
    start(s);
}

/// Starts the indexing loop if a model is ready and indexing is not paused. A loop still running
/// (finishing its last photo after a cancel, or seeing an empty queue) goes on with the new work.
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
    s.notice.set(s.t_untracked(Key::NoticeCancelled).into());
}

/// Deletes the whole index (photos, queue, skipped list).
pub async fn clear(s: State) {
    s.progress.update(|p| p.state = RunState::Idle);
    let _ = store::clear_stores(&["photos", "queue", "failed"]).await;
    for p in s.photos.get_untracked() {
        let _ = web_sys::Url::revoke_object_url(&p.thumb_url);
    }
    s.photos.set(Vec::new());
    s.failures.set(Vec::new());
    s.results.set(Default::default());
    s.last_query.set(None);
    s.progress.update(|p| {
        p.remaining = 0;
        p.done = 0;
    });
}

/// Records `item` as failed with `reason` (it leaves the queue and is listed as skipped).
async fn fail(s: State, item: &store::Queued, reason: String) {
    let _ = store::commit_failure(&item.hash, &reason).await;
    s.failures.update(|f| f.push(Failure { names: item.names.clone(), reason }));
}

async fn run(s: State) {
    s.progress.update(|p| {
        p.state = RunState::Running;
        p.done = 0;
        p.started_ms = now_ms();
    });
    let floor = if test_hooks() { TEST_FLOOR_MS } else { FLOOR_MS };
    loop {
        if s.progress.get_untracked().state != RunState::Running {
            return;
        }
        let Some(model) = s.in_use.with_untracked(|m| m.as_ref().map(|m| m.id())) else { break };
        let item = match store::next_queued().await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                s.notice.set(format!("queue: {e}"));
                break;
            }
        };
        let starts = store::begin_attempt(&item.hash).await.unwrap_or(0);
        if starts >= MAX_STARTS {
            let reason = format!("work on this photo started {starts} times and never finished; not tried again");
            fail(s, &item, reason).await;
        } else {
            let eng = match ready_engine(s).await {
                Ok(e) => e,
                Err(e) => {
                    s.notice.set(e);
                    break;
                }
            };
            let first = eng.embedded.get() == 0;
            let limit = WATCHDOG.with(|w| w.borrow().limit_ms(first, floor));
            let test_fault = if test_hooks() { item.names.iter().find_map(|n| TestFault::from_name(n)) } else { None };
            let req = Request::EmbedImage { thumb_size: THUMB_SIZE, test_fault };
            let t0 = now_ms();
            match eng.call_watched(&req, Some(item.bytes.clone()), Some(limit)).await {
                Ok(answer) => {
                    let ms = now_ms() - t0;
                    if !first {
                        WATCHDOG.with(|w| w.borrow_mut().record(ms));
                    }
                    eng.embedded.set(eng.embedded.get() + 1);
                    let (Reply::Image { width, height }, [emb, thumb]) = (&answer.reply, answer.buffers.as_slice())
                    else {
                        s.notice.set("unexpected reply from the engine".into());
                        break;
                    };
                    match store::commit_photo(&item.hash, &floats(emb), thumb, *width, *height, &model).await {
                        Ok(rec) => s.photos.update(|p| p.push(photo_from(rec))),
                        Err(e) => {
                            s.notice.set(format!("could not store {}: {e}", item.names.join(", ")));
                            break;
                        }
                    }
                }
                Err(CallError::Refused(reason)) => fail(s, &item, reason).await,
                // The worker died or was stuck on this photo: it is recorded as failed (not
                // retried after a reload) and the next photo goes to a restarted worker.
                Err(CallError::Stopped(reason)) => {
                    fail(s, &item, format!("the engine stopped while reading this photo: {reason}")).await
                }
            }
        }
        let remaining = store::queue_count().await.unwrap_or(0);
        s.progress.update(|p| {
            p.done += 1;
            p.remaining = remaining;
        });
    }
    s.progress.update(|p| {
        if p.state == RunState::Running {
            p.state = RunState::Idle;
        }
    });
}
