//! Checkpoint conversion in a worker of its own (the UI terminates it to cancel): the `.pth`
//! `File` is read in slices with `FileReaderSync`, one tensor at a time, and the model file is
//! written as it is produced into the Origin Private File System through a sync access handle
//! (positioned writes), its content hash computed on the way. The bytes are those `brivl convert`
//! writes for the same inputs and options.

use std::cell::Cell;

use brivl_engine::checkpoint::{self, ReadAt};
use brivl_engine::convert;
use brivl_engine::model_file::WriteAt;
use brivl_engine::DType;
use js_sys::Uint8Array;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, DedicatedWorkerGlobalScope, File, FileReaderSync, FileSystemDirectoryHandle, FileSystemFileHandle,
    FileSystemGetFileOptions, FileSystemReadWriteOptions, FileSystemSyncAccessHandle,
};

use crate::protocol::{ConvertOptions, Reply};

/// Most bytes asked of `FileReaderSync` at once: a large tensor is read in pieces, so the
/// browser's own copy of a piece stays small.
const READ_PIECE: usize = 1 << 20;

/// The checkpoint `File`, read in slices; counts the bytes read for the progress line.
pub(crate) struct FileSlices {
    file: File,
    reader: FileReaderSync,
    read: Cell<f64>,
}

impl FileSlices {
    pub(crate) fn new(file: File) -> Result<Self, String> {
        Ok(FileSlices { file, reader: FileReaderSync::new().map_err(js_message)?, read: Cell::new(0.0) })
    }
}

impl ReadAt for FileSlices {
    fn size(&self) -> u64 {
        self.file.size() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let mut at = offset;
        for piece in buf.chunks_mut(READ_PIECE) {
            let end = at + piece.len() as u64;
            let blob: Blob = self.file.slice_with_f64_and_f64(at as f64, end as f64).map_err(js_message)?;
            let bytes = self.reader.read_as_array_buffer(&blob).map_err(js_message)?;
            let view = Uint8Array::new(&bytes);
            if view.length() as usize != piece.len() {
                return Err("the file changed while it was being read".into());
            }
            view.copy_to(piece);
            at = end;
        }
        self.read.set(self.read.get() + buf.len() as f64);
        Ok(())
    }
}

/// The model file in OPFS, written at offsets; closed when dropped (so a failed conversion's
/// file can be removed).
pub(crate) struct OpfsFile {
    handle: FileSystemSyncAccessHandle,
}

impl OpfsFile {
    /// Creates (or empties) file `name`; `created` is set once there is a file to remove on failure.
    pub(crate) async fn create(
        root: &FileSystemDirectoryHandle,
        name: &str,
        created: &Cell<bool>,
    ) -> Result<Self, String> {
        let get = FileSystemGetFileOptions::new();
        get.set_create(true);
        let handle: FileSystemFileHandle = JsFuture::from(root.get_file_handle_with_options(name, &get))
            .await
            .map_err(|e| format!("cannot create the model file: {}", js_message(e)))?
            .unchecked_into();
        created.set(true);
        let access: FileSystemSyncAccessHandle = JsFuture::from(handle.create_sync_access_handle())
            .await
            .map_err(|e| format!("cannot open the model file for writing: {}", js_message(e)))?
            .unchecked_into();
        let out = OpfsFile { handle: access };
        out.handle.truncate_with_f64(0.0).map_err(js_message)?;
        Ok(out)
    }

    /// Writes what is buffered to the disk; the file's length.
    pub(crate) fn flush(&self) -> Result<f64, String> {
        self.handle.flush().map_err(js_message)?;
        self.handle.get_size().map_err(js_message)
    }
}

impl Drop for OpfsFile {
    fn drop(&mut self) {
        self.handle.close();
    }
}

impl WriteAt for OpfsFile {
    fn write_all_at(&mut self, offset: u64, bytes: &[u8]) -> brivl_engine::Result<()> {
        let opts = FileSystemReadWriteOptions::new();
        opts.set_at(offset as f64);
        let written = self
            .handle
            .write_with_u8_array_and_options(bytes, &opts)
            .map_err(|e| brivl_engine::Error::Model(format!("writing the model file: {}", js_message(e))))?;
        if written as usize != bytes.len() {
            return Err(brivl_engine::Error::Model(
                "writing the model file: the browser's storage is full (quota reached)".into(),
            ));
        }
        Ok(())
    }
}

/// Runs the conversion's steps, yielding to the worker's event loop every 50 ms: the browser
/// collects the read slices' garbage there (memory stays near one tensor's), and progress goes out.
async fn write_steps(
    plan: convert::Plan<'_>,
    out: OpfsFile,
    opts: &ConvertOptions,
    slices: &FileSlices,
    size: f64,
    progress: &impl Fn(Reply),
) -> Result<(String, f64), String> {
    let mut w = plan.start(out).map_err(|e| e.to_string())?;
    let (mut reported, mut yielded) = (0.0, js_sys::Date::now());
    let step_ms = opts.test_step_ms.unwrap_or(0);
    while w.step().map_err(|e| e.to_string())? {
        if step_ms > 0 {
            // Test hook: a slow conversion, to be cancelled mid-way.
            sleep(step_ms).await;
        }
        let (done, steps) = w.progress();
        let now = js_sys::Date::now();
        // At most ~10 messages a second, and the last step always.
        if now - reported >= 100.0 || done == steps {
            reported = now;
            let memory = wasm_memory_bytes();
            progress(Reply::ConvertProgress { read: slices.read.get(), size, steps_done: done, steps, memory });
        }
        if now - yielded >= 50.0 {
            sleep(0).await;
            yielded = js_sys::Date::now();
        }
    }
    let (file, hash) = w.finish().map_err(|e| e.to_string())?;
    Ok((hash, file.flush()?))
}

/// This worker's WebAssembly memory in bytes (it only grows: its peak).
pub(crate) fn wasm_memory_bytes() -> f64 {
    let memory = wasm_bindgen::memory().unchecked_into::<js_sys::WebAssembly::Memory>().buffer();
    memory.unchecked_into::<js_sys::ArrayBuffer>().byte_length() as f64
}

/// Resolves after `ms` milliseconds, through the worker's event loop.
pub(crate) async fn sleep(ms: u32) {
    let p = js_sys::Promise::new(&mut |resolve, _| {
        let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
        let _ = scope.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms as i32);
    });
    let _ = JsFuture::from(p).await;
}

pub fn js_message(e: JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        return String::from(err.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

pub(crate) async fn opfs_root(scope: &DedicatedWorkerGlobalScope) -> Result<FileSystemDirectoryHandle, String> {
    let root = JsFuture::from(scope.navigator().storage().get_directory()).await.map_err(|e| {
        format!("this browser gives the page no private file system (OPFS) to keep the model in: {}", js_message(e))
    })?;
    Ok(root.unchecked_into())
}

/// Converts `file` with `opts` into OPFS file `opts.out_file`, sending `progress` replies on
/// the way. A failed conversion leaves no file behind.
pub async fn run(
    scope: &DedicatedWorkerGlobalScope,
    file: File,
    opts: ConvertOptions,
    progress: impl Fn(Reply),
) -> Reply {
    let root = match opfs_root(scope).await {
        Ok(r) => r,
        Err(error) => return Reply::Failed { error },
    };
    let created = Cell::new(false);
    let result = convert_into(&root, file, &opts, &created, progress).await;
    match result {
        Ok(reply) => reply,
        Err(error) => {
            if created.get() {
                let _ = JsFuture::from(root.remove_entry(&opts.out_file)).await;
            }
            Reply::Failed { error }
        }
    }
}

async fn convert_into(
    root: &FileSystemDirectoryHandle,
    file: File,
    opts: &ConvertOptions,
    created: &Cell<bool>,
    progress: impl Fn(Reply),
) -> Result<Reply, String> {
    let dtype = match opts.quant.as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "q8" => DType::Q8,
        q => return Err(format!("unknown weight format {q:?}: f32, f16 or q8")),
    };
    let config = match &opts.config_json {
        Some(json) => convert::options_from_json(json).map_err(|e| e.to_string())?,
        None => Default::default(),
    };
    let size = file.size();
    let slices = FileSlices::new(file)?;
    let ck = checkpoint::read_checkpoint_from(&slices).map_err(|e| e.to_string())?;
    let source = convert::state_dict(&ck);
    let plan = convert::plan(&source, &opts.vocab, &config, dtype).map_err(|e| e.to_string())?;
    let (tensors, total) = (plan.tensors(), plan.total_bytes() as f64);
    // The image tower's last projection gives the embedding width.
    let dim = source.get("imgencoder.learnable.imgFC.fc2.weight").and_then(|t| t.shape().first().copied()).unwrap_or(0);

    let out = OpfsFile::create(root, &opts.out_file, created).await?;
    let written = write_steps(plan, out, opts, &slices, size, &progress).await;
    let (content_hash, bytes) = written?;
    if bytes != total {
        return Err(format!("the model file has {bytes} bytes, {total} were planned"));
    }
    Ok(Reply::Converted {
        file: opts.out_file.clone(),
        bytes,
        content_hash,
        weights: opts.quant.clone(),
        image_size: config.image_size,
        dim,
        tensors,
    })
}
