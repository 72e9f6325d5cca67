//! Similarity scores between a query and a passage, as pure functions over the outputs of
//! [`crate::BgeM3::encode`]. They follow `BGEM3Model.compute_dense_score`,
//! `compute_sparse_score`, `compute_colbert_score` and `BGEM3FlagModel.compute_score` for one
//! pair at a time.

use std::collections::HashMap;

use crate::{Error, Result};

/// Dot product of two dense vectors (their cosine, as BGE-M3 vectors are unit length).
/// Vectors of different lengths are compared over their common prefix; empty or zero vectors
/// score 0.
///
/// ```
/// use bge_m3_core::score::dense_score;
/// assert_eq!(dense_score(&[0.6, 0.8], &[0.6, 0.8]), 1.0);
/// assert_eq!(dense_score(&[0.0, 0.0], &[0.6, 0.8]), 0.0);
/// ```
pub fn dense_score(query: &[f32], passage: &[f32]) -> f32 {
    // Eight independent partial sums: the compiler keeps them in one SIMD register, where a
    // single running sum (a strict order of float additions) could not be vectorised.
    const LANES: usize = 8;
    let len = query.len().min(passage.len());
    let (query, passage) = (&query[..len], &passage[..len]);
    let mut partial = [0f32; LANES];
    let mut q_chunks = query.chunks_exact(LANES);
    let mut p_chunks = passage.chunks_exact(LANES);
    for (q, p) in q_chunks.by_ref().zip(p_chunks.by_ref()) {
        for lane in 0..LANES {
            partial[lane] += q[lane] * p[lane];
        }
    }
    let tail: f32 = q_chunks
        .remainder()
        .iter()
        .zip(p_chunks.remainder())
        .map(|(a, b)| a * b)
        .sum();
    partial.iter().sum::<f32>() + tail
}

/// Lexical matching score: the sum over token ids present in both texts of
/// `w_query * w_passage`. Empty weights score 0.
///
/// ```
/// use bge_m3_core::score::sparse_score;
/// let query = [(10, 0.5), (11, 0.2)];
/// let passage = [(11, 0.5), (12, 0.9), (10, 0.1)];
/// assert!((sparse_score(&query, &passage) - (0.5 * 0.1 + 0.2 * 0.5)).abs() < 1e-7);
/// assert_eq!(sparse_score(&query, &[]), 0.0);
/// ```
pub fn sparse_score(query: &[(u32, f32)], passage: &[(u32, f32)]) -> f32 {
    // Index the shorter list (few insertions) and probe it with the longer one.
    let (small, large) = if query.len() <= passage.len() {
        (query, passage)
    } else {
        (passage, query)
    };
    let index: HashMap<u32, f32> = small.iter().copied().collect();
    large
        .iter()
        .filter_map(|(id, w)| index.get(id).map(|other| w * other))
        .sum::<f32>()
        // An empty sum is -0.0; no shared token scores a plain 0.
        + 0.0
}

/// Late-interaction score: for every query vector the best dot product with any passage
/// vector, averaged over the query vectors. An empty query or passage scores 0.
///
/// ```
/// use bge_m3_core::score::colbert_score;
/// let query = [vec![1.0, 0.0], vec![0.0, 1.0]];
/// let passage = [vec![1.0, 0.0], vec![0.6, 0.8]];
/// // Row 1 matches [1, 0] (1.0), row 2 matches [0.6, 0.8] (0.8).
/// assert!((colbert_score(&query, &passage) - 0.9).abs() < 1e-7);
/// assert_eq!(colbert_score::<Vec<f32>, Vec<f32>>(&[], &passage), 0.0);
/// ```
pub fn colbert_score<Q: AsRef<[f32]>, P: AsRef<[f32]>>(query: &[Q], passage: &[P]) -> f32 {
    if query.is_empty() || passage.is_empty() {
        return 0.0;
    }
    let total: f32 = query
        .iter()
        .map(|q| {
            passage
                .iter()
                .map(|p| dense_score(q.as_ref(), p.as_ref()))
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .sum();
    total / query.len() as f32
}

/// Weights of the fused scores, in FlagEmbedding's `weights_for_different_modes` order:
/// dense, sparse, ColBERT.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreWeights {
    /// Weight of the dense score.
    pub dense: f32,
    /// Weight of the sparse (lexical) score.
    pub sparse: f32,
    /// Weight of the ColBERT score.
    pub colbert: f32,
}

impl Default for ScoreWeights {
    /// `[0.4, 0.2, 0.4]`, FlagEmbedding's and the original service's default.
    fn default() -> Self {
        Self {
            dense: 0.4,
            sparse: 0.2,
            colbert: 0.4,
        }
    }
}

impl ScoreWeights {
    /// The largest weight: the f32 sum of three of them is still finite (the fusions divide by
    /// it, and an infinite sum would make them NaN or 0).
    pub const MAX: f32 = 1e38;

    /// The smallest weight that counts towards a positive sum: a smaller one may round to 0 as
    /// an f32 (JSON's `1e-50` is `0.0`), so at least one weight must be this large.
    pub const MIN_POSITIVE: f32 = 1e-37;

    /// Checks the one rule of the weights, wherever they come from (a request, a setting, a
    /// Python argument): each is a finite number from 0 to [`ScoreWeights::MAX`], and at least
    /// one is [`ScoreWeights::MIN_POSITIVE`] or more, so that their sum is positive and finite.
    /// Both bounds can be written in JSON Schema, so a document can state the rule exactly.
    ///
    /// ```
    /// use bge_m3_core::score::ScoreWeights;
    /// assert!(ScoreWeights::try_from([1.0, 0.0, 0.0]).is_ok());
    /// assert!(ScoreWeights::try_from([1e38, 1e38, 1e38]).is_ok());
    /// assert!(ScoreWeights::try_from([1e-37, 0.0, 0.0]).is_ok());
    /// assert!(ScoreWeights::try_from([0.0, 0.0, 0.0]).is_err());
    /// assert!(ScoreWeights::try_from([-1.0, 1.0, 1.0]).is_err());
    /// assert!(ScoreWeights::try_from([2e38, 0.0, 0.0]).is_err());
    /// assert!(ScoreWeights::try_from([1e-38, 1e-40, 0.0]).is_err());
    /// ```
    pub fn validate(self) -> Result<Self> {
        let all = [self.dense, self.sparse, self.colbert];
        if all.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err(Error::invalid_input(
                "weights",
                format!("each weight must be a finite number >= 0, got {all:?}"),
            ));
        }
        if all.iter().any(|w| *w > Self::MAX) {
            return Err(Error::invalid_input(
                "weights",
                format!(
                    "each weight must be at most 1e38 (the sum of three must be finite), \
                     got {all:?}"
                ),
            ));
        }
        if all.iter().all(|w| *w < Self::MIN_POSITIVE) {
            return Err(Error::invalid_input(
                "weights",
                format!(
                    "the weights must have a positive sum: at least one must be 1e-37 or more \
                     (a smaller one may round to 0), got {all:?}"
                ),
            ));
        }
        Ok(self)
    }
}

impl TryFrom<[f32; 3]> for ScoreWeights {
    type Error = Error;

    fn try_from([dense, sparse, colbert]: [f32; 3]) -> Result<Self> {
        ScoreWeights {
            dense,
            sparse,
            colbert,
        }
        .validate()
    }
}

/// `(w_dense * dense + w_sparse * sparse) / (w_dense + w_sparse)`.
///
/// When both weights are 0 the fusion is undefined and the result is NaN, as in FlagEmbedding.
///
/// ```
/// use bge_m3_core::score::{sparse_dense_score, ScoreWeights};
/// let w = ScoreWeights { dense: 0.4, sparse: 0.2, colbert: 0.4 };
/// assert!((sparse_dense_score(0.6, 0.3, w) - 0.5).abs() < 1e-6);
/// ```
pub fn sparse_dense_score(dense: f32, sparse: f32, weights: ScoreWeights) -> f32 {
    // In f64, so that extreme weights (subnormal, or products past f32::MAX) still give the
    // weighted mean; the result rounds to FlagEmbedding's f32 one within an ulp.
    let (wd, ws) = (f64::from(weights.dense), f64::from(weights.sparse));
    ((wd * f64::from(dense) + ws * f64::from(sparse)) / (wd + ws)) as f32
}

/// `(w_dense * dense + w_sparse * sparse + w_colbert * colbert) / (w_dense + w_sparse + w_colbert)`.
///
/// ```
/// use bge_m3_core::score::{colbert_sparse_dense_score, ScoreWeights};
/// let w = ScoreWeights { dense: 1.0, sparse: 1.0, colbert: 2.0 };
/// assert!((colbert_sparse_dense_score(0.4, 0.2, 0.7, w) - 0.5).abs() < 1e-6);
/// ```
pub fn colbert_sparse_dense_score(
    dense: f32,
    sparse: f32,
    colbert: f32,
    weights: ScoreWeights,
) -> f32 {
    let (wd, ws, wc) = (
        f64::from(weights.dense),
        f64::from(weights.sparse),
        f64::from(weights.colbert),
    );
    ((wd * f64::from(dense) + ws * f64::from(sparse) + wc * f64::from(colbert)) / (wd + ws + wc))
        as f32
}

/// The five scores of one (query, passage) pair, as `BGEM3FlagModel.compute_score` names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairScores {
    /// `"dense"`: the inner product of the dense vectors ([`dense_score`]).
    pub dense: f32,
    /// `"sparse"`: the lexical matching score ([`sparse_score`]).
    pub sparse: f32,
    /// `"colbert"`: the late-interaction score ([`colbert_score`]).
    pub colbert: f32,
    /// `"sparse+dense"`.
    pub sparse_dense: f32,
    /// `"colbert+sparse+dense"`.
    pub colbert_sparse_dense: f32,
}

impl PairScores {
    /// Fuses the three raw scores with `weights`.
    pub fn new(dense: f32, sparse: f32, colbert: f32, weights: ScoreWeights) -> Self {
        Self {
            dense,
            sparse,
            colbert,
            sparse_dense: sparse_dense_score(dense, sparse, weights),
            colbert_sparse_dense: colbert_sparse_dense_score(dense, sparse, colbert, weights),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_score_handles_every_length() {
        for len in [0, 1, 7, 8, 9, 1023, 1024] {
            let a: Vec<f32> = (0..len).map(|i| (i % 5) as f32 - 2.0).collect();
            let b: Vec<f32> = (0..len).map(|i| (i % 3) as f32 * 0.5).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dense_score(&a, &b) - naive).abs() <= 1e-3, "len {len}");
        }
        // Different lengths: the common prefix.
        assert_eq!(dense_score(&[1.0; 10], &[2.0; 9]), 18.0);
    }

    #[test]
    fn colbert_takes_the_best_passage_row_even_when_negative() {
        // Unlike FlagEmbedding's batched padding, no zero row can win over a negative match.
        let query = [vec![1.0f32, 0.0]];
        let passage = [vec![-1.0f32, 0.0], vec![-0.6, -0.8]];
        assert!((colbert_score(&query, &passage) + 0.6).abs() < 1e-7);
    }

    #[test]
    fn sparse_score_is_symmetric() {
        let a = [(1, 0.5), (2, 0.25), (7, 1.0)];
        let b = [(7, 0.5), (2, 2.0)];
        assert_eq!(sparse_score(&a, &b), sparse_score(&b, &a));
        assert!((sparse_score(&a, &b) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn fusions_hold_for_extreme_weights() {
        let tiny = ScoreWeights {
            dense: 1e-45,
            sparse: 0.0,
            colbert: 0.0,
        };
        assert_eq!(sparse_dense_score(0.658, 0.1, tiny), 0.658);
        assert_eq!(colbert_sparse_dense_score(0.658, 0.1, 0.9, tiny), 0.658);
        let huge = ScoreWeights {
            dense: 1e38,
            sparse: 1e38,
            colbert: 0.0,
        };
        assert!((sparse_dense_score(0.6, 0.2, huge) - 0.4).abs() < 1e-7);
        assert!((colbert_sparse_dense_score(0.6, 0.2, 0.9, huge) - 0.4).abs() < 1e-7);
        // No shared token: a plain zero, not -0.0.
        assert!(sparse_score(&[(1, 0.5)], &[(2, 0.5)]).is_sign_positive());
    }

    #[test]
    fn weights_reject_nan_and_infinity() {
        for bad in [
            [f32::NAN, 1.0, 1.0],
            [f32::INFINITY, 0.0, 0.0],
            [0.0, -0.0, 0.0],
        ] {
            let err = ScoreWeights::try_from(bad).unwrap_err();
            assert!(err.to_string().contains("`weights`"), "{err}");
        }
    }

    #[test]
    fn zero_dense_and_sparse_weights_leave_that_fusion_undefined() {
        let w = ScoreWeights::try_from([0.0, 0.0, 1.0]).unwrap();
        let scores = PairScores::new(0.5, 0.1, 0.7, w);
        assert!(scores.sparse_dense.is_nan());
        assert!((scores.colbert_sparse_dense - 0.7).abs() < 1e-7);
    }
}
