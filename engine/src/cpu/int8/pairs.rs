//! The int8 kernels of the 128-bit levels (wasm `simd128`, NEON), written once over each level's
//! integer operations ([`Pairs`]) and f32 ones ([`Lanes`]): bytes widened to i16, multiplied and
//! added in pairs into i32 (a u8 input times an int8 weight fits an i16: at most 255 x 128), 2
//! rows by one panel of 16 channels at a time (16 vectors of i32 sums).

use super::{Call, Kernels, LANES, NR};
use crate::cpu::gemm::{store_part, PANEL};
use crate::cpu::lanes::Lanes;

/// A 128-bit level's integer operations for the int8 kernels.
pub(super) trait Pairs: Lanes {
    type I16: Copy;
    type I32: Copy;
    /// 16 bytes of a panel's lane (channels 4v..4v + 4, four inputs each) as two i16x8: channels
    /// 4v and 4v + 1, then 4v + 2 and 4v + 3.
    unsafe fn widen(w: *const i8) -> [Self::I16; 2];
    /// A row's four inputs (the bytes at `a`), twice, as i16.
    unsafe fn inputs(a: *const u8) -> Self::I16;
    unsafe fn zeros() -> Self::I32;
    /// `acc` plus the products of `a` and `b`, added in pairs.
    unsafe fn dot(acc: Self::I32, a: Self::I16, b: Self::I16) -> Self::I32;
    /// `acc` plus `a`'s values, added in pairs.
    unsafe fn add_pairs(acc: Self::I32, a: Self::I16) -> Self::I32;
    /// `[a0 + a1, a2 + a3, b0 + b1, b2 + b3]`.
    unsafe fn pair_sums(a: Self::I32, b: Self::I32) -> Self::I32;
    /// As f32.
    unsafe fn to_f32(v: Self::I32) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
}

/// Per-channel totals of a panel's sums: `sums[2i + h]` holds two partial sums of each of two
/// channels; four vectors of four channels.
#[inline(always)]
unsafe fn fold<P: Pairs>(sums: &[P::I32; 8]) -> [P::I32; 4] {
    std::array::from_fn(|i| P::pair_sums(sums[2 * i], sums[2 * i + 1]))
}

/// The int8 kernels over `P`.
pub(super) struct Widened<P>(std::marker::PhantomData<P>);

const MR: usize = 2;

impl<P: Pairs> Kernels for Widened<P> {
    const MR: usize = MR;

    /// `Kernels::prepare`: the weights' sums by adding pairs.
    #[inline(always)]
    unsafe fn prepare(k4: usize, w0: &[i8], w1: &[i8], s0: &[f32], s1: &[f32], prep: &mut [f32]) {
        for (g, dst) in prep.chunks_exact_mut(2 * NR).enumerate() {
            for (h, (w, s)) in [(w0, s0), (w1, s1)].into_iter().enumerate() {
                let mut acc = [P::zeros(); 8];
                for l in g * LANES..(g * LANES + LANES).min(k4) {
                    for v in 0..4 {
                        let wv = P::widen(w.as_ptr().add(l * 64 + v * 16));
                        for (hh, wv) in wv.into_iter().enumerate() {
                            acc[2 * v + hh] = P::add_pairs(acc[2 * v + hh], wv);
                        }
                    }
                }
                for (v, sum) in fold::<P>(&acc).into_iter().enumerate() {
                    let scale = P::load(s.as_ptr().add(g * PANEL + 4 * v));
                    P::store(dst.as_mut_ptr().add(h * PANEL + 4 * v), scale);
                    P::store(dst.as_mut_ptr().add(NR + h * PANEL + 4 * v), P::mul(P::to_f32(sum), scale));
                }
            }
        }
    }

    /// `Kernels::kernel`.
    #[inline(always)]
    unsafe fn kernel(t: Call) {
        let Call { k4, a, lda, step, min, lds, rows, w0, w1, prep, c, ldc, cols } = t;
        let row = |i: usize| i.min(rows - 1);
        let mut out = [[P::splat(0.0); 8]; MR];
        // The second panel only where its channels are stored.
        let panels = if cols > PANEL { 2 } else { 1 };
        for (h, w) in [w0, w1].into_iter().take(panels).enumerate() {
            for g in 0..k4.div_ceil(LANES) {
                let mut acc = [[P::zeros(); 8]; MR];
                for l in g * LANES..(g * LANES + LANES).min(k4) {
                    let av: [P::I16; MR] = std::array::from_fn(|i| P::inputs(a.add(row(i) * lda + l * 4)));
                    for v in 0..4 {
                        let wv = P::widen(w.add(l * 64 + v * 16));
                        for (acc, av) in acc.iter_mut().zip(&av) {
                            for (hh, wv) in wv.iter().enumerate() {
                                acc[2 * v + hh] = P::dot(acc[2 * v + hh], *av, *wv);
                            }
                        }
                    }
                }
                let p = prep.add(g * 2 * NR + h * PANEL);
                for (i, (out, acc)) in out.iter_mut().zip(&acc).enumerate() {
                    let st = P::splat(*step.add(row(i) * lds + g));
                    let mn = P::splat(*min.add(row(i) * lds + g));
                    for (v, d) in fold::<P>(acc).into_iter().enumerate() {
                        let (scale, sums) = (P::load(p.add(4 * v)), P::load(p.add(NR + 4 * v)));
                        // + step · Σ q·w · wscale + min · Σ w · wscale
                        let o = &mut out[h * 4 + v];
                        *o = P::fma(P::mul(P::to_f32(d), st), scale, P::fma(mn, sums, *o));
                    }
                }
            }
        }
        let mut tmp = [0f32; MR * NR];
        for (i, out) in out.iter().enumerate() {
            for (v, o) in out.iter().enumerate() {
                P::store(tmp.as_mut_ptr().add(i * NR + 4 * v), *o);
            }
        }
        store_part(&tmp, NR, c, ldc, rows, cols, false);
    }
}
