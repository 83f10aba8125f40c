//! The UI's side of the search worker, which holds the index (int8 rows) and ranks it. Started
//! with the model in use; a worker that died is started again and reads the index again.

use std::cell::RefCell;
use std::rc::Rc;

use brivl_core::model_id::ModelId;
use js_sys::{Float32Array, Int8Array, Uint8Array};
use leptos::prelude::*;

use super::engine::{floats, Link};
use super::state::State;
use crate::protocol::{SearchReply, SearchRequest};

type Search = Link<SearchReply>;

thread_local! {
    static WORKER: RefCell<Option<Rc<Search>>> = const { RefCell::new(None) };
    /// The model whose index the worker holds (read again into a restarted worker).
    static MODEL: RefCell<Option<ModelId>> = const { RefCell::new(None) };
    static SPAWNING: Rc<futures::lock::Mutex<()>> = Rc::default();
}

/// The running search worker with the index loaded; started (and the index read) when needed.
async fn worker() -> Result<Rc<Search>, String> {
    let lock = SPAWNING.with(Rc::clone);
    let _guard = lock.lock().await;
    if let Some(w) = WORKER.with(|w| w.borrow().clone()).filter(|w| !w.is_dead()) {
        return Ok(w);
    }
    let w = Rc::new(Link::spawn("./brivl-search_loader.js").await?);
    if let Some(m) = MODEL.with(|m| m.borrow().clone()) {
        w.call_with(&SearchRequest::Load { model: m.hash, dim: m.dim }, vec![], None).await?;
    }
    WORKER.with(|slot| *slot.borrow_mut() = Some(w.clone()));
    Ok(w)
}

/// Whether the search worker holds (or is reading) the index of `model`.
pub fn holds(model: &ModelId) -> bool {
    MODEL.with(|m| m.borrow().as_ref() == Some(model))
}

/// Reads the index of `model` into the search worker. Returns how many stored vectors belong to
/// another model (not loaded).
pub async fn load(s: State, model: &ModelId) -> Result<usize, String> {
    s.searchable.set(false);
    MODEL.with(|m| *m.borrow_mut() = Some(model.clone()));
    let w = worker().await?;
    let req = SearchRequest::Load { model: model.hash.clone(), dim: model.dim };
    let answer = w.call_with(&req, vec![], None).await?;
    match answer.reply {
        SearchReply::Loaded { rows, other_model, ms } => {
            web_sys::console::info_1(&format!("brivl: {rows} photos ready to search in {ms:.0} ms").into());
            s.searchable.set(true);
            Ok(other_model)
        }
        _ => Err("unexpected reply from the search worker".into()),
    }
}

/// Adds embedded photos: their content hashes, int8 codes (row after row) and scales.
pub async fn add(hashes: Vec<String>, codes: &[i8], scales: &[f32]) -> Result<(), String> {
    if hashes.is_empty() {
        return Ok(());
    }
    let w = worker().await?;
    let codes = Int8Array::from(codes);
    let scales = Float32Array::from(scales);
    let payloads = vec![Uint8Array::new(&codes.buffer()).into(), Uint8Array::new(&scales.buffer()).into()];
    w.call_with(&SearchRequest::Add { hashes }, payloads, None).await?;
    Ok(())
}

pub async fn clear() -> Result<(), String> {
    worker().await?.call_with(&SearchRequest::Clear, vec![], None).await?;
    Ok(())
}

/// The best `top_k` photos for `query` (content hash, exact score) and the ranking's time in ms.
pub async fn search(
    query: &[f32],
    top_k: usize,
    min_score: Option<f32>,
    exclude: Option<String>,
) -> Result<(Vec<(String, f32)>, f64), String> {
    let w = worker().await?;
    let q = Float32Array::from(query);
    let answer = w
        .call_with(
            &SearchRequest::Search { top_k, min_score, exclude },
            vec![Uint8Array::new(&q.buffer()).into()],
            None,
        )
        .await?;
    match answer.reply {
        SearchReply::Hits { hits, ms, .. } => Ok((hits, ms)),
        _ => Err("unexpected reply from the search worker".into()),
    }
}

/// A stored photo's vector (as stored: int8 codes times the scale).
pub async fn vector(hash: &str) -> Result<Vec<f32>, String> {
    let answer = worker().await?.call_with(&SearchRequest::Vector { hash: hash.into() }, vec![], None).await?;
    answer.buffers.first().map(floats).ok_or_else(|| "no vector in the reply".into())
}

/// (rows, index bytes, the worker's wasm memory bytes).
pub async fn stats() -> Result<(usize, usize, usize), String> {
    let answer = worker().await?.call_with(&SearchRequest::Stats, vec![], None).await?;
    match answer.reply {
        SearchReply::Stats { rows, index_bytes, memory_bytes } => Ok((rows, index_bytes, memory_bytes)),
        _ => Err("unexpected reply from the search worker".into()),
    }
}
