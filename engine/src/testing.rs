//! Test support: one shared device, seeded random data, tolerant comparison, and `gpu_test!`,
//! which compiles each kernel test both as a native `#[test]` and as a browser `wasm_bindgen_test`.

use crate::Gpu;

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
