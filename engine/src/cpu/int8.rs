//! The q8 GEMM with int8 products, `gemm`'s path for q8 weights at `Level::Avx512Vnni` and, in
//! the browser, `Level::Simd128`.
//!
//! Each row's inputs are quantised per group of [`Q8_GROUP`] (the weights' own groups) to u8
//! with the group's minimum and step, `x ≈ min + step · q`, so a group adds
//! `wscale[j] · (step · Σ q·w + min · Σ w)` to output `j`: integer dot products form `Σ q·w`
//! (AVX-512 VNNI's `vpdpbusd`, u8 x s8, four products per 32-bit lane as the weights' panels
//! hold them; in wasm `i32x4.dot_i16x8_s` on widened bytes), the rest is f32 once per group.
//! The squeeze-excite gate multiplies the inputs as they are quantised.
//!
//! Accuracy, full-size random model against the PyTorch reference (`parity_full`, 20 texts),
//! worst text cosine: 0.9964 with f32 inputs, 0.9954 with this quantisation (symmetric int8 per
//! group, simulated: 0.9953; one step per row: 0.9941, below the 0.995 bar); images 0.9993.

use std::cell::RefCell;

use crate::cpu::gemm::{epilogue, q8_panel_len, Fused, PANEL};
use crate::cpu::Level;
use crate::parallel::{self, SharedOut};
use crate::quant::{q8_groups, Q8_GROUP};

/// Output channels per kernel call (two panels).
const NR: usize = 2 * PANEL;
/// 4-input lanes per q8 group.
const LANES: usize = Q8_GROUP / 4;
/// Rows per task (a multiple of every kernel's rows).
const MC: usize = 192;

/// Rows quantised per group of inputs: `q` rows of `k` rounded up to 4 (zeros past `k`), one
/// `step` and `min` per group.
#[derive(Default)]
struct Quantised {
    q: Vec<u8>,
    step: Vec<f32>,
    min: Vec<f32>,
}

thread_local! {
    /// The calling thread's quantised rows, reused across calls.
    static ROWS: RefCell<Quantised> = RefCell::default();
    /// Each thread's per-tile weight scales and scaled sums (see `prepare`).
    static PREP: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Quantises `x` (times `gate` where given) into `q` (at least `x.len()` values; the rest set to
/// 0), one `step` and `min` per group.
#[inline(always)]
fn quantise_row_body(x: &[f32], gate: Option<&[f32]>, q: &mut [u8], step: &mut [f32], min: &mut [f32]) {
    let mut v = [0f32; Q8_GROUP];
    for (g, xs) in x.chunks(Q8_GROUP).enumerate() {
        let v = &mut v[..xs.len()];
        v.copy_from_slice(xs);
        if let Some(gate) = gate {
            // As in the f32 path, gated values below f32's normal range become zeros.
            v.iter_mut().zip(&gate[g * Q8_GROUP..]).for_each(|(v, s)| {
                let p = *v * s;
                *v = if p.abs() < f32::MIN_POSITIVE { 0.0 } else { p };
            });
        }
        let lo = v.iter().fold(f32::INFINITY, |a, &b| a.min(b));
        let hi = v.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let s = (hi - lo) / 255.0;
        // A group whose values (nearly) agree is its minimum exactly (the error is below 1e-35).
        let inv = if s >= f32::MIN_POSITIVE { 1.0 / s } else { 0.0 };
        for (d, v) in q[g * Q8_GROUP..].iter_mut().zip(v.iter()) {
            *d = ((v - lo) * inv).round_ties_even() as u8;
        }
        step[g] = if inv > 0.0 { s } else { 0.0 };
        min[g] = lo;
    }
    q[x.len()..].fill(0);
}

/// Whether `gemm` at `level` multiplies q8 weights here.
pub(crate) fn used(level: Level) -> bool {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512Vnni => level.supported(),
        #[cfg(target_arch = "wasm32")]
        Level::Simd128 => level.supported(),
        _ => false,
    }
}

/// One row of inputs quantised (see `quantise_row_body`), at `level`: AVX-512 (with the same
/// results) where the CPU has it.
fn quantise_row(level: Level, x: &[f32], gate: Option<&[f32]>, q: &mut [u8], step: &mut [f32], min: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if level.f32_kernels() == Level::Avx512 && level.supported() {
        // SAFETY: the CPU has AVX-512.
        return unsafe { avx512::quantise_row(x, gate, q, step, min) };
    }
    let _ = level;
    quantise_row_body(x, gate, q, step, min)
}

/// `y[M, N] = x[M, K] · wᵀ` with `fused`'s gate, bias, activation and residual, for q8 panels
/// `q` (`n` channels) and their `scales`. The caller checked the shapes and that `used(level)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    level: Level,
    x: &[f32],
    k: usize,
    n: usize,
    wq: &[i8],
    scales: &[f32],
    fused: Fused,
    y: &mut [f32],
) {
    let m = x.len() / k;
    let (kp, groups) = (k.div_ceil(4) * 4, q8_groups(k));
    let mut fresh = Quantised::default();
    ROWS.with(|kept| {
        // Only if a pool task on this thread called a GEMM in turn would the rows be in use.
        let mut kept = kept.try_borrow_mut();
        let rows = match kept {
            Ok(ref mut r) => &mut **r,
            Err(_) => &mut fresh,
        };
        rows.q.resize(m * kp, 0);
        rows.step.resize(m * groups, 0.0);
        rows.min.resize(m * groups, 0.0);
        let (qp, sp, mp) =
            (SharedOut(rows.q.as_mut_ptr()), SharedOut(rows.step.as_mut_ptr()), SharedOut(rows.min.as_mut_ptr()));
        const QROWS: usize = 16;
        parallel::for_each(m.div_ceil(QROWS), |t| {
            let (qp, sp, mp) = (&qp, &sp, &mp);
            for r in t * QROWS..(t * QROWS + QROWS).min(m) {
                let gate = fused.gate.map(|g| &g.scales[r / g.rows * k..][..k]);
                // SAFETY: row r's parts of the three buffers, which this task alone writes.
                let (q, step, min) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(qp.0.add(r * kp), kp),
                        std::slice::from_raw_parts_mut(sp.0.add(r * groups), groups),
                        std::slice::from_raw_parts_mut(mp.0.add(r * groups), groups),
                    )
                };
                quantise_row(level, &x[r * k..][..k], gate, q, step, min);
            }
        });
        multiply(level, rows, m, k, n, wq, scales, fused, y);
    });
}

/// The GEMM proper over quantised rows: tasks of `MC` rows by a share of the tiles of `NR`
/// channels (more shares when there are few row blocks, so every thread has work).
#[allow(clippy::too_many_arguments)]
fn multiply(
    level: Level,
    rows: &Quantised,
    m: usize,
    k: usize,
    n: usize,
    wq: &[i8],
    scales: &[f32],
    fused: Fused,
    y: &mut [f32],
) {
    let (k4, groups, plen) = (k.div_ceil(4), q8_groups(k), q8_panel_len(k));
    let (panels, tiles, blocks) = (n.div_ceil(PANEL), n.div_ceil(NR), m.div_ceil(MC));
    let want = 4 * parallel::threads();
    let splits = if blocks >= want { 1 } else { want.div_ceil(blocks).min(tiles) };
    let per = tiles.div_ceil(splits);
    let splits = tiles.div_ceil(per);
    let out = SharedOut(y.as_mut_ptr());
    parallel::for_each(blocks * splits, |t| {
        let out = &out;
        let (m0, t0) = ((t / splits) * MC, (t % splits) * per);
        let m1 = (m0 + MC).min(m);
        PREP.with(|prep| {
            let mut prep = prep.borrow_mut();
            prep.resize(groups * 2 * NR, 0.0);
            for tj in t0..(t0 + per).min(tiles) {
                let (j0, p0) = (tj * NR, 2 * tj);
                let cols = NR.min(n - j0);
                // A missing second panel repeats the first: its columns are computed, not stored.
                let p1 = (p0 + 1).min(panels - 1);
                let (w0, w1) = (&wq[p0 * plen..][..plen], &wq[p1 * plen..][..plen]);
                let sc = |p: usize| &scales[p * groups * PANEL..][..groups * PANEL];
                // SAFETY: the CPU has the kernels' features (`used`); both panels hold k4 lanes
                // and `groups` scales; `prep` holds groups * 2 * NR values.
                unsafe { arch::prepare(k4, w0, w1, sc(p0), sc(p1), &mut prep) };
                for i0 in (m0..m1).step_by(arch::MR) {
                    // SAFETY: rows i0..i0 + MR.min(m1 - i0) exist in `rows` (kp bytes, `groups`
                    // steps and minimums each) and in `y` (n values); this task alone writes
                    // rows m0..m1 x its tiles' columns.
                    unsafe {
                        arch::kernel(
                            k4,
                            rows.q.as_ptr().add(i0 * 4 * k4),
                            4 * k4,
                            rows.step.as_ptr().add(i0 * groups),
                            rows.min.as_ptr().add(i0 * groups),
                            groups,
                            arch::MR.min(m1 - i0),
                            w0.as_ptr(),
                            w1.as_ptr(),
                            prep.as_ptr(),
                            out.0.add(i0 * n + j0),
                            n,
                            cols,
                        )
                    };
                }
                // SAFETY: as above; the kernels are done with these rows.
                unsafe { epilogue(level, fused, out, n, m0..m1, j0, cols) };
            }
        });
    });
}

#[cfg(target_arch = "x86_64")]
use avx512 as arch;

/// AVX-512 VNNI: 6 rows x 32 channels (12 i32 sums and 12 f32 outputs in registers).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{LANES, NR};
    use crate::cpu::gemm::{store_part, PANEL};
    use crate::quant::Q8_GROUP;

    pub(super) const MR: usize = 6;

    /// `quantise_row_body` 32 values at a time (the compiler's version of the scalar body was a fifth
    /// of a text batch); the last, shorter group goes to the body.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn quantise_row(
        x: &[f32],
        gate: Option<&[f32]>,
        q: &mut [u8],
        step: &mut [f32],
        min: &mut [f32],
    ) {
        let whole = x.len() / Q8_GROUP;
        let tiny = _mm512_set1_ps(f32::MIN_POSITIVE);
        for g in 0..whole {
            let at = g * Q8_GROUP;
            let mut v = [_mm512_loadu_ps(x.as_ptr().add(at)), _mm512_loadu_ps(x.as_ptr().add(at + 16))];
            if let Some(gate) = gate {
                for (h, v) in v.iter_mut().enumerate() {
                    let p = _mm512_mul_ps(*v, _mm512_loadu_ps(gate.as_ptr().add(at + 16 * h)));
                    let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(p), tiny);
                    *v = _mm512_maskz_mov_ps(keep, p);
                }
            }
            let lo = _mm512_reduce_min_ps(_mm512_min_ps(v[0], v[1]));
            let hi = _mm512_reduce_max_ps(_mm512_max_ps(v[0], v[1]));
            let s = (hi - lo) / 255.0;
            let inv = if s >= f32::MIN_POSITIVE { 1.0 / s } else { 0.0 };
            for (h, v) in v.iter().enumerate() {
                // Rounds to nearest even (the default rounding mode), as the body does.
                let scaled = _mm512_mul_ps(_mm512_sub_ps(*v, _mm512_set1_ps(lo)), _mm512_set1_ps(inv));
                let bytes = _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(scaled));
                _mm_storeu_si128(q.as_mut_ptr().add(at + 16 * h) as *mut _, bytes);
            }
            step[g] = if inv > 0.0 { s } else { 0.0 };
            min[g] = lo;
        }
        let at = whole * Q8_GROUP;
        super::quantise_row_body(&x[at..], gate.map(|g| &g[at..]), &mut q[at..], &mut step[whole..], &mut min[whole..]);
    }

    /// For each group `g`, into `prep[g * 2 NR..]`: the tile's weight scales (NR values), then the
    /// scales times the sums of the group's int8 weights (what the group's `min` multiplies).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn prepare(k4: usize, w0: &[i8], w1: &[i8], s0: &[f32], s1: &[f32], prep: &mut [f32]) {
        let ones = _mm512_set1_epi8(1);
        for (g, dst) in prep.chunks_exact_mut(2 * NR).enumerate() {
            for (h, (w, s)) in [(w0, s0), (w1, s1)].into_iter().enumerate() {
                let mut sum = _mm512_setzero_si512();
                for l in g * LANES..(g * LANES + LANES).min(k4) {
                    sum = _mm512_dpbusd_epi32(sum, ones, _mm512_loadu_si512(w.as_ptr().add(l * 64) as *const _));
                }
                let scale = _mm512_loadu_ps(s.as_ptr().add(g * PANEL));
                _mm512_storeu_ps(dst.as_mut_ptr().add(h * PANEL), scale);
                _mm512_storeu_ps(dst.as_mut_ptr().add(NR + h * PANEL), _mm512_mul_ps(_mm512_cvtepi32_ps(sum), scale));
            }
        }
    }

    /// `c[rows, cols] = ` the quantised rows `a` (`lda` bytes apart; `step`, `min` `lds` apart) times
    /// the two panels `w0`, `w1`, with `prep` from [`prepare`]; `rows <= MR`, `cols <= NR`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel(
        k4: usize,
        a: *const u8,
        lda: usize,
        step: *const f32,
        min: *const f32,
        lds: usize,
        rows: usize,
        w0: *const i8,
        w1: *const i8,
        prep: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        // Rows past `rows` repeat the last one (computed, not stored).
        let row = |i: usize| i.min(rows - 1);
        let mut out = [[_mm512_setzero_ps(); 2]; MR];
        for g in 0..k4.div_ceil(LANES) {
            let mut acc = [[_mm512_setzero_si512(); 2]; MR];
            for l in g * LANES..(g * LANES + LANES).min(k4) {
                let b0 = _mm512_loadu_si512(w0.add(l * 64) as *const _);
                let b1 = _mm512_loadu_si512(w1.add(l * 64) as *const _);
                for (i, acc) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_epi32((a.add(row(i) * lda + l * 4) as *const i32).read_unaligned());
                    acc[0] = _mm512_dpbusd_epi32(acc[0], av, b0);
                    acc[1] = _mm512_dpbusd_epi32(acc[1], av, b1);
                }
            }
            let p = prep.add(g * 2 * NR);
            let scale = [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(PANEL))];
            let sums = [_mm512_loadu_ps(p.add(NR)), _mm512_loadu_ps(p.add(NR + PANEL))];
            for (i, (out, acc)) in out.iter_mut().zip(&acc).enumerate() {
                let st = _mm512_set1_ps(*step.add(row(i) * lds + g));
                let mn = _mm512_set1_ps(*min.add(row(i) * lds + g));
                for h in 0..2 {
                    let dots = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[h]), st);
                    out[h] = _mm512_fmadd_ps(dots, scale[h], _mm512_fmadd_ps(mn, sums[h], out[h]));
                }
            }
        }
        if rows == MR && cols == NR {
            for (i, o) in out.iter().enumerate() {
                _mm512_storeu_ps(c.add(i * ldc), o[0]);
                _mm512_storeu_ps(c.add(i * ldc + PANEL), o[1]);
            }
        } else {
            let mut tmp = [0f32; MR * NR];
            for (i, o) in out.iter().enumerate() {
                _mm512_storeu_ps(tmp.as_mut_ptr().add(i * NR), o[0]);
                _mm512_storeu_ps(tmp.as_mut_ptr().add(i * NR + PANEL), o[1]);
            }
            store_part(&tmp, NR, c, ldc, rows, cols, false);
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use simd128 as arch;

/// wasm simd128: bytes widened to i16 and multiplied in pairs (`i32x4.dot_i16x8_s`), 2 rows by
/// one panel of 16 channels at a time (16 vectors of i32 sums).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128 {
    use std::arch::wasm32::*;

    use super::{LANES, NR};
    use crate::cpu::gemm::{store_part, PANEL};

    pub(super) const MR: usize = 2;

    /// 16 bytes of a panel's lane (channels 4v..4v + 4, four inputs each) as two i16x8: channels
    /// 4v and 4v + 1, then 4v + 2 and 4v + 3.
    #[inline(always)]
    unsafe fn widen(w: *const i8) -> [v128; 2] {
        let b = v128_load(w as *const v128);
        [i16x8_extend_low_i8x16(b), i16x8_extend_high_i8x16(b)]
    }

    /// Per-channel totals of a panel's sums: `sums[2i + h]` holds two partial sums of each of
    /// two channels (`dot_i16x8_s` adds products in pairs); four vectors of four channels.
    #[inline(always)]
    fn fold(sums: &[v128; 8]) -> [v128; 4] {
        std::array::from_fn(|i| {
            let (a, b) = (sums[2 * i], sums[2 * i + 1]);
            i32x4_add(i32x4_shuffle::<0, 2, 4, 6>(a, b), i32x4_shuffle::<1, 3, 5, 7>(a, b))
        })
    }

    /// As the AVX-512 `prepare`: per group, the tile's weight scales, then the scales times the
    /// group's weight sums.
    ///
    /// # Safety
    /// Both panels hold `k4` lanes and the scales `groups` groups; `prep` is `groups * 2 NR`.
    pub(super) unsafe fn prepare(k4: usize, w0: &[i8], w1: &[i8], s0: &[f32], s1: &[f32], prep: &mut [f32]) {
        let ones = i16x8_splat(1);
        for (g, dst) in prep.chunks_exact_mut(2 * NR).enumerate() {
            for (h, (w, s)) in [(w0, s0), (w1, s1)].into_iter().enumerate() {
                let mut acc = [i32x4_splat(0); 8];
                for l in g * LANES..(g * LANES + LANES).min(k4) {
                    for v in 0..4 {
                        let wv = widen(w.as_ptr().add(l * 64 + v * 16));
                        for (hh, wv) in wv.into_iter().enumerate() {
                            acc[2 * v + hh] = i32x4_add(acc[2 * v + hh], i32x4_dot_i16x8(wv, ones));
                        }
                    }
                }
                for (v, sum) in fold(&acc).into_iter().enumerate() {
                    let scale = v128_load(s.as_ptr().add(g * PANEL + 4 * v) as *const v128);
                    v128_store(dst.as_mut_ptr().add(h * PANEL + 4 * v) as *mut v128, scale);
                    let scaled = f32x4_mul(f32x4_convert_i32x4(sum), scale);
                    v128_store(dst.as_mut_ptr().add(NR + h * PANEL + 4 * v) as *mut v128, scaled);
                }
            }
        }
    }

    /// As the AVX-512 `kernel`, with `MR` rows.
    ///
    /// # Safety
    /// As the AVX-512 `kernel`.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel(
        k4: usize,
        a: *const u8,
        lda: usize,
        step: *const f32,
        min: *const f32,
        lds: usize,
        rows: usize,
        w0: *const i8,
        w1: *const i8,
        prep: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let row = |i: usize| i.min(rows - 1);
        let mut out = [[f32x4_splat(0.0); 8]; MR];
        // The second panel only where its channels are stored.
        let panels = if cols > PANEL { 2 } else { 1 };
        for (h, w) in [w0, w1].into_iter().take(panels).enumerate() {
            for g in 0..k4.div_ceil(LANES) {
                let mut acc = [[i32x4_splat(0); 8]; MR];
                for l in g * LANES..(g * LANES + LANES).min(k4) {
                    // Each row's four inputs, twice, as i16.
                    let av: [v128; MR] = std::array::from_fn(|i| {
                        u16x8_extend_low_u8x16(v128_load32_splat(a.add(row(i) * lda + l * 4) as *const u32))
                    });
                    for v in 0..4 {
                        let wv = widen(w.add(l * 64 + v * 16));
                        for (acc, av) in acc.iter_mut().zip(&av) {
                            for (hh, wv) in wv.iter().enumerate() {
                                acc[2 * v + hh] = i32x4_add(acc[2 * v + hh], i32x4_dot_i16x8(*av, *wv));
                            }
                        }
                    }
                }
                let p = prep.add(g * 2 * NR + h * PANEL);
                for (i, (out, acc)) in out.iter_mut().zip(&acc).enumerate() {
                    let st = f32x4_splat(*step.add(row(i) * lds + g));
                    let mn = f32x4_splat(*min.add(row(i) * lds + g));
                    for (v, dot) in fold(acc).into_iter().enumerate() {
                        let scale = v128_load(p.add(4 * v) as *const v128);
                        let sums = v128_load(p.add(NR + 4 * v) as *const v128);
                        let dots = f32x4_mul(f32x4_mul(f32x4_convert_i32x4(dot), st), scale);
                        out[h * 4 + v] = f32x4_add(out[h * 4 + v], f32x4_add(dots, f32x4_mul(mn, sums)));
                    }
                }
            }
        }
        let mut tmp = [0f32; MR * NR];
        for (i, out) in out.iter().enumerate() {
            for (v, o) in out.iter().enumerate() {
                v128_store(tmp.as_mut_ptr().add(i * NR + 4 * v) as *mut v128, *o);
            }
        }
        store_part(&tmp, NR, c, ldc, rows, cols, false);
    }
}

/// The inputs the int8 path multiplies: `x` quantised and restored.
#[cfg(test)]
pub(crate) fn seen_inputs(x: &[f32], k: usize) -> Vec<f32> {
    let groups = q8_groups(k);
    let (mut q, mut step, mut min) = (vec![0u8; k.div_ceil(4) * 4], vec![0f32; groups], vec![0f32; groups]);
    x.chunks(k)
        .flat_map(|row| {
            quantise_row(Level::Portable, row, None, &mut q, &mut step, &mut min);
            (0..k).map(|c| min[c / Q8_GROUP] + step[c / Q8_GROUP] * q[c] as f32).collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cpu_test, random};

    cpu_test!(quantised_groups_are_within_half_a_step_and_agree_across_levels, {
        let k = 3 * Q8_GROUP + 5;
        let mut x = random(k, 9, 3.0);
        x[Q8_GROUP..2 * Q8_GROUP].fill(0.25); // a constant group is its minimum, exactly
        x[2 * Q8_GROUP] = 1e-39; // a subnormal survives as a value, not as a NaN
        let groups = q8_groups(k);
        // Gated: some products subnormal (flushed to zero), the rest halved.
        let mut gate = vec![0.5f32; k];
        gate[3..9].fill(1e-39);
        let run = |level, gate: Option<&[f32]>| {
            let (mut q, mut step, mut min) = (vec![7u8; k + 3], vec![0f32; groups], vec![0f32; groups]);
            quantise_row(level, &x, gate, &mut q, &mut step, &mut min);
            (q, step, min)
        };
        for level in Level::available() {
            for gate in [None, Some(&gate[..])] {
                assert!(run(level, gate) == run(Level::Portable, gate), "{level:?} quantises differently");
            }
        }
        let gated = run(Level::Portable, Some(&gate));
        assert_eq!(gated.1[1], 0.0, "a gated constant group is still exact");
        for c in 3..9 {
            let back = gated.2[0] + gated.1[0] * gated.0[c] as f32;
            assert!(back.abs() <= gated.1[0] * 0.5001, "flushed input {c} came back as {back}");
        }
        let (q, step, min) = run(Level::Portable, None);
        assert_eq!(q[k..], [0, 0, 0], "padding past k is zero");
        assert_eq!((step[1], min[1]), (0.0, 0.25));
        for (c, v) in x.iter().enumerate() {
            let g = c / Q8_GROUP;
            let back = min[g] + step[g] * q[c] as f32;
            assert!((back - v).abs() <= step[g] * 0.5001 + 1e-7, "input {c}: {v} came back as {back}");
            let span = x[g * Q8_GROUP..k.min((g + 1) * Q8_GROUP)].iter().fold(0f32, |a, b| a.max((b - min[g]).abs()));
            assert!((step[g] * 255.0 - span).abs() <= span * 1e-6, "group {g}: step {} for span {span}", step[g]);
        }
    });
}
