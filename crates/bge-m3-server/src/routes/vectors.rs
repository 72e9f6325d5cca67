//! How the outputs of one input are written in a response: `dimensions`, `encoding_format`
//! and `sparse_format`, shared by `/v1/embeddings` and `/embeddings`.

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use bge_m3_core::{Embedding, SparseEmbedding, SparseFormat, SparseWeights};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema};
use utoipa::openapi::RefOr;

/// `encoding_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EncodingFormat {
    /// JSON numbers.
    #[default]
    Float,
    /// Base64 of the little-endian f32 bytes, what OpenAI's Python SDK asks for by default.
    Base64,
}

impl<'de> Deserialize<'de> for EncodingFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        named(deserializer, &["float", "base64"], |name| match name {
            "float" => Some(Self::Float),
            "base64" => Some(Self::Base64),
            _ => None,
        })
    }
}

/// `sparse_format`: one of the core's [`SparseFormat`] names, as a string (see [`named`]), or
/// null; with `#[serde(default)]`, absent too.
pub(crate) fn sparse_format<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SparseFormat>, D::Error> {
    struct Name(SparseFormat);
    impl<'de> Deserialize<'de> for Name {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            named(deserializer, &SPARSE_FORMATS, |name| name.parse().ok()).map(Name)
        }
    }
    Ok(Option::<Name>::deserialize(deserializer)?.map(|name| name.0))
}

/// The names of [`SparseFormat::ALL`], for serde's messages.
const SPARSE_FORMATS: [&str; SparseFormat::ALL.len()] = {
    let mut names = [""; SparseFormat::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = SparseFormat::ALL[i].name();
        i += 1;
    }
    names
};

/// The OpenAPI schema of the core's [`SparseFormat`], named `SparseFormat` in the document: its
/// names, each with what it writes.
pub(crate) struct SparseFormatSchema;

impl utoipa::PartialSchema for SparseFormatSchema {
    fn schema() -> RefOr<Schema> {
        let each: Vec<String> = SparseFormat::ALL
            .iter()
            .map(|format| format!("`{format}`: {}", format.description()))
            .collect();
        ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .description(Some(format!(
                "`sparse_format`: how sparse weights are written. {}.",
                each.join("; ")
            )))
            .enum_values(Some(SPARSE_FORMATS))
            .into()
    }
}

impl utoipa::ToSchema for SparseFormatSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("SparseFormat")
    }
}

/// A value given by one of its `names`, as a string. serde's derived enums would read any
/// other JSON type through serde_json's `deserialize_enum`, which reports a number as a syntax
/// error (400 `invalid_json`, no field); a string is asked for here, so that the error is
/// the field's ("invalid type: integer `5`, expected one of ...").
fn named<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    names: &'static [&'static str],
    of: impl Fn(&str) -> Option<T>,
) -> Result<T, D::Error> {
    struct Names<F>(&'static [&'static str], F);
    impl<T, F: Fn(&str) -> Option<T>> Visitor<'_> for Names<F> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            let names: Vec<String> = self.0.iter().map(|n| format!("`{n}`")).collect();
            write!(f, "one of {}", names.join(", "))
        }
        fn visit_str<E: de::Error>(self, name: &str) -> Result<T, E> {
            (self.1)(name).ok_or_else(|| E::unknown_variant(name, self.0))
        }
    }
    deserializer.deserialize_str(Names(names, of))
}

/// A vector as JSON numbers or as base64 (`encoding_format`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

impl Vector {
    /// The same values in `encoding`.
    pub fn encoded(&self, encoding: EncodingFormat) -> Vector {
        match (self, encoding) {
            (Vector::Float(values), EncodingFormat::Base64) => Vector::Base64(base64_f32(values)),
            (vector, _) => vector.clone(),
        }
    }
}

/// Sparse weights in one of the [`SparseFormat`]s, as the core writes them, with their schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub(crate) struct Sparse(pub SparseWeights);

/// `{"What": 0.08}` or `{"4865": 0.08}`, or `{"indices": [...], "values": [...]}`.
impl utoipa::PartialSchema for Sparse {
    fn schema() -> RefOr<Schema> {
        let weights = ObjectBuilder::new()
            .description(Some(
                "Weight by token (`sparse_format` `token`) or by token id (`id`)",
            ))
            .additional_properties(Some(f32::schema()));
        let parallel = ObjectBuilder::new()
            .description(Some(
                "Token ids in ascending order and their weights (`indices`)",
            ))
            .property("indices", Vec::<u32>::schema())
            .required("indices")
            .property("values", Vec::<f32>::schema())
            .required("values");
        let literal = ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .description(Some(
                "pgvector's `sparsevec` literal `{id+1:weight,...}/vocab_size` (`sparsevec`)",
            ));
        OneOfBuilder::new()
            .item(weights)
            .item(parallel)
            .item(literal)
            .description(Some("Sparse weights, in the request's `sparse_format`"))
            .into()
    }
}

impl utoipa::ToSchema for Sparse {}

/// The outputs of one input, written the way the request asked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Item {
    pub dense: Option<Vector>,
    pub sparse: Option<Sparse>,
    pub colbert: Option<Vec<Vector>>,
}

/// The formatting options of a request, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Format {
    /// How the dense and ColBERT vectors are written.
    pub encoding: EncodingFormat,
    /// Keep this many dense values, then re-normalise (OpenAI's `dimensions`).
    pub dimensions: Option<usize>,
    pub sparse: SparseFormat,
    /// The model's vocabulary size: the dimension of a `sparsevec`.
    pub vocab_size: usize,
}

impl Format {
    /// Writes one input's outputs. `sparse_tokens` are its token-keyed weights, present when
    /// the format is [`SparseFormat::Token`].
    pub fn item(&self, embedding: Embedding, sparse_tokens: Option<Vec<(String, f32)>>) -> Item {
        Item {
            dense: embedding.dense.map(|dense| self.dense(dense)),
            sparse: embedding
                .sparse
                .map(|sparse| self.sparse_weights(sparse, sparse_tokens)),
            colbert: embedding
                .colbert
                .map(|rows| rows.into_iter().map(|row| self.vector(row)).collect()),
        }
    }

    /// A dense vector, cut to `dimensions` and encoded.
    pub fn dense(&self, dense: Vec<f32>) -> Vector {
        self.vector(match self.dimensions {
            Some(dimensions) => bge_m3_core::truncate_dense(dense, dimensions),
            None => dense,
        })
    }

    /// A vector (dense or ColBERT row), encoded.
    pub fn vector(&self, values: Vec<f32>) -> Vector {
        match self.encoding {
            EncodingFormat::Float => Vector::Float(values),
            EncodingFormat::Base64 => Vector::Base64(base64_f32(&values)),
        }
    }

    /// Sparse weights, keyed as asked; `by_token` are the token-keyed ones, when the format
    /// is [`SparseFormat::Token`].
    pub fn sparse_weights(
        &self,
        sparse: SparseEmbedding,
        by_token: Option<Vec<(String, f32)>>,
    ) -> Sparse {
        Sparse(SparseWeights::new(
            sparse,
            self.sparse,
            self.vocab_size,
            by_token,
        ))
    }
}

/// Base64 of the little-endian f32 bytes, as OpenAI encodes embeddings.
pub(crate) fn base64_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(encoding: EncodingFormat, dimensions: Option<usize>, sparse: SparseFormat) -> Format {
        Format {
            encoding,
            dimensions,
            sparse,
            vocab_size: 40,
        }
    }

    fn embedding() -> Embedding {
        Embedding {
            dense: Some(vec![0.6, 0.0, 0.8]),
            sparse: Some(SparseEmbedding {
                weights: vec![(30, 0.5), (7, 0.25)],
            }),
            colbert: Some(vec![vec![1.0, 0.0]]),
            tokens: 2,
        }
    }

    /// `sparse_format` is the core's [`SparseFormat`]: its names, null or absent, and nothing
    /// else; the document lists the same names with what each writes.
    #[test]
    fn sparse_format_is_the_cores() {
        #[derive(Debug, Deserialize)]
        struct Request {
            #[serde(default, deserialize_with = "sparse_format")]
            sparse_format: Option<SparseFormat>,
        }
        let parse = |body: &str| serde_json::from_str::<Request>(body).map(|r| r.sparse_format);
        for format in SparseFormat::ALL {
            let body = format!(r#"{{"sparse_format": "{format}"}}"#);
            assert_eq!(parse(&body).unwrap(), Some(format));
        }
        assert_eq!(parse(r#"{"sparse_format": null}"#).unwrap(), None);
        assert_eq!(parse("{}").unwrap(), None);
        for (body, says) in [
            (r#"{"sparse_format": "csr"}"#, "unknown variant `csr`"),
            (r#"{"sparse_format": 5}"#, "invalid type: integer `5`"),
        ] {
            let error = parse(body).unwrap_err().to_string();
            assert!(error.contains(says), "{error}");
            assert!(
                error.contains("expected one of `token`, `id`, `indices`, `sparsevec`"),
                "{error}"
            );
        }
        let schema =
            serde_json::to_value(<SparseFormatSchema as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(schema["enum"], serde_json::json!(SPARSE_FORMATS));
        let description = schema["description"].as_str().unwrap();
        for format in SparseFormat::ALL {
            assert!(description.contains(format.description()), "{description}");
        }
    }

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[]), "");
    }

    #[test]
    fn sparse_formats() {
        let tokens = Some(vec![("What".to_string(), 0.5), ("?".to_string(), 0.25)]);
        let write = |sparse, tokens| {
            let item = format(EncodingFormat::Float, None, sparse).item(embedding(), tokens);
            serde_json::to_string(&item.sparse.unwrap()).unwrap()
        };
        assert_eq!(
            write(SparseFormat::Token, tokens),
            r#"{"What":0.5,"?":0.25}"#
        );
        assert_eq!(write(SparseFormat::Id, None), r#"{"30":0.5,"7":0.25}"#);
        assert_eq!(
            write(SparseFormat::Indices, None),
            r#"{"indices":[7,30],"values":[0.25,0.5]}"#
        );
        // 1-based and ascending, with the vocabulary size: `'{8:0.25,31:0.5}/40'::sparsevec`.
        assert_eq!(
            write(SparseFormat::Sparsevec, None),
            r#""{8:0.25,31:0.5}/40""#
        );
    }

    #[test]
    fn dimensions_and_base64_apply_to_dense_and_base64_to_colbert() {
        let item =
            format(EncodingFormat::Base64, Some(1), SparseFormat::Id).item(embedding(), None);
        assert_eq!(item.dense, Some(Vector::Base64(base64_f32(&[1.0]))));
        assert_eq!(
            item.colbert,
            Some(vec![Vector::Base64(base64_f32(&[1.0, 0.0]))])
        );
        let item = format(EncodingFormat::Float, Some(3), SparseFormat::Id).item(embedding(), None);
        assert_eq!(item.dense, Some(Vector::Float(vec![0.6, 0.0, 0.8])));
    }
}
