//! Sparse weights written the way a vector store takes them: the formats the server's
//! `sparse_format` and the encoder's `--sparse-format` offer.

use std::fmt;
use std::str::FromStr;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::{Error, SparseEmbedding};

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

impl SparseFormat {
    /// Every format, in the order a help text lists them.
    pub const ALL: [SparseFormat; 4] = [
        SparseFormat::Token,
        SparseFormat::Id,
        SparseFormat::Indices,
        SparseFormat::Sparsevec,
    ];

    /// The format's name, as the server's `sparse_format` and the encoder's `--sparse-format`
    /// take it (and [`FromStr`] parses it).
    ///
    /// ```
    /// use bge_m3_core::SparseFormat;
    /// let names: Vec<&str> = SparseFormat::ALL.iter().map(|f| f.name()).collect();
    /// assert_eq!(names, ["token", "id", "indices", "sparsevec"]);
    /// assert_eq!("sparsevec".parse::<SparseFormat>().unwrap(), SparseFormat::Sparsevec);
    /// assert_eq!(SparseFormat::Indices.to_string(), "indices");
    /// let err = "dense".parse::<SparseFormat>().unwrap_err().to_string();
    /// assert_eq!(err, "invalid `sparse_format`: must be one of token, id, indices, sparsevec, got `dense`");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            SparseFormat::Token => "token",
            SparseFormat::Id => "id",
            SparseFormat::Indices => "indices",
            SparseFormat::Sparsevec => "sparsevec",
        }
    }

    /// What the format writes, in one line (for a command line's help: the variant's doc).
    pub const fn description(self) -> &'static str {
        match self {
            SparseFormat::Token => {
                "{\"What\": 0.08}: keyed by token string, FlagEmbedding's convert_id_to_token"
            }
            SparseFormat::Id => {
                "{\"4865\": 0.08}: keyed by token id, FlagEmbedding's lexical_weights"
            }
            SparseFormat::Indices => {
                "{\"indices\": [4865], \"values\": [0.08]}, ascending by id: Qdrant's and \
                 Milvus's sparse vectors"
            }
            SparseFormat::Sparsevec => {
                "\"{4866:0.08}/250002\": pgvector's sparsevec literal (1-based, ascending)"
            }
        }
    }
}

impl fmt::Display for SparseFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SparseFormat {
    type Err = Error;

    /// One of the [`SparseFormat::name`]s; anything else is an [`Error::InvalidInput`] on
    /// field `sparse_format` that lists them.
    fn from_str(name: &str) -> Result<Self, Error> {
        SparseFormat::ALL
            .into_iter()
            .find(|format| format.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = SparseFormat::ALL.iter().map(|f| f.name()).collect();
                Error::invalid_input(
                    "sparse_format",
                    format!("must be one of {}, got `{name}`", names.join(", ")),
                )
            })
    }
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
