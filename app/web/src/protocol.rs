//! Messages between the UI and the engine worker. Each message is a JS array
//! `[id, json, ...buffers]`: the JSON below, plus binary payloads (model or photo bytes in,
//! embeddings and thumbnails out) passed as transferable buffers rather than as JSON numbers.

use serde::{Deserialize, Serialize};

/// UI -> worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Payload: the model file's bytes, or none with `opfs_file`: the worker reads that file of
    /// the origin private file system itself. `prefer_gpu: false` runs the CPU path.
    Load {
        prefer_gpu: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opfs_file: Option<String>,
    },
    /// Payload: a photo file's bytes. Replies with the embedding and a JPEG thumbnail whose
    /// longer side is at most `thumb_size`.
    EmbedImage {
        thumb_size: u32,
        /// Tests only (the UI sets it only with `?test_hooks=1` in the address): the worker fails
        /// this way instead of reading the photo.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        test_fault: Option<TestFault>,
    },
    EmbedText {
        text: String,
    },
    /// To a worker of its own (terminated to cancel). Payload: the checkpoint `File` (not bytes:
    /// the worker reads it in slices). Replies `ConvertProgress` (any number), then `Converted`.
    Convert(ConvertOptions),
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
    },
    /// Payloads: the embedding (f32) and the thumbnail (JPEG bytes).
    Image {
        width: u32,
        height: u32,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_json() {
        let msgs = [
            Request::Load { prefer_gpu: true, opfs_file: None },
            Request::Load { prefer_gpu: false, opfs_file: Some("converted-1-q8.safetensors".into()) },
            Request::EmbedText { text: "海边的日落".into() },
            Request::EmbedImage { thumb_size: 384, test_fault: None },
            Request::EmbedImage { thumb_size: 384, test_fault: Some(TestFault::Hang) },
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
        let plain = serde_json::to_string(&Request::EmbedImage { thumb_size: 8, test_fault: None }).unwrap();
        assert_eq!(plain, r#"{"op":"embed_image","thumb_size":8}"#);
    }

    #[test]
    fn test_faults_come_from_marked_names_only() {
        assert_eq!(TestFault::from_name("more/brivl-test-abort.jpg"), Some(TestFault::Abort));
        assert_eq!(TestFault::from_name("brivl-test-hang-2.jpg"), Some(TestFault::Hang));
        assert_eq!(TestFault::from_name("holiday/beach.jpg"), None);
    }
}
