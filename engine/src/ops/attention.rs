//! Multi-head scaled dot-product attention over the packed `q|k|v` output of one in_proj linear
//! (the out_proj is a separate linear). Kernel: `shaders/attention.wgsl`.

use crate::cpu::vector::multiversion;
use crate::cpu::Level;
use crate::error::ensure_shape;
use crate::ops::{ensure_grid, ensure_u32, Meta};
use crate::pipelines::Kernel;
use crate::{DType, Error, Pass, Result, Tensor};

crate::uniforms::uniform_struct! {
    /// Shapes for `attention.wgsl`.
    pub struct AttentionParams { pub batch: u32, pub seq: u32, pub d: u32, pub heads: u32, pub dh: u32, pub scale: f32 }
}

const KERNEL: Kernel = crate::pipelines::kernel!("attention", "main");

/// The longest sequence the kernel holds scores for (its workgroup array).
pub const MAX_SEQ: usize = 512;
/// Query rows per workgroup (`QB` in the kernel): K and V are read once per block.
const QUERY_BLOCK: usize = 4;

/// Checked shapes: `qkv [batch, seq, 3d]`, `heads` heads of `d / heads` columns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttentionGeometry {
    pub batch: usize,
    pub seq: usize,
    pub d: usize,
    pub heads: usize,
}

/// The shape check of [`attention`] and its CPU twin: `qkv` f32 `[B, S, 3D]` with S at most
/// [`MAX_SEQ`], D > 0 split evenly into `heads` > 0 heads, `key_mask` u32 `[B, S]`.
pub(crate) fn check(qkv: Meta, heads: usize, key_mask: Option<Meta>) -> Result<AttentionGeometry> {
    let &[batch, seq, d3] = qkv.shape else {
        return Err(Error::Shape(format!("attention: qkv must be [B, S, 3D], got {:?}", qkv.shape)));
    };
    ensure_shape!(qkv.dtype == DType::F32, "attention: qkv must be f32, got {:?}", qkv.dtype);
    ensure_shape!(d3 > 0 && d3 % 3 == 0, "attention: last axis {d3} of qkv is not 3D");
    let d = d3 / 3;
    ensure_shape!(heads > 0 && d % heads == 0, "attention: D = {d} does not split into {heads} heads");
    ensure_shape!(seq <= MAX_SEQ, "attention: sequence length {seq} exceeds {MAX_SEQ}");
    if let Some(m) = key_mask {
        ensure_shape!(
            m.shape == [batch, seq] && m.dtype == DType::U32,
            "attention: key_mask must be u32 [{batch}, {seq}], got {:?} {:?}",
            m.dtype,
            m.shape
        );
    }
    ensure_u32("attention", "elements of qkv", qkv.numel())?;
    ensure_grid("attention", batch.saturating_mul(heads).saturating_mul(seq.div_ceil(QUERY_BLOCK)))?;
    Ok(AttentionGeometry { batch, seq, d, heads })
}

/// `softmax(q kᵀ / sqrt(dh)) v` per head, from `qkv [B, S, 3D]` (q, k, v side by side; head `h`
/// on columns `h*dh..(h+1)*dh` of each) to `[B, S, D]`. `key_mask [B, S]` (u32, 1 = real token,
/// 0 = padding) keeps padded keys out of every softmax; a query whose keys are all padding
/// gets zeros.
pub fn attention(pass: &mut Pass, qkv: &Tensor, heads: usize, key_mask: Option<&Tensor>) -> Result<Tensor> {
    let g = check(qkv.into(), heads, key_mask.map(Meta::from))?;
    // A CPU adapter (lavapipe, SwiftShader) runs a workgroup's threads as SIMD lanes and each
    // barrier as a switch between groups of them: there 8 threads (`NARROW`) ran BriVL's
    // attention 1.2-1.5x faster than 64 on lavapipe (README, "GPU path: what is measured").
    let narrow = pass.gpu().is_cpu_adapter();
    record(pass, &g, qkv, key_mask, narrow)
}

fn record(
    pass: &mut Pass,
    g: &AttentionGeometry,
    qkv: &Tensor,
    key_mask: Option<&Tensor>,
    narrow: bool,
) -> Result<Tensor> {
    let out = Tensor::uninit(pass.gpu(), &[g.batch, g.seq, g.d])?;
    let groups = g.batch * g.heads * g.seq.div_ceil(QUERY_BLOCK);
    if groups == 0 {
        return Ok(out);
    }
    let dh = g.d / g.heads;
    let params = AttentionParams {
        batch: g.batch as u32,
        seq: g.seq as u32,
        d: g.d as u32,
        heads: g.heads as u32,
        dh: dh as u32,
        scale: 1.0 / (dh as f32).sqrt(),
    };
    let grid = Pass::grid(groups as u32);
    let defines: Vec<&str> = [(narrow, "NARROW"), (key_mask.is_some(), "MASK")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    match key_mask {
        Some(m) => pass.dispatch(&KERNEL, &defines, &params, &[qkv, m, &out], grid),
        None => pass.dispatch(&KERNEL, &defines, &params, &[qkv, &out], grid),
    }
    Ok(out)
}

/// CPU twin, on what [`check`] passed: `qkv` is `[batch, seq, 3d]` row-major, `key_mask`
/// `[batch, seq]`; returns `[batch, seq, d]`. Each (batch, head) is a task on the pool.
pub(crate) fn attention_cpu(qkv: &[f32], g: &AttentionGeometry, key_mask: Option<&[u32]>) -> Vec<f32> {
    let AttentionGeometry { batch, seq, d, heads } = *g;
    let dh = d / heads;
    let level = Level::current();
    let per_head = crate::parallel::map(batch * heads, |t| head(level, qkv, g, key_mask, t / heads, t % heads));
    let mut out = vec![0f32; batch * seq * d];
    for (t, o) in per_head.iter().enumerate() {
        let (b, h) = (t / heads, t % heads);
        for (i, oi) in o.chunks_exact(dh.max(1)).enumerate() {
            out[(b * seq + i) * d + h * dh..][..dh].copy_from_slice(oi);
        }
    }
    out
}

/// `a · b` with 16 partial sums, so it vectorises.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// One head of one sequence: `[seq, dh]`.
#[inline(always)]
fn head_body(qkv: &[f32], g: &AttentionGeometry, key_mask: Option<&[u32]>, b: usize, h: usize) -> Vec<f32> {
    let AttentionGeometry { seq, d, heads, .. } = *g;
    let dh = d / heads;
    let scale = 1.0 / (dh as f32).sqrt();
    let row = |j: usize| &qkv[(b * seq + j) * 3 * d..(b * seq + j + 1) * 3 * d];
    let real = |j: usize| key_mask.is_none_or(|m| m[b * seq + j] != 0);
    let mut out = vec![0f32; seq * dh];
    let mut p = vec![0f32; seq];
    for (i, o) in out.chunks_exact_mut(dh.max(1)).enumerate() {
        let q = &row(i)[h * dh..(h + 1) * dh];
        let mut mx = f32::MIN;
        for (j, pj) in p.iter_mut().enumerate() {
            *pj = dot(q, &row(j)[d + h * dh..d + (h + 1) * dh]) * scale;
            if real(j) {
                mx = mx.max(*pj);
            }
        }
        let mut sum = 0.0;
        for (j, pj) in p.iter_mut().enumerate() {
            *pj = if real(j) { (*pj - mx).exp() } else { 0.0 };
            sum += *pj;
        }
        let inv = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        for (j, pj) in p.iter().enumerate() {
            let v = &row(j)[2 * d + h * dh..2 * d + (h + 1) * dh];
            o.iter_mut().zip(v).for_each(|(oc, vc)| *oc += pj * vc);
        }
        o.iter_mut().for_each(|v| *v *= inv);
    }
    out
}

multiversion! {
    fn head(qkv: &[f32], g: &AttentionGeometry, key_mask: Option<&[u32]>, b: usize, h: usize) -> Vec<f32> = head_body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, gpu_test, random};
    use crate::Gpu;

    /// The outputs of the 64-thread kernel and of the 8-thread one (`NARROW`), in that order.
    async fn run(
        gpu: &Gpu,
        qkv: &[f32],
        b: usize,
        s: usize,
        d: usize,
        heads: usize,
        mask: Option<&[u32]>,
    ) -> [Vec<f32>; 2] {
        let qt = Tensor::from_f32(gpu, &[b, s, 3 * d], qkv).unwrap();
        let mt = mask.map(|m| Tensor::from_u32(gpu, &[b, s], m).unwrap());
        let g = super::check((&qt).into(), heads, mt.as_ref().map(Meta::from)).unwrap();
        let mut outs = [vec![], vec![]];
        for (out, narrow) in outs.iter_mut().zip([false, true]) {
            let mut pass = Pass::new(gpu);
            let y = record(&mut pass, &g, &qt, mt.as_ref(), narrow).unwrap();
            pass.submit().unwrap();
            *out = y.read_f32(gpu).await.unwrap();
        }
        outs
    }

    fn geometry(batch: usize, seq: usize, d: usize, heads: usize) -> AttentionGeometry {
        AttentionGeometry { batch, seq, d, heads }
    }

    /// Batch `b` has its last `b` positions padded (batch 0 none).
    fn padding_mask(batch: usize, seq: usize) -> Vec<u32> {
        (0..batch * seq).map(|t| u32::from(t % seq + t / seq < seq)).collect()
    }

    async fn check(gpu: &Gpu, b: usize, s: usize, d: usize, heads: usize, masked: bool, scale: f32) {
        let qkv = random(b * s * 3 * d, (b * s + d) as u64, scale);
        let mask = masked.then(|| padding_mask(b, s));
        let want = attention_cpu(&qkv, &geometry(b, s, d, heads), mask.as_deref());
        // Scores are f32 dots of dh terms (|q||k| ~ dh * scale^2 / 3) in another order, so their
        // error is ~ sqrt(dh) * scale^2 * 6e-8 before the 1/sqrt(dh); outputs are convex
        // combinations of v (|v| <= scale), and exp differs from libm by a few ulp.
        let atol = 2e-6 * scale * scale.max(1.0).powi(2);
        for (got, wg) in run(gpu, &qkv, b, s, d, heads, mask.as_deref()).await.iter().zip([64, 8]) {
            let what = format!("attention B={b} S={s} D={d} heads={heads} mask={masked} scale={scale} {wg} threads");
            assert_close(got, &want, atol, 1e-5, &what);
        }
    }

    gpu_test!(attention_matches_cpu_ragged, |gpu| {
        check(gpu, 2, 37, 45, 3, false, 1.0).await; // dh = 15, S not a multiple of 64
        check(gpu, 3, 5, 45, 3, true, 1.0).await;
        check(gpu, 1, 70, 64, 1, true, 2.0).await; // two blocks of 64 keys, a short last query block
        check(gpu, 2, 9, 1200, 2, false, 0.3).await; // dh = 600: a short last 16-column K tile
    });

    gpu_test!(attention_model_shapes, |gpu| {
        check(gpu, 2, 37, 2048, 4, false, 1.0).await; // imgAtt, dh = 512
        check(gpu, 3, 32, 768, 4, true, 1.0).await; // textAtt, dh = 192
        check(gpu, 2, 80, 768, 4, true, 1.0).await; // textAtt at L = 80
        check(gpu, 2, 32, 768, 12, false, 3.0).await; // BERT, dh = 64, peaky softmax
    });

    gpu_test!(attention_longest_sequence, |gpu| {
        check(gpu, 2, MAX_SEQ, 16, 2, true, 2.0).await; // batch 1 has one padded key
    });

    gpu_test!(attention_ignores_padding_and_zeroes_all_masked_rows, |gpu| {
        let (b, s, d, heads) = (3, 7, 12, 2);
        // Batch 0: all real; batch 1: last 3 padded; batch 2: nothing real.
        let mask: Vec<u32> = (0..b * s).map(|t| u32::from(t / s == 0 || (t / s == 1 && t % s < 4))).collect();
        let qkv = random(b * s * 3 * d, 5, 1.0);
        // Garbage (large) keys and values at padded positions must not change anything.
        let mut dirty = qkv.clone();
        for t in (0..b * s).filter(|&t| mask[t] == 0) {
            for c in d..3 * d {
                dirty[t * 3 * d + c] = 1e3 * (1.0 + c as f32);
            }
        }
        let want = attention_cpu(&dirty, &geometry(b, s, d, heads), Some(&mask));
        let clean = run(gpu, &qkv, b, s, d, heads, Some(&mask)).await;
        let dirty = run(gpu, &dirty, b, s, d, heads, Some(&mask)).await;
        let tail = s * d; // batch 2
        for (clean_out, dirty_out) in clean.iter().zip(&dirty) {
            assert_eq!(clean_out[..2 * tail], dirty_out[..2 * tail], "padded keys leaked into the output");
            assert!(dirty_out[2 * tail..].iter().all(|&v| v == 0.0), "all-masked rows must be zeros");
            assert_close(dirty_out, &want, 2e-6, 1e-5, "masked attention vs cpu");
            // as in `check`
        }
    });

    gpu_test!(attention_refuses_bad_shapes_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both, ones_u32, zeros};
        let run = |qkv: &[usize], heads: usize, mask: Option<&[usize]>| {
            on_both!(gpu, |be| {
                let x = zeros(be, qkv);
                let m = mask.map(|m| ones_u32(be, m));
                be.attention(&x, heads, m.as_ref())
            })
        };
        assert_both_accept(run(&[2, 5, 6], 2, Some(&[2, 5])), "good shapes");
        assert_same_refusal(run(&[2, 5, 45], 4, None), "15 does not split into 4 heads");
        assert_same_refusal(run(&[2, 5, 44], 2, None), "44 is not 3D");
        assert_same_refusal(run(&[2, 5, 0], 1, None), "D = 0");
        assert_same_refusal(run(&[10, 45], 3, None), "rank 2");
        assert_same_refusal(run(&[1, MAX_SEQ + 1, 6], 1, None), "too long");
        assert_same_refusal(run(&[2, 5, 6], 0, None), "no heads");
        assert_same_refusal(run(&[2, 5, 6], 1, Some(&[2, 4])), "mask not [B, S]");
        let float_mask = on_both!(gpu, |be| {
            let (x, m) = (zeros(be, &[2, 5, 6]), zeros(be, &[2, 5]));
            be.attention(&x, 1, Some(&m))
        });
        assert_same_refusal(float_mask, "f32 mask");
    });
}
