//! The encodings embeddings are stored in.
//!
//! - f16, little-endian: the desktop index's rows (half of f32's bytes; cosine scores move by
//!   about 1e-3 at most, far below the gaps that order search results).
//! - int8 codes with one f32 scale per row (`v ~ code * scale`): the search matrix scanned for
//!   candidates, a quarter of f32's bytes.

use half::f16;

/// f32 embedding -> little-endian f16 bytes.
pub fn to_f16_bytes(e: &[f32]) -> Vec<u8> {
    e.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect()
}

/// Little-endian f16 bytes -> f32 embedding; `None` when the length is odd.
pub fn from_f16_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    Some(bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect())
}

/// Symmetric int8 quantisation: `v ~ code * scale`, codes in -127..=127. An all-zero or
/// non-finite row gets scale 0 (it scores 0 against everything).
pub fn quantize_i8(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() || v.iter().any(|x| x.is_nan()) {
        return (vec![0; v.len()], 0.0);
    }
    let inv = 127.0 / max;
    (v.iter().map(|x| (x * inv).round().clamp(-127.0, 127.0) as i8).collect(), max / 127.0)
}

/// Integer dot product, written as widening i16 products summed in i32 so that it vectorises
/// (pmaddwd and friends). On wasm32 it uses WebAssembly SIMD's `i32x4.dot_i16x8_s` (so a
/// module that calls it needs a browser with wasm SIMD: Chrome 91, Firefox 89, Safari 16.4 and
/// later; the wasm build has no SIMD otherwise, and scalar code is ~4x slower).
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "wasm32")]
    {
        dot_i8_simd128(a, b)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        dot_i8_portable(a, b)
    }
}

#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
fn dot_i8_simd128(a: &[i8], b: &[i8]) -> i32 {
    use core::arch::wasm32::*;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x as i32 * y as i32).sum();
    let mut acc = i32x4_splat(0);
    for (x, y) in ca.zip(cb) {
        // SAFETY: both chunks are 16 bytes long; v128_load reads unaligned memory.
        let (x, y) = unsafe { (v128_load(x.as_ptr() as *const v128), v128_load(y.as_ptr() as *const v128)) };
        let lo = i32x4_dot_i16x8(i16x8_extend_low_i8x16(x), i16x8_extend_low_i8x16(y));
        let hi = i32x4_dot_i16x8(i16x8_extend_high_i8x16(x), i16x8_extend_high_i8x16(y));
        acc = i32x4_add(acc, i32x4_add(lo, hi));
    }
    i32x4_extract_lane::<0>(acc)
        + i32x4_extract_lane::<1>(acc)
        + i32x4_extract_lane::<2>(acc)
        + i32x4_extract_lane::<3>(acc)
        + tail
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x as i32 * y as i32).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..16 {
            acc[k] += (x[k] as i16 * y[k] as i16) as i32;
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// An f32 query against an int8 row: `sum(q * code) * scale`, the exact score of the stored row
/// (what the int8 scan's candidates are rescored with).
pub fn dot_f32_i8(q: &[f32], code: &[i8], scale: f32) -> f32 {
    q.iter().zip(code).map(|(&x, &c)| x * c as f32).sum::<f32>() * scale
}

#[cfg(test)]
mod tests {
    use super::*;
    // The same tests run compiled to wasm32 (where the int8 scan has no threads).
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn f16_round_trip_and_odd_length() {
        let v = [0.5f32, -0.25, 0.1];
        let back = from_f16_bytes(&to_f16_bytes(&v)).unwrap();
        assert!(v.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-3));
        assert_eq!(to_f16_bytes(&v).len(), 6);
        assert!(from_f16_bytes(&[1, 2, 3]).is_none());
    }

    #[test]
    fn quantize_and_dot_i8() {
        assert_eq!(quantize_i8(&[0.0, 0.0]), (vec![0, 0], 0.0));
        assert_eq!(quantize_i8(&[f32::NAN, 1.0]).1, 0.0);
        let (c, s) = quantize_i8(&[0.5, -1.0, 0.25]);
        assert_eq!(c, [64, -127, 32]);
        assert!((s - 1.0 / 127.0).abs() < 1e-7);
        // 37 values: not a multiple of the 16-wide unroll.
        let a: Vec<i8> = (0..37).map(|i| (i * 7 % 255 - 127) as i8).collect();
        let b: Vec<i8> = (0..37).map(|i| (127 - i * 5 % 255) as i8).collect();
        let want: i32 = a.iter().zip(&b).map(|(&x, &y)| x as i32 * y as i32).sum();
        assert_eq!(dot_i8(&a, &b), want);
        assert_eq!(dot_i8_portable(&a, &b), want);
        // Extremes: -127 * -127 over 2048 values fits i32 many times over.
        assert_eq!(dot_i8(&[-127; 2048], &[-127; 2048]), 127 * 127 * 2048);
        let q = [0.5f32, -1.0, 2.0];
        assert!((dot_f32_i8(&q, &[2, 4, -1], 0.5) - (0.5 * (1.0 - 4.0 - 2.0))).abs() < 1e-6);
    }
}
