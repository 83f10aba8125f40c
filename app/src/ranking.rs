//! Search over the stored embeddings: cosine scores (embeddings are L2-normalised, so a dot
//! product), a minimum score, the best `top_k` first.

/// A query's match: the index of the photo in the list searched, and its score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub index: usize,
    pub score: f32,
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Ranks `photos` against `query`: scores below `min_score` and entries listed in `exclude` are
/// left out; ties keep the list's order. Embeddings of another length than the query's (an index
/// built with another model) never match.
pub fn rank<'a>(
    query: &[f32],
    photos: impl IntoIterator<Item = &'a [f32]>,
    top_k: usize,
    min_score: f32,
    exclude: Option<usize>,
) -> Vec<Hit> {
    let mut hits: Vec<Hit> = photos
        .into_iter()
        .enumerate()
        .filter(|(i, e)| Some(*i) != exclude && e.len() == query.len())
        .map(|(index, e)| Hit { index, score: dot(query, e) })
        .filter(|h| h.score >= min_score)
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    hits.truncate(top_k);
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_score_with_limits() {
        let q = [1.0, 0.0];
        let photos: Vec<Vec<f32>> = vec![vec![0.6, 0.8], vec![1.0, 0.0], vec![0.0, 1.0], vec![0.8, 0.6], vec![1.0]];
        let hits = rank(&q, photos.iter().map(Vec::as_slice), 10, 0.5, None);
        assert_eq!(hits.iter().map(|h| h.index).collect::<Vec<_>>(), vec![1, 3, 0]);
        assert!((hits[1].score - 0.8).abs() < 1e-6);
        let top1 = rank(&q, photos.iter().map(Vec::as_slice), 1, -1.0, Some(1));
        assert_eq!(top1, vec![Hit { index: 3, score: 0.8 }]);
    }
}
