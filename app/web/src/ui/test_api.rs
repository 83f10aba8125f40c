//! Test hooks (`?test_hooks=1` only): `window.__brivl` lets the browser tests fill the index with
//! synthetic photos (of a model of any width: the scale test uses BriVL's 2048 without loading a
//! model), rank a given vector and read the memory the index takes.

use brivl_core::model_id::ModelId;
use js_sys::{Array, Float32Array, Function, Object, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::future_to_promise;

use super::state::State;
use super::{index_worker, indexer};

fn set(o: &Object, k: &str, v: &JsValue) {
    let _ = Reflect::set(o, &k.into(), v);
}

fn wasm_memory_bytes() -> f64 {
    wasm_bindgen::memory()
        .unchecked_into::<js_sys::WebAssembly::Memory>()
        .buffer()
        .unchecked_into::<js_sys::ArrayBuffer>()
        .byte_length() as f64
}

pub fn install(s: State) {
    let api = Object::new();
    // fillSynthetic(n, model, dim, make(i) -> {code: Int8Array, scale}, thumbJpeg) -> Promise:
    // the index then belongs to `model` (a content hash) of width `dim`.
    let fill = Closure::<dyn Fn(u32, String, u32, Function, Uint8Array) -> js_sys::Promise>::new(
        move |n: u32, model: String, dim: u32, make: Function, thumb: Uint8Array| {
            future_to_promise(async move {
                let model = ModelId { hash: model, dim: dim as usize };
                indexer::fill_synthetic(s, n, model, make, thumb).await.map_err(|e| JsValue::from(e.as_str()))?;
                Ok(JsValue::UNDEFINED)
            })
        },
    );
    // searchVector(query: Float32Array, k) -> Promise<{hits: [[hash, score]], ms}>
    let search = Closure::<dyn Fn(Float32Array, u32) -> js_sys::Promise>::new(move |q: Float32Array, k: u32| {
        future_to_promise(async move {
            let (hits, ms) = index_worker::search(&q.to_vec(), k as usize, None, None)
                .await
                .map_err(|e| JsValue::from(e.as_str()))?;
            let out = Object::new();
            let list: Array = hits
                .into_iter()
                .map(|(h, score)| Array::of2(&h.into(), &(score as f64).into()))
                .map(JsValue::from)
                .collect();
            set(&out, "hits", &list);
            set(&out, "ms", &ms.into());
            Ok(out.into())
        })
    });
    // stats() -> Promise<{rows, indexBytes, searchWorkerMemory, pageWasmMemory}>
    let stats = Closure::<dyn Fn() -> js_sys::Promise>::new(move || {
        future_to_promise(async move {
            let (rows, index_bytes, memory) = index_worker::stats().await.map_err(|e| JsValue::from(e.as_str()))?;
            let out = Object::new();
            set(&out, "rows", &(rows as f64).into());
            set(&out, "indexBytes", &(index_bytes as f64).into());
            set(&out, "searchWorkerMemory", &(memory as f64).into());
            set(&out, "pageWasmMemory", &wasm_memory_bytes().into());
            Ok(out.into())
        })
    });
    // pause(): indexing holds still (also when idle), as the Pause button does while it runs.
    let pause = Closure::<dyn Fn()>::new(move || indexer::pause(s));
    set(&api, "pause", pause.as_ref());
    pause.forget();
    set(&api, "fillSynthetic", fill.as_ref());
    set(&api, "searchVector", search.as_ref());
    set(&api, "stats", stats.as_ref());
    fill.forget();
    search.forget();
    stats.forget();
    if let Some(w) = web_sys::window() {
        set(w.unchecked_ref(), "__brivl", &api);
    }
}
