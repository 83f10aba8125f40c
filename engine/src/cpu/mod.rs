//! The CPU path's fast kernels: SIMD levels chosen at run time ([`simd`]), the GEMM with f16 and
//! q8 weights kept in their format ([`gemm`]; int8 products for q8 in `int8`),
//! vectorised element-wise maths ([`vector`]), each level's vector operations for kernels written
//! once ([`lanes`]) and per-op timing for profiling ([`op_times`]).
//! The ops' CPU twins (`ops/*.rs`) call into these.

pub(crate) mod buffers;
pub(crate) mod gemm;
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
pub(crate) mod int8;
pub(crate) mod lanes;
pub(crate) mod op_times;
pub mod simd;
pub(crate) mod vector;

pub use simd::Level;
