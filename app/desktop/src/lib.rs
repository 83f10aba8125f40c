//! The desktop program's parts (the `brivl` binary is `main.rs`): find photos in folders
//! ([`walk`]), keep their embeddings in an SQLite index ([`store`]), fill it incrementally with
//! decoding on worker threads while the model embeds ([`indexer`]), and rank it against a query
//! ([`search`], on `brivl-core`'s ranking).

pub mod atomic_file;
pub mod indexer;
pub mod search;
pub mod store;
pub mod walk;

use brivl_core::model_id::OtherModel;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DesktopError {
    #[error("{0}")]
    Io(String),
    #[error("index database {0}")]
    Database(String),
    #[error("{0} is not a brivl index: {1}")]
    NotAnIndex(String, String),
    #[error("no index at {0}; make one with `brivl index DIR --model M --db {0}`")]
    NoIndex(String),
    /// Embeddings of two models live in different spaces; mixing them would rank nonsense.
    #[error("{index}: {source}; use another --db for this model")]
    OtherModel { index: String, source: OtherModel },
    #[error("{0}")]
    Engine(#[from] brivl_engine::Error),
    #[error("query dictionary: {0}")]
    Dictionary(String),
}
