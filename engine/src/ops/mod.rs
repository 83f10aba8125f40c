//! Op families: each `foo.rs` holds the dispatch, the CPU twin and the tests for `shaders/foo.wgsl`.

pub mod activation;
pub mod matmul;

pub use activation::Activation;
