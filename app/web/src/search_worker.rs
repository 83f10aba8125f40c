//! The search worker: holds the index in memory as int8 rows with a per-photo scale
//! (`brivl_core::compact_index`), read from IndexedDB page by page, and ranks it for each query
//! (an int8 scan, then the best candidates rescored exactly). It keeps the page's main thread
//! free and its wasm memory apart from the engine worker's (which a crash may restart).

use brivl_core::compact_index::CompactIndex;
use futures::StreamExt;
use js_sys::{Array, Float32Array, Function, Int8Array, Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::protocol::{SearchReply, SearchRequest};

#[wasm_bindgen(module = "/js/store.js")]
extern "C" {
    #[wasm_bindgen(js_name = loadVectors)]
    fn load_vectors_js(model: &str, dim: u32, on_page: &Function) -> Promise;
}

/// The index and the photos' content hashes, row by row (one string holding them all: a
/// `String` each would cost 24 bytes more a photo).
struct Index {
    rows: CompactIndex,
    hashes: String,
    ends: Vec<u32>,
    model: String,
}

impl Index {
    fn new(model: String, dim: usize) -> Self {
        Self { rows: CompactIndex::new(dim), hashes: String::new(), ends: Vec::new(), model }
    }

    fn hash(&self, row: usize) -> &str {
        let start = if row == 0 { 0 } else { self.ends[row - 1] as usize };
        &self.hashes[start..self.ends[row] as usize]
    }

    /// Appends `hashes.len()` rows, each copied straight from the JS arrays (no page-sized copy
    /// in wasm memory, which only grows); rows of another width are refused.
    fn add(&mut self, hashes: Vec<String>, codes: &Int8Array, scales: &Float32Array) {
        let dim = self.rows.dim();
        self.rows.reserve(hashes.len());
        self.ends.reserve_exact(hashes.len());
        let mut row = vec![0i8; dim];
        for (i, h) in hashes.into_iter().enumerate() {
            let (start, end) = ((i * dim) as u32, ((i + 1) * dim) as u32);
            if end > codes.length() || i as u32 >= scales.length() {
                break;
            }
            codes.subarray(start, end).copy_to(&mut row);
            if self.rows.push_code(&row, scales.get_index(i as u32)).is_some() {
                self.hashes.push_str(&h);
                self.ends.push(self.hashes.len() as u32);
            }
        }
    }

    fn row_of(&self, hash: &str) -> Option<usize> {
        (0..self.ends.len()).find(|&r| self.hash(r) == hash)
    }
}

pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
        send(&scope, JsValue::from(0), &SearchReply::Crashed { error: format!("panic: {info}") }, vec![]);
    }));
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let (tx, mut rx) = futures::channel::mpsc::unbounded::<Array>();
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        let _ = tx.unbounded_send(ev.data().unchecked_into());
    });
    scope.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();

    let out = scope.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let mut index: Option<Index> = None;
        while let Some(msg) = rx.next().await {
            let id = msg.get(0);
            let payloads: Vec<JsValue> = (2..msg.length()).map(|i| msg.get(i)).collect();
            let (reply, buffers) =
                match serde_json::from_str::<SearchRequest>(&msg.get(1).as_string().unwrap_or_default()) {
                    Ok(req) => handle(&mut index, req, payloads).await,
                    Err(e) => (SearchReply::Failed { error: format!("bad request: {e}") }, vec![]),
                };
            send(&out, id, &reply, buffers);
        }
    });
    send(&scope, JsValue::from(0), &SearchReply::Ready, vec![]);
}

fn send(scope: &DedicatedWorkerGlobalScope, id: JsValue, reply: &SearchReply, buffers: Vec<Uint8Array>) {
    let msg = Array::of2(&id, &JsValue::from(serde_json::to_string(reply).expect("replies serialise")));
    let transfer = Array::new();
    for b in buffers {
        transfer.push(&b.buffer());
        msg.push(&b);
    }
    if let Err(e) = scope.post_message_with_transfer(&msg, &transfer) {
        web_sys::console::error_2(&"brivl search worker: reply not sent".into(), &e);
    }
}

fn now_ms() -> f64 {
    js_sys::global().unchecked_into::<DedicatedWorkerGlobalScope>().performance().map_or(0.0, |p| p.now())
}

fn floats(v: &JsValue) -> Vec<f32> {
    let b: &Uint8Array = v.unchecked_ref();
    Float32Array::new_with_byte_offset_and_length(&b.buffer(), b.byte_offset(), b.length() / 4).to_vec()
}

async fn handle(
    index: &mut Option<Index>,
    req: SearchRequest,
    payloads: Vec<JsValue>,
) -> (SearchReply, Vec<Uint8Array>) {
    let failed = |error: String| (SearchReply::Failed { error }, vec![]);
    match req {
        SearchRequest::Load { model, dim } => {
            let t0 = now_ms();
            // The old index goes first: memory holds one index at a time.
            *index = None;
            let loaded = std::rc::Rc::new(std::cell::RefCell::new(Index::new(model.clone(), dim)));
            let sink = loaded.clone();
            let on_page = Closure::<dyn FnMut(Array, Int8Array, Float32Array)>::new(
                move |hashes: Array, codes: Int8Array, scales: Float32Array| {
                    let hashes: Vec<String> = hashes.iter().filter_map(|h| h.as_string()).collect();
                    sink.borrow_mut().add(hashes, &codes, &scales);
                },
            );
            let r = JsFuture::from(load_vectors_js(&model, dim as u32, on_page.as_ref().unchecked_ref())).await;
            drop(on_page);
            let other_model = match r {
                Ok(v) => v.as_f64().unwrap_or(0.0) as usize,
                Err(e) => return failed(format!("reading the index: {e:?}")),
            };
            let Ok(cell) = std::rc::Rc::try_unwrap(loaded) else { return failed("index still borrowed".into()) };
            let rows = cell.into_inner();
            let n = rows.rows.len();
            *index = Some(rows);
            (SearchReply::Loaded { rows: n, other_model, ms: now_ms() - t0 }, vec![])
        }
        SearchRequest::Add { hashes } => {
            let Some(ix) = index.as_mut() else { return failed("no index loaded".into()) };
            let (Some(codes), Some(scales)) = (payloads.first(), payloads.get(1)) else {
                return failed("codes and scales missing".into());
            };
            let (codes, scales): (&Uint8Array, &Uint8Array) = (codes.unchecked_ref(), scales.unchecked_ref());
            let codes =
                Int8Array::new_with_byte_offset_and_length(&codes.buffer(), codes.byte_offset(), codes.length());
            let scales = Float32Array::new_with_byte_offset_and_length(
                &scales.buffer(),
                scales.byte_offset(),
                scales.length() / 4,
            );
            ix.add(hashes, &codes, &scales);
            (SearchReply::Added { rows: ix.rows.len() }, vec![])
        }
        SearchRequest::Clear => {
            if let Some(ix) = index.as_mut() {
                *ix = Index::new(ix.model.clone(), ix.rows.dim());
            }
            (SearchReply::Added { rows: 0 }, vec![])
        }
        SearchRequest::Search { top_k, min_score, exclude } => {
            let Some(ix) = index.as_ref() else { return failed("no index loaded".into()) };
            let Some(q) = payloads.first().map(floats) else { return failed("no query".into()) };
            let t0 = now_ms();
            let skip = exclude.as_deref().and_then(|h| ix.row_of(h));
            let hits = ix.rows.search(&q, top_k, min_score, |r| Some(r) == skip);
            let hits = hits.into_iter().map(|h| (ix.hash(h.key).to_string(), h.score)).collect();
            (SearchReply::Hits { hits, rows: ix.rows.len(), ms: now_ms() - t0 }, vec![])
        }
        SearchRequest::Vector { hash } => {
            let Some(ix) = index.as_ref() else { return failed("no index loaded".into()) };
            match ix.row_of(&hash).and_then(|r| ix.rows.vector(r)) {
                Some(v) => {
                    let f = Float32Array::from(v.as_slice());
                    (SearchReply::Vector, vec![Uint8Array::new(&f.buffer())])
                }
                None => failed("that photo is not in the index".into()),
            }
        }
        SearchRequest::Stats => {
            let (rows, index_bytes) = index.as_ref().map_or((0, 0), |ix| (ix.rows.len(), ix.rows.bytes()));
            let memory_bytes = wasm_bindgen::memory()
                .unchecked_into::<js_sys::WebAssembly::Memory>()
                .buffer()
                .unchecked_into::<js_sys::ArrayBuffer>()
                .byte_length() as usize;
            (SearchReply::Stats { rows, index_bytes, memory_bytes }, vec![])
        }
    }
}
