//! Image preprocessing on the GPU (BriVL image tower step 1, after decoding): RGBA8 pixels ->
//! [0, 1] -> bilinear resize like PyTorch `F.interpolate(mode='bilinear', align_corners=False)`
//! (no antialias) -> per-channel `(v - mean) / std`, channels-last. Kernel: `shaders/preprocess.wgsl`.
//!
//! The resize reads at most two source rows per output row and two columns per output column,
//! so only those are uploaded (a 12-MP photo to 456x456: at most 912x912 pixels, 3.3 MB instead
//! of 48 MB), with the taps computed on the host by the same function as the CPU twin's.

use crate::error::ensure_shape;
use crate::ops::{ensure_grid, ensure_u32};
use crate::pipelines::Kernel;
use crate::{Pass, Result, Tensor};

crate::uniforms::uniform_struct! {
    /// Shapes and normalisation for `preprocess.wgsl`: the output size, the width of the
    /// uploaded (gathered) pixels and where this image's outputs start.
    pub struct PreprocessParams {
        pub out_h: u32, pub out_w: u32, pub cols: u32, pub offset: u32,
        pub mean_r: f32, pub mean_g: f32, pub mean_b: f32, pub std_r: f32, pub std_g: f32, pub std_b: f32,
    }
}

const KERNEL: Kernel = crate::pipelines::kernel!("preprocess", "main");
const WORKGROUP: usize = 256;

/// Per-channel (R, G, B) normalisation of the [0, 1] values: `(v - mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// A decoded photo on the host: `height x width` RGBA8 words (R in the low byte, alpha ignored).
#[derive(Clone, Copy, Debug)]
pub struct Photo<'a> {
    pub height: usize,
    pub width: usize,
    pub rgba: &'a [u32],
}

/// The shape check of [`preprocess`] and its CPU twin: photos non-empty with as many pixels as
/// their size says, a non-empty output size, finite means and finite non-zero deviations.
pub(crate) fn check(photos: &[Photo], out_h: usize, out_w: usize, norm: &Normalize) -> Result<()> {
    ensure_shape!(out_h > 0 && out_w > 0, "preprocess: empty output {out_h}x{out_w}");
    ensure_shape!(
        norm.mean.iter().all(|m| m.is_finite()) && norm.std.iter().all(|s| s.is_finite() && *s != 0.0),
        "preprocess: normalisation {norm:?} needs finite means and finite, non-zero deviations"
    );
    let pixels = out_h.saturating_mul(out_w);
    ensure_u32("preprocess", "outputs", pixels.saturating_mul(3).saturating_mul(photos.len()))?;
    ensure_grid("preprocess", pixels.div_ceil(WORKGROUP))?;
    for p in photos {
        let (h, w) = (p.height, p.width);
        ensure_shape!(h > 0 && w > 0, "preprocess: empty image {h}x{w}");
        ensure_shape!(
            h.checked_mul(w) == Some(p.rgba.len()),
            "preprocess: a {h}x{w} image has {} pixels",
            p.rgba.len()
        );
        ensure_u32("preprocess", "pixels of an image", p.rgba.len())?;
    }
    Ok(())
}

/// What the GPU reads of one photo: the tapped rows and columns only, and per output row then
/// per output column `(first, second, weight of the second)` as indices into them.
struct Gathered {
    pixels: Vec<u32>,
    cols: usize,
    taps: Vec<u32>,
}

/// The source indices the resize from `size` to `out` taps, ascending, and each output's taps
/// as positions among them.
fn tapped(size: usize, out: usize) -> (Vec<usize>, Vec<(u32, u32, f32)>) {
    let scale = size as f32 / out as f32;
    let all: Vec<(usize, usize, f32)> = (0..out).map(|d| taps(d, scale, size)).collect();
    let mut used = vec![false; size];
    for &(i0, i1, _) in &all {
        used[i0] = true;
        used[i1] = true;
    }
    let kept: Vec<usize> = (0..size).filter(|&i| used[i]).collect();
    let mut position = vec![0u32; size];
    for (k, &i) in kept.iter().enumerate() {
        position[i] = k as u32;
    }
    (kept, all.into_iter().map(|(i0, i1, l1)| (position[i0], position[i1], l1)).collect())
}

fn gather(photo: &Photo, out_h: usize, out_w: usize) -> Gathered {
    let (rows, row_taps) = tapped(photo.height, out_h);
    let (cols, col_taps) = tapped(photo.width, out_w);
    let mut pixels = Vec::with_capacity(rows.len() * cols.len());
    for &r in &rows {
        let row = &photo.rgba[r * photo.width..][..photo.width];
        pixels.extend(cols.iter().map(|&c| row[c]));
    }
    let taps = row_taps.iter().chain(&col_taps).flat_map(|&(a, b, l)| [a, b, l.to_bits()]).collect();
    Gathered { pixels, cols: cols.len(), taps }
}

/// Preprocesses `photos` (any sizes) into one f32 batch `[B, out_h, out_w, 3]`.
pub fn preprocess(pass: &mut Pass, photos: &[Photo], out_h: usize, out_w: usize, norm: &Normalize) -> Result<Tensor> {
    check(photos, out_h, out_w, norm)?;
    let out = Tensor::uninit(pass.gpu(), &[photos.len(), out_h, out_w, 3])?;
    let pixels = out_h * out_w;
    for (index, photo) in photos.iter().enumerate() {
        let g = gather(photo, out_h, out_w);
        let rgba = Tensor::from_u32(pass.gpu(), &[g.pixels.len() / g.cols, g.cols], &g.pixels)?;
        let taps = Tensor::from_u32(pass.gpu(), &[g.taps.len()], &g.taps)?;
        let params = PreprocessParams {
            out_h: out_h as u32,
            out_w: out_w as u32,
            cols: g.cols as u32,
            offset: (index * pixels * 3) as u32,
            mean_r: norm.mean[0],
            mean_g: norm.mean[1],
            mean_b: norm.mean[2],
            std_r: norm.std[0],
            std_g: norm.std[1],
            std_b: norm.std[2],
        };
        pass.dispatch(&KERNEL, &[], &params, &[&rgba, &taps, &out], Pass::grid(pixels.div_ceil(WORKGROUP) as u32));
    }
    Ok(out)
}

/// PyTorch's bilinear source taps for one output index (align_corners=False):
/// `(i0, i1, lambda1)` with `src = max((dst + 0.5) * scale - 0.5, 0)`.
fn taps(dst: usize, scale: f32, size: usize) -> (usize, usize, f32) {
    let src = (scale * (dst as f32 + 0.5) - 0.5).max(0.0);
    let i0 = (src as usize).min(size - 1); // src >= 0, so truncation is floor
    (i0, (i0 + 1).min(size - 1), src - i0 as f32)
}

/// CPU twin for one image, on what [`check`] passed: `rgba` is `[h, w]`; returns
/// `[out_h, out_w, 3]`.
pub(crate) fn preprocess_cpu(
    rgba: &[u32],
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
    norm: &Normalize,
) -> Vec<f32> {
    let rgb = |r: usize, c: usize| -> [f32; 3] {
        let p = rgba[r * w + c];
        [0, 8, 16].map(|s| ((p >> s) & 0xff) as f32 / 255.0)
    };
    let (scale_h, scale_w) = (h as f32 / out_h as f32, w as f32 / out_w as f32);
    let mut y = Vec::with_capacity(out_h * out_w * 3);
    for oy in 0..out_h {
        let (y0, y1, h1) = taps(oy, scale_h, h);
        let h0 = 1.0 - h1;
        for ox in 0..out_w {
            let (x0, x1, w1) = taps(ox, scale_w, w);
            let w0 = 1.0 - w1;
            let (a, b, c, d) = (rgb(y0, x0), rgb(y0, x1), rgb(y1, x0), rgb(y1, x1));
            for ch in 0..3 {
                let v = h0 * (w0 * a[ch] + w1 * b[ch]) + h1 * (w0 * c[ch] + w1 * d[ch]);
                y.push((v - norm.mean[ch]) / norm.std[ch]);
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, gpu_test, random};
    use crate::Gpu;

    /// Distinct per channel (and not ImageNet's), so a channel mix-up shows.
    const NORM: Normalize = Normalize { mean: [0.5, 0.25, 0.75], std: [0.5, 2.0, 0.25] };

    /// Deterministic random RGBA words (alpha random too: it must be ignored).
    fn random_image(h: usize, w: usize, seed: u64) -> Vec<u32> {
        random(h * w, seed, 1.0).iter().map(|v| (v.to_bits() as u64 * 2_654_435_761) as u32).collect()
    }

    /// Undoes the normalisation, so hand-computed [0, 1] values can be compared.
    fn unnormalise(y: &[f32]) -> Vec<f32> {
        y.iter().enumerate().map(|(i, v)| v * NORM.std[i % 3] + NORM.mean[i % 3]).collect()
    }

    /// A grey image: R = G = B = v, alpha 255.
    fn grey(values: &[u8]) -> Vec<u32> {
        values.iter().map(|&v| u32::from_le_bytes([v, v, v, 255])).collect()
    }

    #[test]
    fn twin_upscale_2x2_to_4x4_by_hand() {
        // Scale 0.5: src = 0.5*dst - 0.25 -> -0.25 (clamped to 0), 0.25, 0.75, 1.25 (x1 clamped
        // to the last pixel). Along one axis [a, b] becomes [a, 0.75a+0.25b, 0.25a+0.75b, b].
        let px = grey(&[0, 255, 51, 102]); // [[0, 1], [0.2, 0.4]]
        let got = unnormalise(&preprocess_cpu(&px, 2, 2, 4, 4, &NORM));
        let row = |a: f32, b: f32| [a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b];
        let (top, bottom) = (row(0.0, 1.0), row(0.2, 0.4));
        let want: Vec<f32> = [0.0f32, 0.25, 0.75, 1.0]
            .iter()
            .flat_map(|&l| (0..4).map(move |c| (1.0 - l) * top[c] + l * bottom[c]))
            .flat_map(|v| [v; 3])
            .collect();
        // Hand values in f64-ish decimal vs the f32 twin, then normalised and undone: ~1e-6.
        assert_close(&got, &want, 2e-6, 0.0, "2x2 -> 4x4");
        // Spot checks: corners are the input pixels, (1, 1) mixes 0.75^2 of pixel (0, 0).
        assert!((got[0] - 0.0).abs() < 2e-6 && (got[3 * 3] - 1.0).abs() < 2e-6);
        assert!(
            (got[(4 + 1) * 3] - (0.75 * 0.75 * 0.0 + 0.75 * 0.25 * 1.0 + 0.25 * 0.75 * 0.2 + 0.25 * 0.25 * 0.4)).abs()
                < 2e-6
        );
    }

    #[test]
    fn twin_downscale_4x4_to_2x2_by_hand() {
        // Scale 2: src = 2*dst + 0.5 -> 0.5, 2.5: each output is the mean of a 2x2 block (no
        // antialias, so the other pixels don't count).
        let v: Vec<u8> = (0..16).map(|i| (i * 10) as u8).collect(); // pixel (r, c) = 40r + 10c
        let got = unnormalise(&preprocess_cpu(&grey(&v), 4, 4, 2, 2, &NORM));
        let want: Vec<f32> = [25.0f32, 45.0, 105.0, 125.0].iter().flat_map(|m| [m / 255.0; 3]).collect();
        assert_close(&got, &want, 2e-6, 0.0, "4x4 -> 2x2");
    }

    #[test]
    fn twin_normalises_each_channel_and_ignores_alpha() {
        let px = [u32::from_le_bytes([255, 0, 51, 7])];
        let got = preprocess_cpu(&px, 1, 1, 3, 2, &NORM);
        assert_eq!(got.len(), 3 * 2 * 3);
        let want = [(1.0 - 0.5) / 0.5, (0.0 - 0.25) / 2.0, (0.2 - 0.75) / 0.25];
        for px in got.chunks(3) {
            assert_close(px, &want, 1e-6, 1e-6, "1x1 -> 3x2");
        }
    }

    #[test]
    fn twin_shapes() {
        assert_eq!(preprocess_cpu(&random_image(3, 5, 1), 3, 5, 456, 456, &NORM).len(), 456 * 456 * 3);
    }

    async fn check(gpu: &Gpu, h: usize, w: usize, out_h: usize, out_w: usize) {
        let px = random_image(h, w, (h * 100 + w) as u64);
        let mut pass = Pass::new(gpu);
        let y = preprocess(&mut pass, &[Photo { height: h, width: w, rgba: &px }], out_h, out_w, &NORM).unwrap();
        pass.submit().unwrap();
        let got = y.read_f32(gpu).await.unwrap();
        // Same f32 formulas; the GPU may fuse multiply-adds and its divisions (/255, /std) may
        // be off by ~2 ulp. Outputs are within [-3, 1], so a few ulp is < 1e-6.
        assert_close(
            &got,
            &preprocess_cpu(&px, h, w, out_h, out_w, &NORM),
            2e-6,
            2e-6,
            &format!("{h}x{w} -> {out_h}x{out_w}"),
        );
    }

    #[test]
    fn the_gathered_rows_and_columns_are_all_the_resize_reads() {
        for (h, w, oh, ow) in [(3000, 4000, 456, 456), (17, 23, 31, 29), (31, 29, 17, 23), (1, 1, 5, 3), (7, 9, 7, 9)] {
            let px = random_image(h, w, (h + w) as u64);
            let g = gather(&Photo { height: h, width: w, rgba: &px }, oh, ow);
            let rows = g.pixels.len() / g.cols;
            assert!(rows <= (2 * oh).min(h) && g.cols <= (2 * ow).min(w), "{h}x{w}: kept {rows}x{}", g.cols);
            // The twin's resize, read through the gathered pixels and taps, is the twin's
            // resize of the whole photo, bit for bit.
            let tap =
                |i: usize| (g.taps[3 * i] as usize, g.taps[3 * i + 1] as usize, f32::from_bits(g.taps[3 * i + 2]));
            let mut via = Vec::new();
            for oy in 0..oh {
                let (y0, y1, h1) = tap(oy);
                for ox in 0..ow {
                    let (x0, x1, w1) = tap(oh + ox);
                    let v = |r: usize, c: usize| g.pixels[r * g.cols + c];
                    let px = [v(y0, x0), v(y0, x1), v(y1, x0), v(y1, x1)];
                    let weights = [(1.0 - h1) * (1.0 - w1), (1.0 - h1) * w1, h1 * (1.0 - w1), h1 * w1];
                    via.push((px, weights));
                }
            }
            let mut full = Vec::new();
            let scale = (h as f32 / oh as f32, w as f32 / ow as f32);
            for oy in 0..oh {
                let (y0, y1, h1) = taps(oy, scale.0, h);
                for ox in 0..ow {
                    let (x0, x1, w1) = taps(ox, scale.1, w);
                    let v = |r: usize, c: usize| px[r * w + c];
                    let p = [v(y0, x0), v(y0, x1), v(y1, x0), v(y1, x1)];
                    full.push((p, [(1.0 - h1) * (1.0 - w1), (1.0 - h1) * w1, h1 * (1.0 - w1), h1 * w1]));
                }
            }
            assert!(via == full, "{h}x{w} -> {oh}x{ow}: the gathered taps differ");
        }
    }

    gpu_test!(preprocess_matches_twin, |gpu| {
        // Up, down, mixed, identity and degenerate sizes; none a multiple of 256 pixels.
        for (h, w, oh, ow) in
            [(17, 23, 31, 29), (31, 29, 17, 23), (17, 23, 9, 40), (13, 13, 13, 13), (1, 1, 5, 3), (3, 5, 456, 456)]
        {
            check(gpu, h, w, oh, ow).await;
        }
    });

    gpu_test!(preprocess_batches_images_of_any_size, |gpu| {
        let sizes = [(17, 23), (1, 1), (9, 30)];
        let images: Vec<Vec<u32>> = sizes.iter().map(|&(h, w)| random_image(h, w, (h * w) as u64)).collect();
        let photos: Vec<Photo> =
            sizes.iter().zip(&images).map(|(&(height, width), rgba)| Photo { height, width, rgba }).collect();
        let mut pass = Pass::new(gpu);
        let y = preprocess(&mut pass, &photos, 11, 7, &NORM).unwrap();
        pass.submit().unwrap();
        assert_eq!(y.shape(), [3, 11, 7, 3]);
        let want: Vec<f32> =
            sizes.iter().zip(&images).flat_map(|(&(h, w), px)| preprocess_cpu(px, h, w, 11, 7, &NORM)).collect();
        // As in preprocess_matches_twin.
        assert_close(&y.read_f32(gpu).await.unwrap(), &want, 2e-6, 2e-6, "batch of 3");
    });

    gpu_test!(preprocess_refuses_bad_input_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both};
        let ones = [1u32; 20];
        let run = |photos: &[(usize, usize, usize)], out: usize, norm: Normalize| {
            let photos: Vec<Photo> =
                photos.iter().map(|&(height, width, n)| Photo { height, width, rgba: &ones[..n] }).collect();
            on_both!(gpu, |be| be.preprocess(&photos, out, out, &norm))
        };
        let good = (4, 5, 20);
        assert_both_accept(run(&[good, (1, 1, 1)], 3, NORM), "good images");
        assert_both_accept(run(&[], 3, NORM), "no images");
        assert_same_refusal(run(&[good, (4, 4, 15)], 3, NORM), "fewer pixels than the size");
        assert_same_refusal(run(&[(0, 4, 0)], 3, NORM), "empty image");
        assert_same_refusal(run(&[good], 0, NORM), "empty output");
        assert_same_refusal(run(&[good], 3, Normalize { std: [1.0, 0.0, 1.0], ..NORM }), "zero deviation");
        assert_same_refusal(run(&[good], 3, Normalize { mean: [f32::NAN, 0.0, 0.0], ..NORM }), "NaN mean");
    });
}
