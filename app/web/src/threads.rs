//! The CPU path's thread pool in the browser, in the engine worker built with wasm threads
//! (`target_feature = "atomics"`, served as `brivl-worker-mt` to cross-origin isolated pages):
//! rayon's global pool, each of its threads a Web Worker (`www/brivl-thread.js`) running this
//! same module on the engine worker's shared memory. Started once, by the first load that takes
//! the CPU path (the GPU path needs no threads).
//!
//! rayon's `build_global` blocks until every thread runs, and a worker cannot start while the
//! worker that made it is blocked; so the workers are started first and wait for their
//! `ThreadBuilder` in [`QUEUE`], and the pool is built once all of them are up.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Condvar, Mutex};

use futures::channel::oneshot;
use js_sys::Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{ErrorEvent, MessageEvent, Worker, WorkerOptions, WorkerType};

thread_local! {
    /// How starting the pool went: it is tried once per worker.
    static STARTED: RefCell<Option<Result<usize, String>>> = const { RefCell::new(None) };
    /// The pool's workers, kept for the engine worker's lifetime.
    static WORKERS: RefCell<Vec<Worker>> = const { RefCell::new(Vec::new()) };
}

/// Threads handed from `build_global` to the workers waiting in [`brivl_thread_run`].
static QUEUE: (Mutex<VecDeque<rayon::ThreadBuilder>>, Condvar) = (Mutex::new(VecDeque::new()), Condvar::new());

/// Pool threads for this browser: its logical CPUs, at most 8 (beyond that a photo's tensors
/// are too small to split further).
pub fn wanted() -> usize {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    (scope.navigator().hardware_concurrency() as usize).clamp(1, 8)
}

/// Starts `n` pool threads and waits until every one runs; the pool's size. Tried once per
/// worker: later calls return the first one's outcome (after a failure rayon's first use makes
/// a pool of the calling thread alone).
pub async fn start(n: usize) -> Result<usize, String> {
    if let Some(done) = STARTED.with_borrow(Clone::clone) {
        return done;
    }
    let result = start_pool(n).await;
    STARTED.set(Some(result.clone()));
    result
}

async fn start_pool(n: usize) -> Result<usize, String> {
    let mut running = Vec::with_capacity(n);
    for _ in 0..n {
        let (worker, up) = spawn().map_err(|e| format!("cannot start a pool thread: {e:?}"))?;
        WORKERS.with_borrow_mut(|w| w.push(worker));
        running.push(up);
    }
    for up in running {
        up.await.map_err(|_| "a pool thread went away".to_string())??;
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .spawn_handler(|thread| {
            QUEUE.0.lock().map_err(|_| std::io::Error::other("pool queue poisoned"))?.push_back(thread);
            QUEUE.1.notify_one();
            Ok(())
        })
        .build_global()
        .map_err(|e| format!("thread pool: {e}"))?;
    Ok(n)
}

/// One pool thread: a module worker given the module and the memory; resolves when it runs
/// (its first message) or fails to load.
fn spawn() -> Result<(Worker, oneshot::Receiver<Result<(), String>>), JsValue> {
    let opts = WorkerOptions::new();
    opts.set_type(WorkerType::Module);
    opts.set_name("brivl-thread");
    let worker = Worker::new_with_options("./brivl-thread.js", &opts)?;
    let (tx, rx) = oneshot::channel();
    let tx = Rc::new(RefCell::new(Some(tx)));
    let on_up = {
        let tx = tx.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |_| {
            if let Some(tx) = tx.borrow_mut().take() {
                let _ = tx.send(Ok(()));
            }
        })
    };
    let on_error = Closure::<dyn FnMut(ErrorEvent)>::new(move |e: ErrorEvent| {
        if let Some(tx) = tx.borrow_mut().take() {
            let _ = tx.send(Err(format!("a pool thread failed to start: {}", e.message())));
        }
    });
    worker.set_onmessage(Some(on_up.as_ref().unchecked_ref()));
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_up.forget();
    on_error.forget();
    worker.post_message(&Array::of2(&wasm_bindgen::module(), &wasm_bindgen::memory()))?;
    Ok((worker, rx))
}

/// A pool thread's body, called by `brivl-thread.js` once it runs: waits for its
/// `ThreadBuilder`, then runs rayon's worker loop for good.
#[wasm_bindgen]
pub fn brivl_thread_run() {
    let thread = {
        let Ok(mut queue) = QUEUE.0.lock() else { return };
        loop {
            match queue.pop_front() {
                Some(t) => break t,
                None => match QUEUE.1.wait(queue) {
                    Ok(q) => queue = q,
                    Err(_) => return,
                },
            }
        }
    };
    thread.run();
}
