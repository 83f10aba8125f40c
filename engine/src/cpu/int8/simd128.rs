//! wasm simd128: bytes widened to i16 and multiplied in pairs (`i32x4.dot_i16x8_s`), 2 rows by
//! one panel of 16 channels at a time (16 vectors of i32 sums).

use std::arch::wasm32::*;

use super::{Call, Kernels, LANES, NR};
use crate::cpu::gemm::{store_part, PANEL};

pub(super) struct Dot;

const MR: usize = 2;

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

impl Kernels for Dot {
    const MR: usize = MR;

    /// `Kernels::prepare`: the sums by `dot_i16x8_s` with ones.
    unsafe fn prepare(k4: usize, w0: &[i8], w1: &[i8], s0: &[f32], s1: &[f32], prep: &mut [f32]) {
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

    /// `Kernels::kernel`.
    unsafe fn kernel(t: Call) {
        let Call { k4, a, lda, step, min, lds, rows, w0, w1, prep, c, ldc, cols } = t;
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
