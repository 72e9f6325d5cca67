//! The three BGE-M3 output heads, applied to the encoder's last hidden state (in f32).

mod colbert;
mod dense;
mod sparse;

pub(crate) use colbert::ColbertHead;
pub(crate) use dense::dense_vectors;
pub use sparse::SparseEmbedding;
pub(crate) use sparse::SparseHead;

use candle_core::{Tensor, D};
use rayon::prelude::*;

use crate::batch::HiddenStates;
use crate::Result;

/// Applies `head` to the rows of each sequence of a batch on their own, from the row `skip`
/// after its start to its end, in order: `lens[i]` is sequence `i`'s length.
///
/// One product over every row of the batch would be cheaper to launch, but a matrix-product
/// routine chooses its blocking (the order of each sum) from the matrix's shape, so a row's
/// result would depend on how many rows its pass had: identical texts scored about 1e-7 apart,
/// and could swap places in a ranking. Each sequence on its own gets the same product, on the
/// same rows, whatever its pass: on the f32 CPU path, whose encoder gives a text the same hidden
/// states in any batch, a text's outputs are bit for bit the same alone or in any batch.
pub(crate) fn per_sequence<T: Send>(
    hidden: &HiddenStates,
    lens: &[usize],
    skip: usize,
    head: impl Fn(&Tensor) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let rows = |(&start, &len): (&usize, &usize)| {
        head(
            &hidden
                .rows
                .narrow(0, start + skip, len.saturating_sub(skip))?,
        )
    };
    let sequences = hidden.starts.iter().zip(lens);
    if hidden.rows.device().is_cpu() {
        // Many small products: in parallel on the model's pool (the caller's).
        sequences
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(rows)
            .collect()
    } else {
        // One stream of kernels on a GPU: launched in order from this thread.
        sequences.map(rows).collect()
    }
}

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
