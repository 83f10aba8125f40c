//! `brivl search`: rank the indexed photos by cosine similarity to a query embedding, with
//! `brivl-core`'s ranking.
//!
//! Every stored embedding is quantised once to int8 ([`CoarseIndex`]) and scanned for candidates;
//! the best `rescore_for(k)` are rescored exactly from the stored f16 embeddings, so the scores
//! printed are exact and the order is exact among the candidates (small indexes are exact
//! outright).
//!
//! Reading and quantising every embedding from SQLite is the slow part of a search at 100k
//! photos, so the matrix is cached in a file beside the index (`<index>-search`), stamped with
//! the index's identity and write generation; a stale or unreadable cache is rebuilt from the
//! database (and a cache that cannot be written only costs speed).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use brivl_core::ranking::{rank, CoarseIndex};
use brivl_core::translate::{Dictionary, PreparedQuery};

use crate::store::Store;
use crate::DesktopError;

/// The query as the text tower gets it: BriVL reads Chinese, so English words and phrases are
/// translated offline (`translate`); Chinese passes through trimmed.
pub fn prepare_query(query: &str) -> Result<PreparedQuery, DesktopError> {
    let dict = Dictionary::shared().map_err(|e| DesktopError::Dictionary(e.to_string()))?;
    Ok(dict.prepare_query(query.trim()))
}

/// One result.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub path: String,
    pub score: f32,
}

/// The index's search matrix: from the cache file when it is current, else from the database
/// (then the cache is rewritten).
pub fn open_matrix(store: &Store) -> Result<CoarseIndex, DesktopError> {
    // Read before the rows: a write landing in between makes the cache look stale, never fresh.
    let stamp = store.stamp()?;
    let cache = cache_path(store.path());
    if let Some(index) = read_cache(&cache, &stamp, store.model.dim) {
        return Ok(index);
    }
    let index = load_matrix(store)?;
    let _ = write_cache(&cache, &stamp, &index); // best effort: a read-only folder only costs speed
    Ok(index)
}

/// Reads and quantises every embedding of `store`.
pub fn load_matrix(store: &Store) -> Result<CoarseIndex, DesktopError> {
    let mut index = CoarseIndex::new(store.model.dim);
    let mut bad = None;
    store.for_each_embedding(|id, bytes| match store.decode(id, bytes) {
        Ok(row) => {
            index.push(id, &row);
        }
        Err(e) => {
            bad.get_or_insert(e);
        }
    })?;
    match bad {
        Some(e) => Err(e),
        None => Ok(index),
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
    crate::atomic_file::write_with(path, |w| write_matrix(w, stamp, index))
}

fn write_matrix(w: &mut impl Write, stamp: &str, index: &CoarseIndex) -> std::io::Result<()> {
    w.write_all(CACHE_MAGIC)?;
    w.write_all(&(stamp.len() as u32).to_le_bytes())?;
    w.write_all(stamp.as_bytes())?;
    let (ids, scales, codes) = index.parts();
    w.write_all(&(index.dim() as u32).to_le_bytes())?;
    w.write_all(&(index.len() as u64).to_le_bytes())?;
    for id in ids {
        w.write_all(&id.to_le_bytes())?;
    }
    for s in scales {
        w.write_all(&s.to_le_bytes())?;
    }
    w.write_all(bytemuck::cast_slice(codes))
}

/// The cached matrix if the file exists, is whole and carries `stamp` and `dim`.
fn read_cache(path: &Path, stamp: &str, dim: usize) -> Option<CoarseIndex> {
    let f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    parse_matrix(std::io::BufReader::new(f), len, stamp, dim)
}

/// Parses a search matrix cache of `len` bytes; `None` unless it is whole and carries `stamp`
/// and `dim`. Nothing is allocated before the length checks out, so a crafted file costs no
/// more memory than its own size.
pub fn parse_matrix(mut r: impl Read, len: u64, stamp: &str, dim: usize) -> Option<CoarseIndex> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head).ok()?;
    let stamp_len = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
    if &head[..8] != CACHE_MAGIC || stamp_len != stamp.len() {
        return None;
    }
    let mut rest = vec![0u8; stamp_len + 12];
    r.read_exact(&mut rest).ok()?;
    let cached_dim = u32::from_le_bytes(rest[stamp_len..stamp_len + 4].try_into().ok()?) as usize;
    let rows = usize::try_from(u64::from_le_bytes(rest[stamp_len + 4..].try_into().ok()?)).ok()?;
    if &rest[..stamp_len] != stamp.as_bytes() || cached_dim != dim {
        return None;
    }
    let body = rows.checked_mul(dim.checked_add(12)?)?;
    if Some(len) != body.checked_add(24 + stamp_len).and_then(|n| u64::try_from(n).ok()) {
        return None;
    }
    let mut meta = vec![0u8; rows * 12];
    r.read_exact(&mut meta).ok()?;
    let (ids, scales) = meta.split_at(rows * 8);
    let mut codes = vec![0i8; rows * dim];
    r.read_exact(bytemuck::cast_slice_mut(&mut codes)).ok()?;
    CoarseIndex::from_parts(
        dim,
        ids.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default())).collect(),
        scales.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap_or_default())).collect(),
        codes,
    )
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
    if query.len() != index.dim() {
        return Err(DesktopError::Io(format!(
            "query embedding is {}-d, the index holds {}-d",
            query.len(),
            index.dim()
        )));
    }
    let mut rows = Vec::new();
    for (id, _) in index.candidates(query, index.rescore_for(top_k)) {
        if let Some(row) = store.photo_embedding(id)? {
            rows.push(row);
        }
    }
    let hits = rank(query, rows.iter().map(|(path, e)| (path.as_str(), e.as_slice())), top_k, min_score);
    Ok(hits.into_iter().map(|h| Hit { path: h.key.to_string(), score: h.score }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_matrix_cache_round_trip_and_staleness() {
        let dir = std::env::temp_dir().join(format!("brivl-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x-search");
        let mut index = CoarseIndex::new(19);
        for i in 0..5 {
            index.push(100 + i, &(0..19).map(|j| ((i * 19 + j) as f32).sin()).collect::<Vec<_>>());
        }
        write_cache(&path, "id/7", &index).unwrap();
        assert_eq!(read_cache(&path, "id/7", 19).expect("current cache is read"), index);
        assert!(read_cache(&path, "id/8", 19).is_none(), "another generation is stale");
        assert!(read_cache(&path, "id/7", 20).is_none(), "another width is stale");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(read_cache(&path, "id/7", 19).is_none(), "a cut file is not used");
        assert!(read_cache(&dir.join("missing"), "id/7", 19).is_none());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn search_matrix_parser_survives_mutations() {
        // Seeded byte flips, overwrites with boundary values and truncations of a valid cache:
        // `None` or an index, never a panic, never an allocation past the input's size.
        let mut index = CoarseIndex::new(5);
        for i in 0..4 {
            index.push(i, &[0.1 * i as f32, -0.2, 0.3, 0.4, 0.5]);
        }
        let mut good = Vec::new();
        write_matrix(&mut good, "id/1", &index).unwrap();
        assert_eq!(parse_matrix(&good[..], good.len() as u64, "id/1", 5), Some(index));
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut m = good.clone();
            match next() % 3 {
                0 => {
                    let at = next() as usize % m.len();
                    m[at] ^= 1 << (next() % 8);
                }
                1 => {
                    let at = next() as usize % (m.len() - 3);
                    let v: [u8; 4] = [[0; 4], [0xff; 4], 0x7fff_ffffu32.to_le_bytes()][next() as usize % 3];
                    m[at..at + 4].copy_from_slice(&v);
                }
                _ => m.truncate(next() as usize % m.len()),
            }
            let len = if next() % 4 == 0 { next() } else { m.len() as u64 };
            let _ = parse_matrix(&m[..], len, "id/1", 5);
        }
    }

    #[test]
    fn search_prepares_queries() {
        assert_eq!(prepare_query("  海边的日落 \n").unwrap().query_used, "海边的日落");
        assert_eq!(prepare_query("a cat on a sofa").unwrap().query_used, "一只猫在沙发上");
    }
}
