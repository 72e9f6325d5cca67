//! The dense head: the `<s>` (CLS) vector of the last hidden state, L2-normalised.
//! Mirrors `BGEM3Model._dense_embedding` with `pooling_method="cls"` in FlagEmbedding.

use candle_core::Tensor;

use crate::encoder::l2_normalize;
use crate::Result;

/// `(batch, len, hidden)` hidden states in, `(batch, hidden)` unit vectors out.
pub fn dense_vectors(hidden: &Tensor) -> Result<Tensor> {
    let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
    l2_normalize(&cls)
}
