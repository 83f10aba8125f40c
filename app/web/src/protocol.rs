//! Messages between the UI and the engine worker. Each message is a JS array
//! `[id, json, ...buffers]`: the JSON below, plus binary payloads (model or photo bytes in,
//! embeddings and thumbnails out) passed as transferable buffers rather than as JSON numbers.

use serde::{Deserialize, Serialize};

/// UI -> worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Payload: the model file's bytes. `prefer_gpu: false` runs the CPU path.
    Load {
        prefer_gpu: bool,
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
            Request::Load { prefer_gpu: true },
            Request::EmbedText { text: "海边的日落".into() },
            Request::EmbedImage { thumb_size: 384, test_fault: None },
            Request::EmbedImage { thumb_size: 384, test_fault: Some(TestFault::Hang) },
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
