//! The UI's state: plain data in signals, shared through Leptos context.

use std::collections::HashMap;
use std::sync::Arc;

use brivl_core::model_id::ModelId;
use leptos::prelude::*;

use crate::i18n::{Key, Lang};

#[derive(Clone, Debug, PartialEq)]
pub enum ModelStatus {
    Idle,
    Downloading {
        name: String,
        received: f64,
        total: f64,
    },
    Checking {
        name: String,
    },
    Loading {
        name: String,
    },
    Ready(ReadyModel),
    /// `previous` is the model still in use, if one was loaded before.
    Refused {
        name: String,
        error: String,
        previous: Option<ReadyModel>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReadyModel {
    pub name: String,
    pub bytes: f64,
    pub backend: String,
    pub on_gpu: bool,
    /// Why the CPU path runs, when it does.
    pub gpu_note: Option<String>,
    pub hash: String,
    /// Embedding width.
    pub dim: usize,
    /// Where Cache Storage keeps the file (the model is loaded from there into a restarted worker).
    pub cache_key: String,
    pub from_cache: bool,
    /// The site's demo model: the demo album is offered with it only.
    pub demo: bool,
}

impl ReadyModel {
    pub fn id(&self) -> ModelId {
        ModelId { hash: self.hash.clone(), dim: self.dim }
    }
}

impl ModelStatus {
    /// A short machine-readable state for `data-state` (browser tests wait on it).
    pub fn code(&self) -> &'static str {
        match self {
            ModelStatus::Idle => "idle",
            ModelStatus::Downloading { .. } => "downloading",
            ModelStatus::Checking { .. } => "checking",
            ModelStatus::Loading { .. } => "loading",
            ModelStatus::Ready(_) => "ready",
            ModelStatus::Refused { .. } => "refused",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Photo {
    pub hash: String,
    pub names: Vec<String>,
    pub embedding: Arc<Vec<f32>>,
    /// The model that made the embedding: only photos of the model in use are ranked.
    pub model: ModelId,
    /// An object URL of the stored thumbnail.
    pub thumb_url: String,
}

impl Photo {
    /// The path it was first added under.
    pub fn name(&self) -> &str {
        self.names.first().map(String::as_str).unwrap_or("")
    }

    /// The file name without its folders.
    pub fn file_name(&self) -> &str {
        let n = self.name();
        n.rsplit('/').next().unwrap_or(n)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Idle,
    Running,
    Paused,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub state: RunState,
    /// Photos embedded or skipped since this run started.
    pub done: usize,
    pub remaining: usize,
    pub started_ms: f64,
}

impl Progress {
    pub fn rate(&self, now_ms: f64) -> f64 {
        let secs = (now_ms - self.started_ms) / 1000.0;
        if self.done == 0 || secs <= 0.0 {
            0.0
        } else {
            self.done as f64 / secs
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub names: Vec<String>,
    pub reason: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Results {
    /// Set for a similar-photo search: the photo searched from.
    pub similar_to: Option<String>,
    pub hits: Vec<(String, f32)>,
    pub searched: bool,
}

/// The query vector the results came from, kept so top-k and the minimum re-rank at once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LastQuery {
    pub vector: Arc<Vec<f32>>,
    pub exclude: Option<String>,
}

#[derive(Clone, Copy)]
pub struct State {
    pub lang: RwSignal<Lang>,
    pub model: RwSignal<ModelStatus>,
    /// The model the worker has loaded (kept while another one is tried).
    pub in_use: RwSignal<Option<ReadyModel>>,
    pub photos: RwSignal<Vec<Photo>>,
    pub failures: RwSignal<Vec<Failure>>,
    /// Files left out because they are not photos (this session).
    pub not_photos: RwSignal<usize>,
    /// Another tab holds the indexing lock; this one waits for it.
    pub other_tab: RwSignal<bool>,
    pub progress: RwSignal<Progress>,
    /// The latest one-line message (files added, errors), shown in a live region.
    pub notice: RwSignal<String>,
    pub query: RwSignal<String>,
    pub query_used: RwSignal<String>,
    pub top_k: RwSignal<usize>,
    pub min_score: RwSignal<f32>,
    pub results: RwSignal<Results>,
    pub last_query: RwSignal<Option<LastQuery>>,
    /// The photo shown large.
    pub open: RwSignal<Option<String>>,
    /// Object URLs of originals added in this session, by content hash.
    pub originals: RwSignal<HashMap<String, String>>,
}

impl State {
    pub fn new(lang: Lang) -> Self {
        Self {
            lang: RwSignal::new(lang),
            model: RwSignal::new(ModelStatus::Idle),
            in_use: RwSignal::new(None),
            photos: RwSignal::new(Vec::new()),
            failures: RwSignal::new(Vec::new()),
            not_photos: RwSignal::new(0),
            other_tab: RwSignal::new(false),
            progress: RwSignal::new(Progress { state: RunState::Idle, done: 0, remaining: 0, started_ms: 0.0 }),
            notice: RwSignal::new(String::new()),
            query: RwSignal::new(String::new()),
            query_used: RwSignal::new(String::new()),
            top_k: RwSignal::new(12),
            min_score: RwSignal::new(-1.0),
            results: RwSignal::new(Results::default()),
            last_query: RwSignal::new(None),
            open: RwSignal::new(None),
            originals: RwSignal::new(HashMap::new()),
        }
    }

    /// `key` in the current language (tracked: the view updates when the language changes).
    pub fn t(&self, key: Key) -> &'static str {
        key.text(self.lang.get())
    }

    /// `key` in the current language, for messages composed outside the view.
    pub fn t_untracked(&self, key: Key) -> &'static str {
        key.text(self.lang.get_untracked())
    }
}

pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

pub fn format_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.0} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
