//! Kernel benchmark at BriVL's real shapes: prints GFLOP/s (compute-bound kernels) or GB/s
//! (memory-bound ones) and the adapter. Not a test: `cargo bench -p brivl-engine --bench kernels`.

use std::time::Instant;

use brivl_engine::ops::{
    attention, conv2d, depthwise, elementwise, embedding, grid_sample, l2_norm, layer_norm, masked_mean, matmul,
    preprocess, squeeze_excite, Activation,
};
use brivl_engine::{DType, Gpu, Packed, Pass, Tensor};

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
        gpu.wait_idle().expect("wait for the GPU");
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
    rows.push(Row {
        name: format!("linear {m}x{k} by {n}x{k} {dtype:?}"),
        ms,
        rate: format!("{:.1} GFLOP/s", flop / ms / 1e6),
    });
}

fn tensor(gpu: &Gpu, shape: &[usize]) -> Tensor {
    Tensor::from_f32(gpu, shape, &random(shape.iter().product())).unwrap()
}

/// Memory-bound kernels: `bytes` read and written once per call.
fn bandwidth(rows: &mut Vec<Row>, name: String, ms: f64, bytes: usize) {
    rows.push(Row { name, ms, rate: format!("{:.2} GB/s", bytes as f64 / ms / 1e6) });
}

/// `grid x grid` tiles and the whole map as grid_sample thetas, like BriVL's 37 boxes on a
/// `size x size` feature map.
fn box_thetas(size: usize, grid: usize) -> Vec<[f32; 6]> {
    let whole = size as f32 / (size as f32 - 1.0);
    let mut thetas = Vec::new();
    for i in 0..grid {
        for j in 0..grid {
            let centre = |k: usize| (2 * k + 1) as f32 / grid as f32 * whole - 1.0;
            thetas.push([whole / grid as f32, 0.0, centre(i), 0.0, whole / grid as f32, centre(j)]);
        }
    }
    thetas.push([whole, 0.0, 1.0 / (size as f32 - 1.0), 0.0, whole, 1.0 / (size as f32 - 1.0)]);
    thetas
}

fn bench_image_kernels(gpu: &Gpu, rows: &mut Vec<Row>, reps: usize) {
    // Stem: 456x456x3 -> 228x228x48, 3x3 stride 2 (B5).
    let x = tensor(gpu, &[1, 456, 456, 3]);
    let w = tensor(gpu, &[48, 3, 3, 3]);
    let b = tensor(gpu, &[48]);
    let ms = time(gpu, reps, |p| {
        conv2d::conv2d(p, &x, &w, Some(&b), 2, Activation::Silu).unwrap();
    });
    let flop = 2.0 * (228 * 228 * 48 * 27) as f64;
    rows.push(Row {
        name: "conv2d stem 456x456x3 -> 228x228x48".into(),
        ms,
        rate: format!("{:.1} GFLOP/s", flop / ms / 1e6),
    });

    // Depthwise 5x5 on 1056 channels at 29x29 (stage 4 of B5).
    let x = tensor(gpu, &[1, 29, 29, 1056]);
    let w = tensor(gpu, &[1056, 1, 5, 5]);
    let b = tensor(gpu, &[1056]);
    let ms = time(gpu, reps, |p| {
        depthwise::depthwise(p, &x, &w, Some(&b), 1, Activation::Silu).unwrap();
    });
    bandwidth(rows, "depthwise 5x5 s1 29x29x1056".into(), ms, 2 * 29 * 29 * 1056 * 4);

    // The first stage's depthwise with its squeeze-excite gate: 228x228x48, reduced to 12.
    let x = tensor(gpu, &[1, 228, 228, 48]);
    let w = tensor(gpu, &[48, 1, 3, 3]);
    let (w1, b1, w2, b2) = (tensor(gpu, &[12, 48]), tensor(gpu, &[12]), tensor(gpu, &[48, 12]), tensor(gpu, &[48]));
    let ms = time(gpu, reps, |p| {
        let (y, partial) = depthwise::depthwise_pooled(p, &x, &w, None, 1, Activation::Silu).unwrap();
        squeeze_excite::se_gate(p, &y, &partial, squeeze_excite::SeWeights { w1: &w1, b1: &b1, w2: &w2, b2: &b2 })
            .unwrap();
    });
    // Reads x and writes y once; the gate reads only the partial sums.
    bandwidth(rows, "depthwise 3x3 + squeeze-excite gate 228x228x48".into(), ms, 2 * 228 * 228 * 48 * 4);

    let a = tensor(gpu, &[1, 114, 114, 144]);
    let c = tensor(gpu, &[1, 114, 114, 144]);
    let ms = time(gpu, reps, |p| {
        elementwise::add(p, &a, &c).unwrap();
    });
    bandwidth(rows, "residual add 114x114x144".into(), ms, 3 * 114 * 114 * 144 * 4);

    // 37-box patch pooling on the 15x15x2048 head output, 4x4 samples per box.
    let x = tensor(gpu, &[1, 15, 15, 2048]);
    let thetas: Vec<f32> = box_thetas(15, 6).into_iter().flatten().collect();
    let thetas = Tensor::from_f32(gpu, &[37, 6], &thetas).unwrap();
    let ms = time(gpu, reps, |p| {
        grid_sample::grid_sample(p, &x, &thetas, 4).unwrap();
    });
    bandwidth(rows, "grid_sample 37 boxes x 4x4 on 15x15x2048".into(), ms, 37 * 16 * 2048 * 4 * 5);

    let x = tensor(gpu, &[37, 16, 2048]);
    let ms = time(gpu, reps, |p| {
        masked_mean::masked_mean(p, &x, None).unwrap();
    });
    bandwidth(rows, "masked_mean 37x16x2048".into(), ms, 37 * 17 * 2048 * 4);

    let x = tensor(gpu, &[37, 2048]);
    let ms = time(gpu, reps, |p| {
        l2_norm::l2_normalize(p, &x).unwrap();
    });
    bandwidth(rows, "l2_normalize 37x2048".into(), ms, 2 * 37 * 2048 * 4);

    // A 12-megapixel photo resized to the model's input, normalised with ImageNet's statistics.
    let norm = preprocess::Normalize { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
    let (h, w) = (3000, 4000);
    let rgba = vec![0x8040_c0ffu32; h * w];
    let photo = preprocess::Photo { height: h, width: w, rgba: &rgba };
    // Includes gathering the tapped rows and columns on the host and uploading them.
    let ms = time(gpu, reps, |p| {
        preprocess::preprocess(p, &[photo], 456, 456, &norm).unwrap();
    });
    rows.push(Row {
        name: "preprocess 4000x3000 RGBA8 -> 456x456x3".into(),
        ms,
        rate: format!("{:.1} images/s", 1e3 / ms),
    });
}

fn bench_transformer_kernels(gpu: &Gpu, rows: &mut Vec<Row>, reps: usize) {
    for (name, s, d, heads, masked) in
        [("imgAtt", 37, 2048, 4, false), ("BERT", 32, 768, 12, false), ("textAtt", 32, 768, 4, true)]
    {
        let qkv = tensor(gpu, &[1, s, 3 * d]);
        let mask =
            Tensor::from_u32(gpu, &[1, s], &(0..s as u32).map(|i| u32::from(i < 20)).collect::<Vec<_>>()).unwrap();
        let ms = time(gpu, reps, |p| {
            attention::attention(p, &qkv, heads, masked.then_some(&mask)).unwrap();
        });
        let flop = 4.0 * (s * s * d) as f64;
        rows.push(Row {
            name: format!("attention {name} S={s} D={d} heads={heads}"),
            ms,
            rate: format!("{:.2} GFLOP/s", flop / ms / 1e6),
        });
    }
    let x = tensor(gpu, &[37, 2048]);
    let g = tensor(gpu, &[2048]);
    let ms = time(gpu, reps, |p| {
        layer_norm::layer_norm(p, &x, Some(&x), &g, &g, 1e-5).unwrap();
    });
    bandwidth(rows, "layer_norm + residual 37x2048".into(), ms, 3 * 37 * 2048 * 4);
    let table = Tensor::from_packed(gpu, &Packed::new(&random(21128 * 768), 21128, 768, DType::Q8).unwrap()).unwrap();
    let ids = Tensor::from_u32(gpu, &[8, 32], &(0..256u32).map(|i| i * 79 % 21128).collect::<Vec<_>>()).unwrap();
    let pos = tensor(gpu, &[512, 768]);
    let ms = time(gpu, reps, |p| {
        embedding::embedding(p, &ids, &table, Some(&pos)).unwrap();
    });
    bandwidth(rows, "embedding q8 21128x768, 8x32 ids".into(), ms, 8 * 32 * 768 * (1 + 4 + 4));
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
    // Backbone pointwise convs as matmuls: stage 2's expand and project at 114x114, stage 3's
    // expand at 57x57, the head at 15x15.
    bench_linear(&gpu, &mut rows, 114 * 114, 240, 40, DType::Q8, reps);
    bench_linear(&gpu, &mut rows, 114 * 114, 40, 240, DType::Q8, reps);
    bench_linear(&gpu, &mut rows, 57 * 57, 384, 64, DType::Q8, reps);
    bench_linear(&gpu, &mut rows, 57 * 57, 240, 40, DType::F32, reps);
    bench_linear(&gpu, &mut rows, 15 * 15, 2048, 512, DType::F32, reps);

    bench_image_kernels(&gpu, &mut rows, reps);
    bench_transformer_kernels(&gpu, &mut rows, reps);

    println!("\n| kernel | ms | rate |\n|---|---:|---:|");
    for r in rows {
        println!("| {} | {:.3} | {} |", r.name, r.ms, r.rate);
    }
}
