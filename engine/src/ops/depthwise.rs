//! Depthwise convolution (groups = C), channels-last, TensorFlow "SAME" padding, with a fused
//! (BatchNorm-folded) bias and activation. Kernel: `shaders/depthwise.wgsl`.

#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
use crate::cpu::lanes::{self, Lanes};
use crate::cpu::vector::{bias_act_body, multiversion, MulAdd};
use crate::cpu::Level;
use crate::error::ensure_shape;
use crate::ops::conv2d::ConvGeometry;
use crate::ops::{Activation, Meta};
use crate::parallel::SharedOut;
use crate::pipelines::Kernel;
use crate::{Pass, Result, Tensor};

const KERNEL: Kernel = crate::pipelines::kernel!("depthwise", "main");
const POOLED: Kernel = crate::pipelines::kernel!("depthwise", "pooled");
/// Output pixels per partial sum of [`depthwise_pooled`], runs within one output row
/// (`PIXEL_CHUNK` in the WGSL).
const PIXEL_CHUNK: usize = 64;

/// The shape check of [`depthwise`] and its CPU twin.
pub(crate) fn check(x: Meta, w: Meta, bias: Option<Meta>, stride: usize) -> Result<ConvGeometry> {
    ConvGeometry::check("depthwise", x, w, bias, stride, true)
}

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
    let g = check(x.into(), w.into(), bias.map(Meta::from), stride)?;
    let y = Tensor::uninit(pass.gpu(), &g.out_shape())?;
    let defines: &[&str] = if bias.is_some() { &["BIAS"] } else { &[] };
    let slots = [Some(x), Some(w), Some(&y), bias];
    pass.dispatch_slots(&KERNEL, defines, &g.params(act), &slots, g.workgroups());
    Ok(y)
}

/// [`depthwise`], plus each channel's sums over chunks of up to [`PIXEL_CHUNK`] output pixels of
/// a row, `[B, chunks, C]`: squeeze-excite's pooling without a second pass over the output.
pub fn depthwise_pooled(
    pass: &mut Pass,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    act: Activation,
) -> Result<(Tensor, Tensor)> {
    let g = check(x.into(), w.into(), bias.map(Meta::from), stride)?;
    let chunks = (g.out_h * g.out_w.div_ceil(PIXEL_CHUNK)).max(1);
    let max = crate::pass::MAX_WORKGROUPS_PER_DIM as usize;
    ensure_shape!(
        g.cin.div_ceil(64) <= max && chunks <= max && g.batch <= max,
        "depthwise: {:?} exceeds one pooled dispatch",
        g.out_shape()
    );
    let y = Tensor::uninit(pass.gpu(), &g.out_shape())?;
    let partial = Tensor::uninit(pass.gpu(), &[g.batch, chunks, g.cin])?;
    let defines: &[&str] = if bias.is_some() { &["BIAS", "POOLED"] } else { &["POOLED"] };
    let groups = [g.cin.div_ceil(64) as u32, chunks as u32, g.batch as u32];
    if g.batch > 0 && g.cin > 0 {
        pass.dispatch_slots(
            &POOLED,
            defines,
            &g.params(act),
            &[Some(x), Some(w), Some(&y), bias, Some(&partial)],
            groups,
        );
    }
    Ok((y, partial))
}

/// CPU twin of [`depthwise`]: `x`, `w` and `bias` row-major as [`check`] passed them, with its
/// geometry `g`. Returns `[B, Ho, Wo, C]`. Output rows run in parallel; within a pixel the taps
/// are applied to all channels at once (weights rearranged tap-major), so the work vectorises
/// over channels. (The towers use [`depthwise_pooled_cpu`]; this is the tests' reference.)
#[cfg(test)]
pub(crate) fn depthwise_cpu(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeometry, act: Activation) -> Vec<f32> {
    depthwise_rows(x, w, bias, g, act, None)
}

/// CPU twin of [`depthwise_pooled`]: the output and, instead of partial sums, the mean of each
/// image's channels `[B, C]`, summed from each output row while it is still in cache (no second
/// pass over the output for squeeze-excite's pool).
pub(crate) fn depthwise_pooled_cpu(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    act: Activation,
) -> (Vec<f32>, Vec<f32>) {
    let (c, rows) = (g.cin, g.batch * g.out_h);
    let mut row_sums = vec![0f32; rows * c];
    let y = depthwise_rows(x, w, bias, g, act, Some(SharedOut(row_sums.as_mut_ptr())));
    let pixels = (g.out_h * g.out_w) as f64;
    let mut means = vec![0f32; g.batch * c];
    for (mb, sums) in means.chunks_exact_mut(c.max(1)).zip(row_sums.chunks_exact((g.out_h * c).max(1))) {
        for (ch, m) in mb.iter_mut().enumerate() {
            let s: f64 = sums.iter().skip(ch).step_by(c).map(|v| *v as f64).sum();
            *m = if pixels == 0.0 { 0.0 } else { (s / pixels) as f32 };
        }
    }
    (y, means)
}

/// The depthwise conv over rows in parallel; with `sums`, each output row's channel sums (f32,
/// `C` per row) written there.
fn depthwise_rows(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    act: Activation,
    sums: Option<SharedOut>,
) -> Vec<f32> {
    let (c, taps) = (g.cin, g.kh * g.kw);
    let mut wt = vec![0f32; taps * c];
    for (ch, wc) in w.chunks_exact(taps).enumerate() {
        for (t, v) in wc.iter().enumerate() {
            wt[t * c + ch] = *v;
        }
    }
    // What the 4-pixel kernel reads for taps outside the image (SAME padding is zeros).
    let zeros = vec![0f32; c];
    let mut y = crate::cpu::buffers::for_output(g.out_shape().iter().product());
    let row_len = g.out_w * c;
    let level = Level::current().f32_kernels();
    // The level of the 4-pixel kernel, where the CPU has one and the kernel's taps fit its list.
    let quad = (matches!(level, Level::Avx512 | Level::Avx2 | Level::Simd128 | Level::Neon)
        && level.supported()
        && taps <= QUAD_TAPS)
        .then_some(level);
    let work = y.len() * taps;
    crate::parallel::for_row_chunks(&mut y, row_len, 1, work, |first, ys| {
        for (r, yrow) in ys.chunks_exact_mut(row_len).enumerate() {
            // SAFETY: `sums` holds C values per output row and this call alone writes row
            // `first + r`'s.
            let s = sums.map(|s| unsafe { std::slice::from_raw_parts_mut(s.0.add((first + r) * c), c) });
            depthwise_row(level, x, &wt, &zeros, bias, g, first + r, act, quad, yrow, s);
        }
    });
    y
}

/// Output row `row` (over batch and height) of the depthwise conv, then its activation and, with
/// `sums`, its channel sums (the row still in cache). With `quad` (AVX-512 or AVX2, which the CPU
/// has, wasm `simd128` or NEON), every pixel goes through that level's kernel, 4 pixels at a time
/// ([`quad_row`]); otherwise one pixel at a time, channels in blocks held in registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn depthwise_row_body<M: MulAdd>(
    x: &[f32],
    wt: &[f32],
    zeros: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    row: usize,
    act: Activation,
    quad: Option<Level>,
    yrow: &mut [f32],
    sums: Option<&mut [f32]>,
) {
    let c = g.cin;
    let (b, oy) = (row / g.out_h, row % g.out_h);
    let (ky0, ky1) = inside(oy, g.stride, g.pad_top, g.in_h, g.kh);
    match quad {
        Some(level) => quad_row(level, x, wt, zeros, bias, g, b * g.in_h, oy, ky0..ky1, yrow),
        None => {
            for (ox, out) in yrow.chunks_exact_mut(c).enumerate() {
                // x and w offsets of each tap of pixel `ox` inside the image.
                let (kx0, kx1) = inside(ox, g.stride, g.pad_left, g.in_w, g.kw);
                let taps = (ky0..ky1).flat_map(move |ky| {
                    let iy = oy * g.stride + ky - g.pad_top;
                    (kx0..kx1).map(move |kx| {
                        let ix = ox * g.stride + kx - g.pad_left;
                        (((b * g.in_h + iy) * g.in_w + ix) * c, (ky * g.kw + kx) * c)
                    })
                });
                let c1 = channel_blocks::<64>(x, wt, bias, taps.clone(), out, 0);
                let c1 = channel_blocks::<16>(x, wt, bias, taps.clone(), out, c1);
                let rest = &mut out[c1..];
                match bias {
                    Some(bias) => rest.copy_from_slice(&bias[c1..]),
                    None => rest.fill(0.0),
                }
                for (xo, wo) in taps {
                    let (xs, ws) = (&x[xo + c1..xo + c], &wt[wo + c1..wo + c]);
                    rest.iter_mut().zip(xs).zip(ws).for_each(|((a, x), w)| *a += x * w);
                }
            }
        }
    }
    bias_act_body::<M>(yrow, None, act);
    if let Some(s) = sums {
        for px in yrow.chunks_exact(c) {
            s.iter_mut().zip(px).for_each(|(s, v)| *s += v);
        }
    }
}

multiversion! {
    fn depthwise_row(
        x: &[f32],
        wt: &[f32],
        zeros: &[f32],
        bias: Option<&[f32]>,
        g: &ConvGeometry,
        row: usize,
        act: Activation,
        quad: Option<Level>,
        yrow: &mut [f32],
        sums: Option<&mut [f32]>,
    ) = depthwise_row_body::<crate::cpu::vector::Fma>, depthwise_row_body::<crate::cpu::vector::Plain>
}

/// Taps the 4-pixel kernel takes (5x5 at most in EfficientNet; larger kernels go one pixel at a
/// time).
const QUAD_TAPS: usize = 49;

/// One tap of up to 4 pixels: its weights, and each pixel's input (`zeros` where it falls in the
/// padding).
#[derive(Clone, Copy)]
struct QuadTap {
    w: *const f32,
    x: [*const f32; 4],
}

/// Output row `oy` of image row offset `img` (batch x `in_h`), input rows `ky` of the kernel
/// inside the image, through `level`'s kernel ([`quad_avx512`], [`quad_avx2`], simd128's, NEON's):
/// groups of 4 neighbouring pixels, the last group the 1-3 left over. Writes bias + sum.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn quad_row(
    level: Level,
    x: &[f32],
    wt: &[f32],
    zeros: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    img: usize,
    oy: usize,
    ky: std::ops::Range<usize>,
    yrow: &mut [f32],
) {
    let c = g.cin;
    let mut taps = [QuadTap { w: std::ptr::null(), x: [std::ptr::null(); 4] }; QUAD_TAPS];
    let n = ky.len() * g.kw;
    for first in (0..g.out_w).step_by(4) {
        let pixels = (g.out_w - first).min(4);
        for (t, (ky, kx)) in taps.iter_mut().zip(ky.clone().flat_map(|ky| (0..g.kw).map(move |kx| (ky, kx)))) {
            let row = (img + oy * g.stride + ky - g.pad_top) * g.in_w;
            t.w = wt[(ky * g.kw + kx) * c..][..c].as_ptr();
            for (p, xp) in t.x.iter_mut().enumerate().take(pixels) {
                let ix = ((first + p) * g.stride + kx).wrapping_sub(g.pad_left);
                *xp = if ix < g.in_w { x[(row + ix) * c..][..c].as_ptr() } else { zeros.as_ptr() };
            }
        }
        let out = yrow[first * c..].as_mut_ptr();
        // SAFETY: `quad` is only set to a level the CPU has; every tap's weights and inputs
        // (the first `pixels` of them) hold C values (slices taken above), `out` 4 x C (or
        // `pixels` x C) values.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match level {
                Level::Avx512 => quad_avx512(&taps[..n], bias, c, out, pixels),
                _ => quad_avx2(&taps[..n], bias, c, out, pixels),
            }
        }
        // SAFETY: as above (simd128 is compiled in: the only level with a kernel here).
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        unsafe {
            let _ = level;
            quad_pixels::<lanes::Simd128Lanes>(&taps[..n], bias, c, out, pixels)
        }
        // SAFETY: as above (NEON is in aarch64's baseline: the only level with a kernel here).
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        unsafe {
            let _ = level;
            quad_pixels::<lanes::NeonLanes>(&taps[..n], bias, c, out, pixels)
        }
        #[cfg(not(any(
            target_arch = "x86_64",
            all(target_arch = "wasm32", target_feature = "simd128"),
            all(target_arch = "aarch64", target_feature = "neon")
        )))]
        {
            let _ = (level, out, bias, n);
            unreachable!("no 4-pixel kernel on this target");
        }
    }
}

/// [`quad_pixels`] compiled for an x86 level as `$kernel`.
#[cfg(target_arch = "x86_64")]
macro_rules! quad_kernel {
    ($kernel:ident, $lanes:ident, $features:literal) => {
        /// [`quad_pixels`] at this level.
        ///
        /// # Safety
        /// As [`quad_pixels`], with the level's features.
        #[target_feature(enable = $features)]
        unsafe fn $kernel(taps: &[QuadTap], bias: Option<&[f32]>, c: usize, out: *mut f32, pixels: usize) {
            quad_pixels::<lanes::$lanes>(taps, bias, c, out, pixels)
        }
    };
}
// Blocks of 32 channels at AVX-512, of 16 at AVX2 (8 accumulators of its 16 registers).
#[cfg(target_arch = "x86_64")]
quad_kernel!(quad_avx512, Avx512Lanes, "avx512f,fma");
#[cfg(target_arch = "x86_64")]
quad_kernel!(quad_avx2, Avx2Lanes, "avx2,fma");

/// [`quad_body`] for `pixels` (1..=4) neighbouring pixels.
///
/// # Safety
/// As [`quad_body`].
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[inline(always)]
unsafe fn quad_pixels<L: Lanes>(taps: &[QuadTap], bias: Option<&[f32]>, c: usize, out: *mut f32, pixels: usize) {
    match pixels {
        4 => quad_body::<L, 4>(taps, bias, c, out),
        3 => quad_body::<L, 3>(taps, bias, c, out),
        2 => quad_body::<L, 2>(taps, bias, c, out),
        _ => quad_body::<L, 1>(taps, bias, c, out),
    }
}

/// Bias + sum over `taps` of `P` neighbouring pixels (`out`: P x C), all C channels: in blocks of
/// 2 vectors (2P accumulators in registers, FMA, each weight load serving P pixels), then a
/// vector at a time, the last one partial.
///
/// # Safety
/// `L`'s level present; each tap's `w` and its first `P` inputs `x` hold C values, `out` P x C,
/// `bias` (if any) C.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[inline(always)]
unsafe fn quad_body<L: Lanes, const P: usize>(taps: &[QuadTap], bias: Option<&[f32]>, c: usize, out: *mut f32) {
    let n = L::N;
    let mut c0 = 0;
    while c0 + 2 * n <= c {
        let init = |h: usize| match bias {
            Some(b) => L::load(b.as_ptr().add(c0 + n * h)),
            None => L::zero(),
        };
        let mut acc = [[init(0), init(1)]; P];
        for t in taps {
            let w = [L::load(t.w.add(c0)), L::load(t.w.add(c0 + n))];
            for (a, xp) in acc.iter_mut().zip(t.x) {
                a[0] = L::fma(L::load(xp.add(c0)), w[0], a[0]);
                a[1] = L::fma(L::load(xp.add(c0 + n)), w[1], a[1]);
            }
        }
        for (p, a) in acc.iter().enumerate() {
            L::store(out.add(p * c + c0), a[0]);
            L::store(out.add(p * c + c0 + n), a[1]);
        }
        c0 += 2 * n;
    }
    while c0 < c {
        let m = (c - c0).min(n);
        let init = match bias {
            Some(b) => L::load_part(b.as_ptr().add(c0), m),
            None => L::zero(),
        };
        let mut acc = [init; P];
        for t in taps {
            let w = L::load_part(t.w.add(c0), m);
            for (a, xp) in acc.iter_mut().zip(t.x) {
                *a = L::fma(L::load_part(xp.add(c0), m), w, *a);
            }
        }
        for (p, a) in acc.iter().enumerate() {
            L::store_part(out.add(p * c + c0), *a, m);
        }
        c0 += m;
    }
}

/// The taps `k0..k1` (of `k`) whose input `o * stride + k - pad` lies inside `0..size`.
#[inline(always)]
fn inside(o: usize, stride: usize, pad: usize, size: usize, k: usize) -> (usize, usize) {
    let first = o * stride;
    (pad.saturating_sub(first).min(k), (size + pad).saturating_sub(first).min(k))
}

/// Bias + sum of channels `c0..` of one output pixel in whole blocks of `W`, accumulated in
/// registers; returns the first channel not done.
#[inline(always)]
fn channel_blocks<const W: usize>(
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    taps: impl Iterator<Item = (usize, usize)> + Clone,
    out: &mut [f32],
    mut c0: usize,
) -> usize {
    while c0 + W <= out.len() {
        let mut acc = [0f32; W];
        if let Some(bias) = bias {
            acc.copy_from_slice(&bias[c0..c0 + W]);
        }
        for (xo, wo) in taps.clone() {
            let xs: &[f32; W] = x[xo + c0..][..W].try_into().expect("W values");
            let ws: &[f32; W] = wt[wo + c0..][..W].try_into().expect("W values");
            for j in 0..W {
                acc[j] += xs[j] * ws[j];
            }
        }
        out[c0..c0 + W].copy_from_slice(&acc);
        c0 += W;
    }
    c0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv2d::same_padding;
    use crate::testing::{assert_close, cpu_test, gpu_test, random};
    use crate::{DType, Gpu};

    /// The twin on plain shapes: checks them, then runs [`depthwise_cpu`].
    fn twin(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        bias: Option<&[f32]>,
        stride: usize,
        act: Activation,
    ) -> Vec<f32> {
        let f32s = |shape| Meta { shape, dtype: DType::F32 };
        let blen = bias.map(|b| [b.len()]);
        let g = super::check(f32s(&xs), f32s(&ws), blen.as_ref().map(|b| f32s(b)), stride).unwrap();
        depthwise_cpu(x, w, bias, &g, act)
    }

    async fn check(gpu: &Gpu, x_shape: [usize; 4], kh: usize, kw: usize, stride: usize, bias: bool, act: Activation) {
        let c = x_shape[3];
        let w_shape = [c, 1, kh, kw];
        let seed = x_shape.iter().fold((kh * 7 + kw * 3 + stride) as u64, |s, &d| s * 31 + d as u64);
        let x = random(x_shape.iter().product(), seed, 1.0);
        let w = random(c * kh * kw, seed + 1, 1.0 / ((kh * kw) as f32).sqrt());
        let b = random(c, seed + 2, 0.5);
        let bias = bias.then_some(&b[..]);
        let want = twin(&x, x_shape, &w, w_shape, bias, stride, act);

        let xt = Tensor::from_f32(gpu, &x_shape, &x).unwrap();
        let wt = Tensor::from_f32(gpu, &w_shape, &w).unwrap();
        let bt = Tensor::from_f32(gpu, &[c], &b).unwrap();
        let (oh, _) = same_padding(x_shape[1], kh, stride);
        let (ow, _) = same_padding(x_shape[2], kw, stride);
        let pixels = oh * ow;
        // f32 sums of KH*KW terms (|x| <= 1, |w| <= 1/k) in a different order and with fma:
        // error grows like sqrt(KH*KW) * eps. rtol covers exp in SiLU differing by ulps.
        let atol = 2e-6 * ((kh * kw) as f32).sqrt();
        let what = format!("depthwise x{x_shape:?} k{kh}x{kw} s{stride} bias={} {act:?}", bias.is_some());
        let mut pass = Pass::new(gpu);
        let y = depthwise(&mut pass, &xt, &wt, bias.map(|_| &bt), stride, act).unwrap();
        let (y2, partial) = depthwise_pooled(&mut pass, &xt, &wt, bias.map(|_| &bt), stride, act).unwrap();
        pass.submit().unwrap();
        assert_eq!(y.shape(), [x_shape[0], oh, ow, c]);
        let got = y.read_f32(gpu).await.unwrap();
        assert_close(&got, &want, atol, 1e-5, &what);
        // The pooled variant: the same outputs, bit for bit, and chunk sums of them.
        assert!(y2.read_f32(gpu).await.unwrap() == got, "pooled outputs differ: {what}");
        let per_row = ow.div_ceil(PIXEL_CHUNK);
        let chunks = oh * per_row;
        assert_eq!(partial.shape(), [x_shape[0], chunks, c]);
        let mut sums = vec![0f32; x_shape[0] * chunks * c];
        for (i, v) in want.iter().enumerate() {
            let (ch, p, b) = (i % c, (i / c) % pixels, i / (c * pixels));
            let chunk = p / ow * per_row + p % ow / PIXEL_CHUNK;
            sums[(b * chunks + chunk) * c + ch] += v;
        }
        let atol = atol * PIXEL_CHUNK as f32;
        assert_close(&partial.read_f32(gpu).await.unwrap(), &sums, atol, 1e-5, &format!("chunk sums of {what}"));
        // The CPU's pooled twin: the same outputs as its plain twin, and each image's means.
        let f32s = |shape| Meta { shape, dtype: DType::F32 };
        let c_shape = [c];
        let g = super::check(f32s(&x_shape), f32s(&w_shape), bias.map(|_| f32s(&c_shape)), stride).unwrap();
        let (cpu_y, means) = depthwise_pooled_cpu(&x, &w, bias, &g, act);
        assert!(cpu_y == want, "CPU pooled outputs differ: {what}");
        let mut want_means = vec![0f64; x_shape[0] * c];
        for (i, v) in want.iter().enumerate() {
            want_means[i / (c * pixels) * c + i % c] += *v as f64 / pixels as f64;
        }
        let want_means: Vec<f32> = want_means.iter().map(|v| *v as f32).collect();
        assert_close(&means, &want_means, 1e-5, 1e-5, &format!("CPU means of {what}"));
    }

    /// Direct sums over the taps inside the image, in f64: what [`depthwise_cpu`] must give at
    /// every SIMD level, including those (NEON) whose machines have no GPU to compare with.
    fn direct(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        k: usize,
        bias: &[f32],
        stride: usize,
        act: Activation,
    ) -> Vec<f32> {
        let [b, h, wd, c] = xs;
        let ((oh, pt), (ow, pl)) = (same_padding(h, k, stride), same_padding(wd, k, stride));
        let mut y = Vec::with_capacity(b * oh * ow * c);
        for (n, oy, ox, ch) in (0..b * oh * ow * c).map(|i| (i / (oh * ow * c), i / (ow * c) % oh, i / c % ow, i % c)) {
            let mut sum = bias[ch] as f64;
            for (ky, kx) in (0..k * k).map(|t| (t / k, t % k)) {
                let (iy, ix) = ((oy * stride + ky) as isize - pt as isize, (ox * stride + kx) as isize - pl as isize);
                if (0..h as isize).contains(&iy) && (0..wd as isize).contains(&ix) {
                    let xi = ((n * h + iy as usize) * wd + ix as usize) * c + ch;
                    sum += x[xi] as f64 * w[ch * k * k + ky * k + kx] as f64;
                }
            }
            y.push(act.apply(sum as f32));
        }
        y
    }

    cpu_test!(depthwise_cpu_matches_direct_sums, {
        // Channels below, at and past each level's blocks (4, 8, 16, 32 lanes x 2) and with a
        // partial last vector; rows of 1-3 pixels past a multiple of 4; padding on every side.
        for (xs, k, stride) in [
            ([1, 9, 7, 37], 3, 1),
            ([2, 6, 5, 24], 5, 1),
            ([1, 11, 13, 48], 3, 2),
            ([1, 4, 3, 70], 5, 2),
            ([1, 2, 1, 5], 3, 1),
            ([1, 8, 10, 1], 5, 1),
        ] {
            let c = xs[3];
            let x = random(xs.iter().product(), 11 + c as u64, 1.0);
            let w = random(c * k * k, 12, 1.0 / k as f32);
            let b = random(c, 13, 0.5);
            for act in [Activation::None, Activation::Silu] {
                let got = twin(&x, xs, &w, [c, 1, k, k], Some(&b), stride, act);
                let want = direct(&x, xs, &w, k, &b, stride, act);
                let what = format!("{:?} depthwise x{xs:?} k{k} s{stride} {act:?}", Level::current());
                assert_close(&got, &want, 2e-6 * k as f32, 1e-5, &what);
            }
        }
    });

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
        // Stage 1 (96 channels at 228x228, 3x3): four 64-pixel chunks per row, the last short.
        check(gpu, [1, 228, 228, 96], 3, 3, 1, true, Activation::Silu).await;
        // One-pixel rows (a strip each, three of its outputs unused) of 2,050 channels: 4.2M
        // threads, more than 65,535 workgroups, so the grid folds into y.
        check(gpu, [1, 2048, 1, 2050], 3, 3, 1, true, Activation::None).await;
        // A stride-2 5x5 stage entry on an odd size (57 -> 29, padding 2 before, 2 after).
        check(gpu, [1, 57, 57, 40], 5, 5, 2, true, Activation::Silu).await;
    });

    gpu_test!(depthwise_pads_bottom_right_at_stride_2, |gpu| {
        // Channel 0 is 1..16 in a 4x4 image, channel 1 its negation; 3x3 box filter, stride 2:
        // SAME pads 0 before and 1 after, so the windows are rows/cols {0,1,2} and {2,3}.
        let x: Vec<f32> = (1..=16).flat_map(|v| [v as f32, -v as f32]).collect();
        let want = [54.0, -54.0, 45.0, -45.0, 72.0, -72.0, 54.0, -54.0];
        let cpu = twin(&x, [1, 4, 4, 2], &[1.0; 18], [2, 1, 3, 3], None, 2, Activation::None);
        assert_eq!(cpu, want);
        let xt = Tensor::from_f32(gpu, &[1, 4, 4, 2], &x).unwrap();
        let wt = Tensor::from_f32(gpu, &[2, 1, 3, 3], &[1.0; 18]).unwrap();
        let mut pass = Pass::new(gpu);
        let y = depthwise(&mut pass, &xt, &wt, None, 2, Activation::None).unwrap();
        pass.submit().unwrap();
        // Small integers: exact in f32.
        assert_eq!(y.read_f32(gpu).await.unwrap(), want);
    });

    gpu_test!(depthwise_refuses_bad_shapes_alike_on_both_backends, |gpu| {
        use crate::testing::{assert_both_accept, assert_same_refusal, on_both, weight, zeros};
        let run = |x: &[usize], w: &[usize], b: Option<&[usize]>, stride: usize, dtype: DType| {
            on_both!(gpu, |be| {
                let xt = zeros(be, x);
                let wt = weight(be, w, dtype);
                let bt = b.map(|shape| weight(be, shape, DType::F32));
                // Squeeze-excite weights that fit x's channels: the depthwise part is refused.
                let c = x.last().copied().unwrap_or(0);
                let (w1, b1) = (weight(be, &[2, c], DType::F32), weight(be, &[2], DType::F32));
                let (w2, b2) = (weight(be, &[c, 2], DType::F32), weight(be, &[c], DType::F32));
                let se = crate::ops::squeeze_excite::SeWeights { w1: &w1, b1: &b1, w2: &w2, b2: &b2 };
                be.depthwise_se(&xt, &wt, bt.as_ref(), stride, Activation::None, se)
            })
        };
        let (x, w) = (&[1, 5, 5, 3][..], &[3, 1, 3, 3][..]);
        assert_both_accept(run(x, w, Some(&[3]), 2, DType::F32), "good shapes");
        assert_same_refusal(run(x, &[4, 1, 3, 3], None, 1, DType::F32), "C mismatch");
        assert_same_refusal(run(x, &[3, 3, 3, 3], None, 1, DType::F32), "not one input channel per group");
        assert_same_refusal(run(x, &[3, 9], None, 1, DType::F32), "2-d weight");
        assert_same_refusal(run(&[5, 5, 3], w, None, 1, DType::F32), "3-d x");
        assert_same_refusal(run(x, w, Some(&[4]), 1, DType::F32), "bias length");
        assert_same_refusal(run(x, w, None, 0, DType::F32), "stride 0");
        assert_same_refusal(run(&[1, 0, 5, 3], w, None, 1, DType::F32), "empty x");
        assert_same_refusal(run(x, w, None, 1, DType::Q8), "q8 weight");
    });
}
