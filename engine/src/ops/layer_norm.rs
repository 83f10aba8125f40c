//! Layer normalisation over the last axis, with the residual add of post-norm transformer
//! layers fused in: `y = LN(x + residual) * gamma + beta`. Kernel: `shaders/layer_norm.wgsl`.

use crate::error::ensure_shape;
use crate::pipelines::Kernel;
use crate::{DType, Pass, Result, Tensor};

crate::uniform_struct! {
    /// Shapes for `layer_norm.wgsl`.
    pub struct LayerNormParams { pub rows: u32, pub d: u32, pub eps: f32 }
}

const KERNEL: Kernel = crate::kernel!("layer_norm", "main");

/// `LN(x (+ residual))` over the last axis `D` of `x [..., D]`, scaled by `gamma [D]` and
/// shifted by `beta [D]`. BERT uses `eps = 1e-12`, the encoder layers `1e-5`.
pub fn layer_norm(
    pass: &mut Pass,
    x: &Tensor,
    residual: Option<&Tensor>,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let d = x.shape().last().copied().unwrap_or(0);
    ensure_shape!(d > 0, "layer_norm: x {:?} has no last axis to normalise", x.shape());
    ensure_shape!(x.dtype() == DType::F32, "layer_norm: x must be f32");
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        ensure_shape!(
            t.shape() == [d] && t.dtype() == DType::F32,
            "layer_norm: {name} {:?} is not f32 [{d}]",
            t.shape()
        );
    }
    if let Some(r) = residual {
        ensure_shape!(
            r.shape() == x.shape() && r.dtype() == DType::F32,
            "layer_norm: residual {:?} differs from x {:?}",
            r.shape(),
            x.shape()
        );
    }
    let rows = x.numel() / d;
    ensure_shape!(x.numel() <= u32::MAX as usize, "layer_norm: {} elements exceed u32 indexing", x.numel());
    let y = Tensor::uninit(pass.gpu(), x.shape())?;
    if rows == 0 {
        return Ok(y);
    }
    let params = LayerNormParams { rows: rows as u32, d: d as u32, eps };
    let groups = Pass::grid(rows as u32);
    match residual {
        Some(r) => pass.dispatch(&KERNEL, &["RESIDUAL"], &params, &[x, r, gamma, beta, &y], groups),
        None => pass.dispatch(&KERNEL, &[], &params, &[x, gamma, beta, &y], groups),
    }
    Ok(y)
}

/// CPU twin: rows of `gamma.len()` values, same two-sweep algorithm as the kernel.
pub fn layer_norm_cpu(x: &[f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let d = gamma.len();
    let mut y: Vec<f32> = match residual {
        Some(r) => x.iter().zip(r).map(|(a, b)| a + b).collect(),
        None => x.to_vec(),
    };
    for row in y.chunks_exact_mut(d.max(1)) {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * rstd * g + b;
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, gpu_test, random};
    use crate::Gpu;

    async fn run(gpu: &Gpu, x: &[f32], res: Option<&[f32]>, g: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
        let d = g.len();
        let shape = [x.len() / d, d];
        let xt = Tensor::from_f32(gpu, &shape, x).unwrap();
        let rt = res.map(|r| Tensor::from_f32(gpu, &shape, r).unwrap());
        let gt = Tensor::from_f32(gpu, &[d], g).unwrap();
        let bt = Tensor::from_f32(gpu, &[d], b).unwrap();
        let mut pass = Pass::new(gpu);
        let y = layer_norm(&mut pass, &xt, rt.as_ref(), &gt, &bt, eps).unwrap();
        pass.submit().unwrap();
        y.read_f32(gpu).await.unwrap()
    }

    gpu_test!(layer_norm_matches_cpu_ragged, |gpu| {
        // D = 37 and 2050 are not multiples of the 256-thread workgroup; 1 is the degenerate row.
        for (i, (rows, d, residual, eps)) in [
            (3, 37, true, 1e-5),
            (5, 768, false, 1e-12),
            (2, 2050, true, 1e-5),
            (4, 1, false, 1e-5),
            (70, 256, true, 1e-12),
        ]
        .into_iter()
        .enumerate()
        {
            let seed = 10 * i as u64;
            let x = random(rows * d, seed + 1, 2.0);
            let r = random(rows * d, seed + 2, 1.0);
            let g = random(d, seed + 3, 1.5);
            let b = random(d, seed + 4, 0.5);
            let res = residual.then_some(&r[..]);
            let want = layer_norm_cpu(&x, res, &g, &b, eps);
            let got = run(gpu, &x, res, &g, &b, eps).await;
            // Outputs are O(|gamma| + |beta|) ~ 2; the mean and variance are f32 sums of D terms
            // in another order, so relative error ~ sqrt(D) * 6e-8 on the normalised value.
            let atol = 1e-6 * (d as f32).sqrt().max(2.0);
            assert_close(&got, &want, atol, 1e-5, &format!("layer_norm [{rows}, {d}] residual={residual} eps={eps}"));
        }
    });

    gpu_test!(layer_norm_normalises_rows_with_large_offset, |gpu| {
        // Rows centred at 1000 with std ~0.6: E[x^2] - E[x]^2 would lose every digit of the
        // variance in f32 (1e6 +- 0.4); mean-first keeps it.
        let (rows, d) = (6, 1000);
        let x: Vec<f32> =
            random(rows * d, 7, 1.0).iter().enumerate().map(|(i, v)| v + 1000.0 + (i / d) as f32).collect();
        let got = run(gpu, &x, None, &vec![1.0; d], &vec![0.0; d], 1e-5).await;
        for row in got.chunks_exact(d) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
            // The inputs are only resolved to 6e-5 at 1000 (f32 ulp), which is ~1e-4 of the std.
            assert!(mean.abs() < 1e-4, "row mean {mean}");
            assert!((var - 1.0).abs() < 1e-3, "row variance {var}");
        }
    });

    gpu_test!(layer_norm_refuses_bad_shapes, |gpu| {
        let x = Tensor::from_f32(gpu, &[2, 3], &[0.0; 6]).unwrap();
        let g3 = Tensor::from_f32(gpu, &[3], &[1.0; 3]).unwrap();
        let g4 = Tensor::from_f32(gpu, &[4], &[1.0; 4]).unwrap();
        let r = Tensor::from_f32(gpu, &[3, 2], &[0.0; 6]).unwrap();
        let empty = Tensor::from_f32(gpu, &[2, 0], &[]).unwrap();
        let mut pass = Pass::new(gpu);
        let is_shape = |r: Result<Tensor>| matches!(r, Err(crate::Error::Shape(_)));
        assert!(is_shape(layer_norm(&mut pass, &x, None, &g4, &g3, 1e-5)));
        assert!(is_shape(layer_norm(&mut pass, &x, None, &g3, &g4, 1e-5)));
        assert!(is_shape(layer_norm(&mut pass, &x, Some(&r), &g3, &g3, 1e-5)));
        assert!(is_shape(layer_norm(&mut pass, &empty, None, &g3, &g3, 1e-5)));
    });
}
