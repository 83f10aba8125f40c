//! Models written against the crate's `Backend` (`backend.rs`), in the style of candle-transformers:
//! a config struct, a `load`, a `forward`.

pub mod brivl;
