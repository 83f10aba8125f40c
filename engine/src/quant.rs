//! Weight formats for `[rows, cols]` matrices (rows = output channels) and their host packing.
//!
//! - f16: two halves per u32, low half first; each row padded to a whole word.
//! - q8: symmetric int8 per row (scale = max|w| / 127), four bytes per u32, low byte first;
//!   each row padded to a whole word; the `rows` f32 scales follow the last row.
//!
//! Rows start on word boundaries so kernels index a row without knowing its parity.

use half::f16;

use crate::error::ensure_shape;
use crate::{DType, Result};

/// A weight matrix packed for upload, or kept on the host for the CPU path.
#[derive(Clone, Debug, PartialEq)]
pub struct Packed {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub words: Vec<u32>,
}

/// Words per packed row.
pub fn row_words(dtype: DType, cols: usize) -> usize {
    match dtype {
        DType::F32 | DType::U32 => cols,
        DType::F16 => cols.div_ceil(2),
        DType::Q8 => cols.div_ceil(4),
    }
}

impl Packed {
    pub fn new(w: &[f32], rows: usize, cols: usize, dtype: DType) -> Result<Self> {
        ensure_shape!(w.len() == rows * cols, "weight has {} values, [{rows}, {cols}] needs {}", w.len(), rows * cols);
        let rw = row_words(dtype, cols);
        let words = match dtype {
            DType::F32 => bytemuck::cast_slice(w).to_vec(),
            DType::U32 => return Err(crate::Error::Shape("u32 is not a weight format".into())),
            DType::F16 => {
                let mut words = vec![0u32; rows * rw];
                for r in 0..rows {
                    for c in 0..cols {
                        let h = f16::from_f32(w[r * cols + c]).to_bits() as u32;
                        words[r * rw + c / 2] |= h << (16 * (c % 2));
                    }
                }
                words
            }
            DType::Q8 => {
                let mut words = vec![0u32; rows * rw + rows];
                for r in 0..rows {
                    let row = &w[r * cols..(r + 1) * cols];
                    let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                    for (c, v) in row.iter().enumerate() {
                        let q = (v / scale).round().clamp(-127.0, 127.0) as i8;
                        words[r * rw + c / 4] |= (q as u8 as u32) << (8 * (c % 4));
                    }
                    words[rows * rw + r] = scale.to_bits();
                }
                words
            }
        };
        Ok(Self { dtype, rows, cols, words })
    }

    pub fn row_words(&self) -> usize {
        row_words(self.dtype, self.cols)
    }

    /// The values the kernels see, as f32 `[rows, cols]`: what the CPU path computes with.
    pub fn dequantize(&self) -> Vec<f32> {
        let (rows, cols, rw) = (self.rows, self.cols, self.row_words());
        let mut out = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                out.push(match self.dtype {
                    DType::F32 | DType::U32 => f32::from_bits(self.words[r * cols + c]),
                    DType::F16 => f16::from_bits((self.words[r * rw + c / 2] >> (16 * (c % 2))) as u16).to_f32(),
                    DType::Q8 => {
                        let q = (self.words[r * rw + c / 4] >> (8 * (c % 4))) as u8 as i8;
                        q as f32 * f32::from_bits(self.words[rows * rw + r])
                    }
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_error_is_bounded_by_the_format() {
        let (rows, cols) = (5, 7);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        assert_eq!(Packed::new(&w, rows, cols, DType::F32).unwrap().dequantize(), w);
        let h = Packed::new(&w, rows, cols, DType::F16).unwrap();
        assert_eq!(h.words.len(), rows * 4);
        for (a, b) in h.dequantize().iter().zip(&w) {
            assert!((a - b).abs() <= b.abs() * 1e-3, "{a} vs {b}");
        }
        let q = Packed::new(&w, rows, cols, DType::Q8).unwrap();
        assert_eq!(q.words.len(), rows * 2 + rows);
        for r in 0..rows {
            let max = w[r * cols..(r + 1) * cols].iter().fold(0f32, |m, v| m.max(v.abs()));
            for c in 0..cols {
                // Rounding to the nearest of 255 levels: at most half a step off.
                assert!((q.dequantize()[r * cols + c] - w[r * cols + c]).abs() <= max / 127.0 * 0.5 + 1e-6);
            }
        }
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert!(Packed::new(&[1.0; 5], 2, 3, DType::Q8).is_err());
    }
}
