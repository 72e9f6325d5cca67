//! The dense head: the `<s>` (CLS) vector of the last hidden state, L2-normalised.
//! Mirrors `BGEM3Model._dense_embedding` with `pooling_method="cls"` in FlagEmbedding.

use candle_core::Tensor;

use super::l2_normalize;
use crate::batch::HiddenStates;
use crate::Result;

/// One unit vector per sequence, `(batch, hidden)`: the row of its first token (`<s>`).
///
/// Source: <https://github.com/FlagOpen/FlagEmbedding/blob/master/FlagEmbedding/inference/embedder/encoder_only/m3.py>
pub(crate) fn dense_vectors(hidden: &HiddenStates) -> Result<Tensor> {
    let starts: Vec<u32> = hidden.starts.iter().map(|&s| s as u32).collect();
    let index = Tensor::from_vec(starts, hidden.starts.len(), hidden.rows.device())?;
    l2_normalize(&hidden.rows.index_select(&index, 0)?)
}
