//! NEON's integer operations for the int8 kernels ([`Pairs`]): `smul` on i16, then `sadalp`
//! adds the products in pairs into i32.

use std::arch::aarch64::*;

use super::pairs::Pairs;
use crate::cpu::lanes::NeonLanes;

impl Pairs for NeonLanes {
    type I16 = int16x8_t;
    type I32 = int32x4_t;
    #[inline(always)]
    unsafe fn widen(w: *const i8) -> [int16x8_t; 2] {
        let b = vld1q_s8(w);
        [vmovl_s8(vget_low_s8(b)), vmovl_high_s8(b)]
    }
    #[inline(always)]
    unsafe fn inputs(a: *const u8) -> int16x8_t {
        // Bytes up to 255: widened without a sign.
        vreinterpretq_s16_u16(vmovl_u8(vreinterpret_u8_u32(vld1_dup_u32(a as *const u32))))
    }
    #[inline(always)]
    unsafe fn zeros() -> int32x4_t {
        vdupq_n_s32(0)
    }
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int16x8_t, b: int16x8_t) -> int32x4_t {
        vpadalq_s16(acc, vmulq_s16(a, b))
    }
    #[inline(always)]
    unsafe fn add_pairs(acc: int32x4_t, a: int16x8_t) -> int32x4_t {
        vpadalq_s16(acc, a)
    }
    #[inline(always)]
    unsafe fn pair_sums(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        vpaddq_s32(a, b)
    }
    #[inline(always)]
    unsafe fn to_f32(v: int32x4_t) -> float32x4_t {
        vcvtq_f32_s32(v)
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmulq_f32(a, b)
    }
}
