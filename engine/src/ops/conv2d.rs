//! General 2-D convolution (groups = 1), channels-last, TensorFlow "SAME" padding, with a fused
//! bias and activation. Kernel: `shaders/conv2d.wgsl`.
//! Pointwise (1x1) convs should go through `matmul::linear` instead; this is for the stem.

use crate::cpu::gemm::{gemm, Fused, Rhs};
use crate::cpu::Level;
use crate::error::ensure_shape;
use crate::ops::{ensure_grid, ensure_u32, Activation, Meta};
use crate::pipelines::Kernel;
use crate::{DType, Error, Pass, Result, Tensor};

crate::uniforms::uniform_struct! {
    /// Shapes for `conv2d.wgsl` and `depthwise.wgsl`.
    pub struct Conv2dParams {
        pub batch: u32, pub in_h: u32, pub in_w: u32, pub cin: u32,
        pub out_h: u32, pub out_w: u32, pub cout: u32,
        pub kh: u32, pub kw: u32, pub stride: u32, pub pad_top: u32, pub pad_left: u32, pub act: u32,
    }
}

const KERNEL: Kernel = crate::pipelines::kernel!("conv2d", "main");
/// Threads per workgroup in `conv2d.wgsl` and `depthwise.wgsl`.
pub(crate) const WORKGROUP: usize = 64;

/// TensorFlow SAME padding along one axis: `(output size, padding before)`.
/// `out = ceil(in / s)`, `total = max((out - 1) * s + k - in, 0)`, `before = total / 2`; the rest
/// (one more at odd totals, e.g. at stride 2) goes after. `stride` must be at least 1 (a 0 is
/// treated as 1 here; the conv functions refuse it).
pub(crate) fn same_padding(input: usize, k: usize, stride: usize) -> (usize, usize) {
    let s = stride.max(1);
    let out = input.div_ceil(s);
    let total = (out.saturating_sub(1) * s + k).saturating_sub(input);
    (out, total / 2)
}

/// Checked geometry shared by `conv2d` and `depthwise` and their CPU twins.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvGeometry {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    /// Invocations of the kernel, one per strip of 4 outputs of a row and channel (depthwise) or
    /// per 4 output channels of a pixel (conv2d).
    pub threads: usize,
}

impl ConvGeometry {
    /// The kernel parameters; `conv2d.wgsl` and `depthwise.wgsl` share them (depthwise: cin = cout).
    pub(crate) fn params(&self, act: Activation) -> Conv2dParams {
        Conv2dParams {
            batch: self.batch as u32,
            in_h: self.in_h as u32,
            in_w: self.in_w as u32,
            cin: self.cin as u32,
            out_h: self.out_h as u32,
            out_w: self.out_w as u32,
            cout: self.cout as u32,
            kh: self.kh as u32,
            kw: self.kw as u32,
            stride: self.stride as u32,
            pad_top: self.pad_top as u32,
            pad_left: self.pad_left as u32,
            act: act as u32,
        }
    }

    /// The check of [`conv2d`] and [`crate::ops::depthwise::depthwise`] and their twins: `x`
    /// `[B, H, W, Cin]`, `w` `[Cout, Cin, KH, KW]` (`[C, 1, KH, KW]` when `depthwise`), `bias`
    /// `[Cout]`, all f32 and non-empty; stride at least 1.
    pub(crate) fn check(
        op: &str,
        x: Meta,
        w: Meta,
        bias: Option<Meta>,
        stride: usize,
        depthwise: bool,
    ) -> Result<Self> {
        let &[batch, in_h, in_w, cin] = x.shape else {
            return Err(Error::Shape(format!("{op}: x must be [B, H, W, C], got {:?}", x.shape)));
        };
        let &[cout, w_in, kh, kw] = w.shape else {
            return Err(Error::Shape(format!("{op}: weight must be [Cout, Cin/groups, KH, KW], got {:?}", w.shape)));
        };
        ensure_shape!(
            x.shape.iter().chain(w.shape).all(|&d| d > 0),
            "{op}: zero-sized x {:?} or weight {:?}",
            x.shape,
            w.shape
        );
        ensure_shape!(stride >= 1, "{op}: stride must be at least 1");
        if depthwise {
            ensure_shape!(cout == cin && w_in == 1, "{op}: weight {:?} is not [{cin}, 1, KH, KW]", w.shape);
        } else {
            ensure_shape!(w_in == cin, "{op}: weight {:?} does not take Cin = {cin}", w.shape);
        }
        if let Some(b) = bias {
            ensure_shape!(b.shape == [cout], "{op}: bias {:?} is not [{cout}]", b.shape);
        }
        for (what, t) in [("x", Some(x)), ("weight", Some(w)), ("bias", bias)] {
            if let Some(t) = t {
                ensure_shape!(t.dtype == DType::F32, "{op}: {what} must be f32, got {:?}", t.dtype);
            }
        }
        let (out_h, pad_top) = same_padding(in_h, kh, stride);
        let (out_w, pad_left) = same_padding(in_w, kw, stride);
        let pixels = batch.saturating_mul(out_h).saturating_mul(out_w);
        let outputs = pixels.saturating_mul(cout);
        let threads = if depthwise {
            batch.saturating_mul(out_h).saturating_mul(out_w.div_ceil(4)).saturating_mul(cout)
        } else {
            pixels.saturating_mul(cout.div_ceil(4))
        };
        for (what, n) in [("elements of x", x.numel()), ("elements of the weight", w.numel()), ("outputs", outputs)] {
            ensure_u32(op, what, n)?;
        }
        ensure_grid(op, threads.div_ceil(WORKGROUP))?;
        Ok(Self { batch, in_h, in_w, cin, cout, kh, kw, stride, out_h, out_w, pad_top, pad_left, threads })
    }

    pub(crate) fn out_shape(&self) -> [usize; 4] {
        [self.batch, self.out_h, self.out_w, self.cout]
    }

    /// The dispatch: 64-wide workgroups over `threads`, folded past 65,535.
    pub(crate) fn workgroups(&self) -> [u32; 3] {
        Pass::grid(self.threads.div_ceil(WORKGROUP) as u32)
    }

    /// Input row/column of tap `k` for output position `o` along an axis, if inside the image.
    pub(crate) fn tap(o: usize, k: usize, stride: usize, pad: usize, size: usize) -> Option<usize> {
        (o * stride + k).checked_sub(pad).filter(|&i| i < size)
    }
}

/// The shape check of [`conv2d`] and its CPU twin.
pub(crate) fn check(x: Meta, w: Meta, bias: Option<Meta>, stride: usize) -> Result<ConvGeometry> {
    ConvGeometry::check("conv2d", x, w, bias, stride, false)
}

/// `act(conv(x, w) + bias)` with SAME padding: `x [B, H, W, Cin]`, `w [Cout, Cin, KH, KW]`
/// (PyTorch layout, f32), `bias [Cout]` -> `[B, ceil(H/s), ceil(W/s), Cout]`.
pub fn conv2d(
    pass: &mut Pass,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    act: Activation,
) -> Result<Tensor> {
    let g = check(x.into(), w.into(), bias.map(Meta::from), stride)?;
    let y = Tensor::uninit(pass.gpu(), &g.out_shape())?;
    let params = g.params(act);
    match bias {
        Some(b) => pass.dispatch(&KERNEL, &["BIAS"], &params, &[x, w, b, &y], g.workgroups()),
        None => pass.dispatch(&KERNEL, &[], &params, &[x, w, &y], g.workgroups()),
    }
    Ok(y)
}

/// CPU twin of [`conv2d`]: `x`, `w` and `bias` row-major as [`check`] passed them, with its
/// geometry `g`. Returns `[B, Ho, Wo, Cout]`. Each output pixel's window is gathered into a row
/// (`Cin x KH x KW`, the weight's order, zeros outside the image), then one GEMM against
/// `w [Cout, Cin·KH·KW]` with the fused bias and activation.
pub(crate) fn conv2d_cpu(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeometry, act: Activation) -> Vec<f32> {
    let (taps, kk) = (g.kh * g.kw, g.cin * g.kh * g.kw);
    let pixels = g.batch * g.out_h * g.out_w;
    let mut cols = crate::cpu::buffers::for_output(pixels * kk);
    crate::parallel::for_row_chunks(&mut cols, kk, 1, pixels * kk, |first, rows| {
        for (i, row) in rows.chunks_exact_mut(kk).enumerate() {
            // Zeroed here, in cache, rather than in a pass of its own: taps outside stay 0.
            row.fill(0.0);
            let p = first + i;
            let (b, oy, ox) = (p / (g.out_h * g.out_w), p / g.out_w % g.out_h, p % g.out_w);
            for ky in 0..g.kh {
                let Some(iy) = ConvGeometry::tap(oy, ky, g.stride, g.pad_top, g.in_h) else { continue };
                for kx in 0..g.kw {
                    let Some(ix) = ConvGeometry::tap(ox, kx, g.stride, g.pad_left, g.in_w) else { continue };
                    let xs = &x[((b * g.in_h + iy) * g.in_w + ix) * g.cin..][..g.cin];
                    for (ci, v) in xs.iter().enumerate() {
                        row[ci * taps + ky * g.kw + kx] = *v;
                    }
                }
            }
        }
    });
    let mut y = crate::cpu::buffers::for_output(pixels * g.cout);
    gemm(Level::current(), &cols, kk, Rhs::F32(w), g.cout, Fused { bias, act, ..Fused::default() }, &mut y);
    crate::cpu::buffers::recycle(cols);
    y
}

/// The twin on plain shapes, for tests: checks them, then runs [`conv2d_cpu`].
#[cfg(test)]
pub(crate) fn conv2d_reference(
    x: &[f32],
    x_shape: [usize; 4],
    w: &[f32],
    w_shape: [usize; 4],
    bias: Option<&[f32]>,
    stride: usize,
    act: Activation,
) -> Vec<f32> {
    let f32s = |shape| Meta { shape, dtype: DType::F32 };
    let blen = bias.map(|b| [b.len()]);
    let g = check(f32s(&x_shape), f32s(&w_shape), blen.as_ref().map(|b| f32s(b)), stride).unwrap();
    conv2d_cpu(x, w, bias, &g, act)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, gpu_test, random};
    use crate::Gpu;

    #[test]
    fn same_padding_matches_tensorflow() {
        // (in, k, stride) -> (out, before), by hand from TF's rule.
        let cases = [
            ((456, 3, 2), (228, 0)), // stem: total 1, all of it after
            ((15, 5, 2), (8, 2)),    // total 14 + 5 - 15 = 4, symmetric
            ((16, 5, 2), (8, 1)),    // total 3: 1 before, 2 after
            ((29, 5, 1), (29, 2)),   // total 4, symmetric
            ((228, 3, 1), (228, 1)),
            ((57, 5, 2), (29, 2)), // odd input at stride 2: total 4
            ((58, 3, 2), (29, 0)), // even input at stride 2: total 1
            ((13, 3, 2), (7, 1)),  // total 2
            ((1, 1, 1), (1, 0)),
            ((2, 5, 1), (2, 2)), // kernel wider than the input
            ((4, 1, 2), (2, 0)), // 1x1 stride 2: total would be negative, clamped to 0
        ];
        for ((i, k, s), want) in cases {
            assert_eq!(same_padding(i, k, s), want, "in={i} k={k} s={s}");
        }
    }

    gpu_test!(conv2d_pads_bottom_right_at_stride_2, |gpu| {
        // x = 1..16 in a 4x4 image, 3x3 box filter, stride 2: SAME pads 0 before and 1 after, so
        // the windows are rows/cols {0,1,2} and {2,3}. (Symmetric padding would give other sums.)
        let x: Vec<f32> = (1..=16).map(|v| v as f32).collect();
        let want = [54.0, 45.0, 72.0, 54.0];
        let cpu = conv2d_reference(&x, [1, 4, 4, 1], &[1.0; 9], [1, 1, 3, 3], None, 2, Activation::None);
        assert_eq!(cpu, want);
        let xt = Tensor::from_f32(gpu, &[1, 4, 4, 1], &x).unwrap();
        let wt = Tensor::from_f32(gpu, &[1, 1, 3, 3], &[1.0; 9]).unwrap();
        let mut pass = Pass::new(gpu);
        let y = conv2d(&mut pass, &xt, &wt, None, 2, Activation::None).unwrap();
        pass.submit().unwrap();
        // Small integers: exact in f32.
        assert_eq!(y.read_f32(gpu).await.unwrap(), want);
    });

    async fn check(gpu: &Gpu, x_shape: [usize; 4], w_shape: [usize; 4], stride: usize, bias: bool, act: Activation) {
        let [_, cin, kh, kw] = w_shape;
        let fan_in = cin * kh * kw;
        let seed = x_shape.iter().chain(&w_shape).fold(stride as u64, |s, &d| s * 31 + d as u64);
        let x = random(x_shape.iter().product(), seed, 1.0);
        let w = random(w_shape.iter().product(), seed + 1, 1.0 / (fan_in as f32).sqrt());
        let b = random(w_shape[0], seed + 2, 0.5);
        let bias = bias.then_some(&b[..]);
        let want = conv2d_reference(&x, x_shape, &w, w_shape, bias, stride, act);

        let xt = Tensor::from_f32(gpu, &x_shape, &x).unwrap();
        let wt = Tensor::from_f32(gpu, &w_shape, &w).unwrap();
        let bt = Tensor::from_f32(gpu, &[w_shape[0]], &b).unwrap();
        let mut pass = Pass::new(gpu);
        let y = conv2d(&mut pass, &xt, &wt, bias.map(|_| &bt), stride, act).unwrap();
        pass.submit().unwrap();
        let (oh, _) = same_padding(x_shape[1], kh, stride);
        let (ow, _) = same_padding(x_shape[2], kw, stride);
        assert_eq!(y.shape(), [x_shape[0], oh, ow, w_shape[0]]);
        let got = y.read_f32(gpu).await.unwrap();
        // f32 sums of Cin*KH*KW terms (|x| <= 1, |w| <= 1/sqrt(fan_in)) in a different order (and
        // with fma): error grows like sqrt(fan_in) * eps. rtol covers exp in SiLU differing by ulps.
        let atol = 2e-6 * (fan_in as f32).sqrt();
        let what = format!("conv2d x{x_shape:?} w{w_shape:?} s{stride} bias={} {act:?}", bias.is_some());
        assert_close(&got, &want, atol, 1e-5, &what);
    }

    gpu_test!(conv2d_ragged_shapes, |gpu| {
        // H, W, Cout not multiples of 64 or 4; odd and even sizes exercise asymmetric padding.
        for (h, w) in [(13, 11), (12, 10)] {
            for k in [3, 5] {
                for stride in [1, 2] {
                    for bias in [false, true] {
                        check(gpu, [2, h, w, 5], [37, 5, k, k], stride, bias, Activation::Silu).await;
                    }
                }
            }
        }
    });

    gpu_test!(conv2d_general_kernels, |gpu| {
        // Non-square kernels, 1x1, even kernels, a kernel wider than the image, stride 3.
        check(gpu, [1, 9, 14, 6], [7, 6, 3, 1], 1, true, Activation::None).await;
        check(gpu, [1, 9, 14, 6], [7, 6, 1, 1], 2, true, Activation::Relu).await;
        check(gpu, [2, 10, 7, 3], [9, 3, 4, 2], 2, false, Activation::None).await;
        check(gpu, [1, 3, 2, 4], [5, 4, 5, 5], 1, true, Activation::Silu).await;
        check(gpu, [1, 16, 17, 2], [3, 2, 3, 3], 3, true, Activation::Gelu).await;
        check(gpu, [3, 5, 5, 1], [1, 1, 3, 3], 1, true, Activation::Sigmoid).await;
    });

    gpu_test!(conv2d_stem_shape, |gpu| {
        // The EfficientNet stem (3 -> 48, 3x3 stride 2) on an even input like 456, smaller.
        check(gpu, [2, 58, 58, 3], [48, 3, 3, 3], 2, true, Activation::Silu).await;
    });

    gpu_test!(conv2d_folds_large_grids, |gpu| {
        // 2100 * 2100 threads / 64 > 65,535 workgroups, so the grid folds into y.
        check(gpu, [1, 2100, 2100, 1], [1, 1, 3, 3], 1, true, Activation::None).await;
    });

    gpu_test!(conv2d_refuses_bad_shapes_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both, ones_u32, weight, zeros};
        let run = |x: &[usize], w: &[usize], b: Option<&[usize]>, stride: usize, dtype: DType| {
            on_both!(gpu, |be| {
                let xt = zeros(be, x);
                let wt = weight(be, w, dtype);
                let bt = b.map(|shape| weight(be, shape, DType::F32));
                be.conv2d(&xt, &wt, bt.as_ref(), stride, Activation::None)
            })
        };
        let (x, w) = (&[1, 5, 5, 3][..], &[4, 3, 3, 3][..]);
        assert_both_accept(run(x, w, Some(&[4]), 2, DType::F32), "good shapes");
        assert_same_refusal(run(x, &[4, 2, 3, 3], None, 1, DType::F32), "Cin mismatch");
        assert_same_refusal(run(x, &[4, 3, 3], None, 1, DType::F32), "3-d weight");
        assert_same_refusal(run(&[5, 5, 3], w, None, 1, DType::F32), "3-d x");
        assert_same_refusal(run(x, w, Some(&[5]), 1, DType::F32), "bias length");
        assert_same_refusal(run(x, w, None, 0, DType::F32), "stride 0");
        assert_same_refusal(run(x, &[4, 3, 0, 3], None, 1, DType::F32), "empty kernel");
        assert_same_refusal(run(&[1, 0, 5, 3], w, None, 1, DType::F32), "empty x");
        assert_same_refusal(run(x, w, None, 1, DType::F16), "f16 weight");
        let ids = on_both!(gpu, |be| {
            let x = ones_u32(be, &[1, 5, 5, 3]);
            let w = weight(be, &[4, 3, 3, 3], DType::F32);
            be.conv2d(&x, &w, None, 1, Activation::None)
        });
        assert_same_refusal(ids, "u32 x");
    });
}
