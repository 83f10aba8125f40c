//! Row-wise L2 normalisation over the last axis (the 37 box vectors, the BERT hidden states,
//! the final embeddings). Kernel: `shaders/l2_norm.wgsl`.

use crate::error::ensure_shape;
use crate::ops::{ensure_grid, ensure_u32, Meta};
use crate::pipelines::Kernel;
use crate::{DType, Error, Pass, Result, Tensor};

crate::uniforms::uniform_struct! {
    /// Shapes for `l2_norm.wgsl`: x is `[rows, d]`.
    pub struct L2NormParams { pub rows: u32, pub d: u32 }
}

const KERNEL: Kernel = crate::pipelines::kernel!("l2_norm", "main");
/// torch.nn.functional.normalize's default `eps`: the norm is clamped to at least this.
const EPS: f32 = 1e-12;

/// The shape check of [`l2_normalize`] and its CPU twin: `x` f32 `[..., D]` with D > 0.
/// Returns D.
pub(crate) fn check(x: Meta) -> Result<usize> {
    let d = match x.shape.last() {
        Some(&d) if d > 0 => d,
        _ => return Err(Error::Shape(format!("l2_normalize: x {:?} needs a last axis of D > 0", x.shape))),
    };
    ensure_shape!(x.dtype == DType::F32, "l2_normalize: x must be f32, got {:?}", x.dtype);
    ensure_u32("l2_normalize", "elements", x.numel())?;
    ensure_grid("l2_normalize", x.numel() / d)?;
    Ok(d)
}

/// `x [..., D] / max(||x||, 1e-12)` per row of the last axis, like `F.normalize(x, dim=-1)`.
/// A zero row stays zero.
pub fn l2_normalize(pass: &mut Pass, x: &Tensor) -> Result<Tensor> {
    let d = check(x.into())?;
    let rows = x.numel() / d;
    let out = Tensor::uninit(pass.gpu(), x.shape())?;
    let params = L2NormParams { rows: rows as u32, d: d as u32 };
    pass.dispatch(&KERNEL, &[], &params, &[x, &out], Pass::grid(rows as u32));
    Ok(out)
}

/// CPU twin of [`l2_normalize`]: `x` row-major with rows of `d` (sums in f64).
pub(crate) fn l2_normalize_cpu(x: &[f32], d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(d.max(1)) {
        let norm = (row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt() as f32).max(EPS);
        out.extend(row.iter().map(|v| v / norm));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, gpu_test, random};
    use crate::Gpu;

    async fn check(gpu: &Gpu, shape: &[usize], zero_rows: &[usize]) {
        let d = *shape.last().unwrap();
        let mut x = random(shape.iter().product(), 51 + d as u64, 3.0);
        for &r in zero_rows {
            x[r * d..(r + 1) * d].fill(0.0);
        }
        let want = l2_normalize_cpu(&x, d);
        let xt = Tensor::from_f32(gpu, shape, &x).unwrap();
        let mut pass = Pass::new(gpu);
        let y = l2_normalize(&mut pass, &xt).unwrap();
        pass.submit().unwrap();
        assert_eq!(y.shape(), shape);
        let got = y.read_f32(gpu).await.unwrap();
        // The sum of D squares in f32 (strided, then a tree) against f64: relative error of the
        // norm ~ sqrt(D) ulps at worst, outputs are <= 1, so 1e-5 relative and 1e-7 absolute.
        assert_close(&got, &want, 1e-7, 1e-5, &format!("l2_normalize {shape:?}"));
        for &r in zero_rows {
            assert!(got[r * d..(r + 1) * d].iter().all(|&v| v == 0.0), "zero row {r} must stay zero");
        }
        for (r, row) in got.chunks_exact(d).enumerate().filter(|(r, _)| !zero_rows.contains(r)) {
            let n: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-5, "row {r} has norm {n}");
        }
    }

    gpu_test!(l2_normalize_ragged_rows, |gpu| {
        // D around and beyond the 256-thread workgroup, with a zero row.
        check(gpu, &[3, 2050], &[1]).await;
        check(gpu, &[37, 2048], &[0, 36]).await;
        check(gpu, &[2, 32, 768], &[5]).await;
        check(gpu, &[5, 1], &[2]).await;
        check(gpu, &[4, 257], &[]).await;
    });

    gpu_test!(l2_normalize_tiny_norm_is_clamped, |gpu| {
        // ||x|| = 5e-13 < eps: torch divides by 1e-12, so the row comes out at half length.
        let x = [3e-13f32, 4e-13];
        let xt = Tensor::from_f32(gpu, &[1, 2], &x).unwrap();
        let mut pass = Pass::new(gpu);
        let y = l2_normalize(&mut pass, &xt).unwrap();
        pass.submit().unwrap();
        // Squares of 1e-13 are 1e-26, normal in f32; the quotient is only a few ulps off.
        assert_close(&y.read_f32(gpu).await.unwrap(), &[0.3, 0.4], 1e-6, 1e-5, "clamped norm");
    });

    gpu_test!(l2_normalize_refuses_bad_shapes_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both, ones_u32, zeros};
        let run = |x: &[usize]| {
            on_both!(gpu, |be| {
                let xt = zeros(be, x);
                be.l2_normalize(&xt)
            })
        };
        assert_both_accept(run(&[2, 3]), "good shapes");
        assert_same_refusal(run(&[]), "0-d");
        assert_same_refusal(run(&[3, 0]), "D = 0");
        let ids = on_both!(gpu, |be| {
            let x = ones_u32(be, &[2, 3]);
            be.l2_normalize(&x)
        });
        assert_same_refusal(ids, "u32");
    });
}
