//! brivl-engine: a small WGSL compute-shader engine on wgpu that runs the BriVL towers.
//!
//! Every op family lives in `ops/<name>.rs` beside its kernel `shaders/<name>.wgsl`; each has a
//! plain-Rust CPU twin that the tests compare against and that can run a model with no adapter.

pub mod backend;
pub mod checkpoint;
pub mod convert;
pub mod embedder;
pub mod error;
pub mod gpu;
pub mod model_file;
pub mod models;
pub mod ops;
pub mod parallel;
pub mod pass;
pub mod photo;
pub mod pipelines;
pub mod pool;
pub mod quant;
pub mod tensor;
pub mod tokenizer;
pub mod uniforms;

#[cfg(test)]
pub(crate) mod testing;

pub use error::{Error, Result};
pub use gpu::Gpu;
pub use pass::Pass;
pub use tensor::{DType, Tensor};
