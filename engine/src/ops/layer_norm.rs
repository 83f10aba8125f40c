//! Layer normalisation over the last axis, with the residual add of post-norm transformer
//! layers fused in: `y = LN(x + residual) * gamma + beta`. Kernel: `shaders/layer_norm.wgsl`.

use crate::error::ensure_shape;
use crate::ops::{ensure_grid, ensure_u32, Meta};
use crate::pipelines::Kernel;
use crate::{DType, Pass, Result, Tensor};

crate::uniforms::uniform_struct! {
    /// Shapes for `layer_norm.wgsl`.
    pub struct LayerNormParams { pub rows: u32, pub d: u32, pub eps: f32 }
}

const KERNEL: Kernel = crate::pipelines::kernel!("layer_norm", "main");

/// Checked shapes: `rows` rows of `d` values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LayerNormGeometry {
    pub rows: usize,
    pub d: usize,
}

/// The shape check of [`layer_norm`] and its CPU twin: `x` f32 `[..., D]` with D > 0, `gamma`
/// and `beta` f32 `[D]`, `residual` f32 of `x`'s shape.
pub(crate) fn check(x: Meta, residual: Option<Meta>, gamma: Meta, beta: Meta) -> Result<LayerNormGeometry> {
    let d = x.shape.last().copied().unwrap_or(0);
    ensure_shape!(d > 0, "layer_norm: x {:?} has no last axis to normalise", x.shape);
    ensure_shape!(x.dtype == DType::F32, "layer_norm: x must be f32, got {:?}", x.dtype);
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        ensure_shape!(
            t.shape == [d] && t.dtype == DType::F32,
            "layer_norm: {name} {:?} {:?} is not f32 [{d}]",
            t.dtype,
            t.shape
        );
    }
    if let Some(r) = residual {
        ensure_shape!(
            r.shape == x.shape && r.dtype == DType::F32,
            "layer_norm: residual {:?} {:?} is not f32 like x {:?}",
            r.dtype,
            r.shape,
            x.shape
        );
    }
    ensure_u32("layer_norm", "elements", x.numel())?;
    let rows = x.numel() / d;
    ensure_grid("layer_norm", rows)?;
    Ok(LayerNormGeometry { rows, d })
}

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
    let g = check(x.into(), residual.map(Meta::from), gamma.into(), beta.into())?;
    let y = Tensor::uninit(pass.gpu(), x.shape())?;
    if g.rows == 0 {
        return Ok(y);
    }
    let params = LayerNormParams { rows: g.rows as u32, d: g.d as u32, eps };
    let groups = Pass::grid(g.rows as u32);
    match residual {
        Some(r) => pass.dispatch(&KERNEL, &["RESIDUAL"], &params, &[x, r, gamma, beta, &y], groups),
        None => pass.dispatch(&KERNEL, &[], &params, &[x, gamma, beta, &y], groups),
    }
    Ok(y)
}

/// CPU twin, on what [`check`] passed: rows of `gamma.len()` values, same two-sweep algorithm as
/// the kernel.
pub(crate) fn layer_norm_cpu(x: &[f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) -> Vec<f32> {
    let d = gamma.len();
    let mut y: Vec<f32> = match residual {
        Some(r) => x.iter().zip(r).map(|(a, b)| a + b).collect(),
        None => x.to_vec(),
    };
    let work = y.len();
    crate::parallel::for_row_chunks(&mut y, d.max(1), 1, work, |_, rows| {
        for row in rows.chunks_exact_mut(d.max(1)) {
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *v = (*v - mean) * rstd * g + b;
            }
        }
    });
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

    gpu_test!(layer_norm_refuses_bad_shapes_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both, ones_u32, weight, zeros};
        let run = |x: &[usize], r: Option<&[usize]>, g: &[usize], b: &[usize], dtype: DType| {
            on_both!(gpu, |be| {
                let xt = zeros(be, x);
                let rt = r.map(|r| zeros(be, r));
                let (gt, bt) = (weight(be, g, dtype), weight(be, b, DType::F32));
                be.layer_norm(&xt, rt.as_ref(), &gt, &bt, 1e-5)
            })
        };
        let x = &[2, 3][..];
        assert_both_accept(run(x, Some(x), &[3], &[3], DType::F32), "good shapes");
        assert_same_refusal(run(x, None, &[4], &[3], DType::F32), "gamma length");
        assert_same_refusal(run(x, None, &[3], &[4], DType::F32), "beta length");
        assert_same_refusal(run(x, None, &[1, 3], &[3], DType::F32), "2-d gamma");
        assert_same_refusal(run(x, None, &[3], &[3], DType::F16), "f16 gamma");
        assert_same_refusal(run(x, Some(&[3, 2]), &[3], &[3], DType::F32), "residual shape");
        assert_same_refusal(run(&[2, 0], None, &[0], &[0], DType::F32), "D = 0");
        assert_same_refusal(run(&[], None, &[1], &[1], DType::F32), "0-d x");
        let ids = on_both!(gpu, |be| {
            let (xt, rt) = (zeros(be, x), ones_u32(be, x));
            let (g, b) = (weight(be, &[3], DType::F32), weight(be, &[3], DType::F32));
            be.layer_norm(&xt, Some(&rt), &g, &b, 1e-5)
        });
        assert_same_refusal(ids, "u32 residual");
    });
}
