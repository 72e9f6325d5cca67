//! What the model computes for one text, and what is computed from it: a pair's scores, and
//! the dense vector cut to fewer dimensions.

use crate::heads::SparseEmbedding;
use crate::score::{colbert_score, dense_score, sparse_score, PairScores, ScoreWeights};
use crate::{Error, Result};

/// The outputs for one input text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embedding {
    /// The L2-normalised `<s>` vector (1024 values for BGE-M3), when asked for.
    pub dense: Option<Vec<f32>>,
    /// Lexical weights keyed by token id, when asked for.
    pub sparse: Option<SparseEmbedding>,
    /// One L2-normalised vector per token after `<s>` (`</s>` included), when asked for.
    pub colbert: Option<Vec<Vec<f32>>>,
    /// Tokens of the input after truncation, not counting `<s>` and `</s>`.
    pub tokens: usize,
}

/// What the memory held by one text's outputs depends on, for [`crate::BgeM3::output_bytes`]:
/// the length of its sequence and the ids that can get a sparse weight. Measured on a
/// tokenized text by [`crate::BgeM3::text_shape`], or bounded before tokenization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextShape {
    /// Ids of its `<s> … </s>` sequence (at least 2).
    pub ids: usize,
    /// Its distinct ids that can get a sparse weight: the most sparse weights it can have.
    pub lexical: usize,
}

impl TextShape {
    /// The smallest a text can be: `<s></s>`, without any weight. What a text whose tokens
    /// are not known yet holds at least.
    pub const SMALLEST: TextShape = TextShape { ids: 2, lexical: 0 };

    /// The largest a text of `ids` ids (`<s>` and `</s>` included) can be: every id between
    /// the markers distinct and weighted.
    ///
    /// ```
    /// use bge_m3_core::TextShape;
    /// assert_eq!(TextShape::at_most(10), TextShape { ids: 10, lexical: 8 });
    /// assert_eq!(TextShape::at_most(0), TextShape::SMALLEST);
    /// ```
    pub fn at_most(ids: usize) -> Self {
        let ids = ids.max(2);
        Self {
            ids,
            lexical: ids - 2,
        }
    }
}

impl Embedding {
    /// The five scores of this embedding (the query) against `passage`, from the pure
    /// functions of [`crate::score`]. Both need all three outputs ([`crate::Outputs::ALL`]).
    pub fn score(&self, passage: &Embedding, weights: ScoreWeights) -> Result<PairScores> {
        let missing = |output: &str| {
            Error::invalid_input(
                "outputs",
                format!("scoring needs the {output} output of both texts"),
            )
        };
        let (Some(qd), Some(pd)) = (&self.dense, &passage.dense) else {
            return Err(missing("dense"));
        };
        let (Some(qs), Some(ps)) = (&self.sparse, &passage.sparse) else {
            return Err(missing("sparse"));
        };
        let (Some(qc), Some(pc)) = (&self.colbert, &passage.colbert) else {
            return Err(missing("colbert"));
        };
        Ok(PairScores::new(
            dense_score(qd, pd),
            sparse_score(&qs.weights, &ps.weights),
            colbert_score(qc, pc),
            weights,
        ))
    }
}

/// Scores computed pairs: `passages[i]` against `queries[i]`, or against the one query of a
/// rerank when `queries` holds one. Each pair is scored from its own two embeddings, so a
/// score does not depend on the other pairs. `weights` are checked
/// ([`ScoreWeights::validate`]); every embedding needs all three outputs.
///
/// ```
/// use bge_m3_core::{score_pairs, Embedding, ScoreWeights, SparseEmbedding};
/// let text = Embedding {
///     dense: Some(vec![1.0, 0.0]),
///     sparse: Some(SparseEmbedding { weights: vec![(7, 0.5)] }),
///     colbert: Some(vec![vec![0.0, 1.0]]),
///     tokens: 1,
/// };
/// let scores = score_pairs(&[text.clone()], &[text.clone(), text], ScoreWeights::default())?;
/// assert_eq!(scores.len(), 2);
/// assert!((scores[0].dense - 1.0).abs() < 1e-6);
/// # Ok::<(), bge_m3_core::Error>(())
/// ```
pub fn score_pairs(
    queries: &[Embedding],
    passages: &[Embedding],
    weights: ScoreWeights,
) -> Result<Vec<PairScores>> {
    let weights = weights.validate()?;
    if queries.len() != 1 && queries.len() != passages.len() {
        return Err(Error::invalid_input(
            "pairs",
            format!(
                "{} queries for {} passages: give one query, or one per passage",
                queries.len(),
                passages.len()
            ),
        ));
    }
    passages
        .iter()
        .enumerate()
        .map(|(i, passage)| queries[if queries.len() == 1 { 0 } else { i }].score(passage, weights))
        .collect()
}

/// A dense vector cut to its first `dimensions` values and rescaled to unit length, as
/// OpenAI's `dimensions` asks. A vector no longer than `dimensions` is returned as it is; a
/// prefix of zeros stays zeros.
///
/// ```
/// use bge_m3_core::truncate_dense;
/// assert_eq!(truncate_dense(vec![0.6, 0.8, 0.0], 1), vec![1.0]);
/// assert_eq!(truncate_dense(vec![3.0, 4.0, 1.0], 2), vec![0.6, 0.8]);
/// assert_eq!(truncate_dense(vec![0.0, 0.0, 1.0], 2), vec![0.0, 0.0]);
/// assert_eq!(truncate_dense(vec![0.6, 0.8], 2), vec![0.6, 0.8]);
/// ```
pub fn truncate_dense(mut dense: Vec<f32>, dimensions: usize) -> Vec<f32> {
    if dense.len() <= dimensions {
        return dense;
    }
    dense.truncate(dimensions);
    let norm = dense.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        dense.iter_mut().for_each(|v| *v /= norm);
    }
    dense
}
