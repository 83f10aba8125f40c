//! The desktop build's library parts (native only): find photos in folders ([`walk`]), keep
//! their embeddings in an SQLite index ([`store`]), fill it incrementally with decoding on
//! worker threads while the model embeds ([`indexer`]), and rank it against a query ([`search`]).

pub mod indexer;
pub mod search;
pub mod store;
pub mod walk;

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
    #[error(
        "the index {index} was made with model {} and cannot take embeddings of model {}; \
         use another --db for this model",
        short(.index_model.as_str()),
        short(.model.as_str())
    )]
    OtherModel { index: String, index_model: String, model: String },
    #[error("{0}")]
    Engine(#[from] crate::Error),
    #[error("query dictionary: {0}")]
    Dictionary(String),
}

/// The first 16 hex digits of a model hash, as `brivl convert` prints them.
pub fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}
