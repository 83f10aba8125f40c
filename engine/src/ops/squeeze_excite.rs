//! Squeeze-excite on channels-last activations: global average pool over the pixels,
//! FC -> SiLU -> FC -> sigmoid, then scale each channel. The pool and the channel scale are in
//! `shaders/squeeze_excite.wgsl`; the two FCs use [`linear`], so their weights may be f32, f16
//! or q8.

use crate::error::ensure_shape;
use crate::ops::matmul::{linear, linear_cpu};
use crate::ops::Activation;
use crate::pipelines::Kernel;
use crate::{DType, Pass, Result, Tensor};

crate::uniform_struct! {
    /// Shapes for `squeeze_excite.wgsl`: x is `[b, p, c]`.
    pub struct SqueezeExciteParams { pub b: u32, pub p: u32, pub c: u32, pub chunk: u32, pub scale: f32 }
}

const POOL: Kernel = crate::kernel!("squeeze_excite", "pool");
const SCALE: Kernel = crate::kernel!("squeeze_excite", "scale_channels");
/// Channels per pool workgroup (`BLOCK` in the WGSL).
const BLOCK: usize = 64;
/// Pixels per pool workgroup. Large pools (228 x 228 in the first stage) are split into many
/// chunks so the whole GPU works on them, then the partial sums are reduced by a second pass.
const CHUNK: usize = 256;
const SCALE_WORKGROUP: usize = 256;
const MAX_DIM: usize = crate::pass::MAX_WORKGROUPS_PER_DIM as usize;

/// `x [B, H, W, C] * sigmoid(silu(mean_hw(x) · w1ᵀ + b1) · w2ᵀ + b2)` per batch and channel,
/// with `w1 [Cr, C]`, `b1 [Cr]`, `w2 [C, Cr]`, `b2 [C]` (the two 1x1 convs of timm's SE).
pub fn squeeze_excite(
    pass: &mut Pass,
    x: &Tensor,
    w1: &Tensor,
    b1: &Tensor,
    w2: &Tensor,
    b2: &Tensor,
) -> Result<Tensor> {
    let (b, c) = match x.shape() {
        &[b, _, _, c] => (b, c),
        s => return Err(crate::Error::Shape(format!("squeeze_excite: x must be [B, H, W, C], got {s:?}"))),
    };
    // Check everything before recording anything, so an Err leaves the pass untouched.
    let cr = w1.shape().first().copied().unwrap_or(0);
    ensure_shape!(w1.shape() == [cr, c], "squeeze_excite: w1 {:?} is not [Cr, {c}]", w1.shape());
    ensure_shape!(w2.shape() == [c, cr], "squeeze_excite: w2 {:?} is not [{c}, {cr}]", w2.shape());
    ensure_shape!(b1.shape() == [cr] && b1.dtype() == DType::F32, "squeeze_excite: b1 must be f32 [{cr}]");
    ensure_shape!(b2.shape() == [c] && b2.dtype() == DType::F32, "squeeze_excite: b2 must be f32 [{c}]");
    ensure_shape!(x.dtype() == DType::F32, "squeeze_excite: x must be f32");
    ensure_shape!(w1.dtype() != DType::U32 && w2.dtype() != DType::U32, "squeeze_excite: u32 weights");
    ensure_shape!(b <= MAX_DIM, "squeeze_excite: batch {b} exceeds one dispatch");

    let pooled = global_avg_pool(pass, x)?;
    let hidden = linear(pass, &pooled, w1, Some(b1), Activation::Silu)?;
    let gate = linear(pass, &hidden, w2, Some(b2), Activation::Sigmoid)?;
    scale_channels(pass, x, &gate)
}

/// Mean over the pixels of channels-last `x [B, H, W, C]` -> `[B, C]`.
pub fn global_avg_pool(pass: &mut Pass, x: &Tensor) -> Result<Tensor> {
    let (b, p, c) = match x.shape() {
        &[b, h, w, c] => (b, h * w, c),
        s => return Err(crate::Error::Shape(format!("global_avg_pool: x must be [B, H, W, C], got {s:?}"))),
    };
    ensure_shape!(x.dtype() == DType::F32, "global_avg_pool: x must be f32");
    let chunks = p.div_ceil(CHUNK).max(1);
    ensure_shape!(b <= MAX_DIM && chunks <= MAX_DIM, "global_avg_pool: {x:?} exceeds one dispatch");
    // 1/P is applied in the first pass, so the partial sums stay near the data's magnitude
    // and the second pass (when there is one) only adds them up.
    let scale = if p == 0 { 0.0 } else { 1.0 / p as f32 };
    let first = pool_pass(pass, x, b, p, c, CHUNK, scale)?;
    if chunks == 1 {
        return Ok(first);
    }
    pool_pass(pass, &first, b, chunks, c, chunks, 1.0)
}

/// One pool dispatch: `x [b, p, c]` -> `[b, ceil(p / chunk), c]` of scaled chunk sums.
fn pool_pass(pass: &mut Pass, x: &Tensor, b: usize, p: usize, c: usize, chunk: usize, scale: f32) -> Result<Tensor> {
    let chunks = p.div_ceil(chunk).max(1);
    let out = Tensor::uninit(pass.gpu(), &if chunks == 1 { vec![b, c] } else { vec![b, chunks, c] })?;
    let params = SqueezeExciteParams { b: b as u32, p: p as u32, c: c as u32, chunk: chunk as u32, scale };
    let groups = [c.div_ceil(BLOCK) as u32, chunks as u32, b as u32];
    pass.dispatch(&POOL, &["POOL"], &params, &[x, &out], groups);
    Ok(out)
}

/// `x [B, H, W, C] * s [B, C]`, broadcast over the pixels.
pub fn scale_channels(pass: &mut Pass, x: &Tensor, s: &Tensor) -> Result<Tensor> {
    let (b, p, c) = match x.shape() {
        &[b, h, w, c] => (b, h * w, c),
        s => return Err(crate::Error::Shape(format!("scale_channels: x must be [B, H, W, C], got {s:?}"))),
    };
    ensure_shape!(s.shape() == [b, c], "scale_channels: s {:?} is not [{b}, {c}]", s.shape());
    ensure_shape!(x.dtype() == DType::F32 && s.dtype() == DType::F32, "scale_channels: inputs must be f32");
    let out = Tensor::uninit(pass.gpu(), x.shape())?;
    let params = SqueezeExciteParams { b: b as u32, p: p as u32, c: c as u32, chunk: 0, scale: 1.0 };
    let groups = Pass::grid(x.numel().div_ceil(SCALE_WORKGROUP) as u32);
    pass.dispatch(&SCALE, &[], &params, &[x, s, &out], groups);
    Ok(out)
}

/// CPU twin of [`squeeze_excite`]: `x` is `[B, H, W, C]` row-major with `shape = [B, H, W, C]`;
/// `w1 [Cr, C]` and `w2 [C, Cr]` are the dequantised weights.
pub fn squeeze_excite_cpu(x: &[f32], shape: [usize; 4], w1: &[f32], b1: &[f32], w2: &[f32], b2: &[f32]) -> Vec<f32> {
    let [_, _, _, c] = shape;
    let pooled = global_avg_pool_cpu(x, shape);
    let hidden = linear_cpu(&pooled, w1, Some(b1), c, Activation::Silu);
    let gate = linear_cpu(&hidden, w2, Some(b2), b1.len(), Activation::Sigmoid);
    scale_channels_cpu(x, shape, &gate)
}

/// CPU twin of [`global_avg_pool`] (sums in f64).
pub fn global_avg_pool_cpu(x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let [b, h, w, c] = shape;
    let p = h * w;
    let mut out = vec![0f32; b * c];
    for (xb, ob) in x.chunks_exact((p * c).max(1)).zip(out.chunks_exact_mut(c.max(1))) {
        let mut sum = vec![0f64; c];
        for px in xb.chunks_exact(c) {
            for (s, &v) in sum.iter_mut().zip(px) {
                *s += v as f64;
            }
        }
        for (o, s) in ob.iter_mut().zip(sum) {
            *o = if p == 0 { 0.0 } else { (s / p as f64) as f32 };
        }
    }
    out
}

/// CPU twin of [`scale_channels`].
pub fn scale_channels_cpu(x: &[f32], shape: [usize; 4], s: &[f32]) -> Vec<f32> {
    let [_, h, w, c] = shape;
    let per_batch = h * w * c;
    x.iter().enumerate().map(|(i, v)| v * s[i / per_batch * c + i % c]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::Packed;
    use crate::testing::{assert_close, gpu_test, random};
    use crate::Gpu;

    async fn check(gpu: &Gpu, shape: [usize; 4], cr: usize, dtype: DType) {
        let [b, h, w, c] = shape;
        // An offset per channel, so the pool's means are O(1) and not just noise around 0.
        let mut x = random(b * h * w * c, 31 + c as u64, 1.0);
        for (i, v) in x.iter_mut().enumerate() {
            *v += ((i % c) as f32 / c as f32 - 0.5) * 2.0;
        }
        let w1 = Packed::new(&random(cr * c, 32, 1.0 / (c as f32).sqrt()), cr, c, dtype).unwrap();
        let w2 = Packed::new(&random(c * cr, 33, 2.0 / (cr as f32).sqrt()), c, cr, dtype).unwrap();
        let b1 = random(cr, 34, 0.5);
        let b2 = random(c, 35, 0.5);
        // The reference sees the same (dequantised) weights as the kernels.
        let want = squeeze_excite_cpu(&x, shape, &w1.dequantize(), &b1, &w2.dequantize(), &b2);

        let xt = Tensor::from_f32(gpu, &shape, &x).unwrap();
        let (w1t, w2t) = (Tensor::from_packed(gpu, &w1).unwrap(), Tensor::from_packed(gpu, &w2).unwrap());
        let (b1t, b2t) = (Tensor::from_f32(gpu, &[cr], &b1).unwrap(), Tensor::from_f32(gpu, &[c], &b2).unwrap());
        let mut pass = Pass::new(gpu);
        let pooled = global_avg_pool(&mut pass, &xt).unwrap();
        let y = squeeze_excite(&mut pass, &xt, &w1t, &b1t, &w2t, &b2t).unwrap();
        pass.submit().unwrap();
        let what = format!("squeeze_excite {shape:?} Cr={cr} {dtype:?}");
        // The pool sums H*W values in f32 in another order (chunks of 64, then lanes, then
        // chunks) than the f64 reference: relative error a few ulps of the O(1) means.
        assert_close(
            &pooled.read_f32(gpu).await.unwrap(),
            &global_avg_pool_cpu(&x, shape),
            1e-6,
            1e-5,
            &format!("pool of {what}"),
        );
        // That error passes through two FCs (K <= C terms, f32) and a sigmoid (slope <= 1/4),
        // then scales |x| <= 2: a few 1e-6 absolute.
        assert_close(&y.read_f32(gpu).await.unwrap(), &want, 1e-5, 1e-5, &what);
    }

    gpu_test!(squeeze_excite_ragged_shapes, |gpu| {
        // C=37 is less than one 64-channel block, P=143 less than one 256-pixel chunk.
        check(gpu, [2, 13, 11, 37], 5, DType::F32).await;
        // C=70: two channel blocks; P=1,000: four chunks, so the second reduction pass runs.
        check(gpu, [2, 40, 25, 70], 3, DType::F32).await;
        check(gpu, [1, 1, 1, 1], 1, DType::F32).await;
    });

    gpu_test!(squeeze_excite_quantized_weights, |gpu| {
        check(gpu, [2, 13, 11, 37], 5, DType::Q8).await;
        check(gpu, [2, 13, 11, 37], 5, DType::F16).await;
    });

    gpu_test!(squeeze_excite_first_stage_size, |gpu| {
        // The largest pool in tf_efficientnet_b5 at 456 px: 228 x 228 pixels, 48 channels
        // (204 chunks, so 204 partial sums per channel in the second pass).
        check(gpu, [1, 228, 228, 48], 12, DType::F32).await;
    });

    gpu_test!(squeeze_excite_refuses_bad_shapes, |gpu| {
        let t = |shape: &[usize]| Tensor::from_f32(gpu, shape, &vec![0.0; shape.iter().product()]).unwrap();
        let (x, w1, b1, w2, b2) = (t(&[1, 2, 3, 8]), t(&[2, 8]), t(&[2]), t(&[8, 2]), t(&[8]));
        let mut pass = Pass::new(gpu);
        let mut bad = |x: &Tensor, w1: &Tensor, b1: &Tensor, w2: &Tensor, b2: &Tensor| {
            matches!(squeeze_excite(&mut pass, x, w1, b1, w2, b2), Err(crate::Error::Shape(_)))
        };
        assert!(!bad(&x, &w1, &b1, &w2, &b2), "the good shapes must pass");
        assert!(bad(&t(&[6, 8]), &w1, &b1, &w2, &b2), "x not 4-D");
        assert!(bad(&x, &t(&[2, 7]), &b1, &w2, &b2), "w1 not [Cr, C]");
        assert!(bad(&x, &w1, &t(&[3]), &w2, &b2), "b1 not [Cr]");
        assert!(bad(&x, &w1, &b1, &t(&[8, 3]), &b2), "w2 not [C, Cr]");
        assert!(bad(&x, &w1, &b1, &w2, &t(&[7])), "b2 not [C]");
        assert!(bad(&x, &Tensor::from_u32(gpu, &[2, 8], &[0; 16]).unwrap(), &b1, &w2, &b2), "u32 weights");
        let mut pass = Pass::new(gpu);
        assert!(scale_channels(&mut pass, &x, &t(&[1, 7])).is_err(), "gate not [B, C]");
    });
}
