//! The engine worker: loads the model (WebGPU when the browser has it, else the CPU path),
//! decodes photos (EXIF orientation applied), embeds photos and queries, makes thumbnails.
//! Requests are handled one at a time, in order; photos come in batches, embedded together.

use brivl_engine::embedder::{Embedder, Pixels};
use brivl_engine::model_file::ModelFile;
use brivl_engine::models::brivl::{embedding_dim, BrivlConfig};
use brivl_engine::photo::{self, Rgb8};
use brivl_engine::DType;
use brivl_engine::Gpu;
use futures::StreamExt;
use js_sys::{Array, Float32Array, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::model_stream;
use crate::protocol::{LoadFrom, PhotoResult, Reply, Request, TestFault};

pub fn start() {
    // A panic is logged, then told to the UI (which restarts the worker) before the wasm traps.
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| info.to_string());
        let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
        send(&scope, JsValue::from(0), &Reply::Crashed { error: format!("panic: {msg}") }, vec![]);
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
        let mut engine: Option<Embedder> = None;
        while let Some(msg) = rx.next().await {
            let id = msg.get(0);
            if let Some(reply) = convert_request(&out, &msg).await {
                send(&out, id, &reply, vec![]);
                continue;
            }
            let msg_text = msg.get(1).as_string().unwrap_or_default();
            // A model file rides as a `File` (read in slices), photos as bytes.
            let file = msg.get(2).dyn_into::<web_sys::File>().ok();
            let payloads: Vec<Vec<u8>> = (2..msg.length())
                .filter_map(|i| msg.get(i).dyn_into::<Uint8Array>().ok())
                .map(|a| a.to_vec())
                .collect();
            drop(msg);
            let progress = |r: Reply| send(&out, id.clone(), &r, vec![]);
            let (reply, buffers) = match serde_json::from_str::<Request>(&msg_text) {
                Ok(req) => handle(&mut engine, req, file, payloads, progress).await,
                Err(e) => (Reply::Failed { error: format!("bad request: {e}") }, vec![]),
            };
            send(&out, id, &reply, buffers);
        }
    });
    send(&scope, JsValue::from(0), &Reply::Ready, vec![]);
}

/// A conversion request (its `File` rides in the message) is run here; anything else is `None`.
async fn convert_request(scope: &DedicatedWorkerGlobalScope, msg: &Array) -> Option<Reply> {
    let Ok(Request::Convert(opts)) = serde_json::from_str::<Request>(&msg.get(1).as_string().unwrap_or_default())
    else {
        return None;
    };
    let id = msg.get(0);
    let Ok(file) = msg.get(2).dyn_into::<web_sys::File>() else {
        return Some(Reply::Failed { error: "no checkpoint file came with the request".into() });
    };
    Some(crate::convert_worker::run(scope, file, opts, |r| send(scope, id.clone(), &r, vec![])).await)
}

fn send(scope: &DedicatedWorkerGlobalScope, id: JsValue, reply: &Reply, buffers: Vec<JsValue>) {
    let msg = Array::of2(&id, &JsValue::from(serde_json::to_string(reply).expect("replies serialise")));
    let transfer = Array::new();
    for b in buffers {
        transfer.push(&b.unchecked_ref::<Uint8Array>().buffer());
        msg.push(&b);
    }
    if let Err(e) = scope.post_message_with_transfer(&msg, &transfer) {
        web_sys::console::error_2(&"brivl worker: reply not sent".into(), &e);
    }
}

async fn handle(
    engine: &mut Option<Embedder>,
    req: Request,
    file: Option<web_sys::File>,
    mut payloads: Vec<Vec<u8>>,
    progress: impl Fn(Reply),
) -> (Reply, Vec<JsValue>) {
    let failed = |error: String| (Reply::Failed { error }, vec![]);
    match req {
        // Taken by `convert_request` before it gets here.
        Request::Convert(_) => failed("a conversion request without its file".into()),
        Request::Load { prefer_gpu, from } => {
            let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
            let file = match from {
                LoadFrom::Download(d) => model_stream::download(&scope, &d, progress).await,
                LoadFrom::Opfs { file } => model_stream::read_opfs(&scope, &file).await,
                LoadFrom::File => match file {
                    Some(file) => model_stream::read_file(file),
                    None => Err("no model file came with the request".into()),
                },
            };
            match file {
                Err(e) => failed(e),
                Ok(file) => load_reply(engine, load(file, prefer_gpu).await),
            }
        }
        Request::EmbedImages { thumb_size, test_faults } => {
            for fault in test_faults.iter().flatten() {
                match fault {
                    // A wasm trap, as on out-of-memory.
                    TestFault::Abort => std::process::abort(),
                    TestFault::Panic => panic!("test fault while reading this photo"),
                    TestFault::Hang => futures::future::pending::<()>().await,
                }
            }
            let Some(e) = engine.as_mut() else { return failed("no model loaded".into()) };
            embed_batch(e, std::mem::take(&mut payloads), thumb_size).await
        }
        Request::EmbedText { text } => {
            let Some(e) = engine.as_mut() else { return failed("no model loaded".into()) };
            let tokens = e.tokenize(&text, None).map(|(_, m)| m.iter().filter(|&&x| x != 0).count()).unwrap_or(0);
            match e.embed_texts(&[&text], None).await {
                Ok(mut v) if v.len() == 1 => {
                    let emb = Float32Array::from(v.pop().unwrap().as_slice());
                    (Reply::Text { tokens }, vec![Uint8Array::new(&emb.buffer()).into()])
                }
                Ok(_) => failed("the engine returned no embedding".into()),
                Err(err) => failed(err.to_string()),
            }
        }
    }
}

/// The reply to a load; the engine is kept when it loaded.
fn load_reply(engine: &mut Option<Embedder>, loaded: Result<Loaded, String>) -> (Reply, Vec<JsValue>) {
    match loaded {
        Ok(Loaded { embedder: e, on_gpu, gpu_error, dim, weights, image_size }) => {
            let reply = Reply::Loaded {
                backend: e.backend_name(),
                on_gpu,
                gpu_error,
                content_hash: e.content_hash.clone(),
                dim,
                weights: Some(weights),
                image_size: Some(image_size),
                memory: crate::convert_worker::wasm_memory_bytes(),
            };
            *engine = Some(e);
            (reply, vec![])
        }
        Err(error) => (Reply::Failed { error }, vec![]),
    }
}

/// Photos embedded together within a batch: while the GPU embeds one group, the next is decoded
/// (on the CPU path both run on this one thread, one after the other).
const GROUP: usize = 4;

/// A group of decoded photos: for each, its size, pixels and thumbnail, or why it cannot be read.
type Decoded = Vec<Result<(u32, u32, Pixels, Vec<u8>), String>>;

/// Decodes each photo (EXIF orientation applied) and makes its thumbnail; each file's bytes are
/// dropped once decoded.
async fn decode_group(files: Vec<Vec<u8>>, thumb_size: u32) -> Decoded {
    files
        .into_iter()
        .map(|bytes| {
            let img = photo::decode(&bytes).map_err(|err| err.to_string())?;
            drop(bytes);
            let thumb = thumbnail(&img, thumb_size).map_err(|err| format!("thumbnail: {err}"))?;
            let pixels = Pixels { width: img.width as usize, height: img.height as usize, rgba: img.pack_rgba_u32() };
            Ok((img.width, img.height, pixels, thumb))
        })
        .collect()
}

/// Embeds a batch group by group, decoding the next group while the GPU embeds this one. A photo
/// that cannot be read is refused with the reason; the others go on.
async fn embed_batch(e: &mut Embedder, files: Vec<Vec<u8>>, thumb_size: u32) -> (Reply, Vec<JsValue>) {
    let mut results = Vec::with_capacity(files.len());
    let mut buffers = Vec::with_capacity(2 * files.len());
    let mut groups = Vec::new();
    let mut files = files.into_iter().peekable();
    while files.peek().is_some() {
        groups.push(files.by_ref().take(GROUP).collect::<Vec<_>>());
    }
    let mut groups = groups.into_iter();
    let mut decoded = decode_group(groups.next().unwrap_or_default(), thumb_size).await;
    loop {
        let mut pixels = Vec::new();
        let mut thumbs = Vec::new();
        for d in decoded {
            match d {
                Ok((width, height, p, thumb)) => {
                    results.push(PhotoResult::Read { width, height });
                    pixels.push(p);
                    thumbs.push(thumb);
                }
                Err(error) => results.push(PhotoResult::Refused { error }),
            }
        }
        let next = groups.next();
        // The embedding submits its GPU work when first polled; the next group decodes meanwhile.
        let (embedded, next_decoded) = futures::join!(
            async {
                if pixels.is_empty() {
                    Ok(Vec::new())
                } else {
                    e.embed_images(&pixels).await
                }
            },
            async {
                match next {
                    Some(g) => Some(decode_group(g, thumb_size).await),
                    None => None,
                }
            }
        );
        match embedded {
            Ok(v) if v.len() == pixels.len() => {
                for (emb, thumb) in v.iter().zip(&thumbs) {
                    let emb = Float32Array::from(emb.as_slice());
                    buffers.push(Uint8Array::new(&emb.buffer()).into());
                    buffers.push(Uint8Array::from(thumb.as_slice()).into());
                }
            }
            Ok(_) => {
                return (Reply::Failed { error: "the engine returned a wrong number of embeddings".into() }, vec![])
            }
            Err(err) => return (Reply::Failed { error: err.to_string() }, vec![]),
        }
        match next_decoded {
            Some(d) => decoded = d,
            None => break,
        }
    }
    (Reply::Images { photos: results }, buffers)
}

/// A loaded model: where it runs (with the reason the GPU could not be used, if preferred) and
/// its embedding width.
struct Loaded {
    embedder: Embedder,
    on_gpu: bool,
    gpu_error: Option<String>,
    dim: usize,
    /// "f32", "f16" or "q8", and the image side, for the model list.
    weights: String,
    image_size: usize,
}

/// Parses the model (refused with the reason when wrong or corrupt) and loads it on WebGPU, or on
/// the CPU path: chosen (`prefer_gpu` false), or because the GPU could not be used.
async fn load(file: ModelFile<'static>, prefer_gpu: bool) -> Result<Loaded, String> {
    let dim = embedding_dim(&file).map_err(|e| e.to_string())?;
    let weights = match file.weights() {
        DType::Q8 => "q8",
        DType::F16 => "f16",
        _ => "f32",
    };
    let image_size = BrivlConfig::from_json(&file.config_json).map(|c| c.image_size).unwrap_or(0);
    let loaded = |embedder, on_gpu, gpu_error| Loaded {
        embedder,
        on_gpu,
        gpu_error,
        dim,
        weights: weights.to_string(),
        image_size,
    };
    let on_cpu = |gpu_error| async {
        // The threaded build starts its pool first (once); the other runs on this thread, and
        // so does this one if its pool cannot start.
        #[cfg(target_feature = "atomics")]
        if let Err(e) = crate::threads::start(crate::threads::wanted()).await {
            web_sys::console::warn_1(&format!("brivl: {e}; the CPU path runs on one thread").into());
        }
        let embedder = Embedder::load(&file, None).map_err(|e| e.to_string())?;
        Ok(loaded(embedder, false, gpu_error))
    };
    if !prefer_gpu {
        return on_cpu(None).await;
    }
    let gpu_error = match Gpu::new().await {
        Ok(gpu) => match Embedder::load(&file, Some(&gpu)) {
            Ok(embedder) => return Ok(loaded(embedder, true, None)),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    on_cpu(Some(gpu_error)).await
}

/// A JPEG whose longer side is at most `max_side` (never enlarged).
fn thumbnail(img: &Rgb8, max_side: u32) -> Result<Vec<u8>, String> {
    let rgb = image::RgbImage::from_raw(img.width, img.height, img.pixels.clone())
        .ok_or_else(|| "pixel buffer does not match the size".to_string())?;
    let scale = (max_side as f32 / img.width.max(img.height) as f32).min(1.0);
    let (w, h) =
        (((img.width as f32 * scale).round() as u32).max(1), ((img.height as f32 * scale).round() as u32).max(1));
    let small = image::imageops::thumbnail(&rgb, w, h);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 82).encode_image(&small).map_err(|e| e.to_string())?;
    Ok(out)
}
