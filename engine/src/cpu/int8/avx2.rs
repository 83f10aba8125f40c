//! AVX2 with AVX-VNNI (`vpdpbusd` on 256 bits: Intel's cores without AVX-512 since Alder Lake):
//! 4 rows by one panel of 16 channels at a time (8 vectors of i32 sums).

use std::arch::x86_64::*;

use super::{Call, Kernels, LANES, NR};
use crate::cpu::gemm::{store_part, PANEL};
use crate::quant::Q8_GROUP;

pub(super) struct Vnni;

const MR: usize = 4;

/// The least of 8 values.
#[inline(always)]
unsafe fn least(v: __m256) -> f32 {
    let m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps::<1>(m, m)))
}

/// The greatest of 8 values.
#[inline(always)]
unsafe fn greatest(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m)))
}

/// `quantise_row_body` 32 values at a time; the last, shorter group goes to the body.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn quantise_row(x: &[f32], gate: Option<&[f32]>, q: &mut [u8], step: &mut [f32], min: &mut [f32]) {
    let whole = x.len() / Q8_GROUP;
    let tiny = _mm256_set1_ps(f32::MIN_POSITIVE);
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    // The packs below work within 128-bit halves: this puts the 4-byte runs back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for g in 0..whole {
        let at = g * Q8_GROUP;
        let mut v: [__m256; 4] = std::array::from_fn(|h| _mm256_loadu_ps(x.as_ptr().add(at + 8 * h)));
        if let Some(gate) = gate {
            for (h, v) in v.iter_mut().enumerate() {
                let p = _mm256_mul_ps(*v, _mm256_loadu_ps(gate.as_ptr().add(at + 8 * h)));
                let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_and_ps(p, magnitude), tiny);
                *v = _mm256_and_ps(p, keep);
            }
        }
        let lo = least(_mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3])));
        let hi = greatest(_mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3])));
        let (s, inv) = super::group_step(lo, hi);
        let (lov, invv) = (_mm256_set1_ps(lo), _mm256_set1_ps(inv));
        // Rounds to nearest even (the default rounding mode), as the body does.
        let i: [__m256i; 4] =
            std::array::from_fn(|h| _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(v[h], lov), invv)));
        let words = _mm256_packus_epi16(_mm256_packus_epi32(i[0], i[1]), _mm256_packus_epi32(i[2], i[3]));
        _mm256_storeu_si256(q.as_mut_ptr().add(at) as *mut __m256i, _mm256_permutevar8x32_epi32(words, order));
        (step[g], min[g]) = (s, lo);
    }
    let at = whole * Q8_GROUP;
    super::quantise_row_body(&x[at..], gate.map(|g| &g[at..]), &mut q[at..], &mut step[whole..], &mut min[whole..]);
}

impl Kernels for Vnni {
    const MR: usize = MR;

    /// `Kernels::prepare`: the sums by `vpdpbusd` with ones.
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn prepare(k4: usize, w0: &[i8], w1: &[i8], s0: &[f32], s1: &[f32], prep: &mut [f32]) {
        let ones = _mm256_set1_epi8(1);
        for (g, dst) in prep.chunks_exact_mut(2 * NR).enumerate() {
            for (h, (w, s)) in [(w0, s0), (w1, s1)].into_iter().enumerate() {
                let mut sum = [_mm256_setzero_si256(); 2];
                for l in g * LANES..(g * LANES + LANES).min(k4) {
                    for (half, sum) in sum.iter_mut().enumerate() {
                        let wv = _mm256_loadu_si256(w.as_ptr().add(l * 64 + 32 * half) as *const __m256i);
                        *sum = _mm256_dpbusd_avx_epi32(*sum, ones, wv);
                    }
                }
                for (half, sum) in sum.into_iter().enumerate() {
                    let scale = _mm256_loadu_ps(s.as_ptr().add(g * PANEL + 8 * half));
                    _mm256_storeu_ps(dst.as_mut_ptr().add(h * PANEL + 8 * half), scale);
                    let scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(sum), scale);
                    _mm256_storeu_ps(dst.as_mut_ptr().add(NR + h * PANEL + 8 * half), scaled);
                }
            }
        }
    }

    /// `Kernels::kernel`.
    #[target_feature(enable = "avx2,fma,avxvnni")]
    unsafe fn kernel(t: Call) {
        let Call { k4, a, lda, step, min, lds, rows, w0, w1, prep, c, ldc, cols } = t;
        // Rows past `rows` repeat the last one (computed, not stored).
        let row = |i: usize| i.min(rows - 1);
        let mut tmp = [0f32; MR * NR];
        // The second panel only where its channels are stored.
        let panels = if cols > PANEL { 2 } else { 1 };
        for (h, w) in [w0, w1].into_iter().take(panels).enumerate() {
            let mut out = [[_mm256_setzero_ps(); 2]; MR];
            for g in 0..k4.div_ceil(LANES) {
                let mut acc = [[_mm256_setzero_si256(); 2]; MR];
                for l in g * LANES..(g * LANES + LANES).min(k4) {
                    let b0 = _mm256_loadu_si256(w.add(l * 64) as *const __m256i);
                    let b1 = _mm256_loadu_si256(w.add(l * 64 + 32) as *const __m256i);
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let av = _mm256_set1_epi32((a.add(row(i) * lda + l * 4) as *const i32).read_unaligned());
                        acc[0] = _mm256_dpbusd_avx_epi32(acc[0], av, b0);
                        acc[1] = _mm256_dpbusd_avx_epi32(acc[1], av, b1);
                    }
                }
                let p = prep.add(g * 2 * NR + h * PANEL);
                let scale = [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))];
                let sums = [_mm256_loadu_ps(p.add(NR)), _mm256_loadu_ps(p.add(NR + 8))];
                for (i, (out, acc)) in out.iter_mut().zip(&acc).enumerate() {
                    let st = _mm256_set1_ps(*step.add(row(i) * lds + g));
                    let mn = _mm256_set1_ps(*min.add(row(i) * lds + g));
                    for half in 0..2 {
                        let dots = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[half]), st);
                        out[half] = _mm256_fmadd_ps(dots, scale[half], _mm256_fmadd_ps(mn, sums[half], out[half]));
                    }
                }
            }
            for (i, o) in out.iter().enumerate() {
                _mm256_storeu_ps(tmp.as_mut_ptr().add(i * NR + h * PANEL), o[0]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(i * NR + h * PANEL + 8), o[1]);
            }
        }
        store_part(&tmp, NR, c, ldc, rows, cols, false);
    }
}
