//! Indexing: files in -> queue (IndexedDB) -> worker (decode, embed, thumbnail) -> photos
//! (IndexedDB). One photo at a time, so pause and cancel take effect after the current one.

use std::cell::Cell;
use std::sync::Arc;

use brivl_core::model_id::ModelId;
use js_sys::Array;
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::engine::{engine, floats};
use super::state::{now_ms, Failure, Photo, RunState, State};
use super::store;
use crate::i18n::Key;
use crate::protocol::{Reply, Request};

/// Longer side of the stored thumbnails (grid and large view after a reload).
const THUMB_SIZE: u32 = 384;
/// Files past this size are not copied into the queue.
const MAX_FILE_BYTES: f64 = 200e6;

thread_local! {
    static LOOP_RUNNING: Cell<bool> = const { Cell::new(false) };
    /// Set by `start`: work may have arrived while the loop was finishing.
    static KICKED: Cell<bool> = const { Cell::new(false) };
}

fn object_url(blob: &web_sys::Blob) -> String {
    web_sys::Url::create_object_url_with_blob(blob).unwrap_or_default()
}

fn photo_from(p: store::StoredPhoto) -> Photo {
    Photo { thumb_url: object_url(&p.thumb), hash: p.hash, names: p.names, embedding: Arc::new(p.embedding) }
}

/// Reads the stored index into memory (start-up).
pub async fn load_index(s: State) {
    match store::list_photos().await {
        Ok(list) => s.photos.set(list.into_iter().map(photo_from).collect()),
        Err(e) => s.notice.set(format!("index: {e}")),
    }
    if let Ok(f) = store::list_failures().await {
        s.failures.set(f.into_iter().map(|(names, reason)| Failure { names, reason }).collect());
    }
    let remaining = store::queue_count().await.unwrap_or(0);
    s.progress.update(|p| p.remaining = remaining);
}

/// Called when a model is ready: an index built by another model is dropped (its embeddings live
/// in another space), then indexing resumes where it stopped.
pub async fn adopt_model(s: State, model: ModelId) {
    let hash = store::get_meta("model").await.ok().flatten();
    let dim = store::get_meta("dim").await.ok().flatten().and_then(|d| d.parse().ok());
    let built_with = hash.zip(dim).map(|(hash, dim)| ModelId { hash, dim });
    let stale = s.photos.with_untracked(|p| !p.is_empty()) && built_with.is_none_or(|b| b.accepts(&model).is_err());
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
        while KICKED.replace(false) {
            run(s).await;
            if s.progress.get_untracked().state == RunState::Paused {
                break;
            }
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

async fn run(s: State) {
    s.progress.update(|p| {
        p.state = RunState::Running;
        p.done = 0;
        p.started_ms = now_ms();
    });
    loop {
        if s.progress.get_untracked().state != RunState::Running {
            return;
        }
        let Some(model) = s.in_use.with_untracked(|m| m.as_ref().map(|m| m.hash.clone())) else { break };
        let item = match store::next_queued().await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                s.notice.set(format!("queue: {e}"));
                break;
            }
        };
        let eng = match engine().await {
            Ok(e) => e,
            Err(e) => {
                s.notice.set(e);
                break;
            }
        };
        match eng.call(&Request::EmbedImage { thumb_size: THUMB_SIZE }, Some(item.bytes)).await {
            Ok(answer) => {
                let (Reply::Image { width, height }, [emb, thumb]) = (&answer.reply, answer.buffers.as_slice()) else {
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
            Err(reason) => {
                let _ = store::commit_failure(&item.hash, &reason).await;
                s.failures.update(|f| f.push(Failure { names: item.names.clone(), reason }));
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
