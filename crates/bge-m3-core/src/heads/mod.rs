//! The three BGE-M3 output heads, applied to the encoder's last hidden state (in f32).

mod colbert;
mod dense;
mod sparse;

pub(crate) use colbert::ColbertHead;
pub(crate) use dense::dense_vectors;
pub use sparse::SparseEmbedding;
pub(crate) use sparse::SparseHead;

use candle_core::{Tensor, D};

use crate::Result;

/// L2-normalises the rows of `x` (last dimension) like `torch.nn.functional.normalize`: a zero
/// row stays zero instead of becoming NaN.
pub(crate) fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    Ok(x.broadcast_div(&norm)?)
}
