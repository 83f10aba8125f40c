//! The CPU path's f32 vector operations per SIMD level ([`Lanes`]), written once for the kernels
//! that are the same at every level but for them: the depthwise conv's 4-pixel kernel, the GEMM
//! micro-kernel of the 4-lane levels (wasm `simd128`, NEON).
#![cfg(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128"),
    all(target_arch = "aarch64", target_feature = "neon")
))]

/// A level's f32 vector operations.
pub(crate) trait Lanes {
    type V: Copy;
    /// f32 lanes per vector.
    const N: usize;
    unsafe fn load(p: *const f32) -> Self::V;
    /// `v` in every lane.
    unsafe fn splat(v: f32) -> Self::V;
    #[inline(always)]
    unsafe fn zero() -> Self::V {
        Self::splat(0.0)
    }
    /// `a * b + c`.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// The first `n` lanes (1..=N) from `p`, the rest zero; nothing past them is read. (Through
    /// a buffer on the stack unless the level has masked loads.)
    #[inline(always)]
    unsafe fn load_part(p: *const f32, n: usize) -> Self::V {
        let mut lanes = [0f32; 16];
        std::ptr::copy_nonoverlapping(p, lanes.as_mut_ptr(), n);
        Self::load(lanes.as_ptr())
    }
    /// The first `n` lanes (1..=N) to `p`; nothing past them is written.
    #[inline(always)]
    unsafe fn store_part(p: *mut f32, v: Self::V, n: usize) {
        let mut lanes = [0f32; 16];
        Self::store(lanes.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(lanes.as_ptr(), p, n);
    }
}

/// A level's [`Lanes`] from its intrinsics (and its partial load and store).
#[cfg(target_arch = "x86_64")]
macro_rules! x86_lanes {
    ($lanes:ident, $features:literal, $v:ident, $n:literal, $load:ident, $splat:ident, $fma:ident,
     $store:ident, $load_part:ident, $store_part:ident) => {
        pub(crate) struct $lanes;
        impl Lanes for $lanes {
            type V = std::arch::x86_64::$v;
            const N: usize = $n;
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn load(p: *const f32) -> Self::V {
                std::arch::x86_64::$load(p)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn splat(v: f32) -> Self::V {
                std::arch::x86_64::$splat(v)
            }
            // The default's body, but compiled with the level's features (the default is not,
            // so it would be a call).
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn zero() -> Self::V {
                Self::splat(0.0)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
                std::arch::x86_64::$fma(a, b, c)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn store(p: *mut f32, v: Self::V) {
                std::arch::x86_64::$store(p, v)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn load_part(p: *const f32, n: usize) -> Self::V {
                $load_part(p, n)
            }
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn store_part(p: *mut f32, v: Self::V, n: usize) {
                $store_part(p, v, n)
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
x86_lanes!(
    Avx512Lanes,
    "avx512f,fma",
    __m512,
    16,
    _mm512_loadu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_storeu_ps,
    load_part_avx512,
    store_part_avx512
);
#[cfg(target_arch = "x86_64")]
x86_lanes!(
    Avx2Lanes,
    "avx2,fma",
    __m256,
    8,
    _mm256_loadu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_storeu_ps,
    load_part_avx2,
    store_part_avx2
);

/// The first `n` (1..=16) lanes, by a mask: masked-off lanes are neither read nor written.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load_part_avx512(p: *const f32, n: usize) -> std::arch::x86_64::__m512 {
    std::arch::x86_64::_mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p)
}
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_part_avx512(p: *mut f32, v: std::arch::x86_64::__m512, n: usize) {
    std::arch::x86_64::_mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, v)
}

/// The mask of AVX2's masked load and store for the first `n` (1..=8) lanes.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn mask_avx2(n: usize) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
}
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_part_avx2(p: *const f32, n: usize) -> std::arch::x86_64::__m256 {
    std::arch::x86_64::_mm256_maskload_ps(p, mask_avx2(n))
}
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_part_avx2(p: *mut f32, v: std::arch::x86_64::__m256, n: usize) {
    std::arch::x86_64::_mm256_maskstore_ps(p, mask_avx2(n), v)
}

/// wasm `simd128` (no FMA: a multiply and an add).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) struct Simd128Lanes;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl Lanes for Simd128Lanes {
    type V = std::arch::wasm32::v128;
    const N: usize = 4;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        std::arch::wasm32::v128_load(p as *const Self::V)
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::V {
        std::arch::wasm32::f32x4_splat(v)
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::arch::wasm32::f32x4_add(std::arch::wasm32::f32x4_mul(a, b), c)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        std::arch::wasm32::v128_store(p as *mut Self::V, v)
    }
}

/// aarch64 NEON.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub(crate) struct NeonLanes;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
impl Lanes for NeonLanes {
    type V = std::arch::aarch64::float32x4_t;
    const N: usize = 4;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self::V {
        std::arch::aarch64::vld1q_f32(p)
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::V {
        std::arch::aarch64::vdupq_n_f32(v)
    }
    #[inline(always)]
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::arch::aarch64::vfmaq_f32(c, a, b)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self::V) {
        std::arch::aarch64::vst1q_f32(p, v)
    }
}
