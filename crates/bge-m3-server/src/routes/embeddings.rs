//! `POST /v1/embeddings` (OpenAI's shape) and `POST /embeddings` (the original service's
//! native shape). Both take the same request; only the response differs.

use std::iter::once;

use actix_web::{web, HttpResponse};
use bge_m3_core::{Embedding, EncodeOptions, Outputs, SparseFormat};
use serde::{Deserialize, Serialize};

use super::answer::{self, array, array_of, object, value, Pieces};
use super::input::{self, InputField, Integer};
use super::reply::{answered, Usage};
use super::responses::EncodeErrors;
use super::vectors::{self, EncodingFormat, Format, Sparse, SparseFormatSchema, Vector};
use crate::inference::ModelInfo;
use crate::inference::{EncodeJob, Encoded, SparseKeys};
use crate::routes::extract::Json;
use crate::state::AppState;
use crate::{Error, Result};

/// The body of both embeddings routes. Unknown fields (OpenAI's `user`) are ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct EmbeddingsRequest {
    /// A string, an array of strings, an array of token ids or an array of arrays of them.
    #[schema(value_type = InputField, required = true)]
    input: Option<InputField>,
    /// The served model id or an alias; absent means the served model.
    #[schema(example = "bge-m3")]
    model: Option<String>,
    /// `{"dense", "sparse", "colbert"}` flags, or a string that changes nothing.
    #[schema(schema_with = input::input_type_schema)]
    input_type: Option<input::InputType>,
    /// How vectors are written; default `float`. On `/v1/embeddings` it applies to `embedding`
    /// alone (`dense` and `colbert` stay JSON numbers), on `/embeddings` to every vector.
    encoding_format: Option<EncodingFormat>,
    /// Keep the first N dense values and re-normalise (1 to the model's width); default all.
    #[schema(value_type = Option<i32>, minimum = 1)]
    dimensions: Option<Integer>,
    /// How sparse weights are keyed; default `token`.
    #[serde(default, deserialize_with = "vectors::sparse_format")]
    #[schema(value_type = Option<SparseFormatSchema>)]
    sparse_format: Option<SparseFormat>,
    /// Truncation in tokens, `<s>` and `</s>` counted (1 to 8192); default 8192.
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 8192)]
    max_length: Option<Integer>,
    /// Most inputs of this request per forward pass (the results do not depend on it);
    /// default 12.
    #[schema(value_type = Option<i32>, minimum = 1)]
    batch_size: Option<Integer>,
}

impl EmbeddingsRequest {
    /// Checks every field against the model and the limits: what is left can only fail
    /// inside the model.
    fn validate(self, state: &AppState, info: &ModelInfo) -> Result<(EncodeJob, Format)> {
        state.check_model(self.model.as_deref())?;
        let inputs = self
            .input
            .ok_or_else(|| Error::missing("input"))?
            .validate(
                "input",
                info.vocab_size,
                state.limits(),
                state.allows_token_ids(),
            )?;
        let outputs = input::InputType::outputs_of(self.input_type)?;
        let max_length = input::length(
            "max_length",
            Integer::get(self.max_length),
            info.max_length,
            info.max_length,
        )?;
        let batch_size = input::batch_size(Integer::get(self.batch_size));
        let dimensions = input::dimensions(Integer::get(self.dimensions), info.dense_dim)?;
        let format = Format {
            encoding: self.encoding_format.unwrap_or_default(),
            dimensions,
            sparse: self.sparse_format.unwrap_or_default(),
            vocab_size: info.vocab_size,
        };
        let job = EncodeJob {
            inputs,
            options: EncodeOptions::default()
                .with_outputs(outputs)
                .with_max_length(max_length)
                .with_batch_size(batch_size),
            sparse_keys: match format.sparse {
                SparseFormat::Token => SparseKeys::Tokens,
                SparseFormat::Id | SparseFormat::Indices | SparseFormat::Sparsevec => {
                    SparseKeys::Ids
                }
            },
        };
        Ok((job, format))
    }
}

/// Runs a request on the model, within its memory reservation.
async fn embed(
    state: &AppState,
    request: EmbeddingsRequest,
    reservation: Option<crate::inference::memory::Reservation>,
) -> Result<(Encoded, Format, Outputs)> {
    let ready = state.ready()?;
    let (job, format) = request.validate(state, &ready.info)?;
    let outputs = job.options.outputs;
    let encoded = ready.inference.encode_within(job, reservation).await?;
    Ok((encoded, format, outputs))
}

/// The token-keyed sparse weights of each input, in order, when there are any.
fn by_token(
    sparse_tokens: Option<Vec<Vec<(String, f32)>>>,
) -> impl FnMut() -> Option<Vec<(String, f32)>> {
    let mut lists = sparse_tokens.map(Vec::into_iter);
    move || lists.as_mut().and_then(Iterator::next)
}

/// OpenAI's embeddings list (the schema; answers are written in pieces by [`openai_pieces`]).
#[derive(Serialize, utoipa::ToSchema)]
#[cfg_attr(not(test), allow(dead_code))]
struct OpenAiResponse<'a> {
    /// `list`.
    object: &'static str,
    /// One item per input, in order.
    data: Vec<OpenAiItem>,
    /// The served model id.
    model: &'a str,
    usage: Usage,
}

/// OpenAI's embedding object, plus the original service's `dense` and `sparse` beside
/// `embedding` and, on request, `colbert`.
#[derive(Serialize, utoipa::ToSchema)]
#[cfg_attr(not(test), allow(dead_code))]
struct OpenAiItem {
    /// `embedding`.
    object: &'static str,
    /// The input's position in the request.
    index: usize,
    /// The dense vector; `null` when `input_type.dense` is false (the key stays, so that
    /// OpenAI SDKs still parse the item).
    embedding: Option<Vector>,
    /// The same vector as `embedding`, as JSON numbers whatever `encoding_format` says, when
    /// dense output was asked for (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    dense: Option<Vector>,
    /// The sparse weights, when asked for (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    sparse: Option<Sparse>,
    /// One vector per token but `<s>`, as JSON numbers, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    colbert: Option<Vec<Vector>>,
}

/// `POST /v1/embeddings`.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "embeddings",
    summary = "Embeddings in OpenAI's shape",
    description = "OpenAI-compatible: each item's `embedding` is the dense vector; it also \
        carries `dense` and `sparse` (and `colbert` on request) as the original service did.",
    request_body = EmbeddingsRequest,
    responses(
        (status = 200, description = "One item per input", body = OpenAiResponse),
        EncodeErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn openai(
    state: web::Data<AppState>,
    Json(request, reservation): Json<EmbeddingsRequest>,
) -> Result<HttpResponse> {
    let (encoded, mut format, _) = embed(&state, request, reservation).await?;
    // OpenAI's SDK asks for base64 by default and decodes `embedding` alone: `dense` and
    // `colbert` stay JSON numbers, or its users would get them undecoded.
    let encoding = std::mem::take(&mut format.encoding);
    let tokens = encoded.tokens();
    let timings = encoded.timings;
    let pieces = openai_pieces(
        encoded.embeddings,
        encoded.sparse_tokens,
        format,
        encoding,
        state.model_id(),
        tokens,
    );
    Ok(answered(
        answer::respond(pieces, encoded.reservation),
        tokens,
        timings,
    ))
}

/// OpenAI's embeddings list ([`OpenAiResponse`]), one item at a time and one ColBERT row at a
/// time, each formatted (`dimensions`, sparse keys) when its turn comes; `embedding` is written
/// in `embedding_encoding`, the other vectors in `format`'s.
fn openai_pieces(
    embeddings: Vec<Embedding>,
    sparse_tokens: Option<Vec<Vec<(String, f32)>>>,
    format: Format,
    embedding_encoding: EncodingFormat,
    model: &str,
    tokens: usize,
) -> Pieces {
    /// An item but its `colbert` rows.
    #[derive(Serialize)]
    struct Head<'a> {
        object: &'static str,
        index: usize,
        embedding: Option<Vector>,
        #[serde(skip_serializing_if = "Option::is_none")]
        dense: Option<&'a Vector>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sparse: Option<&'a Sparse>,
    }
    let mut next_tokens = by_token(sparse_tokens);
    let items = embeddings
        .into_iter()
        .enumerate()
        .map(move |(index, embedding)| {
            let item = format.item(embedding, next_tokens());
            let mut head = value(&Head {
                object: "embedding",
                index,
                embedding: item.dense.as_ref().map(|d| d.encoded(embedding_encoding)),
                dense: item.dense.as_ref(),
                sparse: item.sparse.as_ref(),
            });
            head.pop(); // its closing brace: the rows come before it
            let rows = item
                .colbert
                .into_iter()
                .flat_map(|rows| once(br#","colbert":"#.to_vec()).chain(array(rows.into_iter())));
            once(head).chain(rows).chain(once(b"}".to_vec()))
        });
    let tail = format!(
        r#","model":{},"usage":{}}}"#,
        String::from_utf8(value(model)).expect("JSON is UTF-8"),
        String::from_utf8(value(&Usage::new(tokens))).expect("JSON is UTF-8"),
    );
    Box::new(
        once(br#"{"object":"list","data":"#.to_vec())
            .chain(array_of(items))
            .chain(once(tail.into_bytes())),
    )
}

/// The native response: each output's key present only when it was asked for (the schema;
/// answers are written in pieces by [`native_pieces`]).
#[derive(Serialize, utoipa::ToSchema)]
#[cfg_attr(not(test), allow(dead_code))]
struct NativeResponse {
    /// One dense vector per input (default on).
    #[serde(skip_serializing_if = "Option::is_none")]
    dense_vecs: Option<Vec<Vector>>,
    /// One set of sparse weights per input (default on).
    #[serde(skip_serializing_if = "Option::is_none")]
    sparse_vecs: Option<Vec<Sparse>>,
    /// One list of ColBERT vectors per input (default off).
    #[serde(skip_serializing_if = "Option::is_none")]
    colbert_vecs: Option<Vec<Vec<Vector>>>,
    usage: Usage,
}

/// `POST /embeddings`.
#[utoipa::path(
    post,
    path = "/embeddings",
    tag = "embeddings",
    summary = "Embeddings in the native BGE-M3 shape",
    description = "The original service's endpoint: `dense_vecs`, `sparse_vecs` and \
        `colbert_vecs`, each present when asked for in `input_type`.",
    request_body = EmbeddingsRequest,
    responses(
        (status = 200, description = "The outputs asked for, one per input", body = NativeResponse),
        EncodeErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn native(
    state: web::Data<AppState>,
    Json(request, reservation): Json<EmbeddingsRequest>,
) -> Result<HttpResponse> {
    let (encoded, format, outputs) = embed(&state, request, reservation).await?;
    let tokens = encoded.tokens();
    let timings = encoded.timings;
    let pieces = native_pieces(
        encoded.embeddings,
        encoded.sparse_tokens,
        format,
        outputs,
        tokens,
    );
    Ok(answered(
        answer::respond(pieces, encoded.reservation),
        tokens,
        timings,
    ))
}

/// The native response ([`NativeResponse`]): each output's array in turn, one vector (one
/// ColBERT row) at a time, each formatted when its turn comes.
fn native_pieces(
    embeddings: Vec<Embedding>,
    sparse_tokens: Option<Vec<Vec<(String, f32)>>>,
    format: Format,
    outputs: Outputs,
    tokens: usize,
) -> Pieces {
    let mut next_tokens = by_token(sparse_tokens);
    let (mut dense, mut sparse, mut colbert) = (Vec::new(), Vec::new(), Vec::new());
    for embedding in embeddings {
        dense.extend(embedding.dense);
        sparse.extend(embedding.sparse.map(|s| (s, next_tokens())));
        colbert.extend(embedding.colbert);
    }
    let mut fields: Vec<(&'static str, Pieces)> = Vec::new();
    if outputs.dense {
        let vectors = dense.into_iter().map(move |d| format.dense(d));
        fields.push(("dense_vecs", Box::new(array(vectors))));
    }
    if outputs.sparse {
        let weights = sparse
            .into_iter()
            .map(move |(s, by_token)| format.sparse_weights(s, by_token));
        fields.push(("sparse_vecs", Box::new(array(weights))));
    }
    if outputs.colbert {
        let inputs = colbert
            .into_iter()
            .map(move |rows| array(rows.into_iter().map(move |row| format.vector(row))));
        fields.push(("colbert_vecs", Box::new(array_of(inputs))));
    }
    fields.push(("usage", Box::new(once(value(&Usage::new(tokens))))));
    Box::new(object(fields))
}

#[cfg(test)]
mod tests {
    use bge_m3_core::SparseEmbedding;

    use super::*;

    fn embeddings() -> (Vec<Embedding>, Vec<Vec<(String, f32)>>) {
        let one = |seed: f32| Embedding {
            dense: Some(vec![0.6 * seed, 0.8, 0.0]),
            sparse: Some(SparseEmbedding {
                weights: vec![(30, 0.5 * seed), (7, 0.25)],
            }),
            colbert: Some(vec![vec![1.0, seed], vec![0.0, -1.0]]),
            tokens: 1,
        };
        let tokens = vec![
            vec![("What".to_string(), 0.5), ("?".to_string(), 0.25)],
            vec![("\"q\"".to_string(), 0.125)],
        ];
        (vec![one(1.0), one(-2.0)], tokens)
    }

    /// The written answers are what serde makes of the documented response types.
    #[test]
    fn pieces_write_the_documented_responses() {
        let formats = [
            Format {
                encoding: EncodingFormat::Float,
                dimensions: None,
                sparse: SparseFormat::Token,
                vocab_size: 40,
            },
            Format {
                encoding: EncodingFormat::Base64,
                dimensions: Some(2),
                sparse: SparseFormat::Indices,
                vocab_size: 40,
            },
        ];
        let all = [
            Outputs::ALL,
            Outputs::default(),
            Outputs {
                dense: false,
                sparse: false,
                colbert: true,
            },
        ];
        for format in formats {
            for outputs in all {
                let (mut embeddings, tokens) = embeddings();
                for e in &mut embeddings {
                    if !outputs.dense {
                        e.dense = None;
                    }
                    if !outputs.sparse {
                        e.sparse = None;
                    }
                    if !outputs.colbert {
                        e.colbert = None;
                    }
                }
                let tokens =
                    (outputs.sparse && format.sparse == SparseFormat::Token).then_some(tokens);
                let written =
                    |pieces: Pieces| String::from_utf8(pieces.flatten().collect()).unwrap();

                // `/v1/embeddings` writes `embedding` alone in the asked encoding.
                let float = Format {
                    encoding: EncodingFormat::Float,
                    ..format
                };
                let mut next = by_token(tokens.clone());
                let data = embeddings
                    .clone()
                    .into_iter()
                    .enumerate()
                    .map(|(index, e)| {
                        let item = float.item(e, next());
                        OpenAiItem {
                            object: "embedding",
                            index,
                            embedding: item.dense.as_ref().map(|d| d.encoded(format.encoding)),
                            dense: item.dense,
                            sparse: item.sparse,
                            colbert: item.colbert,
                        }
                    })
                    .collect();
                let expected = OpenAiResponse {
                    object: "list",
                    data,
                    model: "bge-m3",
                    usage: Usage::new(9),
                };
                assert_eq!(
                    written(openai_pieces(
                        embeddings.clone(),
                        tokens.clone(),
                        float,
                        format.encoding,
                        "bge-m3",
                        9
                    )),
                    serde_json::to_string(&expected).unwrap()
                );

                let mut next = by_token(tokens.clone());
                let mut items: Vec<_> = embeddings
                    .clone()
                    .into_iter()
                    .map(|e| format.item(e, next()))
                    .collect();
                let expected = NativeResponse {
                    dense_vecs: outputs
                        .dense
                        .then(|| items.iter_mut().filter_map(|i| i.dense.take()).collect()),
                    sparse_vecs: outputs
                        .sparse
                        .then(|| items.iter_mut().filter_map(|i| i.sparse.take()).collect()),
                    colbert_vecs: outputs
                        .colbert
                        .then(|| items.iter_mut().filter_map(|i| i.colbert.take()).collect()),
                    usage: Usage::new(9),
                };
                assert_eq!(
                    written(native_pieces(embeddings, tokens, format, outputs, 9)),
                    serde_json::to_string(&expected).unwrap()
                );
            }
        }
    }
}
