//! Weight formats for `[rows, cols]` matrices (rows = output channels) and their host packing.
//!
//! - f16: two halves per u32, low half first; each row padded to a whole word.
//! - q8: symmetric int8 with one scale per [`Q8_GROUP`] consecutive values of a row (scale =
//!   max|w| / 127 over the group; the last group of a row may be shorter), four bytes per u32,
//!   low byte first; each row padded to a whole word; after the last row, the f32 scales row by
//!   row (`rows x q8_groups(cols)` words). Worst embedding cosine of the full-size random model,
//!   simulated (`tests/reference/quant_sensitivity.py`), image / text: one scale per row
//!   0.9933 / 0.9930; groups of 64: 0.9946 / 0.9957; of 32: 0.9954 / 0.9964; of 16: 0.9948 /
//!   0.9978. The image tower's loss sits in the backbone's 1x1 convs (0.9992 with them in f16 at
//!   groups of 64), so `convert.rs` keeps those in f16; the text tower's is spread over all of
//!   BERT, hence 32.
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

/// Input values per q8 scale. A format constant: model files record it and are refused when it
/// differs.
pub const Q8_GROUP: usize = 32;

/// q8 scales per row of `cols` values.
pub fn q8_groups(cols: usize) -> usize {
    cols.div_ceil(Q8_GROUP)
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
                let groups = q8_groups(cols);
                let mut words = vec![0u32; rows * rw + rows * groups];
                for r in 0..rows {
                    let row = &w[r * cols..(r + 1) * cols];
                    for (g, group) in row.chunks(Q8_GROUP).enumerate() {
                        let max = group.iter().fold(0f32, |m, v| m.max(v.abs()));
                        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
                        for (i, v) in group.iter().enumerate() {
                            let c = g * Q8_GROUP + i;
                            let q = (v / scale).round().clamp(-127.0, 127.0) as i8;
                            words[r * rw + c / 4] |= (q as u8 as u32) << (8 * (c % 4));
                        }
                        words[rows * rw + r * groups + g] = scale.to_bits();
                    }
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
        let groups = q8_groups(cols);
        let mut out = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                out.push(match self.dtype {
                    DType::F32 | DType::U32 => f32::from_bits(self.words[r * cols + c]),
                    DType::F16 => f16::from_bits((self.words[r * rw + c / 2] >> (16 * (c % 2))) as u16).to_f32(),
                    DType::Q8 => {
                        let q = (self.words[r * rw + c / 4] >> (8 * (c % 4))) as u8 as i8;
                        q as f32 * f32::from_bits(self.words[rows * rw + r * groups + c / Q8_GROUP])
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
        assert_within_half_a_step(&q, &w);
    }

    /// Every value within half a quantisation step of its group (255 levels over +-max).
    fn assert_within_half_a_step(q: &Packed, w: &[f32]) {
        let deq = q.dequantize();
        for (r, row) in w.chunks_exact(q.cols).enumerate() {
            for (g, group) in row.chunks(Q8_GROUP).enumerate() {
                let max = group.iter().fold(0f32, |m, v| m.max(v.abs()));
                for (i, v) in group.iter().enumerate() {
                    let got = deq[r * q.cols + g * Q8_GROUP + i];
                    assert!((got - v).abs() <= max / 127.0 * 0.5 + max * 1e-6, "row {r} group {g}: {got} vs {v}");
                }
            }
        }
    }

    #[test]
    fn q8_scales_follow_the_groups_of_each_row() {
        // Two whole groups and a short one; each group a different magnitude, so one scale per
        // row would round the small groups to a few levels.
        let (rows, cols) = (3, 2 * Q8_GROUP + 5);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let mag = [100.0, 0.01, 1.0][(i % cols) / Q8_GROUP];
                ((i * 37 % 23) as f32 - 11.0) / 11.0 * mag
            })
            .collect();
        let q = Packed::new(&w, rows, cols, DType::Q8).unwrap();
        assert_eq!(q8_groups(cols), 3);
        assert_eq!(q.words.len(), rows * cols.div_ceil(4) + rows * 3);
        assert_within_half_a_step(&q, &w);
        // An all-zero group gets scale 1 (not 0/0) and dequantises to zeros.
        let z = Packed::new(&vec![0.0; cols], 1, cols, DType::Q8).unwrap();
        assert!(z.dequantize().iter().all(|v| *v == 0.0));
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert!(Packed::new(&[1.0; 5], 2, 3, DType::Q8).is_err());
    }
}
