//! Models written against [`crate::backend::Backend`], in the style of candle-transformers:
//! a config struct, a `load`, a `forward`.

pub mod brivl;
