//! Squeeze-excite's gate on channels-last activations: the mean over the pixels, then
//! FC -> SiLU -> FC -> sigmoid, one value per image and channel. The mean comes from the chunk
//! sums the depthwise convolution writes beside its output ([`depthwise_pooled`]); the gate is
//! applied by the project convolution as it loads its input ([`gated_linear`]). Kernels:
//! `shaders/squeeze_excite.wgsl` (the gate in one dispatch; partial sums added up for the
//! fallback).
//!
//! [`depthwise_pooled`]: crate::ops::depthwise::depthwise_pooled
//! [`gated_linear`]: crate::ops::matmul::gated_linear

use crate::cpu::gemm::Rhs;
use crate::error::ensure_shape;
use crate::ops::matmul::{linear, linear_cpu};
use crate::ops::{ensure_grid, ensure_u32, Activation, Meta};
use crate::pipelines::Kernel;
use crate::quant::Q8_GROUP;
use crate::{DType, Error, Pass, Result, Tensor};

crate::uniforms::uniform_struct! {
    /// Shapes for `squeeze_excite.wgsl`: the activation is `[b, p, c]`, `cr` reduced channels;
    /// `chunk` pixels per partial sum (pool) or partial sums per image (gate).
    pub struct SqueezeExciteParams {
        pub b: u32, pub p: u32, pub c: u32, pub chunk: u32, pub scale: f32, pub cr: u32, pub q8_group: u32
    }
}

/// Squeeze-excite's weights: `w1 [Cr, C]` and `w2 [C, Cr]` (f32, f16 or q8), `b1 [Cr]` and
/// `b2 [C]` f32 (timm's two 1x1 convolutions).
pub struct SeWeights<'a, W> {
    pub w1: &'a W,
    pub b1: &'a W,
    pub w2: &'a W,
    pub b2: &'a W,
}

const POOL: Kernel = crate::pipelines::kernel!("squeeze_excite", "pool");
const GATE: Kernel = crate::pipelines::kernel!("squeeze_excite", "main_gate");
/// Channels per pool workgroup (`BLOCK` in the WGSL).
const BLOCK: usize = 64;
/// The gate kernel keeps the means and the hidden layer of one image in workgroup memory
/// (`MAX_C` and `MAX_CR` in the WGSL: 13 KB of the 16 KB every WebGPU adapter has).
const GATE_MAX_C: usize = 3072;
const GATE_MAX_CR: usize = 256;
const MAX_DIM: usize = crate::pass::MAX_WORKGROUPS_PER_DIM as usize;

/// Checked shapes: `x [b, h, w, c]`, `p = h * w` pixels, `cr` reduced channels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SqueezeExciteGeometry {
    pub b: usize,
    pub p: usize,
    pub c: usize,
    pub cr: usize,
}

/// The shape check of [`se_gate`] and its CPU twin: `x` f32 `[B, H, W, C]`, `w1`
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
        b <= MAX_DIM && p.div_ceil(BLOCK) <= MAX_DIM && c.max(cr).div_ceil(BLOCK) <= MAX_DIM,
        "squeeze_excite: x {:?} exceeds one dispatch",
        x.shape
    );
    ensure_grid("squeeze_excite", b)?;
    Ok(SqueezeExciteGeometry { b, p, c, cr })
}

/// The shape check of a depthwise conv followed by the gate of its output (both backends'
/// `depthwise_se`), made before anything runs: the depthwise's, then [`check`]'s.
pub(crate) fn check_depthwise_se(
    x: Meta,
    w: Meta,
    bias: Option<Meta>,
    stride: usize,
    [w1, b1, w2, b2]: [Meta; 4],
) -> Result<SqueezeExciteGeometry> {
    let out = crate::ops::depthwise::check(x, w, bias, stride)?.out_shape();
    check(Meta { shape: &out, dtype: DType::F32 }, w1, b1, w2, b2)
}

/// The gate `sigmoid(silu(mean_hw(x) · w1ᵀ + b1) · w2ᵀ + b2)`, `[B, C]`, of `x [B, H, W, C]`
/// from `partial [B, chunks, C]`, sums of `x` over chunks of its pixels.
///
/// Fast path, one dispatch: C <= 3072, Cr <= 256 and both weights in one format. Otherwise the
/// partial sums are added up by the pool kernel and the FCs run on the matmul kernel.
pub fn se_gate(pass: &mut Pass, x: &Tensor, partial: &Tensor, se: SeWeights<'_, Tensor>) -> Result<Tensor> {
    let g = check(x.into(), se.w1.into(), se.b1.into(), se.w2.into(), se.b2.into())?;
    let chunks = partial.shape().get(1).copied().unwrap_or(0);
    ensure_shape!(
        partial.shape() == [g.b, chunks, g.c] && chunks > 0 && chunks <= MAX_DIM && partial.dtype() == DType::F32,
        "squeeze_excite: partial sums {:?} are not f32 [{}, chunks, {}]",
        partial.shape(),
        g.b,
        g.c
    );
    let scale = 1.0 / g.p.max(1) as f32;
    if g.c <= GATE_MAX_C && g.cr <= GATE_MAX_CR && se.w1.dtype() == se.w2.dtype() {
        let gate = Tensor::uninit(pass.gpu(), &[g.b, g.c])?;
        let format = match se.w1.dtype() {
            DType::F16 => "WF16",
            DType::Q8 => "WQ8",
            DType::F32 | DType::U32 => "WF32",
        };
        let params = SqueezeExciteParams {
            b: g.b as u32,
            p: g.p as u32,
            c: g.c as u32,
            chunk: chunks as u32,
            scale,
            cr: g.cr as u32,
            q8_group: Q8_GROUP as u32,
        };
        let tensors = [partial, se.w1, se.b1, se.w2, se.b2, &gate];
        pass.dispatch(&GATE, &["GATE", format], &params, &tensors, [g.b as u32, 1, 1]);
        return Ok(gate);
    }
    let pooled = pool_pass(pass, partial, g.b, chunks, g.c, chunks, scale)?;
    let hidden = linear(pass, &pooled, se.w1, Some(se.b1), Activation::Silu)?;
    linear(pass, &hidden, se.w2, Some(se.b2), Activation::Sigmoid)
}

/// One pool dispatch: `x [b, p, c]` -> `[b, ceil(p / chunk), c]` of scaled chunk sums.
fn pool_pass(pass: &mut Pass, x: &Tensor, b: usize, p: usize, c: usize, chunk: usize, scale: f32) -> Result<Tensor> {
    let chunks = p.div_ceil(chunk).max(1);
    let out = Tensor::uninit(pass.gpu(), &if chunks == 1 { vec![b, c] } else { vec![b, chunks, c] })?;
    let params =
        SqueezeExciteParams { b: b as u32, p: p as u32, c: c as u32, chunk: chunk as u32, scale, cr: 0, q8_group: 0 };
    let groups = [c.div_ceil(BLOCK) as u32, chunks as u32, b as u32];
    pass.dispatch(&POOL, &["POOL"], &params, &[x, &out], groups);
    Ok(out)
}

/// CPU twin of [`se_gate`], from the means over the pixels `[B, C]` (`depthwise_pooled_cpu`
/// sums them as it writes its output).
pub(crate) fn se_gate_from_means(
    means: &[f32],
    g: &SqueezeExciteGeometry,
    w1: Rhs,
    b1: &[f32],
    w2: Rhs,
    b2: &[f32],
) -> Vec<f32> {
    let hidden = linear_cpu(means, w1, Some(b1), g.c, Activation::Silu);
    linear_cpu(&hidden, w2, Some(b2), g.cr, Activation::Sigmoid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::depthwise::depthwise_pooled;
    use crate::quant::Packed;
    use crate::testing::{assert_close, gpu_test, random};
    use crate::Gpu;

    /// The gate of `x` (made by a 1x1 identity depthwise, so the partial sums come from the
    /// real producer) against the f64 reference; `dtypes` of w1 and w2.
    async fn check(gpu: &Gpu, shape: [usize; 4], cr: usize, dtypes: (DType, DType)) {
        let [b, h, w, c] = shape;
        // An offset per channel, so the pool's means are O(1) and not just noise around 0.
        let mut x = random(b * h * w * c, 31 + c as u64, 1.0);
        for (i, v) in x.iter_mut().enumerate() {
            *v += ((i % c) as f32 / c as f32 - 0.5) * 2.0;
        }
        let w1 = Packed::new(&random(cr * c, 32, 1.0 / (c as f32).sqrt()), cr, c, dtypes.0).unwrap();
        let w2 = Packed::new(&random(c * cr, 33, 2.0 / (cr as f32).sqrt()), c, cr, dtypes.1).unwrap();
        let b1 = random(cr, 34, 0.5);
        let b2 = random(c, 35, 0.5);
        let f32s = |shape| Meta { shape, dtype: DType::F32 };
        let g = super::check(
            f32s(&shape),
            Meta { shape: &[cr, c], dtype: dtypes.0 },
            f32s(&[cr]),
            Meta { shape: &[c, cr], dtype: dtypes.1 },
            f32s(&[c]),
        )
        .unwrap();
        // The reference sees the same (dequantised) weights as the kernels.
        let mut means = vec![0f64; b * c];
        for (i, v) in x.iter().enumerate() {
            means[i / (g.p * c) * c + i % c] += *v as f64 / g.p as f64;
        }
        let means: Vec<f32> = means.iter().map(|v| *v as f32).collect();
        let want = se_gate_from_means(&means, &g, Rhs::F32(&w1.dequantize()), &b1, Rhs::F32(&w2.dequantize()), &b2);

        let xt = Tensor::from_f32(gpu, &shape, &x).unwrap();
        let identity = Tensor::from_f32(gpu, &[c, 1, 1, 1], &vec![1.0; c]).unwrap();
        let (w1t, w2t) = (Tensor::from_packed(gpu, &w1).unwrap(), Tensor::from_packed(gpu, &w2).unwrap());
        let (b1t, b2t) = (Tensor::from_f32(gpu, &[cr], &b1).unwrap(), Tensor::from_f32(gpu, &[c], &b2).unwrap());
        let mut pass = Pass::new(gpu);
        let (y, partial) = depthwise_pooled(&mut pass, &xt, &identity, None, 1, Activation::None).unwrap();
        let se = SeWeights { w1: &w1t, b1: &b1t, w2: &w2t, b2: &b2t };
        let gate = se_gate(&mut pass, &y, &partial, se).unwrap();
        pass.submit().unwrap();
        assert_eq!(gate.shape(), [b, c]);
        // The means are f32 sums in another order than the f64 reference (a few ulps of O(1)
        // values); that passes through two FCs (K <= C terms, f32) and a sigmoid (slope <= 1/4).
        let what = format!("squeeze-excite gate {shape:?} Cr={cr} {dtypes:?}");
        assert_close(&gate.read_f32(gpu).await.unwrap(), &want, 1e-5, 1e-5, &what);
    }

    gpu_test!(se_gate_ragged_shapes, |gpu| {
        // C=37 is less than one 64-channel block, P=143 three partial sums of 64 pixels.
        check(gpu, [2, 13, 11, 37], 5, (DType::F32, DType::F32)).await;
        // C=70: two channel blocks; P=1,000: sixteen partial sums.
        check(gpu, [2, 40, 25, 70], 3, (DType::F32, DType::F32)).await;
        check(gpu, [1, 1, 1, 1], 1, (DType::F32, DType::F32)).await;
    });

    gpu_test!(se_gate_quantized_weights, |gpu| {
        check(gpu, [2, 13, 11, 37], 5, (DType::Q8, DType::Q8)).await;
        check(gpu, [2, 13, 11, 37], 5, (DType::F16, DType::F16)).await;
        // Odd widths: q8 rows of 37 values are 10 words, f16 rows of 5 values 3 words.
        check(gpu, [1, 3, 3, 37], 5, (DType::F16, DType::F16)).await;
    });

    gpu_test!(se_gate_falls_back_beyond_its_fast_path, |gpu| {
        // Weights in two formats, more channels than the gate kernel holds, a wide hidden layer.
        check(gpu, [2, 5, 3, 37], 5, (DType::F32, DType::Q8)).await;
        check(gpu, [1, 2, 3, 3100], 4, (DType::F16, DType::F16)).await;
        check(gpu, [1, 2, 2, 40], 300, (DType::F32, DType::F32)).await;
    });

    gpu_test!(se_gate_first_stage_size, |gpu| {
        // The largest pool in tf_efficientnet_b5 at 456 px: 228 x 228 pixels, 48 channels
        // (813 partial sums per channel).
        check(gpu, [1, 228, 228, 48], 12, (DType::F32, DType::F32)).await;
    });

    gpu_test!(depthwise_se_refuses_bad_shapes_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both, weight, zeros};
        let run = |x: &[usize], w1: &[usize], b1: &[usize], w2: &[usize], b2: &[usize], wt: DType| {
            on_both!(gpu, |be| {
                let xt = zeros(be, x);
                let dw = weight(be, &[x.last().copied().unwrap_or(1), 1, 3, 3], DType::F32);
                let (w1, w2) = (weight(be, w1, wt), weight(be, w2, wt));
                let (b1, b2) = (weight(be, b1, DType::F32), weight(be, b2, DType::F32));
                be.depthwise_se(&xt, &dw, None, 1, Activation::Silu, SeWeights { w1: &w1, b1: &b1, w2: &w2, b2: &b2 })
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
        assert_same_refusal(run(x, &[0, 8], &[0], &[8, 0], b2, DType::F32), "Cr = 0");
        let f16_bias = on_both!(gpu, |be| {
            let xt = zeros(be, x);
            let dw = weight(be, &[8, 1, 3, 3], DType::F32);
            let (w1, w2) = (weight(be, w1, DType::F32), weight(be, w2, DType::F32));
            let (b1, b2) = (weight(be, b1, DType::F16), weight(be, b2, DType::F32));
            be.depthwise_se(&xt, &dw, None, 1, Activation::Silu, SeWeights { w1: &w1, b1: &b1, w2: &w2, b2: &b2 })
        });
        assert_same_refusal(f16_bias, "f16 b1");
    });
}
