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
    /// Where the file is kept (`opfs:<file>`; the model is loaded from there into a restarted worker).
    pub cache_key: String,
    pub from_cache: bool,
    /// The site's demo model: the demo album is offered with it only.
    pub demo: bool,
    /// The engine worker's WebAssembly memory once loaded (bytes; it only grows).
    pub worker_memory: f64,
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

/// A stored photo as the page keeps it: its names only (its int8 vector lives in the search
/// worker, its thumbnail in IndexedDB until it scrolls into view).
#[derive(Clone, Debug, PartialEq)]
pub struct Photo {
    /// Shared with the album's map (one copy of each hash in memory).
    pub hash: Arc<str>,
    pub names: Vec<String>,
    /// Its original can be read again through a folder handle.
    pub in_place: bool,
    /// The content hashes of the models it has an embedding of (one, or two while the index
    /// moves to another model); shared, one copy of each in memory.
    pub embedded_by: Vec<Arc<str>>,
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

/// Every stored photo in the order it was added, and where each is by content hash.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Album {
    pub list: Vec<Photo>,
    pub by_hash: HashMap<Arc<str>, usize>,
}

impl Album {
    pub fn from_list(list: Vec<Photo>) -> Self {
        let by_hash = list.iter().enumerate().map(|(i, p)| (p.hash.clone(), i)).collect();
        Self { list, by_hash }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn get(&self, hash: &str) -> Option<&Photo> {
        self.by_hash.get(hash).map(|&i| &self.list[i])
    }

    /// Adds a photo, or its new names and embeddings to the one of the same content.
    pub fn upsert(&mut self, p: Photo) {
        match self.by_hash.get(&p.hash) {
            Some(&i) => {
                self.list[i].names = p.names;
                self.list[i].embedded_by = p.embedded_by;
            }
            None => {
                self.by_hash.insert(p.hash.clone(), self.list.len());
                self.list.push(p);
            }
        }
    }

    /// Takes a photo out (it left the index).
    pub fn remove(&mut self, hash: &str) {
        if let Some(i) = self.by_hash.get(hash).copied() {
            self.list.remove(i);
            self.by_hash = self.list.iter().enumerate().map(|(i, p)| (p.hash.clone(), i)).collect();
        }
    }

    /// The photos without an embedding of the model with this content hash.
    pub fn lacking<'a>(&'a self, model: &'a str) -> impl Iterator<Item = &'a Photo> + 'a {
        self.list.iter().filter(move |p| !p.embedded_by.iter().any(|m| &**m == model))
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
    /// How long the ranking took in the search worker.
    pub ms: f64,
}

/// The query vector the results came from, kept so top-k and the minimum re-rank at once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LastQuery {
    pub vector: Arc<Vec<f32>>,
    pub exclude: Option<String>,
}

/// Results asked for at first, and added by "show more".
pub const PAGE: usize = 60;

#[derive(Clone, Copy)]
pub struct State {
    pub lang: RwSignal<Lang>,
    pub model: RwSignal<ModelStatus>,
    /// The model the worker has loaded (kept while another one is tried).
    pub in_use: RwSignal<Option<ReadyModel>>,
    pub photos: RwSignal<Album>,
    /// The search worker holds the index of the model in use.
    pub searchable: RwSignal<bool>,
    /// Queued files this visit cannot read (added without a folder handle before a reload).
    pub unreachable: RwSignal<Vec<String>>,
    /// Folders whose read permission must be asked again (after a reload).
    pub need_permission: RwSignal<Vec<String>>,
    /// The side panel (model and album) on narrow screens.
    pub panel_open: RwSignal<bool>,
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
    /// How many results are asked for ("show more" adds a page).
    pub top_k: RwSignal<usize>,
    /// The advanced minimum score (none: every photo ranks).
    pub min_score: RwSignal<Option<f32>>,
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
            photos: RwSignal::new(Album::default()),
            searchable: RwSignal::new(false),
            unreachable: RwSignal::new(Vec::new()),
            need_permission: RwSignal::new(Vec::new()),
            panel_open: RwSignal::new(false),
            failures: RwSignal::new(Vec::new()),
            not_photos: RwSignal::new(0),
            other_tab: RwSignal::new(false),
            progress: RwSignal::new(Progress { state: RunState::Idle, done: 0, remaining: 0, started_ms: 0.0 }),
            notice: RwSignal::new(String::new()),
            query: RwSignal::new(String::new()),
            query_used: RwSignal::new(String::new()),
            top_k: RwSignal::new(PAGE),
            min_score: RwSignal::new(None),
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
