//! Op families: each `foo.rs` holds the dispatch, the CPU twin and the tests for `shaders/foo.wgsl`.

pub mod activation;
pub mod attention;
pub mod conv2d;
pub mod depthwise;
pub mod elementwise;
pub mod embedding;
pub mod grid_sample;
pub mod l2_norm;
pub mod layer_norm;
pub mod masked_mean;
pub mod matmul;
pub mod preprocess;
pub mod squeeze_excite;

pub use activation::Activation;
