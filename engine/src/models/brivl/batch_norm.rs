//! BatchNorm folding at conversion time: the EfficientNet backbone's inference BatchNorms become
//! the bias (and a scaled weight) of the conv before them, so the engine runs no BatchNorm op.

use crate::error::ensure_shape;
use crate::Result;

/// Folds an inference BatchNorm that follows a conv into the conv: scales `w` in place per
/// output channel (its leading dimension, `out_channels` rows) by `gamma / sqrt(var + eps)` and
/// returns the folded bias `(bias - mean) * scale + beta` (`bias` 0 when the conv has none).
/// BriVL's BatchNorm eps is 1e-3. Works for `[Cout, Cin, KH, KW]`, `[C, 1, K, K]` and `[N, K]`.
#[allow(clippy::too_many_arguments)] // the BatchNorm's four vectors, as the checkpoint names them
pub(crate) fn fold_batch_norm(
    w: &mut [f32],
    bias: Option<&[f32]>,
    out_channels: usize,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) -> Result<Vec<f32>> {
    let n = out_channels;
    ensure_shape!(n > 0 && w.len().is_multiple_of(n), "fold_batch_norm: {} weights are not {n} rows", w.len());
    ensure_shape!(
        [gamma.len(), beta.len(), mean.len(), var.len()] == [n; 4] && bias.is_none_or(|b| b.len() == n),
        "fold_batch_norm: BatchNorm / bias vectors must all have {n} values"
    );
    let row = w.len() / n;
    let mut folded = Vec::with_capacity(n);
    for (c, wr) in w.chunks_exact_mut(row).enumerate() {
        // In f64 so that folding adds no error beyond the final rounding to f32.
        let scale = gamma[c] as f64 / (var[c] as f64 + eps as f64).sqrt();
        for v in wr.iter_mut() {
            *v = (*v as f64 * scale) as f32;
        }
        let b = bias.map_or(0.0, |b| b[c] as f64);
        folded.push(((b - mean[c] as f64) * scale + beta[c] as f64) as f32);
    }
    Ok(folded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv2d::conv2d_reference;
    use crate::ops::Activation;
    use crate::testing::{assert_close, random};

    /// Reference: conv, then BatchNorm per output channel, all on the CPU.
    fn conv_then_bn(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        bias: Option<&[f32]>,
        bn: &[Vec<f32>; 4],
        eps: f32,
    ) -> Vec<f32> {
        let [gamma, beta, mean, var] = bn;
        let y = conv2d_reference(x, xs, w, ws, bias, 1, Activation::None);
        let c = ws[0];
        y.iter()
            .enumerate()
            .map(|(i, &v)| (v - mean[i % c]) / (var[i % c] + eps).sqrt() * gamma[i % c] + beta[i % c])
            .collect()
    }

    #[test]
    fn fold_batch_norm_matches_conv_then_bn() {
        let (xs, ws) = ([2, 7, 6, 4], [9, 4, 3, 3]);
        let c = ws[0];
        let x = random(xs.iter().product(), 11, 1.0);
        let w = random(ws.iter().product(), 12, 1.0 / 6.0);
        let b = random(c, 13, 0.5);
        let gamma: Vec<f32> = random(c, 14, 0.5).iter().map(|g| g + 1.0).collect();
        let beta = random(c, 15, 0.3);
        let mean = random(c, 16, 0.2);
        // Variances from tiny (where eps matters) to large.
        let var: Vec<f32> = (0..c).map(|i| [1e-4, 0.01, 0.5, 2.0, 30.0][i % 5]).collect();
        let bn = [gamma.clone(), beta.clone(), mean.clone(), var.clone()];
        let eps = 1e-3;
        for bias in [None, Some(&b[..])] {
            let want = conv_then_bn(&x, xs, &w, ws, bias, &bn, eps);
            let mut wf = w.clone();
            let bf = fold_batch_norm(&mut wf, bias, c, &gamma, &beta, &mean, &var, eps).unwrap();
            let got = conv2d_reference(&x, xs, &wf, ws, Some(&bf), 1, Activation::None);
            // Same math reassociated: the BN scale (up to 1.5 / sqrt(1.1e-3) ~ 45) multiplies the
            // f32 rounding of a 36-term conv sum (~36 * 6e-8 at |sum| ~ 1) either before or after
            // the sum, and (conv - mean) can cancel, so the bound is absolute: 45 * 2e-6 ~ 1e-4.
            assert_close(&got, &want, 1e-4, 1e-5, &format!("fold_batch_norm bias={}", bias.is_some()));
        }
        // Folding with the wrong eps must be detectably different (the test can fail).
        let mut wf = w.clone();
        let bf = fold_batch_norm(&mut wf, None, c, &gamma, &beta, &mean, &var, 1e-5).unwrap();
        let got = conv2d_reference(&x, xs, &wf, ws, Some(&bf), 1, Activation::None);
        let want = conv_then_bn(&x, xs, &w, ws, None, &bn, eps);
        assert!(got.iter().zip(&want).any(|(g, w)| (g - w).abs() > 1e-2));
        // Mismatched lengths are errors, not panics.
        assert!(fold_batch_norm(&mut wf, None, c, &gamma[1..], &beta, &mean, &var, eps).is_err());
        assert!(fold_batch_norm(&mut wf, None, 7, &gamma, &beta, &mean, &var, eps).is_err());
    }
}
