//! Sparse weights written the way a vector store takes them: the formats the server's
//! `sparse_format` and the encoder's `--sparse-format` offer.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::SparseEmbedding;

/// How sparse weights are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SparseFormat {
    /// `{"What": 0.08}`: keyed by token string, FlagEmbedding's `convert_id_to_token`.
    #[default]
    Token,
    /// `{"4865": 0.08}`: keyed by token id, FlagEmbedding's `lexical_weights`.
    Id,
    /// `{"indices": [4865], "values": [0.08]}`, ascending by id: Qdrant's and Milvus's sparse
    /// vectors.
    Indices,
    /// `"{4866:0.08}/250002"`: pgvector's `sparsevec` literal ([`SparseEmbedding::to_sparsevec`]).
    Sparsevec,
}

/// Sparse weights in one of the [`SparseFormat`]s; serializes to that format's JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum SparseWeights {
    /// Key to weight, in FlagEmbedding's order (`Token`, `Id`): a JSON object.
    Map(Vec<(String, f32)>),
    /// Ascending ids and their weights (`Indices`): `{"indices": [...], "values": [...]}`.
    Indices {
        /// Token ids, ascending.
        indices: Vec<u32>,
        /// Their weights.
        values: Vec<f32>,
    },
    /// A `sparsevec` literal (`Sparsevec`): a JSON string.
    Literal(String),
}

impl SparseWeights {
    /// `sparse` in `format`. `by_token` holds its weights keyed by token string
    /// ([`crate::BgeM3::sparse_by_token`], computed where the caller wants the tokenizer's
    /// work done); `Token` needs it, and without it the weights are keyed by id. A
    /// `sparsevec` has `vocab_size` dimensions ([`crate::BgeM3::vocab_size`]).
    ///
    /// ```
    /// use bge_m3_core::{SparseEmbedding, SparseFormat, SparseWeights};
    /// let sparse = SparseEmbedding { weights: vec![(30, 0.5), (7, 0.25)] };
    /// let json = |format| {
    ///     let weights = SparseWeights::new(sparse.clone(), format, 40, None);
    ///     serde_json::to_string(&weights).unwrap()
    /// };
    /// assert_eq!(json(SparseFormat::Id), r#"{"30":0.5,"7":0.25}"#);
    /// assert_eq!(json(SparseFormat::Indices), r#"{"indices":[7,30],"values":[0.25,0.5]}"#);
    /// assert_eq!(json(SparseFormat::Sparsevec), r#""{8:0.25,31:0.5}/40""#);
    /// ```
    pub fn new(
        sparse: SparseEmbedding,
        format: SparseFormat,
        vocab_size: usize,
        by_token: Option<Vec<(String, f32)>>,
    ) -> Self {
        match (format, by_token) {
            (SparseFormat::Token, Some(by_token)) => SparseWeights::Map(by_token),
            (SparseFormat::Indices, _) => {
                let (indices, values) = sparse.ascending().into_iter().unzip();
                SparseWeights::Indices { indices, values }
            }
            (SparseFormat::Sparsevec, _) => SparseWeights::Literal(sparse.to_sparsevec(vocab_size)),
            (SparseFormat::Id | SparseFormat::Token, _) => SparseWeights::Map(
                sparse
                    .weights
                    .into_iter()
                    .map(|(id, weight)| (id.to_string(), weight))
                    .collect(),
            ),
        }
    }
}

impl Serialize for SparseWeights {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SparseWeights::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, weight) in entries {
                    map.serialize_entry(key, weight)?;
                }
                map.end()
            }
            SparseWeights::Indices { indices, values } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("indices", indices)?;
                map.serialize_entry("values", values)?;
                map.end()
            }
            SparseWeights::Literal(literal) => serializer.serialize_str(literal),
        }
    }
}
