//! brivl-engine: a small WGSL compute-shader engine on wgpu that runs the BriVL towers.
//!
//! Every op family lives in `ops/<name>.rs` beside its kernel `shaders/<name>.wgsl`; each has a
//! plain-Rust CPU twin that the tests compare against and that can run a model with no adapter.
//!
//! The front ends use [`embedder::Embedder`] with [`Gpu`], [`model_file::ModelFile`], [`photo`],
//! [`checkpoint`] + [`convert`] and [`tokenizer`]. [`ops`] with
//! [`Pass`] and [`Tensor`] run single kernels (the kernel benchmark does); everything else is
//! internal.

pub mod checkpoint;
pub mod convert;
pub mod cpu;
pub mod embedder;
pub mod model_file;
pub mod models;
pub mod ops;
pub mod photo;
pub mod profile;
pub mod tokenizer;

mod backend;
mod bind_groups;
mod error;
mod gpu;
mod parallel;
mod pass;
mod pipelines;
mod pool;
mod quant;
mod tensor;
mod uniforms;

#[cfg(test)]
mod testing;

pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions};
pub use pass::Pass;
pub use pool::PoolBytes;
pub use quant::{Packed, Q8_GROUP};
pub use tensor::{DType, Tensor};
