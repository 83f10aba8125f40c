//! Queries: text -> the text the model reads -> embedding -> ranking in the search worker; and
//! similar-photo search from a stored vector.

use std::sync::Arc;

use brivl_core::translate::Dictionary;
use leptos::prelude::*;

use super::engine::floats;
use super::index_worker;
use super::model::ready_engine;
use super::state::{LastQuery, Results, State, PAGE};
use crate::protocol::Request;

thread_local! {
    // The English -> Chinese table, fetched from the site once (kept out of the wasm binary).
    static DICTIONARY: std::cell::RefCell<Option<Dictionary>> = const { std::cell::RefCell::new(None) };
}

/// Fetches the site's `en-zh.tsv`; until it is loaded (or if it fails), queries are used as typed.
pub async fn load_dictionary(s: State) {
    match super::store::fetch_bytes("en-zh.tsv").await {
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
        s.last_query.set(None);
        s.results.set(Results::default());
        return;
    }
    let result = async {
        let answer = ready_engine(s).await?.call(&Request::EmbedText { text }, None).await?;
        answer.buffers.first().map(floats).ok_or_else(|| "no embedding in the reply".to_string())
    }
    .await;
    match result {
        Ok(v) => {
            s.top_k.set(PAGE);
            s.last_query.set(Some(LastQuery { vector: Arc::new(v), exclude: None }));
            rerank(s).await;
        }
        Err(e) => s.notice.set(format!("search: {e}")),
    }
}

/// Photos closest to the stored photo `hash` (image-to-image, from its stored vector), the photo
/// itself left out.
pub async fn search_similar(s: State, hash: String) {
    match index_worker::vector(&hash).await {
        Ok(v) => {
            s.top_k.set(PAGE);
            s.last_query.set(Some(LastQuery { vector: Arc::new(v), exclude: Some(hash) }));
            s.open.set(None);
            rerank(s).await;
        }
        Err(e) => s.notice.set(format!("search: {e}")),
    }
}

/// Ranks the index (in the search worker) with the last query vector, the current number of
/// results and minimum score.
pub async fn rerank(s: State) {
    let Some(q) = s.last_query.get_untracked() else { return };
    let (top_k, min_score) = (s.top_k.get_untracked(), s.min_score.get_untracked());
    match index_worker::search(&q.vector, top_k, min_score, q.exclude.clone()).await {
        Ok((hits, ms)) => s.results.set(Results { similar_to: q.exclude, hits, searched: true, ms }),
        Err(e) => s.notice.set(format!("search: {e}")),
    }
}

/// "Show more": another page of results for the same query.
pub async fn show_more(s: State) {
    s.top_k.update(|k| *k += PAGE);
    rerank(s).await;
}
