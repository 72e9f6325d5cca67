//! `POST /v1/embeddings` (OpenAI's shape) and `POST /embeddings` (the original service's
//! native shape). Both take the same request; only the response differs.

use actix_web::{web, HttpResponse};
use bge_m3_core::{EncodeOptions, Outputs};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::input::{self, parse_outputs, InputField};
use super::vectors::{EncodingFormat, Format, Item, Sparse, SparseFormat, Vector};
use super::{ok_with_tokens, Usage};
use crate::batcher::{EncodeJob, SparseKeys};
use crate::extract::Json;
use crate::state::{AppState, ModelInfo};
use crate::{Error, Result};

/// The body of both embeddings routes. Unknown fields (OpenAI's `user`) are ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingsRequest {
    /// A string, an array of strings, an array of token ids or an array of arrays of them.
    input: Option<InputField>,
    /// The served model id or an alias; absent means the served model.
    model: Option<String>,
    /// `{"dense", "sparse", "colbert"}` flags, or a string that changes nothing.
    input_type: Option<Value>,
    encoding_format: Option<EncodingFormat>,
    dimensions: Option<usize>,
    sparse_format: Option<SparseFormat>,
    max_length: Option<usize>,
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
            .validate(info.vocab_size, state.limits().max_inputs)?;
        let outputs = parse_outputs(self.input_type)?;
        let max_length = input::length(
            "max_length",
            self.max_length,
            info.max_length,
            info.max_length,
        )?;
        let batch_size = input::batch_size(self.batch_size)?;
        let dimensions = match self.dimensions {
            Some(d) if !(1..=info.dense_dim).contains(&d) => {
                return Err(Error::invalid(
                    "dimensions",
                    format!("must be between 1 and {}, got {d}", info.dense_dim),
                ))
            }
            other => other,
        };
        let format = Format {
            encoding: self.encoding_format.unwrap_or_default(),
            dimensions,
            sparse: self.sparse_format.unwrap_or_default(),
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
                SparseFormat::Id | SparseFormat::Indices => SparseKeys::Ids,
            },
        };
        Ok((job, format))
    }
}

/// A request's outputs, written as it asked.
struct Embedded {
    items: Vec<Item>,
    outputs: Outputs,
    tokens: usize,
}

/// Runs a request on the model and writes each input's outputs.
async fn embed(state: &AppState, request: EmbeddingsRequest) -> Result<Embedded> {
    let ready = state.ready()?;
    let (job, format) = request.validate(state, &ready.info)?;
    let outputs = job.options.outputs;
    let encoded = ready.batcher.encode(job).await?;
    let tokens = encoded.tokens();
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
        tokens,
    })
}

#[derive(Serialize)]
struct OpenAiResponse<'a> {
    object: &'static str,
    data: Vec<OpenAiItem>,
    model: &'a str,
    usage: Usage,
}

/// OpenAI's embedding object, plus the original service's `dense` and `sparse` beside
/// `embedding` and, on request, `colbert`.
#[derive(Serialize)]
struct OpenAiItem {
    object: &'static str,
    index: usize,
    /// The dense vector; `null` when `input_type.dense` is false (the key stays, so that
    /// OpenAI SDKs still parse the item).
    embedding: Option<Vector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dense: Option<Vector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sparse: Option<Sparse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    colbert: Option<Vec<Vector>>,
}

/// `POST /v1/embeddings`.
pub(crate) async fn openai(
    state: web::Data<AppState>,
    Json(request): Json<EmbeddingsRequest>,
) -> Result<HttpResponse> {
    let Embedded { items, tokens, .. } = embed(&state, request).await?;
    let data = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| OpenAiItem {
            object: "embedding",
            index,
            embedding: item.dense.clone(),
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
    Ok(ok_with_tokens(&response, tokens))
}

/// The native response: each output's key present only when it was asked for.
#[derive(Serialize)]
struct NativeResponse {
    #[serde(skip_serializing_if = "Option::is_none")]
    dense_vecs: Option<Vec<Vector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sparse_vecs: Option<Vec<Sparse>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    colbert_vecs: Option<Vec<Vec<Vector>>>,
    usage: Usage,
}

/// `POST /embeddings`.
pub(crate) async fn native(
    state: web::Data<AppState>,
    Json(request): Json<EmbeddingsRequest>,
) -> Result<HttpResponse> {
    let Embedded {
        mut items,
        outputs,
        tokens,
    } = embed(&state, request).await?;
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
    Ok(ok_with_tokens(&response, tokens))
}
