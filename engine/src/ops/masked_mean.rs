//! Mean over the sequence axis, optionally only over the positions a mask keeps: the mean over
//! the 37 boxes, over the real text tokens, and over each box's 4x4 samples.
//! Kernel: `shaders/masked_mean.wgsl`.

use crate::error::ensure_shape;
use crate::ops::{ensure_grid, ensure_u32, Meta};
use crate::pipelines::Kernel;
use crate::{DType, Error, Pass, Result, Tensor};

crate::uniforms::uniform_struct! {
    /// Shapes for `masked_mean.wgsl`: x is `[b, s, d]`.
    pub struct MaskedMeanParams { pub b: u32, pub s: u32, pub d: u32 }
}

const KERNEL: Kernel = crate::pipelines::kernel!("masked_mean", "main");
const WORKGROUP: usize = 256;

/// Checked shapes: `x [b, s, d]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MaskedMeanGeometry {
    pub b: usize,
    pub s: usize,
    pub d: usize,
}

/// The shape check of [`masked_mean`] and its CPU twin: `x` f32 `[B, S, D]`, `mask` u32 `[B, S]`.
pub(crate) fn check(x: Meta, mask: Option<Meta>) -> Result<MaskedMeanGeometry> {
    let &[b, s, d] = x.shape else {
        return Err(Error::Shape(format!("masked_mean: x must be [B, S, D], got {:?}", x.shape)));
    };
    ensure_shape!(x.dtype == DType::F32, "masked_mean: x must be f32, got {:?}", x.dtype);
    if let Some(m) = mask {
        ensure_shape!(m.shape == [b, s], "masked_mean: mask {:?} is not [{b}, {s}]", m.shape);
        ensure_shape!(m.dtype == DType::U32, "masked_mean: mask must be u32, got {:?}", m.dtype);
    }
    ensure_u32("masked_mean", "elements of x", x.numel())?;
    ensure_u32("masked_mean", "outputs", b.saturating_mul(d))?;
    ensure_grid("masked_mean", (b * d).div_ceil(WORKGROUP))?;
    Ok(MaskedMeanGeometry { b, s, d })
}

/// `x [B, S, D]` -> `[B, D]`: the mean over the positions `s` with `mask[b, s] != 0` (u32
/// `[B, S]`, 1 = keep), or over all positions when `mask` is `None`. A row with no kept
/// position gives zeros.
pub fn masked_mean(pass: &mut Pass, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let g = check(x.into(), mask.map(Meta::from))?;
    let out = Tensor::uninit(pass.gpu(), &[g.b, g.d])?;
    let params = MaskedMeanParams { b: g.b as u32, s: g.s as u32, d: g.d as u32 };
    let groups = Pass::grid((g.b * g.d).div_ceil(WORKGROUP) as u32);
    match mask {
        Some(m) => pass.dispatch(&KERNEL, &["MASK"], &params, &[x, m, &out], groups),
        None => pass.dispatch(&KERNEL, &[], &params, &[x, &out], groups),
    }
    Ok(out)
}

/// CPU twin of [`masked_mean`], on what [`check`] passed: `x` is `[B, S, D]` row-major, `mask`
/// `[B, S]`.
pub(crate) fn masked_mean_cpu(x: &[f32], g: &MaskedMeanGeometry, mask: Option<&[u32]>) -> Vec<f32> {
    let MaskedMeanGeometry { b, s, d } = *g;
    let mut out = vec![0f32; b * d];
    for bi in 0..b {
        let kept: Vec<usize> = (0..s).filter(|&si| mask.is_none_or(|m| m[bi * s + si] != 0)).collect();
        for di in 0..d {
            let sum: f64 = kept.iter().map(|&si| x[(bi * s + si) * d + di] as f64).sum();
            out[bi * d + di] = if kept.is_empty() { 0.0 } else { (sum / kept.len() as f64) as f32 };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, gpu_test, random};
    use crate::Gpu;

    async fn check(gpu: &Gpu, b: usize, s: usize, d: usize, mask: Option<&[u32]>) {
        let x = random(b * s * d, 41 + (s * d) as u64, 2.0);
        let want = masked_mean_cpu(&x, &MaskedMeanGeometry { b, s, d }, mask);
        let xt = Tensor::from_f32(gpu, &[b, s, d], &x).unwrap();
        let mt = mask.map(|m| Tensor::from_u32(gpu, &[b, s], m).unwrap());
        let mut pass = Pass::new(gpu);
        let y = masked_mean(&mut pass, &xt, mt.as_ref()).unwrap();
        pass.submit().unwrap();
        assert_eq!(y.shape(), [b, d]);
        // A sequential f32 sum of <= S terms of |x| <= 2 against an f64 sum: S ulps at worst.
        let atol = 2.0 * s as f32 * f32::EPSILON;
        let what = format!("masked_mean [{b}, {s}, {d}] mask={}", mask.is_some());
        assert_close(&y.read_f32(gpu).await.unwrap(), &want, atol, 1e-6, &what);
    }

    gpu_test!(masked_mean_without_mask, |gpu| {
        // D not a multiple of the 256-invocation workgroup; S as for the 37 boxes and 4x4 samples.
        check(gpu, 2, 37, 2050, None).await;
        check(gpu, 37, 16, 129, None).await;
        check(gpu, 1, 1, 1, None).await;
    });

    gpu_test!(masked_mean_with_padding_mask, |gpu| {
        let (b, s) = (4, 37);
        // Row 0 keeps 5 real tokens then padding, row 1 everything, row 2 nothing (must be 0,
        // not NaN), row 3 a scattered pattern.
        let mut mask = vec![0u32; b * s];
        mask[..5].fill(1);
        mask[s..2 * s].fill(1);
        for (i, m) in mask[3 * s..].iter_mut().enumerate() {
            *m = (i % 3 == 1) as u32;
        }
        check(gpu, b, s, 2050, Some(&mask)).await;
        check(gpu, b, s, 3, Some(&mask)).await;
    });

    gpu_test!(masked_mean_all_masked_row_is_zero, |gpu| {
        let xt = Tensor::from_f32(gpu, &[2, 3, 5], &random(30, 5, 1.0)).unwrap();
        let mt = Tensor::from_u32(gpu, &[2, 3], &[0, 0, 0, 1, 1, 1]).unwrap();
        let mut pass = Pass::new(gpu);
        let y = masked_mean(&mut pass, &xt, Some(&mt)).unwrap();
        pass.submit().unwrap();
        assert_eq!(&y.read_f32(gpu).await.unwrap()[..5], &[0.0; 5]);
    });

    gpu_test!(masked_mean_refuses_bad_shapes_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both, ones_u32, zeros};
        let run = |x: &[usize], mask: Option<&[usize]>| {
            on_both!(gpu, |be| {
                let xt = zeros(be, x);
                let m = mask.map(|m| ones_u32(be, m));
                be.masked_mean(&xt, m.as_ref())
            })
        };
        assert_both_accept(run(&[2, 3, 4], Some(&[2, 3])), "good shapes");
        assert_same_refusal(run(&[6, 4], None), "x not 3-D");
        assert_same_refusal(run(&[2, 3, 4], Some(&[2, 2])), "mask not [B, S]");
        assert_same_refusal(run(&[2, 3, 4], Some(&[6])), "flat mask");
        let float_mask = on_both!(gpu, |be| {
            let (x, m) = (zeros(be, &[2, 3, 4]), zeros(be, &[2, 3]));
            be.masked_mean(&x, Some(&m))
        });
        assert_same_refusal(float_mask, "f32 mask");
        let ids = on_both!(gpu, |be| {
            let x = ones_u32(be, &[2, 3, 4]);
            be.masked_mean(&x, None)
        });
        assert_same_refusal(ids, "u32 x");
    });
}
