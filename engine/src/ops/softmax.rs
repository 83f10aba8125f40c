//! Row-wise softmax over the last axis, max-subtracted. Kernel: `shaders/softmax.wgsl`.

use crate::error::ensure_shape;
use crate::pipelines::Kernel;
use crate::{DType, Pass, Result, Tensor};

crate::uniform_struct! {
    /// Shapes for `softmax.wgsl`.
    pub struct SoftmaxParams { pub rows: u32, pub d: u32 }
}

const KERNEL: Kernel = crate::kernel!("softmax", "main");

/// `softmax(x)` over the last axis `D` of `x [..., D]`.
pub fn softmax(pass: &mut Pass, x: &Tensor) -> Result<Tensor> {
    let d = x.shape().last().copied().unwrap_or(0);
    ensure_shape!(d > 0, "softmax: x {:?} has no last axis", x.shape());
    ensure_shape!(x.dtype() == DType::F32, "softmax: x must be f32");
    ensure_shape!(x.numel() <= u32::MAX as usize, "softmax: {} elements exceed u32 indexing", x.numel());
    let rows = x.numel() / d;
    let y = Tensor::uninit(pass.gpu(), x.shape())?;
    if rows > 0 {
        let params = SoftmaxParams { rows: rows as u32, d: d as u32 };
        pass.dispatch(&KERNEL, &[], &params, &[x, &y], Pass::grid(rows as u32));
    }
    Ok(y)
}

/// CPU twin: softmax of each row of `d` values.
pub fn softmax_cpu(x: &[f32], d: usize) -> Vec<f32> {
    let mut y = x.to_vec();
    for row in y.chunks_exact_mut(d.max(1)) {
        let mx = row.iter().fold(f32::MIN, |m, &v| m.max(v));
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - mx).exp();
            sum += *v;
        }
        row.iter_mut().for_each(|v| *v /= sum);
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, gpu_test, random};
    use crate::Gpu;

    async fn run(gpu: &Gpu, x: &[f32], d: usize) -> Vec<f32> {
        let xt = Tensor::from_f32(gpu, &[x.len() / d, d], x).unwrap();
        let mut pass = Pass::new(gpu);
        let y = softmax(&mut pass, &xt).unwrap();
        pass.submit().unwrap();
        y.read_f32(gpu).await.unwrap()
    }

    gpu_test!(softmax_matches_cpu_ragged, |gpu| {
        // D = 1, 37, 300, 2050: none but 1 fits the 256-thread workgroup evenly.
        for (rows, d) in [(4, 1), (3, 37), (5, 300), (2, 2050), (300, 8)] {
            let x = random(rows * d, d as u64, 8.0);
            let got = run(gpu, &x, d).await;
            // Probabilities in [0, 1]; exp differs by a few ulp between GPU and libm and the
            // sum of D terms is taken in another order.
            assert_close(&got, &softmax_cpu(&x, d), 1e-7, 1e-5, &format!("softmax [{rows}, {d}]"));
        }
    });

    gpu_test!(softmax_survives_huge_inputs, |gpu| {
        let d = 5;
        #[rustfmt::skip]
        let x = [
            1e4, -1e4, 0.0, 1e4, -1e4,
            -1e4, -1e4, -1e4, -1e4, -1e4,
            3e38, -3e38, 0.0, 1.0, 2.0,
        ];
        let got = run(gpu, &x, d).await;
        #[rustfmt::skip]
        let want = [
            0.5, 0.0, 0.0, 0.5, 0.0,
            0.2, 0.2, 0.2, 0.2, 0.2,
            1.0, 0.0, 0.0, 0.0, 0.0,
        ];
        // Exact values up to the rounding of 1/sum.
        assert_close(&got, &want, 1e-7, 1e-6, "softmax of +-1e4");
        assert_close(&softmax_cpu(&x, d), &want, 1e-7, 1e-6, "cpu softmax of +-1e4");
    });

    gpu_test!(softmax_refuses_bad_shapes, |gpu| {
        let empty = Tensor::from_f32(gpu, &[3, 0], &[]).unwrap();
        let ids = Tensor::from_u32(gpu, &[3], &[1, 2, 3]).unwrap();
        let mut pass = Pass::new(gpu);
        assert!(matches!(softmax(&mut pass, &empty), Err(crate::Error::Shape(_))));
        assert!(matches!(softmax(&mut pass, &ids), Err(crate::Error::Shape(_))));
    });
}
