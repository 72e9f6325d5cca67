//! `POST /v1/embeddings` (OpenAI's shape) and `POST /embeddings` (the original service's
//! native shape). Both take the same request; only the response differs.

use actix_web::{web, HttpResponse};
use bge_m3_core::{EncodeOptions, Outputs};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::docs::EncodeErrors;
use super::input::{self, parse_outputs, InputField};
use super::vectors::{EncodingFormat, Format, Item, Sparse, SparseFormat, Vector};
use super::{answered, Usage};
use crate::batcher::{EncodeJob, SparseKeys, Timings};
use crate::extract::Json;
use crate::state::{AppState, ModelInfo};
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
    input_type: Option<Value>,
    /// How vectors are written; default `float`. On `/v1/embeddings` it applies to `embedding`
    /// alone (`dense` and `colbert` stay JSON numbers), on `/embeddings` to every vector.
    encoding_format: Option<EncodingFormat>,
    /// Keep the first N dense values and re-normalise (1 to the model's width); default all.
    #[schema(minimum = 1)]
    dimensions: Option<usize>,
    /// How sparse weights are keyed; default `token`.
    sparse_format: Option<SparseFormat>,
    /// Truncation in tokens, `<s>` and `</s>` counted (1 to 8192); default 8192.
    #[schema(minimum = 1, maximum = 8192)]
    max_length: Option<usize>,
    /// Most inputs of this request per forward pass (the results do not depend on it);
    /// default 12.
    #[schema(minimum = 1)]
    batch_size: Option<usize>,
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
        let outputs = parse_outputs(self.input_type)?;
        let max_length = input::length(
            "max_length",
            self.max_length,
            info.max_length,
            info.max_length,
        )?;
        let batch_size = input::batch_size(self.batch_size)?;
        let dimensions = input::dimensions(self.dimensions, info.dense_dim)?;
        let format = Format {
            encoding: self.encoding_format.unwrap_or_default(),
            dimensions,
            sparse: self.sparse_format.unwrap_or_default(),
            vocab_size: info.vocab_size,
        };
        let job = EncodeJob {
            inputs,
            options: EncodeOptions {
                outputs,
                max_length,
                batch_size,
            },
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

/// A request's outputs, written as it asked.
struct Embedded {
    items: Vec<Item>,
    outputs: Outputs,
    /// The request's `encoding_format`.
    encoding: EncodingFormat,
    tokens: usize,
    timings: Timings,
}

/// Which vectors `encoding_format` applies to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoded {
    /// Every dense and ColBERT vector (`/embeddings`).
    All,
    /// Only OpenAI's `embedding`, written by the caller: the items' vectors stay JSON numbers
    /// (`/v1/embeddings`; OpenAI's SDK asks for base64 by default and decodes `embedding`
    /// alone, so base64 extras would reach its users undecoded).
    EmbeddingOnly,
}

/// Runs a request on the model and writes each input's outputs.
async fn embed(state: &AppState, request: EmbeddingsRequest, encoded: Encoded) -> Result<Embedded> {
    let ready = state.ready()?;
    let (job, mut format) = request.validate(state, &ready.info)?;
    let encoding = format.encoding;
    if encoded == Encoded::EmbeddingOnly {
        format.encoding = EncodingFormat::Float;
    }
    let outputs = job.options.outputs;
    let encoded = ready.batcher.encode(job).await?;
    let tokens = encoded.tokens();
    let timings = encoded.timings;
    let mut sparse_tokens = encoded.sparse_tokens.map(Vec::into_iter);
    let items = encoded
        .embeddings
        .into_iter()
        .map(|embedding| {
            let by_token = sparse_tokens.as_mut().and_then(Iterator::next);
            format.item(embedding, by_token)
        })
        .collect();
    Ok(Embedded {
        items,
        outputs,
        encoding,
        tokens,
        timings,
    })
}

/// OpenAI's embeddings list.
#[derive(Serialize, utoipa::ToSchema)]
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
    Json(request): Json<EmbeddingsRequest>,
) -> Result<HttpResponse> {
    let Embedded {
        items,
        encoding,
        tokens,
        timings,
        ..
    } = embed(&state, request, Encoded::EmbeddingOnly).await?;
    let data = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| OpenAiItem {
            object: "embedding",
            index,
            embedding: item.dense.as_ref().map(|dense| dense.encoded(encoding)),
            dense: item.dense,
            sparse: item.sparse,
            colbert: item.colbert,
        })
        .collect();
    let response = OpenAiResponse {
        object: "list",
        data,
        model: state.model_id(),
        usage: Usage::new(tokens),
    };
    Ok(answered(&response, tokens, timings))
}

/// The native response: each output's key present only when it was asked for.
#[derive(Serialize, utoipa::ToSchema)]
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
    Json(request): Json<EmbeddingsRequest>,
) -> Result<HttpResponse> {
    let Embedded {
        mut items,
        outputs,
        tokens,
        timings,
        ..
    } = embed(&state, request, Encoded::All).await?;
    let response = NativeResponse {
        dense_vecs: outputs
            .dense
            .then(|| items.iter_mut().filter_map(|i| i.dense.take()).collect()),
        sparse_vecs: outputs
            .sparse
            .then(|| items.iter_mut().filter_map(|i| i.sparse.take()).collect()),
        colbert_vecs: outputs
            .colbert
            .then(|| items.iter_mut().filter_map(|i| i.colbert.take()).collect()),
        usage: Usage::new(tokens),
    };
    Ok(answered(&response, tokens, timings))
}
