//! The sparse (lexical weights) head: `relu(sparse_linear(h))` per token, max-pooled per token
//! id. Mirrors `BGEM3Model._sparse_embedding` and `BGEM3FlagModel._process_token_weights`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Module, Tensor};
use candle_nn::Linear;

use crate::tokenize::SpecialTokens;
use crate::weights::load_linear_head;
use crate::Result;

/// `sparse_linear.pt`: `Linear(hidden, 1)`.
///
/// Source: <https://github.com/FlagOpen/FlagEmbedding/blob/master/FlagEmbedding/inference/embedder/encoder_only/m3.py>
pub(crate) struct SparseHead {
    linear: Linear,
}

impl SparseHead {
    pub(crate) fn load(path: &Path, hidden_size: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            linear: load_linear_head(path, hidden_size, device)?,
        })
    }

    /// `(tokens, hidden)` f32 hidden states in, one non-negative weight per token out.
    pub(crate) fn token_weights(&self, hidden: &Tensor) -> Result<Vec<f32>> {
        let weights = self.linear.forward(hidden)?.relu()?.squeeze(1)?;
        Ok(weights.to_vec1::<f32>()?)
    }
}

/// Lexical weights of one text: token id -> weight, every weight > 0.
///
/// Entries are in the order in which FlagEmbedding's dict receives them (the first position
/// where the id has a positive weight), which decides the winner when two ids decode to the
/// same token string (see [`crate::BgeM3::sparse_by_token`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseEmbedding {
    /// `(token id, weight)` pairs, each id once, every weight > 0.
    pub weights: Vec<(u32, f32)>,
}

impl SparseEmbedding {
    /// Max-pools per-token weights by id, dropping `<s>`, `</s>`, `<pad>`, `<unk>` and every
    /// weight that is not > 0, as `BGEM3FlagModel._process_token_weights` does.
    ///
    /// ```
    /// use bge_m3_core::{SparseEmbedding, SpecialTokens};
    /// let specials = SpecialTokens { cls: 0, pad: 1, eos: 2, unk: 3 };
    /// let sparse = SparseEmbedding::from_token_weights(
    ///     &[0, 10, 11, 10, 3, 12, 2],
    ///     &[0.9, 0.2, 0.0, 0.5, 0.7, 0.1, 0.9],
    ///     specials,
    /// );
    /// assert_eq!(sparse.weights, vec![(10, 0.5), (12, 0.1)]);
    /// ```
    pub fn from_token_weights(ids: &[u32], weights: &[f32], specials: SpecialTokens) -> Self {
        let mut pooled: Vec<(u32, f32)> = Vec::new();
        let mut slot: HashMap<u32, usize> = HashMap::new();
        for (&id, &weight) in ids.iter().zip(weights) {
            // `weight > 0.0` is false for NaN too, as FlagEmbedding's `w > 0` is.
            let positive = weight > 0.0;
            if specials.is_unused_for_sparse(id) || !positive {
                continue;
            }
            match slot.get(&id) {
                Some(&i) => pooled[i].1 = pooled[i].1.max(weight),
                None => {
                    slot.insert(id, pooled.len());
                    pooled.push((id, weight));
                }
            }
        }
        Self { weights: pooled }
    }

    /// Whether no token has a positive weight.
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Number of weighted token ids.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// The weights ascending by token id, as vector databases take them (Qdrant's
    /// `SparseVector`, Milvus's sparse vectors, pgvector's `sparsevec`).
    pub fn ascending(&self) -> Vec<(u32, f32)> {
        let mut weights = self.weights.clone();
        weights.sort_unstable_by_key(|&(id, _)| id);
        weights
    }

    /// pgvector's `sparsevec` text literal, `{i:v,...}/dim`: the weights ascending by id, where
    /// `i` is the id plus one (pgvector's indices start at 1) and `dim` is the vocabulary size
    /// ([`crate::BgeM3::vocab_size`]). Each weight is written in the shortest form that reads
    /// back as the same f32.
    ///
    /// ```
    /// use bge_m3_core::SparseEmbedding;
    /// let sparse = SparseEmbedding { weights: vec![(30, 0.5), (7, 0.25)] };
    /// assert_eq!(sparse.to_sparsevec(40), "{8:0.25,31:0.5}/40");
    /// ```
    pub fn to_sparsevec(&self, dim: usize) -> String {
        let elements: Vec<String> = self
            .ascending()
            .iter()
            .map(|(id, weight)| format!("{}:{weight}", u64::from(*id) + 1))
            .collect();
        format!("{{{}}}/{dim}", elements.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparsevec_literal_keeps_every_f32_and_an_empty_one_has_its_dimension() {
        assert_eq!(SparseEmbedding::default().to_sparsevec(250002), "{}/250002");
        let weight = 0.083_561_25_f32;
        let sparse = SparseEmbedding {
            weights: vec![(4865, weight)],
        };
        let literal = sparse.to_sparsevec(250002);
        let value: f32 = literal[6..literal.find('}').unwrap()].parse().unwrap();
        assert!(literal.starts_with("{4866:"), "{literal}");
        assert_eq!(value, weight);
    }

    #[test]
    fn ascending_sorts_by_id_and_keeps_the_weights() {
        let sparse = SparseEmbedding {
            weights: vec![(30, 0.5), (7, 0.25), (12, 1.0)],
        };
        assert_eq!(sparse.ascending(), [(7, 0.25), (12, 1.0), (30, 0.5)]);
    }
}
