//! The three BGE-M3 output heads, applied to the encoder's last hidden state (in f32).

pub mod colbert;
pub mod dense;
pub mod sparse;

pub use colbert::ColbertHead;
pub use sparse::{SparseEmbedding, SparseHead};

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
