//! `brivl search`: rank the indexed photos by cosine similarity to a query embedding.
//!
//! Fast path: every stored embedding is quantised once to int8 with one scale per row (a
//! contiguous matrix, a quarter of f32's bytes), the query too, and an integer dot product scans
//! them all. The best `rescore_count(k)` candidates are then rescored exactly from the stored
//! f16 embeddings, so the scores printed are exact and the order is exact among the candidates.
//! Below [`EXACT_BELOW`] photos every row is rescored, so small indexes are exact outright.
//!
//! Reading and quantising every embedding from SQLite is the slow part of a search at 100k
//! photos, so the matrix is cached in a file beside the index (`<index>-search`), stamped with
//! the index's identity and write generation; a stale or unreadable cache is rebuilt from the
//! database (and a cache that cannot be written only costs speed).

use std::cmp::Ordering;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use half::f16;

use super::store::Store;
use super::DesktopError;
use crate::translate::{Dictionary, PreparedQuery};

/// Indexes with fewer photos than this are ranked exactly (every row rescored).
pub const EXACT_BELOW: usize = 1024;

/// The query as the text tower gets it: BriVL reads Chinese, so English words and phrases are
/// translated offline (`translate`); Chinese passes through trimmed.
pub fn prepare_query(query: &str) -> Result<PreparedQuery, DesktopError> {
    let dict = Dictionary::shared().map_err(|e| DesktopError::Dictionary(e.to_string()))?;
    Ok(dict.prepare_query(query.trim()))
}

/// How many coarse candidates are rescored exactly for a top-`k` search.
pub fn rescore_count(k: usize) -> usize {
    (4 * k).max(k + 256)
}

/// One result.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub path: String,
    pub score: f32,
}

/// Every embedding of an index as int8 codes with a per-row scale.
pub struct CoarseIndex {
    pub dim: usize,
    ids: Vec<i64>,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

impl CoarseIndex {
    /// The index's matrix: from the cache file when it is current, else from the database
    /// (then the cache is rewritten).
    pub fn open(store: &Store) -> Result<Self, DesktopError> {
        // Read before the rows: a write landing in between makes the cache look stale, never fresh.
        let stamp = store.stamp()?;
        let cache = cache_path(store.path());
        if let Some(index) = read_cache(&cache, &stamp, store.model.dim) {
            return Ok(index);
        }
        let index = Self::load(store)?;
        let _ = write_cache(&cache, &stamp, &index); // best effort: a read-only folder only costs speed
        Ok(index)
    }

    /// Reads and quantises every embedding of `store`.
    pub fn load(store: &Store) -> Result<Self, DesktopError> {
        let dim = store.model.dim;
        let mut index = Self { dim, ids: Vec::new(), codes: Vec::new(), scales: Vec::new() };
        let mut row = vec![0f32; dim];
        let mut bad = None;
        store.for_each_embedding(|id, bytes| {
            if bytes.len() != 2 * dim {
                bad.get_or_insert(id);
                return;
            }
            for (v, b) in row.iter_mut().zip(bytes.chunks_exact(2)) {
                *v = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
            index.push(id, &row);
        })?;
        if let Some(id) = bad {
            return Err(DesktopError::NotAnIndex(
                store.path().display().to_string(),
                format!("photo row {id} has an embedding of the wrong width (expected {dim})"),
            ));
        }
        Ok(index)
    }

    /// An empty index of `dim`-wide rows (for building one from embeddings in memory).
    pub fn new(dim: usize) -> Self {
        Self { dim, ids: Vec::new(), codes: Vec::new(), scales: Vec::new() }
    }

    pub fn push(&mut self, id: i64, row: &[f32]) {
        let (codes, scale) = quantize(row);
        self.ids.push(id);
        self.codes.extend(codes);
        self.scales.push(scale);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `n` rows with the highest approximate score, best first, as (row id, approx score).
    pub fn candidates(&self, query: &[f32], n: usize) -> Vec<(i64, f32)> {
        let (q, q_scale) = quantize(query);
        let rows = self.len();
        let mut scores = vec![0f32; rows];
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(rows / 8192 + 1);
        let per = rows.div_ceil(threads.max(1)).max(1);
        std::thread::scope(|s| {
            for (t, out) in scores.chunks_mut(per).enumerate() {
                let (codes, scales, q) = (&self.codes, &self.scales, &q);
                s.spawn(move || {
                    for (j, o) in out.iter_mut().enumerate() {
                        let r = t * per + j;
                        *o = dot_i8(q, &codes[r * self.dim..(r + 1) * self.dim]) as f32 * q_scale * scales[r];
                    }
                });
            }
        });
        let mut order: Vec<usize> = (0..rows).collect();
        let n = n.min(rows);
        if n < rows {
            order.select_nth_unstable_by(n, |&a, &b| desc(scores[a], scores[b]));
            order.truncate(n);
        }
        order.sort_by(|&a, &b| desc(scores[a], scores[b]));
        order.into_iter().map(|r| (self.ids[r], scores[r])).collect()
    }
}

const CACHE_MAGIC: &[u8; 8] = b"brivlsm1";

/// Where the matrix cache of the index at `db` lives.
pub fn cache_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-search");
    PathBuf::from(name)
}

/// Cache layout, little-endian: magic, stamp length (u32) and stamp, dim (u32), rows (u64),
/// then ids (i64 each), scales (f32 each), codes (dim i8 each).
fn write_cache(path: &Path, stamp: &str, index: &CoarseIndex) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    let mut w = BufWriter::new(std::fs::File::create(&tmp)?);
    w.write_all(CACHE_MAGIC)?;
    w.write_all(&(stamp.len() as u32).to_le_bytes())?;
    w.write_all(stamp.as_bytes())?;
    w.write_all(&(index.dim as u32).to_le_bytes())?;
    w.write_all(&(index.len() as u64).to_le_bytes())?;
    for id in &index.ids {
        w.write_all(&id.to_le_bytes())?;
    }
    for s in &index.scales {
        w.write_all(&s.to_le_bytes())?;
    }
    w.write_all(bytemuck::cast_slice(&index.codes))?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        std::fs::remove_file(&tmp).ok();
    })
}

/// The cached matrix if the file exists, is whole and carries `stamp` and `dim`.
fn read_cache(path: &Path, stamp: &str, dim: usize) -> Option<CoarseIndex> {
    let mut f = std::fs::File::open(path).ok()?;
    let file_len = f.metadata().ok()?.len();
    let mut head = [0u8; 12];
    f.read_exact(&mut head).ok()?;
    let stamp_len = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
    if &head[..8] != CACHE_MAGIC || stamp_len != stamp.len() {
        return None;
    }
    let mut rest = vec![0u8; stamp_len + 12];
    f.read_exact(&mut rest).ok()?;
    let cached_dim = u32::from_le_bytes(rest[stamp_len..stamp_len + 4].try_into().ok()?) as usize;
    let rows = u64::from_le_bytes(rest[stamp_len + 4..].try_into().ok()?) as usize;
    if &rest[..stamp_len] != stamp.as_bytes() || cached_dim != dim {
        return None;
    }
    let body = rows.checked_mul(12 + dim)?;
    if file_len != (12 + stamp_len + 12 + body) as u64 {
        return None;
    }
    let mut meta = vec![0u8; rows * 12];
    f.read_exact(&mut meta).ok()?;
    let (ids, scales) = meta.split_at(rows * 8);
    let mut codes = vec![0i8; rows * dim];
    f.read_exact(bytemuck::cast_slice_mut(&mut codes)).ok()?;
    Some(CoarseIndex {
        dim,
        ids: ids.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(),
        scales: scales.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
        codes,
    })
}

fn desc(a: f32, b: f32) -> Ordering {
    b.partial_cmp(&a).unwrap_or(Ordering::Equal)
}

/// Symmetric int8 quantisation: `v ~ code * scale`, codes in -127..=127.
fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (vec![0; v.len()], 0.0);
    }
    let inv = 127.0 / max;
    (v.iter().map(|x| (x * inv).round().clamp(-127.0, 127.0) as i8).collect(), max / 127.0)
}

/// Written as widening i16 products summed in i32 so that it vectorises (pmaddwd and friends).
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
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

/// Exact cosine of two L2-normalised vectors.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The `top_k` photos most similar to `query` (an L2-normalised embedding of the index's model)
/// with a score of at least `min_score`, best first.
pub fn search(
    store: &Store,
    index: &CoarseIndex,
    query: &[f32],
    top_k: usize,
    min_score: Option<f32>,
) -> Result<Vec<Hit>, DesktopError> {
    if query.len() != index.dim {
        return Err(DesktopError::Io(format!("query embedding is {}-d, the index holds {}-d", query.len(), index.dim)));
    }
    let n = if index.len() < EXACT_BELOW { index.len() } else { rescore_count(top_k) };
    let mut hits = Vec::new();
    for (id, _) in index.candidates(query, n) {
        if let Some((path, e)) = store.photo_embedding(id)? {
            hits.push(Hit { path, score: dot(query, &e) });
        }
    }
    hits.sort_by(|a, b| desc(a.score, b.score).then_with(|| a.path.cmp(&b.path)));
    hits.retain(|h| min_score.is_none_or(|m| h.score >= m));
    hits.truncate(top_k);
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
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
    fn search_int8_scan_matches_exact_ranking() {
        // 3000 rows of 70 dims (not a multiple of the 16-wide unroll): the coarse scan's top 300
        // must hold the exact top 20, and its scores stay within int8 rounding of the exact ones.
        let dim = 70;
        let rows: Vec<Vec<f32>> = (0..3000).map(|i| unit(i, dim)).collect();
        let mut index = CoarseIndex::new(dim);
        for (i, r) in rows.iter().enumerate() {
            index.push(i as i64, r);
        }
        let q = unit(99_999, dim);
        let mut exact: Vec<(i64, f32)> = rows.iter().enumerate().map(|(i, r)| (i as i64, dot(&q, r))).collect();
        exact.sort_by(|a, b| desc(a.1, b.1));
        let got = index.candidates(&q, rescore_count(20));
        assert_eq!(got.len(), rescore_count(20));
        assert!(got.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
        for (id, s) in &exact[..20] {
            let found = got.iter().find(|g| g.0 == *id).unwrap_or_else(|| panic!("exact hit {id} not a candidate"));
            assert!((found.1 - s).abs() < 0.02, "approx {} vs exact {s}", found.1);
        }
        assert_eq!(index.candidates(&q, 10_000).len(), 3000);
        assert!(CoarseIndex::new(dim).candidates(&q, 5).is_empty());
    }

    #[test]
    fn search_matrix_cache_round_trip_and_staleness() {
        let dir = std::env::temp_dir().join(format!("brivl-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x-search");
        let mut index = CoarseIndex::new(19);
        for i in 0..5 {
            index.push(100 + i, &unit(i as u64, 19));
        }
        write_cache(&path, "id/7", &index).unwrap();
        let back = read_cache(&path, "id/7", 19).expect("current cache is read");
        assert_eq!((back.ids.clone(), back.scales.clone(), back.codes.clone()), (index.ids, index.scales, index.codes));
        assert!(read_cache(&path, "id/8", 19).is_none(), "another generation is stale");
        assert!(read_cache(&path, "id/7", 20).is_none(), "another width is stale");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(read_cache(&path, "id/7", 19).is_none(), "a cut file is not used");
        assert!(read_cache(&dir.join("missing"), "id/7", 19).is_none());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn search_quantize_and_dot() {
        assert_eq!(quantize(&[0.0, 0.0]), (vec![0, 0], 0.0));
        let (c, s) = quantize(&[0.5, -1.0, 0.25]);
        assert_eq!(c, [64, -127, 32]);
        assert!((s - 1.0 / 127.0).abs() < 1e-7);
        let a: Vec<i8> = (0..37).map(|i| (i * 7 % 255 - 127) as i8).collect();
        let b: Vec<i8> = (0..37).map(|i| (127 - i * 5 % 255) as i8).collect();
        let want: i32 = a.iter().zip(&b).map(|(&x, &y)| x as i32 * y as i32).sum();
        assert_eq!(dot_i8(&a, &b), want);
        assert_eq!(prepare_query("  海边的日落 \n").unwrap().query_used, "海边的日落");
        assert_eq!(prepare_query("a cat on a sofa").unwrap().query_used, "一只猫在沙发上");
    }
}
