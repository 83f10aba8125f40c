//! The q8 GEMM with int8 products, `gemm`'s path for q8 weights at `Level::Avx512Vnni`,
//! `Level::Avx2Vnni`, `Level::Neon` and, in the browser, `Level::Simd128`.
//!
//! Each row's inputs are quantised per group of [`Q8_GROUP`] (the weights' own groups) to u8
//! with the group's minimum and step, `x ≈ min + step · q`, so a group adds
//! `wscale[j] · (step · Σ q·w + min · Σ w)` to output `j`: integer dot products form `Σ q·w`
//! (VNNI's `vpdpbusd`, u8 x s8, four products per 32-bit lane as the weights' panels hold them,
//! on 512 bits (`avx512`) or 256 (AVX-VNNI, `avx2`); on 128-bit vectors, products of bytes
//! widened to i16 added in pairs, `pairs` over wasm's `i32x4.dot_i16x8_s` (`simd128`) or NEON's
//! `smul` + `sadalp` (`neon`)), the rest is f32 once per group.
//! The squeeze-excite gate multiplies the inputs as they are quantised.
//!
//! Accuracy, full-size random model against the PyTorch reference (`parity_full`, 20 texts),
//! worst text cosine: 0.9964 with f32 inputs, 0.9954 with this quantisation (symmetric int8 per
//! group, simulated: 0.9953; one step per row: 0.9941, below the 0.995 bar); images 0.9993.

use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
mod neon;
#[cfg(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
))]
mod pairs;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;

use crate::cpu::gemm::{epilogue, q8_panel_len, share, tile_splits, Fused, PANEL};
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

/// A group's step for values from `lo` to `hi`, and what multiplies `x - lo` to give its byte. A
/// group whose values (nearly) agree is its minimum exactly (step 0; the error is below 1e-35).
#[inline(always)]
fn group_step(lo: f32, hi: f32) -> (f32, f32) {
    let s = (hi - lo) / 255.0;
    if s >= f32::MIN_POSITIVE {
        (s, 1.0 / s)
    } else {
        (0.0, 0.0)
    }
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
        let (s, inv) = group_step(lo, hi);
        for (d, v) in q[g * Q8_GROUP..].iter_mut().zip(v.iter()) {
            *d = ((v - lo) * inv).round_ties_even() as u8;
        }
        (step[g], min[g]) = (s, lo);
    }
    q[x.len()..].fill(0);
}

/// Whether `gemm` at `level` multiplies q8 weights here.
pub(crate) fn used(level: Level) -> bool {
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512Vnni | Level::Avx2Vnni => level.supported(),
        #[cfg(target_arch = "wasm32")]
        Level::Simd128 => level.supported(),
        #[cfg(target_arch = "aarch64")]
        Level::Neon => level.supported(),
        _ => false,
    }
}

/// One row of inputs quantised (see `quantise_row_body`), at `level`: with AVX-512 or AVX2
/// (the same results) where the CPU has it (the compiler's version of the body was a fifth of a
/// text batch).
fn quantise_row(level: Level, x: &[f32], gate: Option<&[f32]>, q: &mut [u8], step: &mut [f32], min: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if level.supported() {
        match level.f32_kernels() {
            // SAFETY: the CPU has the level's features.
            Level::Avx512 => return unsafe { avx512::quantise_row(x, gate, q, step, min) },
            Level::Avx2 => return unsafe { avx2::quantise_row(x, gate, q, step, min) },
            _ => {}
        }
    }
    let _ = level;
    quantise_row_body(x, gate, q, step, min)
}

/// One kernel call's operands: the quantised rows `a` (`lda` bytes apart; `step`, `min` `lds`
/// apart), `rows` of them; the tile's two panels (channels 16..32 from `w1`), each `k4` lanes of
/// 4 inputs; `prep` from `Kernels::prepare`; the output `c` (`rows` rows of `cols`, `ldc`
/// apart).
#[derive(Clone, Copy)]
struct Call {
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
}

/// One architecture's int8 kernels.
trait Kernels {
    /// Rows per kernel call (`MC` is a multiple).
    const MR: usize;
    /// For each group `g`, into `prep[g * 2 NR..]`: the weight scales of the tile's NR channels,
    /// then those scales times the sums of the group's int8 weights (what the group's `min`
    /// multiplies).
    ///
    /// # Safety
    /// The CPU has the level's features; both panels hold `k4` lanes and their scales
    /// `prep.len() / (2 NR)` groups.
    unsafe fn prepare(k4: usize, w0: &[i8], w1: &[i8], s0: &[f32], s1: &[f32], prep: &mut [f32]);
    /// `c = a · w` for the call's rows (`<= MR`) and channels (`<= NR`).
    ///
    /// # Safety
    /// The CPU has the level's features; every pointer of `t` is valid for what it describes.
    unsafe fn kernel(t: Call);
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
        match level {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512Vnni => multiply::<avx512::Vnni>(level, rows, m, k, n, wq, scales, fused, y),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2Vnni => multiply::<avx2::Vnni>(level, rows, m, k, n, wq, scales, fused, y),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Level::Simd128 => {
                multiply::<pairs::Widened<crate::cpu::lanes::Simd128Lanes>>(level, rows, m, k, n, wq, scales, fused, y)
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Level::Neon => {
                multiply::<pairs::Widened<crate::cpu::lanes::NeonLanes>>(level, rows, m, k, n, wq, scales, fused, y)
            }
            _ => unreachable!("int8::gemm at {level:?}, which `used` refuses"),
        }
    });
}

/// The GEMM proper over quantised rows: tasks of `MC` rows by a share of the tiles of `NR`
/// channels (more shares when there are few row blocks, so every thread has work).
#[allow(clippy::too_many_arguments)]
fn multiply<K: Kernels>(
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
    let splits = tile_splits(blocks, tiles);
    let out = SharedOut(y.as_mut_ptr());
    parallel::for_each(blocks * splits, |t| {
        let out = &out;
        let m0 = (t / splits) * MC;
        let m1 = (m0 + MC).min(m);
        PREP.with(|prep| {
            let mut prep = prep.borrow_mut();
            prep.resize(groups * 2 * NR, 0.0);
            for tj in share(t % splits, splits, tiles) {
                let (j0, p0) = (tj * NR, 2 * tj);
                let cols = NR.min(n - j0);
                // A missing second panel repeats the first: its columns are computed, not stored.
                let p1 = (p0 + 1).min(panels - 1);
                let (w0, w1) = (&wq[p0 * plen..][..plen], &wq[p1 * plen..][..plen]);
                let sc = |p: usize| &scales[p * groups * PANEL..][..groups * PANEL];
                // SAFETY: the CPU has the kernels' features (`used`); both panels hold k4 lanes
                // and `groups` scales; `prep` holds groups * 2 * NR values.
                unsafe { K::prepare(k4, w0, w1, sc(p0), sc(p1), &mut prep) };
                for i0 in (m0..m1).step_by(K::MR) {
                    // SAFETY: rows i0..i0 + MR.min(m1 - i0) exist in `rows` (kp bytes, `groups`
                    // steps and minimums each) and in `y` (n values); this task alone writes
                    // rows m0..m1 x its tiles' columns.
                    unsafe {
                        K::kernel(Call {
                            k4,
                            a: rows.q.as_ptr().add(i0 * 4 * k4),
                            lda: 4 * k4,
                            step: rows.step.as_ptr().add(i0 * groups),
                            min: rows.min.as_ptr().add(i0 * groups),
                            lds: groups,
                            rows: K::MR.min(m1 - i0),
                            w0: w0.as_ptr(),
                            w1: w1.as_ptr(),
                            prep: prep.as_ptr(),
                            c: out.0.add(i0 * n + j0),
                            ldc: n,
                            cols,
                        })
                    };
                }
                // SAFETY: as above; the kernels are done with these rows.
                unsafe { epilogue(level, fused, out, n, m0..m1, j0, cols) };
            }
        });
    });
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
