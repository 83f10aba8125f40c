//! wasm simd128's integer operations for the int8 kernels ([`Pairs`]): `i32x4.dot_i16x8_s`
//! multiplies and adds pairs in one.

use std::arch::wasm32::*;

use super::pairs::Pairs;
use crate::cpu::lanes::Simd128Lanes;

impl Pairs for Simd128Lanes {
    type I16 = v128;
    type I32 = v128;
    #[inline(always)]
    unsafe fn widen(w: *const i8) -> [v128; 2] {
        let b = v128_load(w as *const v128);
        [i16x8_extend_low_i8x16(b), i16x8_extend_high_i8x16(b)]
    }
    #[inline(always)]
    unsafe fn inputs(a: *const u8) -> v128 {
        u16x8_extend_low_u8x16(v128_load32_splat(a as *const u32))
    }
    #[inline(always)]
    unsafe fn zeros() -> v128 {
        i32x4_splat(0)
    }
    #[inline(always)]
    unsafe fn dot(acc: v128, a: v128, b: v128) -> v128 {
        i32x4_add(acc, i32x4_dot_i16x8(a, b))
    }
    #[inline(always)]
    unsafe fn add_pairs(acc: v128, a: v128) -> v128 {
        i32x4_add(acc, i32x4_dot_i16x8(a, i16x8_splat(1)))
    }
    #[inline(always)]
    unsafe fn pair_sums(a: v128, b: v128) -> v128 {
        i32x4_add(i32x4_shuffle::<0, 2, 4, 6>(a, b), i32x4_shuffle::<1, 3, 5, 7>(a, b))
    }
    #[inline(always)]
    unsafe fn to_f32(v: v128) -> v128 {
        f32x4_convert_i32x4(v)
    }
    #[inline(always)]
    unsafe fn mul(a: v128, b: v128) -> v128 {
        f32x4_mul(a, b)
    }
}
