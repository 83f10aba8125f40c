//! Test support: one shared device, seeded random data, tolerant comparison, and `gpu_test!`,
//! which compiles each kernel test both as a native `#[test]` and as a browser `wasm_bindgen_test`.

use crate::backend::Backend;
use crate::quant::Packed;
use crate::{DType, Error, Gpu, Result};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn gpu() -> &'static Gpu {
    static GPU: std::sync::OnceLock<Gpu> = std::sync::OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = pollster::block_on(Gpu::new()).expect("kernel tests need a GPU adapter (lavapipe on CI)");
        eprintln!("kernel tests on: {}", gpu.describe());
        gpu
    })
}

#[cfg(target_arch = "wasm32")]
pub(crate) async fn gpu() -> &'static Gpu {
    thread_local!(static GPU: std::cell::Cell<Option<&'static Gpu>> = const { std::cell::Cell::new(None) });
    if let Some(g) = GPU.with(|g| g.get()) {
        return g;
    }
    let gpu: &'static Gpu = Box::leak(Box::new(Gpu::new().await.expect("kernel tests need WebGPU")));
    web_sys_log(&format!("kernel tests on: {}", gpu.describe()));
    GPU.with(|g| g.set(Some(gpu)));
    gpu
}

#[cfg(target_arch = "wasm32")]
fn web_sys_log(msg: &str) {
    wasm_bindgen_test::console_log!("{}", msg);
}

/// Declares an async kernel test that runs natively and in the browser.
macro_rules! gpu_test {
    ($name:ident, |$gpu:ident| $body:block) => {
        #[cfg(not(target_arch = "wasm32"))]
        #[test]
        fn $name() {
            let $gpu: &'static $crate::Gpu = $crate::testing::gpu();
            pollster::block_on(async move { $body });
        }
        #[cfg(target_arch = "wasm32")]
        #[wasm_bindgen_test::wasm_bindgen_test]
        async fn $name() {
            let $gpu: &'static $crate::Gpu = $crate::testing::gpu().await;
            $body
        }
    };
}
pub(crate) use gpu_test;

/// Declares a CPU-path test that runs natively and in the browser (where `#[test]` alone would
/// not run: the wasm runner only runs `wasm_bindgen_test`s).
macro_rules! cpu_test {
    ($name:ident, $body:block) => {
        #[cfg_attr(not(target_arch = "wasm32"), test)]
        #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
        fn $name() $body
    };
}
pub(crate) use cpu_test;

/// Deterministic uniform values in [-scale, scale] (xorshift; no dependency, same on wasm).
pub(crate) fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Fails with the worst element when |got - want| > atol + rtol * |want| anywhere.
#[track_caller]
pub(crate) fn assert_close(got: &[f32], want: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        assert!(!g.is_nan(), "{what}: NaN at {i}");
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    let i = worst.0;
    assert!(worst.1 <= 0.0, "{what}: element {i} is {} but should be {} (atol {atol}, rtol {rtol})", got[i], want[i]);
}

/// Runs `$body`, an op call on the backend `$be`, once on a `CpuBackend` and once on a
/// `GpuBackend`; evaluates to both results (outputs dropped), CPU first.
macro_rules! on_both {
    ($gpu:expr, |$be:ident| $body:expr) => {{
        use $crate::backend::Backend as _;
        let cpu = {
            let $be = &mut $crate::backend::CpuBackend::default();
            $body.map(|_| ())
        };
        let gpu = {
            let $be = &mut $crate::backend::GpuBackend::new($gpu);
            $body.map(|_| ())
        };
        (cpu, gpu)
    }};
}
pub(crate) use on_both;

/// Both backends refused with the same shape error.
#[track_caller]
pub(crate) fn assert_same_refusal((cpu, gpu): (Result<()>, Result<()>), what: &str) {
    match (cpu, gpu) {
        (Err(Error::Shape(c)), Err(Error::Shape(g))) => assert_eq!(c, g, "{what}: the backends word it differently"),
        (c, g) => panic!("{what}: expected the same shape error on both backends, got CPU {c:?}, GPU {g:?}"),
    }
}

/// Both backends accepted (so the refusals next to it are about the one thing changed).
#[track_caller]
pub(crate) fn assert_both_accept((cpu, gpu): (Result<()>, Result<()>), what: &str) {
    assert!(cpu.is_ok() && gpu.is_ok(), "{what}: expected both backends to accept, got CPU {cpu:?}, GPU {gpu:?}");
}

/// An f32 activation of zeros.
pub(crate) fn zeros<B: Backend>(be: &mut B, shape: &[usize]) -> B::Tensor {
    be.tensor(shape, &vec![0.0; shape.iter().product()]).unwrap()
}

/// A u32 tensor of ones (ids, masks, pixels).
pub(crate) fn ones_u32<B: Backend>(be: &mut B, shape: &[usize]) -> B::Tensor {
    be.tensor_u32(shape, &vec![1; shape.iter().product()]).unwrap()
}

/// A weight of zeros of any shape, packed as `dtype` (`U32`: raw words, which only a bad model
/// file would hold).
pub(crate) fn weight<B: Backend>(be: &B, shape: &[usize], dtype: DType) -> B::Weight {
    let rows = shape.first().copied().unwrap_or(1);
    let cols = shape.iter().skip(1).product();
    let packed = match dtype {
        DType::U32 => Packed { dtype, rows, cols, words: vec![0; rows * cols] },
        _ => Packed::new(&vec![0.0; rows * cols], rows, cols, dtype).unwrap(),
    };
    be.weight(&packed, shape).unwrap()
}
