//! The ColBERT head: `colbert_linear(h[1:])` for every real token after `<s>` (so `</s>` is
//! kept), each row L2-normalised. Mirrors `BGEM3Model._colbert_embedding` and
//! `BGEM3FlagModel._process_colbert_vecs`.

use std::path::Path;

use candle_core::{Device, Module, Tensor};
use candle_nn::Linear;

use super::l2_normalize;
use crate::weights::load_linear_head;
use crate::Result;

/// `colbert_linear.pt`: `Linear(hidden, colbert_dim)` (1024 -> 1024 in BGE-M3).
///
/// Source: <https://github.com/FlagOpen/FlagEmbedding/blob/master/FlagEmbedding/inference/embedder/encoder_only/m3.py>
pub(crate) struct ColbertHead {
    linear: Linear,
}

impl ColbertHead {
    pub(crate) fn load(path: &Path, hidden_size: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            linear: load_linear_head(path, hidden_size, device)?,
        })
    }

    /// Width of one ColBERT vector.
    pub(crate) fn dim(&self) -> usize {
        self.linear.weight().dim(0).unwrap_or(0)
    }

    /// `(tokens, hidden)` f32 hidden states (already without `<s>` and padding) in,
    /// `(tokens, colbert_dim)` unit rows out.
    pub(crate) fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.linear.forward(hidden)?)
    }
}
