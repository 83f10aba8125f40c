//! AVX-512 VNNI: 6 rows x 32 channels (12 i32 sums and 12 f32 outputs in registers).

use std::arch::x86_64::*;

use super::{Call, Kernels, LANES, NR};
use crate::cpu::gemm::{store_part, PANEL};
use crate::quant::Q8_GROUP;

pub(super) struct Vnni;

const MR: usize = 6;

/// `quantise_row_body` 32 values at a time; the last, shorter group goes to the body.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn quantise_row(x: &[f32], gate: Option<&[f32]>, q: &mut [u8], step: &mut [f32], min: &mut [f32]) {
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
        let (s, inv) = super::group_step(lo, hi);
        for (h, v) in v.iter().enumerate() {
            // Rounds to nearest even (the default rounding mode), as the body does.
            let scaled = _mm512_mul_ps(_mm512_sub_ps(*v, _mm512_set1_ps(lo)), _mm512_set1_ps(inv));
            let bytes = _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(scaled));
            _mm_storeu_si128(q.as_mut_ptr().add(at + 16 * h) as *mut _, bytes);
        }
        (step[g], min[g]) = (s, lo);
    }
    let at = whole * Q8_GROUP;
    super::quantise_row_body(&x[at..], gate.map(|g| &g[at..]), &mut q[at..], &mut step[whole..], &mut min[whole..]);
}

impl Kernels for Vnni {
    const MR: usize = MR;

    /// `Kernels::prepare`: the sums by `vpdpbusd` with ones.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn prepare(k4: usize, w0: &[i8], w1: &[i8], s0: &[f32], s1: &[f32], prep: &mut [f32]) {
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

    /// `Kernels::kernel`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    unsafe fn kernel(t: Call) {
        let Call { k4, a, lda, step, min, lds, rows, w0, w1, prep, c, ldc, cols } = t;
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
