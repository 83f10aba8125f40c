//! The UI's side of the workers: spawns one, sends requests, matches replies by id, and
//! notices when it dies. A worker that reports an error (a wasm trap on out-of-memory, a panic),
//! or that a watchdog gives up on, is terminated and every request it held is rejected with the
//! reason; the next request starts a fresh worker (the engine worker gets its model again from
//! `model::ready_engine`, the search worker its index from `index_worker`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use brivl_core::model_id::ModelId;
use futures::channel::oneshot;
use futures::future::{select, Either};
use js_sys::{Array, Promise, Uint8Array};
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{ErrorEvent, MessageEvent, Worker, WorkerOptions, WorkerType};

use crate::protocol::{Reply, Request, SearchReply};

/// What the UI needs to know of a worker's replies: a crash report, a refusal.
pub trait WorkerReply: DeserializeOwned + 'static {
    fn crashed(&self) -> Option<String>;
    fn refused(&self) -> Option<String>;
    /// A progress report: handed to the request's progress callback; the request goes on.
    fn is_progress(&self) -> bool {
        false
    }
}

impl WorkerReply for Reply {
    fn crashed(&self) -> Option<String> {
        match self {
            Reply::Crashed { error } => Some(error.clone()),
            _ => None,
        }
    }
    fn refused(&self) -> Option<String> {
        match self {
            Reply::Failed { error } => Some(error.clone()),
            _ => None,
        }
    }
    fn is_progress(&self) -> bool {
        matches!(self, Reply::LoadProgress { .. })
    }
}

impl WorkerReply for SearchReply {
    fn crashed(&self) -> Option<String> {
        match self {
            SearchReply::Crashed { error } => Some(error.clone()),
            _ => None,
        }
    }
    fn refused(&self) -> Option<String> {
        match self {
            SearchReply::Failed { error } => Some(error.clone()),
            _ => None,
        }
    }
}

/// A reply and its binary payloads.
pub struct Answer<R = Reply> {
    pub reply: R,
    pub buffers: Vec<Uint8Array>,
}

/// Why a request got no answer.
#[derive(Clone, Debug, PartialEq)]
pub enum CallError {
    /// The worker answered that it cannot do it (a photo it cannot decode, a corrupt model).
    Refused(String),
    /// The worker died or was stuck and has been stopped; the request was lost with it.
    Stopped(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Refused(e) => f.write_str(e),
            CallError::Stopped(e) => write!(f, "the engine stopped: {e}"),
        }
    }
}

impl From<CallError> for String {
    fn from(e: CallError) -> String {
        e.to_string()
    }
}

type Reply1<R> = oneshot::Sender<Result<Answer<R>, CallError>>;

/// Called with each progress reply of one request.
type OnProgress<R> = Box<dyn Fn(R)>;

/// What the worker's event handlers share with its `Link`.
struct Shared<R> {
    worker: Worker,
    pending: RefCell<HashMap<u32, Reply1<R>>>,
    /// Progress callbacks of pending requests that asked for them.
    progress: RefCell<HashMap<u32, OnProgress<R>>>,
    /// Set once the worker is stopped: why.
    dead: RefCell<Option<String>>,
}

impl<R> Shared<R> {
    /// Terminates the worker and rejects every pending request with `reason` (first reason wins).
    fn stop(&self, reason: String) {
        if self.dead.borrow().is_some() {
            return;
        }
        web_sys::console::warn_1(&format!("brivl: engine worker stopped: {reason}").into());
        *self.dead.borrow_mut() = Some(reason.clone());
        self.worker.terminate();
        self.progress.borrow_mut().clear();
        let pending: Vec<Reply1<R>> = self.pending.borrow_mut().drain().map(|(_, tx)| tx).collect();
        for tx in pending {
            let _ = tx.send(Err(CallError::Stopped(reason.clone())));
        }
    }
}

/// A running worker and its pending requests.
pub struct Link<R: WorkerReply> {
    shared: Rc<Shared<R>>,
    next_id: Cell<u32>,
    _onmessage: Closure<dyn FnMut(MessageEvent)>,
    _onerror: Closure<dyn FnMut(ErrorEvent)>,
    _onmessageerror: Closure<dyn FnMut(MessageEvent)>,
}

/// The engine worker.
pub struct Engine {
    link: Link<Reply>,
    /// The model this worker has loaded (set by the model loader).
    pub loaded: RefCell<Option<ModelId>>,
    /// Photos embedded by this worker (its first one also compiles the GPU pipelines).
    pub embedded: Cell<u32>,
}

thread_local! {
    static ENGINE: RefCell<Option<Rc<Engine>>> = const { RefCell::new(None) };
    /// Held while a worker starts, so concurrent callers share one.
    static SPAWNING: Rc<futures::lock::Mutex<()>> = Rc::default();
}

/// The running worker, started on first use and again after it died (it answers once its wasm
/// has loaded).
pub async fn engine() -> Result<Rc<Engine>, String> {
    let lock = SPAWNING.with(Rc::clone);
    let _guard = lock.lock().await;
    if let Some(e) = ENGINE.with(|e| e.borrow().clone()).filter(|e| !e.is_dead()) {
        return Ok(e);
    }
    // Written by trunk next to index.html (data-loader-shim on the worker's link); the threaded
    // build by www/tools/threaded-worker.sh, for pages that may share memory with workers.
    let link = match threaded() {
        true => match Link::spawn("./brivl-worker-mt_loader.js").await {
            Ok(link) => link,
            Err(e) => {
                web_sys::console::warn_1(&format!("brivl: the threaded engine did not start ({e}); one thread").into());
                Link::spawn("./brivl-worker_loader.js").await?
            }
        },
        false => Link::spawn("./brivl-worker_loader.js").await?,
    };
    let e = Rc::new(Engine { link, loaded: RefCell::new(None), embedded: Cell::new(0) });
    ENGINE.with(|slot| *slot.borrow_mut() = Some(e.clone()));
    Ok(e)
}

/// Whether to start the threaded engine: the page is cross-origin isolated (its server or the
/// service worker sent COOP/COEP, so wasm memory can be shared with workers) and the device has
/// more than one logical CPU.
fn threaded() -> bool {
    let isolated =
        js_sys::Reflect::get(&js_sys::global(), &"crossOriginIsolated".into()).map(|v| v.is_truthy()).unwrap_or(false);
    let cores = web_sys::window().map(|w| w.navigator().hardware_concurrency()).unwrap_or(1.0);
    isolated && cores > 1.0
}

fn parse<R: WorkerReply>(data: JsValue) -> Option<(u32, Answer<R>)> {
    let msg: Array = data.dyn_into().ok()?;
    let id = msg.get(0).as_f64()? as u32;
    let reply: R = serde_json::from_str(&msg.get(1).as_string()?).ok()?;
    let buffers = (2..msg.length()).filter_map(|i| msg.get(i).dyn_into::<Uint8Array>().ok()).collect();
    Some((id, Answer { reply, buffers }))
}

/// Resolves after `ms` milliseconds.
pub async fn sleep(ms: f64) {
    let p = Promise::new(&mut |resolve, _| {
        let global: web_sys::Window = js_sys::global().unchecked_into();
        let _ = global.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms.min(2e9) as i32);
    });
    let _ = JsFuture::from(p).await;
}

impl<R: WorkerReply> Link<R> {
    /// Starts the worker at `url` and waits for its first message (sent once its wasm loaded).
    pub async fn spawn(url: &str) -> Result<Self, String> {
        let opts = WorkerOptions::new();
        opts.set_type(WorkerType::Module);
        let worker =
            Worker::new_with_options(url, &opts).map_err(|e| format!("cannot start the worker {url}: {e:?}"))?;
        let shared = Rc::new(Shared {
            worker,
            pending: RefCell::default(),
            progress: RefCell::default(),
            dead: RefCell::new(None),
        });
        let (ready_tx, ready_rx) = oneshot::channel();
        shared.pending.borrow_mut().insert(0, ready_tx);
        let sh = shared.clone();
        let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| match parse::<R>(ev.data()) {
            Some((_, answer)) if answer.reply.crashed().is_some() => {
                sh.stop(answer.reply.crashed().unwrap_or_default())
            }
            Some((id, answer)) if answer.reply.is_progress() => {
                if let Some(f) = sh.progress.borrow().get(&id) {
                    f(answer.reply);
                }
            }
            Some((id, answer)) => {
                sh.progress.borrow_mut().remove(&id);
                let tx = sh.pending.borrow_mut().remove(&id);
                if let Some(tx) = tx {
                    let _ = tx.send(Ok(answer));
                }
            }
            None => web_sys::console::error_1(&"brivl: unreadable message from a worker".into()),
        });
        let sh = shared.clone();
        // An uncaught error in the worker (a wasm trap: out of memory, a panic's abort) or a
        // script that failed to load: the worker cannot be trusted any more.
        let onerror = Closure::<dyn FnMut(ErrorEvent)>::new(move |ev: ErrorEvent| {
            ev.prevent_default();
            let msg = ev.message();
            let msg = msg.trim_start_matches("Uncaught ").trim();
            let reason = if msg.is_empty() {
                "the worker failed".to_string()
            } else if msg.contains("unreachable") {
                // How a wasm abort shows: out of memory, or an error the engine could not report.
                format!("{msg} (out of memory, or an internal error)")
            } else {
                msg.to_string()
            };
            sh.stop(reason);
        });
        shared.worker.set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
        shared.worker.set_onerror(Some(onerror.as_ref().unchecked_ref()));
        let onmessageerror = Closure::<dyn FnMut(MessageEvent)>::new({
            let sh = shared.clone();
            move |_| sh.stop("a message from the worker could not be read".into())
        });
        shared.worker.set_onmessageerror(Some(onmessageerror.as_ref().unchecked_ref()));
        let link = Self {
            shared,
            next_id: Cell::new(1),
            _onmessage: onmessage,
            _onerror: onerror,
            _onmessageerror: onmessageerror,
        };
        match ready_rx.await {
            Ok(Ok(_)) => Ok(link),
            Ok(Err(e)) => Err(format!("the worker {url} did not start: {e}")),
            Err(_) => Err(format!("the worker {url} did not start")),
        }
    }

    pub fn is_dead(&self) -> bool {
        self.shared.dead.borrow().is_some()
    }

    /// Sends `req` with `payloads` (byte arrays moved to the worker, not copied; a `File` goes
    /// as a handle to the file, not its bytes) and waits for the answer; with `limit_ms`, a
    /// worker that has not answered by then is taken as stuck: it is stopped (this and every
    /// other pending request rejected).
    pub async fn call_with(
        &self,
        req: &impl Serialize,
        payloads: Vec<JsValue>,
        limit_ms: Option<f64>,
    ) -> Result<Answer<R>, CallError> {
        self.call_reporting(req, payloads, limit_ms, None).await
    }

    /// As `call_with`; progress replies to this request go to `progress`.
    pub async fn call_reporting(
        &self,
        req: &impl Serialize,
        payloads: Vec<JsValue>,
        limit_ms: Option<f64>,
        progress: Option<Box<dyn Fn(R)>>,
    ) -> Result<Answer<R>, CallError> {
        if let Some(reason) = self.shared.dead.borrow().clone() {
            return Err(CallError::Stopped(reason));
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.shared.pending.borrow_mut().insert(id, tx);
        if let Some(f) = progress {
            self.shared.progress.borrow_mut().insert(id, f);
        }
        let msg = Array::of2(&id.into(), &serde_json::to_string(req).expect("requests serialise").into());
        let transfer = Array::new();
        for p in payloads {
            if let Some(bytes) = p.dyn_ref::<Uint8Array>() {
                transfer.push(&bytes.buffer());
            }
            msg.push(&p);
        }
        if let Err(e) = self.shared.worker.post_message_with_transfer(&msg, &transfer) {
            self.shared.pending.borrow_mut().remove(&id);
            self.shared.progress.borrow_mut().remove(&id);
            return Err(CallError::Stopped(format!("cannot reach the engine worker: {e:?}")));
        }
        let answer = match limit_ms {
            None => rx.await,
            Some(ms) => match select(rx, Box::pin(sleep(ms))).await {
                Either::Left((a, _)) => a,
                Either::Right((_, rx)) => {
                    self.shared.stop(format!("no answer after {:.0} s (stuck)", ms / 1000.0));
                    rx.await
                }
            },
        };
        self.shared.progress.borrow_mut().remove(&id);
        let answer = answer.map_err(|_| CallError::Stopped("the worker went away".into()))??;
        match answer.reply.refused() {
            Some(error) => Err(CallError::Refused(error)),
            None => Ok(answer),
        }
    }
}

impl Engine {
    pub fn is_dead(&self) -> bool {
        self.link.is_dead()
    }

    /// Sends `req` with `payload` (moved to the worker, not copied) and waits for the answer.
    pub async fn call(&self, req: &Request, payload: Option<Uint8Array>) -> Result<Answer, CallError> {
        self.call_watched(req, payload, None).await
    }

    /// As `call`; with `limit_ms`, a worker that has not answered by then is taken as stuck:
    /// it is stopped (this and every other pending request rejected).
    pub async fn call_watched(
        &self,
        req: &Request,
        payload: Option<Uint8Array>,
        limit_ms: Option<f64>,
    ) -> Result<Answer, CallError> {
        self.link.call_with(req, payload.into_iter().map(JsValue::from).collect(), limit_ms).await
    }

    /// As `call_watched`, with `LoadProgress` replies handed to `progress` on the way; the
    /// payload a byte array or a `File`.
    pub async fn call_reporting(
        &self,
        req: &Request,
        payload: Option<JsValue>,
        limit_ms: Option<f64>,
        progress: impl Fn(Reply) + 'static,
    ) -> Result<Answer, CallError> {
        self.link.call_reporting(req, payload.into_iter().collect(), limit_ms, Some(Box::new(progress))).await
    }

    /// As `call_watched`, with several payloads (a batch of photos).
    pub async fn call_many(
        &self,
        req: &Request,
        payloads: Vec<Uint8Array>,
        limit_ms: Option<f64>,
    ) -> Result<Answer, CallError> {
        self.link.call_with(req, payloads.into_iter().map(JsValue::from).collect(), limit_ms).await
    }
}

impl<R: WorkerReply> Drop for Link<R> {
    fn drop(&mut self) {
        self.shared.worker.terminate();
    }
}

/// An f32 embedding from a reply's byte payload.
pub fn floats(bytes: &Uint8Array) -> Vec<f32> {
    js_sys::Float32Array::new_with_byte_offset_and_length(&bytes.buffer(), bytes.byte_offset(), bytes.length() / 4)
        .to_vec()
}
