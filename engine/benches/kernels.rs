//! Kernel benchmark at BriVL's real shapes: prints GFLOP/s (compute-bound kernels) or GB/s
//! (memory-bound ones) and the adapter. Not a test: `cargo bench -p brivl-engine --bench kernels`.

use std::time::Instant;

use brivl_engine::ops::{matmul, Activation};
use brivl_engine::quant::Packed;
use brivl_engine::{DType, Gpu, Pass, Tensor};

struct Row {
    name: String,
    ms: f64,
    rate: String,
}

/// Records `reps` copies of `op` in one pass, so dispatch overhead is amortised as in a forward
/// pass, and times submit-to-idle. One warm-up pass compiles the pipeline first.
fn time(gpu: &Gpu, reps: usize, mut op: impl FnMut(&mut Pass)) -> f64 {
    let mut run = |n: usize| {
        let mut pass = Pass::new(gpu);
        for _ in 0..n {
            op(&mut pass);
        }
        let t = Instant::now();
        pass.submit().expect("submit");
        gpu.device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
        t.elapsed().as_secs_f64()
    };
    run(1);
    run(reps) * 1e3 / reps as f64
}

fn random(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05).collect()
}

fn bench_linear(gpu: &Gpu, rows: &mut Vec<Row>, m: usize, n: usize, k: usize, dtype: DType, reps: usize) {
    let x = Tensor::from_f32(gpu, &[m, k], &random(m * k)).unwrap();
    let w = Tensor::from_packed(gpu, &Packed::new(&random(n * k), n, k, dtype).unwrap()).unwrap();
    let b = Tensor::from_f32(gpu, &[n], &random(n)).unwrap();
    let ms = time(gpu, reps, |p| {
        matmul::linear(p, &x, &w, Some(&b), Activation::Gelu).unwrap();
    });
    let flop = 2.0 * (m * n * k) as f64;
    rows.push(Row { name: format!("linear {m}x{k} by {n}x{k} {dtype:?}"), ms, rate: format!("{:.1} GFLOP/s", flop / ms / 1e6) });
}

fn main() {
    let gpu = pollster::block_on(Gpu::new()).expect("the benchmark needs a GPU adapter");
    println!("adapter: {}", gpu.describe());
    let quick = std::env::var_os("BRIVL_BENCH_QUICK").is_some();
    let reps = if quick { 2 } else { 5 };
    let mut rows = Vec::new();

    for dtype in [DType::F32, DType::F16, DType::Q8] {
        // imgAtt in_proj: 37 boxes, d 2048 -> 3 x 2048.
        bench_linear(&gpu, &mut rows, 37, 6144, 2048, dtype, reps);
        // BERT feed-forward up-projection at L = 32.
        bench_linear(&gpu, &mut rows, 32, 3072, 768, dtype, reps);
    }
    // Backbone pointwise convs as matmuls: stage-2 expand at 57x57, head at 15x15.
    bench_linear(&gpu, &mut rows, 57 * 57, 240, 40, DType::F32, reps);
    bench_linear(&gpu, &mut rows, 15 * 15, 2048, 512, DType::F32, reps);

    println!("\n| kernel | ms | rate |\n|---|---:|---:|");
    for r in rows {
        println!("| {} | {:.3} | {} |", r.name, r.ms, r.rate);
    }
}
