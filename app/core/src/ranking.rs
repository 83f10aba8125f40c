//! Ranking stored embeddings against a query. Embeddings are L2-normalised, so the cosine
//! similarity is a dot product ([`dot`], the one the project uses).
//!
//! - [`rank`]: exact scores, a minimum score, the best `top_k` first; ties by key. Both front ends
//!   end every search with it.
//! - [`CoarseIndex`]: every embedding as int8 codes with a per-row scale (a quarter of f32's
//!   bytes), scanned with an integer dot product for the best candidates of a large index; the
//!   caller rescores those exactly with [`rank`] ([`rescore_count`] of them for a top-`k`).

use std::cmp::Ordering;

use crate::encoding::{dot_i8, quantize_i8};

/// Indexes with fewer photos than this are ranked exactly (every row rescored).
pub const EXACT_BELOW: usize = 1024;

/// The dot product of two embeddings (their cosine when both are L2-normalised).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A match: the caller's key for the photo (an index into its list, a path, a row id) and the
/// score.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit<K> {
    pub key: K,
    pub score: f32,
}

/// Best first; NaN scores last.
fn desc(a: f32, b: f32) -> Ordering {
    b.partial_cmp(&a).unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
}

/// Ranks `rows` against `query`: scores below `min_score` are left out, the best `top_k` come
/// first, ties go to the smaller key. Rows of another width than the query's (embeddings of
/// another model) never match.
pub fn rank<'a, K: Ord>(
    query: &[f32],
    rows: impl IntoIterator<Item = (K, &'a [f32])>,
    top_k: usize,
    min_score: Option<f32>,
) -> Vec<Hit<K>> {
    let mut hits: Vec<Hit<K>> = rows
        .into_iter()
        .filter(|(_, e)| e.len() == query.len())
        .map(|(key, e)| Hit { key, score: dot(query, e) })
        .filter(|h| min_score.is_none_or(|m| h.score >= m))
        .collect();
    let order = |a: &Hit<K>, b: &Hit<K>| desc(a.score, b.score).then_with(|| a.key.cmp(&b.key));
    if top_k < hits.len() {
        hits.select_nth_unstable_by(top_k, order);
        hits.truncate(top_k);
    }
    hits.sort_by(order);
    hits
}

/// How many coarse candidates are rescored exactly for a top-`k` search.
pub fn rescore_count(k: usize) -> usize {
    (4 * k).max(k + 256)
}

/// Every embedding of an index as int8 codes with a per-row scale, under the caller's row ids.
#[derive(Clone, Debug, PartialEq)]
pub struct CoarseIndex {
    dim: usize,
    ids: Vec<i64>,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

impl CoarseIndex {
    /// An empty index of `dim`-wide rows.
    pub fn new(dim: usize) -> Self {
        Self { dim, ids: Vec::new(), codes: Vec::new(), scales: Vec::new() }
    }

    /// An index from its parts (as [`CoarseIndex::parts`] gives them); `None` when their lengths
    /// disagree.
    pub fn from_parts(dim: usize, ids: Vec<i64>, scales: Vec<f32>, codes: Vec<i8>) -> Option<Self> {
        (ids.len() == scales.len() && Some(codes.len()) == ids.len().checked_mul(dim)).then_some(Self {
            dim,
            ids,
            codes,
            scales,
        })
    }

    /// Row ids, scales and codes (row after row).
    pub fn parts(&self) -> (&[i64], &[f32], &[i8]) {
        (&self.ids, &self.scales, &self.codes)
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Adds a row; a row of another width is refused.
    pub fn push(&mut self, id: i64, row: &[f32]) -> bool {
        if row.len() != self.dim {
            return false;
        }
        let (codes, scale) = quantize_i8(row);
        self.ids.push(id);
        self.codes.extend(codes);
        self.scales.push(scale);
        true
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `n` rows with the highest approximate score, best first, as (row id, approximate
    /// score). Scanned on several threads natively when the index is large.
    pub fn candidates(&self, query: &[f32], n: usize) -> Vec<(i64, f32)> {
        if query.len() != self.dim {
            return Vec::new();
        }
        let (q, q_scale) = quantize_i8(query);
        let rows = self.len();
        let mut scores = vec![0f32; rows];
        let score_rows = |first: usize, out: &mut [f32]| {
            for (j, o) in out.iter_mut().enumerate() {
                let r = first + j;
                *o = dot_i8(&q, &self.codes[r * self.dim..(r + 1) * self.dim]) as f32 * q_scale * self.scales[r];
            }
        };
        // wasm32 has no threads: `available_parallelism` fails there, so one thread scans.
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(rows / 8192 + 1);
        if threads <= 1 {
            score_rows(0, &mut scores);
        } else {
            let per = rows.div_ceil(threads);
            std::thread::scope(|s| {
                for (t, out) in scores.chunks_mut(per).enumerate() {
                    let score_rows = &score_rows;
                    s.spawn(move || score_rows(t * per, out));
                }
            });
        }
        let mut order: Vec<usize> = (0..rows).collect();
        let n = n.min(rows);
        if n < rows {
            order.select_nth_unstable_by(n, |&a, &b| desc(scores[a], scores[b]));
            order.truncate(n);
        }
        order.sort_by(|&a, &b| desc(scores[a], scores[b]));
        order.into_iter().map(|r| (self.ids[r], scores[r])).collect()
    }

    /// How many rows a top-`k` search rescores exactly: all of a small index, else
    /// [`rescore_count`].
    pub fn rescore_for(&self, k: usize) -> usize {
        if self.len() < EXACT_BELOW {
            self.len()
        } else {
            rescore_count(k)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    // The same tests run compiled to wasm32 (where the int8 scan has no threads).
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A seeded random unit vector (also for `compact_index`'s tests).
    pub(crate) fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..dim)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        let n = dot(&v, &v).sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn rank_by_score_with_limits() {
        let q = [1.0, 0.0];
        let photos: Vec<Vec<f32>> = vec![vec![0.6, 0.8], vec![1.0, 0.0], vec![0.0, 1.0], vec![0.8, 0.6], vec![1.0]];
        let rows = || photos.iter().map(Vec::as_slice).enumerate();
        let hits = rank(&q, rows(), 10, Some(0.5));
        assert_eq!(hits.iter().map(|h| h.key).collect::<Vec<_>>(), vec![1, 3, 0]);
        assert!((hits[1].score - 0.8).abs() < 1e-6);
        let top1 = rank(&q, rows().filter(|(i, _)| *i != 1), 1, None);
        assert_eq!(top1, vec![Hit { key: 3, score: 0.8 }]);
        // Ties go to the smaller key, whatever the input order.
        let tied = rank(&q, [("b", &[1.0f32, 0.0][..]), ("a", &[1.0, 0.0][..])], 2, None);
        assert_eq!(tied.iter().map(|h| h.key).collect::<Vec<_>>(), ["a", "b"]);
        assert!(rank(&q, rows(), 0, None).is_empty());
    }

    #[test]
    fn int8_scan_finds_the_exact_top() {
        // 3000 rows of 70 dims (not a multiple of the 16-wide unroll): the coarse scan's top 300
        // must hold the exact top 20, and its scores stay within int8 rounding of the exact ones.
        let dim = 70;
        let rows: Vec<Vec<f32>> = (0..3000).map(|i| unit(i, dim)).collect();
        let mut index = CoarseIndex::new(dim);
        for (i, r) in rows.iter().enumerate() {
            assert!(index.push(i as i64, r));
        }
        assert!(!index.push(-1, &[1.0]), "another width is refused");
        let q = unit(99_999, dim);
        let exact = rank(&q, rows.iter().map(Vec::as_slice).enumerate(), 20, None);
        let got = index.candidates(&q, rescore_count(20));
        assert_eq!(got.len(), rescore_count(20));
        assert!(got.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
        for h in &exact {
            let found = got.iter().find(|g| g.0 == h.key as i64).unwrap_or_else(|| panic!("{} not a candidate", h.key));
            assert!((found.1 - h.score).abs() < 0.02, "approx {} vs exact {}", found.1, h.score);
        }
        assert_eq!(index.candidates(&q, 10_000).len(), 3000);
        assert!(index.candidates(&[1.0], 5).is_empty(), "a query of another width matches nothing");
        assert!(CoarseIndex::new(dim).candidates(&q, 5).is_empty());
        assert_eq!(index.rescore_for(20), rescore_count(20));
        let (ids, scales, codes) = index.parts();
        let back = CoarseIndex::from_parts(dim, ids.to_vec(), scales.to_vec(), codes.to_vec()).unwrap();
        assert_eq!(back, index);
        assert!(CoarseIndex::from_parts(dim, vec![1], vec![1.0], vec![0; 3]).is_none());
    }
}
