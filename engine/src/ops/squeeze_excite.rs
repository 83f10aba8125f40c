//! Squeeze-excite on channels-last activations: global average pool over the pixels,
//! FC -> SiLU -> FC -> sigmoid, then scale each channel. The pool and the channel scale are in
//! `shaders/squeeze_excite.wgsl`; the two FCs use [`linear`], so their weights may be f32, f16
//! or q8.

use crate::cpu::gemm::Rhs;
use crate::error::ensure_shape;
use crate::ops::matmul::{linear, linear_cpu};
use crate::ops::{ensure_grid, ensure_u32, Activation, Meta};
use crate::pipelines::Kernel;
use crate::{DType, Error, Pass, Result, Tensor};

crate::uniforms::uniform_struct! {
    /// Shapes for `squeeze_excite.wgsl`: x is `[b, p, c]`.
    pub struct SqueezeExciteParams { pub b: u32, pub p: u32, pub c: u32, pub chunk: u32, pub scale: f32 }
}

const POOL: Kernel = crate::pipelines::kernel!("squeeze_excite", "pool");
const SCALE: Kernel = crate::pipelines::kernel!("squeeze_excite", "scale_channels");
/// Channels per pool workgroup (`BLOCK` in the WGSL).
const BLOCK: usize = 64;
/// Pixels per pool workgroup. Large pools (228 x 228 in the first stage) are split into many
/// chunks so the whole GPU works on them, then the partial sums are reduced by a second pass.
const CHUNK: usize = 256;
const SCALE_WORKGROUP: usize = 256;
const MAX_DIM: usize = crate::pass::MAX_WORKGROUPS_PER_DIM as usize;

/// Checked shapes: `x [b, h, w, c]`, `p = h * w` pixels, `cr` reduced channels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SqueezeExciteGeometry {
    pub b: usize,
    pub p: usize,
    pub c: usize,
    pub cr: usize,
}

/// The shape check of [`squeeze_excite`] and its CPU twin: `x` f32 `[B, H, W, C]`, `w1`
/// `[Cr, C]` and `w2` `[C, Cr]` (f32, f16 or q8), `b1` f32 `[Cr]`, `b2` f32 `[C]`, C and Cr > 0.
pub(crate) fn check(x: Meta, w1: Meta, b1: Meta, w2: Meta, b2: Meta) -> Result<SqueezeExciteGeometry> {
    let &[b, h, w, c] = x.shape else {
        return Err(Error::Shape(format!("squeeze_excite: x must be [B, H, W, C], got {:?}", x.shape)));
    };
    ensure_shape!(x.dtype == DType::F32, "squeeze_excite: x must be f32, got {:?}", x.dtype);
    let cr = w1.shape.first().copied().unwrap_or(0);
    ensure_shape!(c > 0 && cr > 0, "squeeze_excite: x {:?} and w1 {:?} need C > 0 and Cr > 0", x.shape, w1.shape);
    ensure_shape!(w1.shape == [cr, c], "squeeze_excite: w1 {:?} is not [Cr, {c}]", w1.shape);
    ensure_shape!(w2.shape == [c, cr], "squeeze_excite: w2 {:?} is not [{c}, {cr}]", w2.shape);
    ensure_shape!(b1.shape == [cr] && b1.dtype == DType::F32, "squeeze_excite: b1 must be f32 [{cr}]");
    ensure_shape!(b2.shape == [c] && b2.dtype == DType::F32, "squeeze_excite: b2 must be f32 [{c}]");
    ensure_shape!(w1.dtype != DType::U32 && w2.dtype != DType::U32, "squeeze_excite: u32 weights");
    let p = h.saturating_mul(w);
    ensure_u32("squeeze_excite", "elements of x", x.numel())?;
    ensure_shape!(
        b <= MAX_DIM && p.div_ceil(CHUNK) <= MAX_DIM && c.max(cr).div_ceil(BLOCK) <= MAX_DIM,
        "squeeze_excite: x {:?} exceeds one dispatch",
        x.shape
    );
    ensure_grid("squeeze_excite", x.numel().div_ceil(SCALE_WORKGROUP))?;
    Ok(SqueezeExciteGeometry { b, p, c, cr })
}

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
    // Everything is checked before anything is recorded, so an Err leaves the pass untouched.
    let g = check(x.into(), w1.into(), b1.into(), w2.into(), b2.into())?;
    let pooled = global_avg_pool(pass, x, &g)?;
    let hidden = linear(pass, &pooled, w1, Some(b1), Activation::Silu)?;
    let gate = linear(pass, &hidden, w2, Some(b2), Activation::Sigmoid)?;
    let out = Tensor::uninit(pass.gpu(), x.shape())?;
    let params = SqueezeExciteParams { b: g.b as u32, p: g.p as u32, c: g.c as u32, chunk: 0, scale: 1.0 };
    let groups = Pass::grid(x.numel().div_ceil(SCALE_WORKGROUP) as u32);
    pass.dispatch(&SCALE, &[], &params, &[x, &gate, &out], groups);
    Ok(out)
}

/// Mean over the pixels of channels-last `x` -> `[B, C]`.
fn global_avg_pool(pass: &mut Pass, x: &Tensor, g: &SqueezeExciteGeometry) -> Result<Tensor> {
    let (b, p, c) = (g.b, g.p, g.c);
    // 1/P is applied in the first pass, so the partial sums stay near the data's magnitude
    // and the second pass (when there is one) only adds them up.
    let scale = if p == 0 { 0.0 } else { 1.0 / p as f32 };
    let first = pool_pass(pass, x, b, p, c, CHUNK, scale)?;
    let chunks = p.div_ceil(CHUNK).max(1);
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

/// CPU twin of [`squeeze_excite`]: `x` row-major and the dequantised weights, as [`check`]
/// passed them with geometry `g`.
pub(crate) fn squeeze_excite_cpu(
    x: &[f32],
    g: &SqueezeExciteGeometry,
    w1: Rhs,
    b1: &[f32],
    w2: Rhs,
    b2: &[f32],
) -> Vec<f32> {
    let pooled = global_avg_pool_cpu(x, g);
    let hidden = linear_cpu(&pooled, w1, Some(b1), g.c, Activation::Silu);
    let gate = linear_cpu(&hidden, w2, Some(b2), g.cr, Activation::Sigmoid);
    let (p, c) = (g.p.max(1), g.c);
    let mut y = crate::cpu::buffers::zeros(x.len());
    crate::parallel::for_row_chunks(&mut y, c, 1, x.len(), |first, ys| {
        for (r, (yp, xp)) in ys.chunks_exact_mut(c).zip(x[first * c..].chunks_exact(c)).enumerate() {
            let s = &gate[(first + r) / p * c..][..c];
            yp.iter_mut().zip(xp).zip(s).for_each(|((y, x), s)| *y = x * s);
        }
    });
    y
}

/// Pixels summed by one task of the CPU pool.
const POOL_CHUNK: usize = 4096;

/// CPU twin of the pool: sums in f64, over chunks of pixels in parallel.
fn global_avg_pool_cpu(x: &[f32], g: &SqueezeExciteGeometry) -> Vec<f32> {
    let (p, c) = (g.p, g.c);
    let chunks = p.div_ceil(POOL_CHUNK).max(1);
    let partial = crate::parallel::map(g.b * chunks, |t| {
        let (b, ch) = (t / chunks, t % chunks);
        let px = (ch * POOL_CHUNK)..((ch + 1) * POOL_CHUNK).min(p);
        let mut sum = vec![0f64; c];
        for v in x[(b * p + px.start) * c..(b * p + px.end) * c].chunks_exact(c) {
            sum.iter_mut().zip(v).for_each(|(s, v)| *s += *v as f64);
        }
        sum
    });
    let mut out = vec![0f32; g.b * c];
    for (ob, sums) in out.chunks_exact_mut(c).zip(partial.chunks_exact(chunks)) {
        for (ch, o) in ob.iter_mut().enumerate() {
            let s: f64 = sums.iter().map(|s| s[ch]).sum();
            *o = if p == 0 { 0.0 } else { (s / p as f64) as f32 };
        }
    }
    out
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
        let f32s = |shape| Meta { shape, dtype: DType::F32 };
        let (w1s, w2s) = ([cr, c], [c, cr]);
        let g = super::check(
            f32s(&shape),
            Meta { shape: &w1s, dtype },
            f32s(&[cr]),
            Meta { shape: &w2s, dtype },
            f32s(&[c]),
        )
        .unwrap();
        // The reference sees the same (dequantised) weights as the kernels.
        let want = squeeze_excite_cpu(&x, &g, Rhs::F32(&w1.dequantize()), &b1, Rhs::F32(&w2.dequantize()), &b2);

        let xt = Tensor::from_f32(gpu, &shape, &x).unwrap();
        let (w1t, w2t) = (Tensor::from_packed(gpu, &w1).unwrap(), Tensor::from_packed(gpu, &w2).unwrap());
        let (b1t, b2t) = (Tensor::from_f32(gpu, &[cr], &b1).unwrap(), Tensor::from_f32(gpu, &[c], &b2).unwrap());
        let mut pass = Pass::new(gpu);
        let pooled = global_avg_pool(&mut pass, &xt, &g).unwrap();
        let y = squeeze_excite(&mut pass, &xt, &w1t, &b1t, &w2t, &b2t).unwrap();
        pass.submit().unwrap();
        let what = format!("squeeze_excite {shape:?} Cr={cr} {dtype:?}");
        // The pool sums H*W values in f32 in another order (chunks of 64, then lanes, then
        // chunks) than the f64 reference: relative error a few ulps of the O(1) means.
        assert_close(
            &pooled.read_f32(gpu).await.unwrap(),
            &global_avg_pool_cpu(&x, &g),
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

    gpu_test!(squeeze_excite_refuses_bad_shapes_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both, weight, zeros};
        let run = |x: &[usize], w1: &[usize], b1: &[usize], w2: &[usize], b2: &[usize], wt: DType| {
            on_both!(gpu, |be| {
                let xt = zeros(be, x);
                let (w1, w2) = (weight(be, w1, wt), weight(be, w2, wt));
                let (b1, b2) = (weight(be, b1, DType::F32), weight(be, b2, DType::F32));
                be.squeeze_excite(&xt, &w1, &b1, &w2, &b2)
            })
        };
        let (x, w1, b1, w2, b2) = (&[1, 2, 3, 8][..], &[2, 8][..], &[2][..], &[8, 2][..], &[8][..]);
        assert_both_accept(run(x, w1, b1, w2, b2, DType::Q8), "good shapes");
        assert_same_refusal(run(&[6, 8], w1, b1, w2, b2, DType::F32), "x not 4-D");
        assert_same_refusal(run(x, &[2, 7], b1, w2, b2, DType::F32), "w1 not [Cr, C]");
        assert_same_refusal(run(x, w1, &[3], w2, b2, DType::F32), "b1 not [Cr]");
        assert_same_refusal(run(x, w1, b1, &[8, 3], b2, DType::F32), "w2 not [C, Cr]");
        assert_same_refusal(run(x, w1, b1, w2, &[7], DType::F32), "b2 not [C]");
        assert_same_refusal(run(x, w1, b1, w2, b2, DType::U32), "u32 weights");
        assert_same_refusal(run(&[1, 2, 3, 0], &[2, 0], b1, &[0, 2], &[0], DType::F32), "C = 0");
        assert_same_refusal(run(x, &[0, 8], &[0], &[8, 0], b2, DType::F32), "Cr = 0");
        let f16_bias = on_both!(gpu, |be| {
            let xt = zeros(be, x);
            let (w1, w2) = (weight(be, w1, DType::F32), weight(be, w2, DType::F32));
            let (b1, b2) = (weight(be, b1, DType::F16), weight(be, b2, DType::F32));
            be.squeeze_excite(&xt, &w1, &b1, &w2, &b2)
        });
        assert_same_refusal(f16_bias, "f16 b1");
    });
}
