//! Messages between the UI and the engine worker. Each message is a JS array
//! `[id, json, ...buffers]`: the JSON below, plus binary payloads (model or photo bytes in,
//! embeddings and thumbnails out) passed as transferable buffers rather than as JSON numbers.

use serde::{Deserialize, Serialize};

/// UI -> worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Loads the model from `from`. `prefer_gpu: false` runs the CPU path.
    Load {
        prefer_gpu: bool,
        from: LoadFrom,
    },
    /// Payloads: the files' bytes, one per photo. Embedded as one batch; replies with each
    /// photo's embedding and a JPEG thumbnail whose longer side is at most `thumb_size`.
    EmbedImages {
        thumb_size: u32,
        /// Tests only (the UI sets them only with `?test_hooks=1` in the address): the worker
        /// fails this way on the photo instead of reading it. Empty, or one per photo.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        test_faults: Vec<Option<TestFault>>,
    },
    EmbedText {
        text: String,
    },
    /// To a worker of its own (terminated to cancel). Payload: the checkpoint `File` (not bytes:
    /// the worker reads it in slices). Replies `ConvertProgress` (any number), then `Converted`.
    Convert(ConvertOptions),
}

/// Where the engine worker gets a model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadFrom {
    /// The request's payload: a model `File` the user gave (dropped or picked), read by the
    /// worker in slices, never whole.
    File,
    /// This file of the origin private file system, read by the worker itself.
    Opfs { file: String },
    /// The site's model, fetched by the worker (replying `LoadProgress` on the way).
    Download(Download),
}

/// The site's model, for the worker to fetch from `path` (size and SHA-256 from `models.json`)
/// and keep as OPFS file `keep_as`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Download {
    pub path: String,
    pub bytes: f64,
    pub sha256: String,
    pub keep_as: String,
}

/// What `brivl convert` is told besides the checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvertOptions {
    /// "f32", "f16" or "q8".
    pub quant: String,
    /// The `vocab.txt` text.
    pub vocab: String,
    /// A `config.json` beside the checkpoint (the tiny test model's); none: the release's options.
    pub config_json: Option<String>,
    /// The file name to write in the origin private file system.
    pub out_file: String,
    /// Tests only (`?test_hooks=1` and a checkpoint named `...brivl-test-slow...`): each step takes
    /// at least this long, so a test can cancel a
    /// conversion of the small fixture mid-way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_step_ms: Option<u32>,
}

/// How the worker is made to fail in the browser tests: as on out-of-memory (a wasm trap), a
/// panic, or stuck (never answers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestFault {
    Abort,
    Panic,
    Hang,
}

impl TestFault {
    /// The fault a test photo asks for by its file name (`...brivl-test-abort...` and so on).
    pub fn from_name(name: &str) -> Option<TestFault> {
        [
            ("brivl-test-abort", TestFault::Abort),
            ("brivl-test-panic", TestFault::Panic),
            ("brivl-test-hang", TestFault::Hang),
        ]
        .into_iter()
        .find(|(marker, _)| name.contains(marker))
        .map(|(_, f)| f)
    }
}

/// Worker -> UI. Message id 0 is `Ready`, sent once the worker can take requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply {
    Ready,
    /// `gpu_error` says why the CPU path runs when the GPU was preferred (none when it was chosen).
    Loaded {
        backend: String,
        on_gpu: bool,
        gpu_error: Option<String>,
        content_hash: String,
        /// Embedding width.
        dim: usize,
        /// "f32", "f16" or "q8": how the matrices are stored.
        #[serde(default)]
        weights: Option<String>,
        #[serde(default)]
        image_size: Option<usize>,
        /// The worker's WebAssembly memory once loaded, in bytes (it only grows: the load's peak).
        #[serde(default)]
        memory: f64,
    },
    /// A download under way (any number, before `Loaded`): bytes received of `total`.
    LoadProgress {
        received: f64,
        total: f64,
    },
    /// One entry per photo of an `EmbedImages` batch, in order. Payloads: for each photo read,
    /// its embedding (f32) and thumbnail (JPEG bytes).
    Images {
        photos: Vec<PhotoResult>,
    },
    /// Payload: the embedding (f32).
    Text {
        tokens: usize,
    },
    /// Conversion under way: checkpoint bytes read of `size`, steps (one or a few tensors each).
    ConvertProgress {
        read: f64,
        size: f64,
        steps_done: usize,
        steps: usize,
        /// The converter's WebAssembly memory, in bytes (it only grows: its peak).
        #[serde(default)]
        memory: f64,
    },
    /// The model file is complete in the origin private file system.
    Converted {
        file: String,
        bytes: f64,
        content_hash: String,
        /// "f32", "f16" or "q8".
        weights: String,
        image_size: usize,
        dim: usize,
        tensors: usize,
    },
    Failed {
        error: String,
    },
    /// The worker panicked (sent from its panic hook, with any message id, just before it traps):
    /// every request it holds is lost.
    Crashed {
        error: String,
    },
}

/// One photo of a batch: read (its size) or refused (the reason).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhotoResult {
    Read { width: u32, height: u32 },
    Refused { error: String },
}

// ---- the search worker: holds the index (int8 rows) and ranks it ----

/// UI -> search worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SearchRequest {
    /// Reads every stored vector of this model from IndexedDB (replacing what it held).
    Load {
        model: String,
        dim: usize,
    },
    /// Payloads: the photos' int8 codes (`hashes.len() * dim` bytes), then their scales (f32).
    Add {
        hashes: Vec<String>,
    },
    Clear,
    /// Payload: the query (f32). The best `top_k` photos, `exclude` left out.
    Search {
        top_k: usize,
        min_score: Option<f32>,
        exclude: Option<String>,
    },
    /// A stored photo's vector, to search for similar photos.
    Vector {
        hash: String,
    },
    /// What the index holds and the worker's memory.
    Stats,
}

/// Search worker -> UI. Message id 0 is `Ready`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SearchReply {
    Ready,
    /// `other_model`: stored vectors of another model, not loaded.
    Loaded {
        rows: usize,
        other_model: usize,
        ms: f64,
    },
    Added {
        rows: usize,
    },
    /// Best first, with exact scores; `ms` is the time the ranking took.
    Hits {
        hits: Vec<(String, f32)>,
        rows: usize,
        ms: f64,
    },
    /// Payload: the vector (f32).
    Vector,
    /// `index_bytes`: codes and scales; `memory_bytes`: the worker's whole wasm memory.
    Stats {
        rows: usize,
        index_bytes: usize,
        memory_bytes: usize,
    },
    Failed {
        error: String,
    },
    Crashed {
        error: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_json() {
        let msgs = [
            Request::Load { prefer_gpu: true, from: LoadFrom::File },
            Request::Load { prefer_gpu: false, from: LoadFrom::Opfs { file: "converted-1-q8.safetensors".into() } },
            Request::Load {
                prefer_gpu: true,
                from: LoadFrom::Download(Download {
                    path: "models/m.safetensors".into(),
                    bytes: 5.0,
                    sha256: "ab".into(),
                    keep_as: "site-ab.safetensors".into(),
                }),
            },
            Request::EmbedText { text: "海边的日落".into() },
            Request::EmbedImages { thumb_size: 384, test_faults: vec![] },
            Request::EmbedImages { thumb_size: 384, test_faults: vec![None, Some(TestFault::Hang)] },
            Request::Convert(ConvertOptions {
                quant: "q8".into(),
                vocab: "[PAD]\n".into(),
                config_json: None,
                out_file: "m.safetensors".into(),
                test_step_ms: None,
            }),
        ];
        for m in msgs {
            let s = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), m);
        }
        let r = Reply::Failed { error: "corrupt".into() };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"op":"failed","error":"corrupt"}"#);
        // Production requests carry no test fault at all.
        let plain = serde_json::to_string(&Request::EmbedImages { thumb_size: 8, test_faults: vec![] }).unwrap();
        assert_eq!(plain, r#"{"op":"embed_images","thumb_size":8}"#);
        let search = [
            SearchRequest::Load { model: "abc".into(), dim: 2048 },
            SearchRequest::Search { top_k: 60, min_score: Some(0.1), exclude: None },
            SearchRequest::Add { hashes: vec!["h".into()] },
        ];
        for m in search {
            let s = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<SearchRequest>(&s).unwrap(), m);
        }
        let hits = SearchReply::Hits { hits: vec![("h".into(), 0.5)], rows: 1, ms: 1.0 };
        assert_eq!(serde_json::from_str::<SearchReply>(&serde_json::to_string(&hits).unwrap()).unwrap(), hits);
    }

    #[test]
    fn test_faults_come_from_marked_names_only() {
        assert_eq!(TestFault::from_name("more/brivl-test-abort.jpg"), Some(TestFault::Abort));
        assert_eq!(TestFault::from_name("brivl-test-hang-2.jpg"), Some(TestFault::Hang));
        assert_eq!(TestFault::from_name("holiday/beach.jpg"), None);
    }
}
