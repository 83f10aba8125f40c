//! Queries: text -> the text the model reads -> embedding -> ranking over the stored photos;
//! and similar-photo search from a stored embedding.

use std::sync::Arc;

use brivl_core::ranking::rank;
use brivl_core::translate::Dictionary;
use leptos::prelude::*;

use super::engine::floats;
use super::model::ready_engine;
use super::state::{LastQuery, Results, State};
use crate::protocol::Request;

thread_local! {
    // The English -> Chinese table, fetched from the site once (kept out of the wasm binary).
    static DICTIONARY: std::cell::RefCell<Option<Dictionary>> = const { std::cell::RefCell::new(None) };
}

/// Fetches the site's `en-zh.tsv`; until it is loaded (or if it fails), queries are used as typed.
pub async fn load_dictionary(s: State) {
    match super::store::fetch_bytes("en-zh.tsv", |_, _| {}).await {
        Ok(bytes) => match Dictionary::from_bytes(&bytes.to_vec()) {
            Ok(d) => {
                DICTIONARY.with(|cell| *cell.borrow_mut() = Some(d));
                // A query typed before the table arrived is prepared again.
                let q = s.query.get_untracked();
                if !q.is_empty() {
                    s.query_used.set(prepare_query(&q));
                }
            }
            Err(e) => s.notice.set(format!("en-zh.tsv: {e}")),
        },
        Err(e) => s.notice.set(format!("en-zh.tsv: {e}")),
    }
}

/// Where a typed query becomes the text the model reads (shown as "query used", editable): the
/// model reads Chinese, so English words and phrases are translated offline; Chinese is kept.
pub fn prepare_query(text: &str) -> String {
    DICTIONARY.with(|cell| match cell.borrow().as_ref() {
        Some(d) => d.prepare_query(text.trim()).query_used,
        None => text.trim().to_string(),
    })
}

pub async fn search_text(s: State) {
    let text = s.query_used.get_untracked();
    if text.trim().is_empty() {
        return;
    }
    let result = async {
        let answer = ready_engine(s).await?.call(&Request::EmbedText { text }, None).await?;
        answer.buffers.first().map(floats).ok_or_else(|| "no embedding in the reply".to_string())
    }
    .await;
    match result {
        Ok(v) => {
            s.last_query.set(Some(LastQuery { vector: Arc::new(v), exclude: None }));
            rerank(s);
        }
        Err(e) => s.notice.set(format!("search: {e}")),
    }
}

/// Photos closest to the stored photo `hash` (image-to-image), the photo itself left out.
pub fn search_similar(s: State, hash: String) {
    let Some(model) = s.in_use.with_untracked(|m| m.as_ref().map(|m| m.id())) else { return };
    let found = s.photos.with_untracked(|p| {
        p.iter().find(|p| p.hash == hash && model.accepts(&p.model).is_ok()).map(|p| p.embedding.clone())
    });
    let Some(v) = found else { return };
    s.last_query.set(Some(LastQuery { vector: v, exclude: Some(hash) }));
    s.open.set(None);
    rerank(s);
}

/// Ranks with the last query vector, the current top-k and minimum score. Only photos embedded
/// by the model in use are ranked (a record of another model lives in another space).
pub fn rerank(s: State) {
    let Some(q) = s.last_query.get_untracked() else { return };
    let Some(model) = s.in_use.with_untracked(|m| m.as_ref().map(|m| m.id())) else { return };
    let (top_k, min_score) = (s.top_k.get_untracked(), s.min_score.get_untracked());
    let hits = s.photos.with_untracked(|photos| {
        let rows = photos
            .iter()
            .enumerate()
            .filter(|(_, p)| model.accepts(&p.model).is_ok() && p.embedding.len() == q.vector.len())
            .filter(|(_, p)| q.exclude.as_ref() != Some(&p.hash))
            .map(|(i, p)| (i, p.embedding.as_slice()));
        rank(&q.vector, rows, top_k, Some(min_score))
            .into_iter()
            .map(|h| (photos[h.key].hash.clone(), h.score))
            .collect()
    });
    s.results.set(Results { similar_to: q.exclude, hits, searched: true });
}
