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
    },
    EmbedText {
        text: String,
    },
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_json() {
        let msgs = [Request::Load { prefer_gpu: true }, Request::EmbedText { text: "海边的日落".into() }];
        for m in msgs {
            let s = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), m);
        }
        let r = Reply::Failed { error: "corrupt".into() };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"op":"failed","error":"corrupt"}"#);
    }
}
