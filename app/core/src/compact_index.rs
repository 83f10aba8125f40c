//! The web app's in-memory index: every embedding as int8 codes with one f32 scale per photo
//! (`v ~ code * scale`, 2 KiB for a 2048-wide embedding instead of 8 KiB), in fixed-size blocks
//! so that growing it never copies what it holds (wasm memory only grows: a doubling `Vec` would
//! need twice the index at its peak).
//!
//! A search scans every row with an integer dot product against the int8 query (SIMD on wasm),
//! keeps the best [`rescore_count`] candidates and rescores those exactly: the f32 query against
//! each stored row. Small indexes are rescored whole.

use std::cmp::Ordering;

use crate::encoding::{dot_f32_i8, dot_i8, quantize_i8};
use crate::ranking::{rescore_count, Hit, EXACT_BELOW};

/// Rows per block: 2 MiB of codes at 2048 wide (the last block's free rows are the only waste).
pub const BLOCK_ROWS: usize = 1024;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompactIndex {
    dim: usize,
    /// Each block holds up to `BLOCK_ROWS` rows, allocated at its full size once.
    blocks: Vec<Vec<i8>>,
    scales: Vec<f32>,
}

/// Best first; NaN last.
fn desc(a: f32, b: f32) -> Ordering {
    b.partial_cmp(&a).unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
}

impl CompactIndex {
    pub fn new(dim: usize) -> Self {
        Self { dim, blocks: Vec::new(), scales: Vec::new() }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.scales.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// Bytes held by codes and scales (allocated, including the last block's free rows).
    pub fn bytes(&self) -> usize {
        self.blocks.iter().map(Vec::capacity).sum::<usize>() + self.scales.capacity() * 4
    }

    /// Reserves the row list for `rows` more rows (the blocks are allocated as they fill).
    pub fn reserve(&mut self, rows: usize) {
        self.scales.reserve_exact(rows);
    }

    /// Adds a stored row (codes and scale); one of another width or with a non-finite or negative
    /// scale is refused. Returns the row number.
    pub fn push_code(&mut self, code: &[i8], scale: f32) -> Option<usize> {
        if code.len() != self.dim || !scale.is_finite() || scale < 0.0 {
            return None;
        }
        let row = self.len();
        if row.is_multiple_of(BLOCK_ROWS) {
            self.blocks.push(Vec::with_capacity(BLOCK_ROWS * self.dim));
        }
        self.blocks.last_mut().expect("a block was just added").extend_from_slice(code);
        self.scales.push(scale);
        Some(row)
    }

    /// Quantises and adds an f32 row; `None` for another width.
    pub fn push(&mut self, row: &[f32]) -> Option<usize> {
        if row.len() != self.dim {
            return None;
        }
        let (code, scale) = quantize_i8(row);
        self.push_code(&code, scale)
    }

    /// The stored row `i`: codes and scale.
    pub fn row(&self, i: usize) -> Option<(&[i8], f32)> {
        let scale = *self.scales.get(i)?;
        let (b, r) = (i / BLOCK_ROWS, i % BLOCK_ROWS);
        Some((&self.blocks[b][r * self.dim..(r + 1) * self.dim], scale))
    }

    /// Row `i` as f32 (`code * scale`): a photo's embedding as stored, for a similar-photo search.
    pub fn vector(&self, i: usize) -> Option<Vec<f32>> {
        let (code, scale) = self.row(i)?;
        Some(code.iter().map(|&c| c as f32 * scale).collect())
    }

    /// The exact score of row `i` for `query` (the f32 query against the stored row).
    pub fn score(&self, query: &[f32], i: usize) -> Option<f32> {
        let (code, scale) = self.row(i)?;
        (query.len() == self.dim).then(|| dot_f32_i8(query, code, scale))
    }

    /// The best `top_k` rows for `query` with their exact scores, best first (ties to the lower
    /// row), scores below `min_score` and rows `skip` says to leave out excluded. A query of
    /// another width matches nothing.
    pub fn search(
        &self,
        query: &[f32],
        top_k: usize,
        min_score: Option<f32>,
        skip: impl Fn(usize) -> bool,
    ) -> Vec<Hit<usize>> {
        if query.len() != self.dim || top_k == 0 || self.is_empty() {
            return Vec::new();
        }
        let rows = self.len();
        let candidates: Vec<usize> = if rows < EXACT_BELOW {
            (0..rows).filter(|&r| !skip(r)).collect()
        } else {
            // The int8 scan: the query's own scale is common to every row and left out.
            let (q, _) = quantize_i8(query);
            let mut scores = Vec::with_capacity(rows);
            for (b, block) in self.blocks.iter().enumerate() {
                for (r, code) in block.chunks_exact(self.dim).enumerate() {
                    let row = b * BLOCK_ROWS + r;
                    scores.push(if skip(row) { f32::NEG_INFINITY } else { dot_i8(&q, code) as f32 * self.scales[row] });
                }
            }
            let mut order: Vec<usize> = (0..rows).collect();
            let n = rescore_count(top_k).min(rows);
            if n < rows {
                order.select_nth_unstable_by(n, |&a, &b| desc(scores[a], scores[b]));
                order.truncate(n);
            }
            order.retain(|&r| !skip(r));
            order
        };
        let mut hits: Vec<Hit<usize>> = candidates
            .into_iter()
            .filter_map(|r| Some(Hit { key: r, score: self.score(query, r)? }))
            .filter(|h| min_score.is_none_or(|m| h.score >= m))
            .collect();
        let order = |a: &Hit<usize>, b: &Hit<usize>| desc(a.score, b.score).then_with(|| a.key.cmp(&b.key));
        if top_k < hits.len() {
            hits.select_nth_unstable_by(top_k, order);
            hits.truncate(top_k);
        }
        hits.sort_by(order);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranking::tests::unit;
    use crate::ranking::{dot, rank};
    // The same tests run compiled to wasm32 (where the scan uses SIMD).
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn search_equals_the_exact_ranking_of_the_stored_rows() {
        // More rows than a block and than EXACT_BELOW, 70 wide (not a multiple of 16).
        let (dim, n) = (70, BLOCK_ROWS + 900);
        const { assert!(BLOCK_ROWS + 900 > EXACT_BELOW) };
        let mut index = CompactIndex::new(dim);
        index.reserve(n);
        for i in 0..n {
            assert_eq!(index.push(&unit(i as u64, dim)), Some(i));
        }
        assert_eq!(index.push(&[1.0]), None, "another width is refused");
        assert_eq!(index.push_code(&vec![0; dim], f32::NAN), None);
        assert_eq!(index.len(), n);
        assert_eq!(index.blocks.len(), 2);
        assert!(index.bytes() >= n * dim && index.bytes() < 2 * BLOCK_ROWS * dim + n * 8);
        // The reference: every stored row, dequantised, ranked exactly.
        let stored: Vec<Vec<f32>> = (0..n).map(|i| index.vector(i).unwrap()).collect();
        for seed in [7u64, 99_999, 123_456] {
            let q = unit(seed, dim);
            let want = rank(&q, stored.iter().map(Vec::as_slice).enumerate(), 30, None);
            let got = index.search(&q, 30, None, |_| false);
            assert_eq!(got.iter().map(|h| h.key).collect::<Vec<_>>(), want.iter().map(|h| h.key).collect::<Vec<_>>());
            for (g, w) in got.iter().zip(&want) {
                assert!((g.score - w.score).abs() < 1e-5, "{} vs {}", g.score, w.score);
            }
            // The stored rows score within int8 rounding of the original embeddings.
            let orig = dot(&q, &unit(got[0].key as u64, dim));
            assert!((orig - got[0].score).abs() < 0.02);
        }
        // Leaving out rows, a minimum score, top-k of 0, a query of another width.
        let q = unit(7, dim);
        let top = index.search(&q, 5, None, |_| false);
        let skipped = index.search(&q, 5, None, |r| r == top[0].key);
        assert_eq!(skipped[0].key, top[1].key);
        let above = index.search(&q, 1000, Some(top[4].score), |_| false);
        assert_eq!(above.len(), 5);
        assert!(index.search(&q, 0, None, |_| false).is_empty());
        assert!(index.search(&[1.0], 5, None, |_| false).is_empty());
        assert!(CompactIndex::new(dim).search(&q, 5, None, |_| false).is_empty());
        assert!(index.row(n).is_none());
    }

    #[test]
    fn small_index_is_ranked_whole() {
        let mut index = CompactIndex::new(2);
        for v in [[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]] {
            index.push(&v);
        }
        let hits = index.search(&[1.0, 0.0], 10, Some(0.5), |_| false);
        assert_eq!(hits.iter().map(|h| h.key).collect::<Vec<_>>(), vec![1, 0]);
        assert!((hits[1].score - 0.6).abs() < 0.01);
    }
}
