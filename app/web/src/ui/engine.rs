//! The UI's side of the engine worker: spawns it, sends requests, matches replies by id.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures::channel::oneshot;
use js_sys::{Array, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{MessageEvent, Worker, WorkerOptions, WorkerType};

use crate::protocol::{Reply, Request};

/// A reply and its binary payloads.
pub struct Answer {
    pub reply: Reply,
    pub buffers: Vec<Uint8Array>,
}

type Pending = Rc<RefCell<HashMap<u32, oneshot::Sender<Answer>>>>;

pub struct Engine {
    worker: Worker,
    pending: Pending,
    next_id: Cell<u32>,
    _onmessage: Closure<dyn FnMut(MessageEvent)>,
}

thread_local! {
    static ENGINE: RefCell<Option<Rc<Engine>>> = const { RefCell::new(None) };
}

/// The running worker, started on first use (it answers once its wasm has loaded).
pub async fn engine() -> Result<Rc<Engine>, String> {
    if let Some(e) = ENGINE.with(|e| e.borrow().clone()) {
        return Ok(e);
    }
    let e = Rc::new(Engine::spawn().await?);
    ENGINE.with(|slot| *slot.borrow_mut() = Some(e.clone()));
    Ok(e)
}

fn parse(data: JsValue) -> Option<(u32, Answer)> {
    let msg: Array = data.dyn_into().ok()?;
    let id = msg.get(0).as_f64()? as u32;
    let reply: Reply = serde_json::from_str(&msg.get(1).as_string()?).ok()?;
    let buffers = (2..msg.length()).filter_map(|i| msg.get(i).dyn_into::<Uint8Array>().ok()).collect();
    Some((id, Answer { reply, buffers }))
}

impl Engine {
    async fn spawn() -> Result<Self, String> {
        let opts = WorkerOptions::new();
        opts.set_type(WorkerType::Module);
        // Written by trunk next to index.html (data-loader-shim on the worker's link).
        let worker = Worker::new_with_options("./brivl-worker_loader.js", &opts)
            .map_err(|e| format!("cannot start the engine worker: {e:?}"))?;
        let pending: Pending = Rc::default();
        let (ready_tx, ready_rx) = oneshot::channel::<Answer>();
        pending.borrow_mut().insert(0, ready_tx);
        let map = pending.clone();
        let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| match parse(ev.data()) {
            Some((id, answer)) => {
                if let Some(tx) = map.borrow_mut().remove(&id) {
                    let _ = tx.send(answer);
                }
            }
            None => web_sys::console::error_1(&"brivl: unreadable message from the engine worker".into()),
        });
        worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        let engine = Self { worker, pending, next_id: Cell::new(1), _onmessage: onmessage };
        ready_rx.await.map_err(|_| "the engine worker did not start".to_string())?;
        Ok(engine)
    }

    /// Sends `req` with `payload` (moved to the worker, not copied) and waits for the answer.
    pub async fn call(&self, req: &Request, payload: Option<Uint8Array>) -> Result<Answer, String> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let msg = Array::of2(&id.into(), &serde_json::to_string(req).expect("requests serialise").into());
        let transfer = Array::new();
        if let Some(p) = payload {
            transfer.push(&p.buffer());
            msg.push(&p);
        }
        if let Err(e) = self.worker.post_message_with_transfer(&msg, &transfer) {
            self.pending.borrow_mut().remove(&id);
            return Err(format!("cannot reach the engine worker: {e:?}"));
        }
        let answer = rx.await.map_err(|_| "the engine worker stopped".to_string())?;
        match answer.reply {
            Reply::Failed { error } => Err(error),
            _ => Ok(answer),
        }
    }
}

/// An f32 embedding from a reply's byte payload.
pub fn floats(bytes: &Uint8Array) -> Vec<f32> {
    js_sys::Float32Array::new_with_byte_offset_and_length(&bytes.buffer(), bytes.byte_offset(), bytes.length() / 4)
        .to_vec()
}
