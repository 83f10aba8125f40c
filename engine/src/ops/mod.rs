//! Op families: each `foo.rs` holds the shape check, the dispatch, the CPU twin and the tests for
//! `shaders/foo.wgsl`.
//!
//! Each op's `check` is the one place its inputs are validated: the GPU dispatch and the CPU
//! backend's twin both call it first, so a bad input gets the same error on either backend and
//! the twins can index without further checks. The kernels' limits (32-bit indexing, workgroups
//! per dispatch) are part of the check too, for the same reason.

pub mod activation;
pub mod attention;
pub mod concat;
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

use crate::error::ensure_shape;
use crate::pass::MAX_WORKGROUPS_PER_DIM;
use crate::{DType, Result, Tensor};

/// What a shape check sees of an operand on either backend: its shape and element type.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta<'a> {
    pub shape: &'a [usize],
    pub dtype: DType,
}

impl<'a> From<&'a Tensor> for Meta<'a> {
    fn from(t: &'a Tensor) -> Self {
        Self { shape: t.shape(), dtype: t.dtype() }
    }
}

impl Meta<'_> {
    pub(crate) fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Refuses `n` indices past what a kernel's u32 arithmetic reaches.
pub(crate) fn ensure_u32(op: &str, what: &str, n: usize) -> Result<()> {
    // Strictly below u32::MAX: callers multiply with `saturating_mul`, and on 32-bit targets
    // (wasm32) an overflowing product saturates to exactly u32::MAX.
    ensure_shape!(n < u32::MAX as usize, "{op}: {what} ({n}) exceed 32-bit indexing");
    Ok(())
}

/// Refuses more workgroups than [`crate::Pass::grid`] can fold into two dimensions.
pub(crate) fn ensure_grid(op: &str, groups: usize) -> Result<()> {
    let max = MAX_WORKGROUPS_PER_DIM as usize;
    ensure_shape!(groups <= max * max, "{op}: {groups} workgroups exceed one dispatch");
    Ok(())
}
