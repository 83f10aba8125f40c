//! Depthwise convolution (groups = C), channels-last, TensorFlow "SAME" padding, with a fused
//! (BatchNorm-folded) bias and activation. Kernel: `shaders/depthwise.wgsl`.

use crate::ops::conv2d::{check_f32, ConvGeometry};
use crate::ops::Activation;
use crate::pipelines::Kernel;
use crate::{Pass, Result, Tensor};

const KERNEL: Kernel = crate::kernel!("depthwise", "main");

/// `act(depthwise_conv(x, w) + bias)` with SAME padding: `x [B, H, W, C]`, `w [C, 1, KH, KW]`
/// (PyTorch layout, f32), `bias [C]` -> `[B, ceil(H/s), ceil(W/s), C]`.
pub fn depthwise(
    pass: &mut Pass,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    act: Activation,
) -> Result<Tensor> {
    let g = ConvGeometry::new("depthwise", x.shape(), w.shape(), bias.map(|b| b.shape()), stride, true)?;
    check_f32("depthwise", &[Some(x), Some(w), bias])?;
    let groups = ConvGeometry::workgroups("depthwise", g.out_shape().iter().product())?;
    let y = Tensor::uninit(pass.gpu(), &g.out_shape())?;
    let params = g.params(act);
    match bias {
        Some(b) => pass.dispatch(&KERNEL, &["BIAS"], &params, &[x, w, b, &y], groups),
        None => pass.dispatch(&KERNEL, &[], &params, &[x, w, &y], groups),
    }
    Ok(y)
}

/// CPU twin of [`depthwise`]: same shapes, as row-major slices. Returns `[B, Ho, Wo, C]`.
pub fn depthwise_cpu(
    x: &[f32],
    x_shape: [usize; 4],
    w: &[f32],
    w_shape: [usize; 4],
    bias: Option<&[f32]>,
    stride: usize,
    act: Activation,
) -> Result<Vec<f32>> {
    let blen = bias.map(|b| [b.len()]);
    let g = ConvGeometry::new("depthwise_cpu", &x_shape, &w_shape, blen.as_ref().map(|b| &b[..]), stride, true)?;
    for (what, data, shape) in [("x", x, x_shape), ("weight", w, w_shape)] {
        let n: usize = shape.iter().product();
        crate::error::ensure_shape!(data.len() == n, "depthwise_cpu: {what} has {} values, needs {n}", data.len());
    }
    let c = g.cin;
    let mut y = Vec::with_capacity(g.out_shape().iter().product());
    let mut acc = vec![0f32; c];
    for b in 0..g.batch {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                acc.fill(0.0);
                for ky in 0..g.kh {
                    let Some(iy) = (oy * g.stride + ky).checked_sub(g.pad_top).filter(|&i| i < g.in_h) else {
                        continue;
                    };
                    for kx in 0..g.kw {
                        let Some(ix) = (ox * g.stride + kx).checked_sub(g.pad_left).filter(|&i| i < g.in_w) else {
                            continue;
                        };
                        let xs = &x[((b * g.in_h + iy) * g.in_w + ix) * c..][..c];
                        for (ch, (a, xv)) in acc.iter_mut().zip(xs).enumerate() {
                            *a += xv * w[(ch * g.kh + ky) * g.kw + kx];
                        }
                    }
                }
                y.extend(acc.iter().enumerate().map(|(ch, a)| act.apply(a + bias.map_or(0.0, |b| b[ch]))));
            }
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv2d::same_padding;
    use crate::testing::{assert_close, gpu_test, random};
    use crate::Gpu;

    async fn check(gpu: &Gpu, x_shape: [usize; 4], kh: usize, kw: usize, stride: usize, bias: bool, act: Activation) {
        let c = x_shape[3];
        let w_shape = [c, 1, kh, kw];
        let seed = x_shape.iter().fold((kh * 7 + kw * 3 + stride) as u64, |s, &d| s * 31 + d as u64);
        let x = random(x_shape.iter().product(), seed, 1.0);
        let w = random(c * kh * kw, seed + 1, 1.0 / ((kh * kw) as f32).sqrt());
        let b = random(c, seed + 2, 0.5);
        let bias = bias.then_some(&b[..]);
        let want = depthwise_cpu(&x, x_shape, &w, w_shape, bias, stride, act).unwrap();

        let xt = Tensor::from_f32(gpu, &x_shape, &x).unwrap();
        let wt = Tensor::from_f32(gpu, &w_shape, &w).unwrap();
        let bt = Tensor::from_f32(gpu, &[c], &b).unwrap();
        let mut pass = Pass::new(gpu);
        let y = depthwise(&mut pass, &xt, &wt, bias.map(|_| &bt), stride, act).unwrap();
        pass.submit().unwrap();
        let (oh, _) = same_padding(x_shape[1], kh, stride);
        let (ow, _) = same_padding(x_shape[2], kw, stride);
        assert_eq!(y.shape(), [x_shape[0], oh, ow, c]);
        let got = y.read_f32(gpu).await.unwrap();
        // f32 sums of KH*KW terms (|x| <= 1, |w| <= 1/k) in a different order and with fma:
        // error grows like sqrt(KH*KW) * eps. rtol covers exp in SiLU differing by ulps.
        let atol = 2e-6 * ((kh * kw) as f32).sqrt();
        let what = format!("depthwise x{x_shape:?} k{kh}x{kw} s{stride} bias={} {act:?}", bias.is_some());
        assert_close(&got, &want, atol, 1e-5, &what);
    }

    gpu_test!(depthwise_ragged_shapes, |gpu| {
        // H, W, C not multiples of the 64-wide workgroup; odd and even sizes exercise the
        // asymmetric stride-2 padding.
        for (h, w) in [(13, 11), (12, 10)] {
            for k in [3, 5] {
                for stride in [1, 2] {
                    for bias in [false, true] {
                        check(gpu, [2, h, w, 37], k, k, stride, bias, Activation::Silu).await;
                    }
                }
            }
        }
    });

    gpu_test!(depthwise_general_kernels, |gpu| {
        // Even and non-square kernels, a kernel wider than the image, stride 3, other activations.
        check(gpu, [1, 9, 8, 5], 4, 4, 2, true, Activation::None).await;
        check(gpu, [2, 7, 9, 3], 3, 1, 1, false, Activation::Relu).await;
        check(gpu, [1, 2, 3, 70], 5, 5, 1, true, Activation::Sigmoid).await;
        check(gpu, [1, 17, 16, 1], 3, 3, 3, true, Activation::Gelu).await;
        check(gpu, [1, 6, 6, 8], 1, 1, 2, true, Activation::None).await;
    });

    gpu_test!(depthwise_efficientnet_shapes, |gpu| {
        // Stage 6 of B5 (1056 channels at 29x29, 5x5 stride 1), at batch 2.
        check(gpu, [2, 29, 29, 1056], 5, 5, 1, true, Activation::Silu).await;
        // Stage 1 (96 channels at 228x228, 3x3): 5M threads, more than 65,535 workgroups, so the
        // grid folds into y.
        check(gpu, [1, 228, 228, 96], 3, 3, 1, true, Activation::Silu).await;
        // A stride-2 5x5 stage entry on an odd size (57 -> 29, padding 2 before, 2 after).
        check(gpu, [1, 57, 57, 40], 5, 5, 2, true, Activation::Silu).await;
    });

    gpu_test!(depthwise_pads_bottom_right_at_stride_2, |gpu| {
        // Channel 0 is 1..16 in a 4x4 image, channel 1 its negation; 3x3 box filter, stride 2:
        // SAME pads 0 before and 1 after, so the windows are rows/cols {0,1,2} and {2,3}.
        let x: Vec<f32> = (1..=16).flat_map(|v| [v as f32, -v as f32]).collect();
        let want = [54.0, -54.0, 45.0, -45.0, 72.0, -72.0, 54.0, -54.0];
        let cpu = depthwise_cpu(&x, [1, 4, 4, 2], &[1.0; 18], [2, 1, 3, 3], None, 2, Activation::None).unwrap();
        assert_eq!(cpu, want);
        let xt = Tensor::from_f32(gpu, &[1, 4, 4, 2], &x).unwrap();
        let wt = Tensor::from_f32(gpu, &[2, 1, 3, 3], &[1.0; 18]).unwrap();
        let mut pass = Pass::new(gpu);
        let y = depthwise(&mut pass, &xt, &wt, None, 2, Activation::None).unwrap();
        pass.submit().unwrap();
        // Small integers: exact in f32.
        assert_eq!(y.read_f32(gpu).await.unwrap(), want);
    });

    gpu_test!(depthwise_refuses_bad_shapes, |gpu| {
        let t = |shape: &[usize]| Tensor::from_f32(gpu, shape, &vec![0.0; shape.iter().product()]).unwrap();
        let x = t(&[1, 5, 5, 3]);
        let w = t(&[3, 1, 3, 3]);
        let mut pass = Pass::new(gpu);
        let mut bad = |x: &Tensor, w: &Tensor, b: Option<&Tensor>, s: usize| {
            matches!(depthwise(&mut pass, x, w, b, s, Activation::None), Err(crate::Error::Shape(_)))
        };
        assert!(bad(&x, &t(&[4, 1, 3, 3]), None, 1), "C mismatch");
        assert!(bad(&x, &t(&[3, 3, 3, 3]), None, 1), "not one input channel per group");
        assert!(bad(&x, &t(&[3, 9]), None, 1), "2-d weight");
        assert!(bad(&t(&[5, 5, 3]), &w, None, 1), "3-d x");
        assert!(bad(&x, &w, Some(&t(&[4])), 1), "bias length");
        assert!(bad(&x, &w, None, 0), "stride 0");
        assert!(bad(&t(&[1, 0, 5, 3]), &w, None, 1), "empty x");
        assert!(!bad(&x, &w, None, 1), "the good shapes pass");
        assert!(depthwise_cpu(&[0.0; 75], [1, 5, 5, 3], &[0.0; 26], [3, 1, 3, 3], None, 1, Activation::None).is_err());
    });
}
