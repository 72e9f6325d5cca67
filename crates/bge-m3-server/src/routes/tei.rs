//! text-embeddings-inference's routes, computed by BGE-M3's own heads, so that clients written
//! for it work by changing the URL: `POST /embed` (dense, also answered at `POST /` as
//! text-embeddings-inference does for an embedding model), `/embed_sparse` (lexical weights),
//! `/embed_all` (ColBERT vectors), and `GET /info` (`/tokenize` and `/decode` are in
//! [`super::tokens`]). Requests and responses have its shapes; errors keep this server's one
//! error body. Every difference is in
//! docs/API.md ("text-embeddings-inference routes").

use actix_web::{web, HttpResponse};
use bge_m3_core::{EncodeOptions, Outputs};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::answer::{self, array};
use super::input::{self, InputField, Integer};
use super::reply::answered;
use super::responses::{EncodeErrors, ModelErrors};
use crate::inference::memory::Reservation;
use crate::inference::Timings;
use crate::inference::{EncodeJob, Encoded, SparseKeys};
use crate::routes::extract::Json;
use crate::state::AppState;
use crate::{Error, Result};

/// The body of `/embed`, `/embed_sparse` and `/embed_all`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct EmbedRequest {
    /// A text, an array of texts, or token ids (with `--allow-token-ids`).
    #[schema(value_type = InputField, required = true)]
    inputs: Option<InputField>,
    /// Accepted; texts are always truncated to 8192 tokens (text-embeddings-inference's
    /// `--auto-truncate` default).
    #[allow(dead_code)]
    truncate: Option<bool>,
    /// `Right` (the default) only.
    #[schema(pattern = "^[Rr][Ii][Gg][Hh][Tt]$")]
    truncation_direction: Option<String>,
    /// Must be absent or null: BGE-M3 has no prompts.
    #[schema(schema_with = input::null_schema)]
    prompt_name: Option<String>,
    /// `/embed`: accepted; the dense vector is always unit length (FlagEmbedding defines it
    /// normalised).
    #[allow(dead_code)]
    normalize: Option<bool>,
    /// `/embed`: keep the first N values and re-normalise (1 to the model's width).
    #[schema(value_type = Option<i32>, minimum = 1)]
    dimensions: Option<Integer>,
}

impl EmbedRequest {
    /// The validated job and `dimensions`.
    fn job(self, state: &AppState, outputs: Outputs) -> Result<(EncodeJob, Option<usize>)> {
        let info = &state.ready()?.info;
        input::check_truncation_direction(self.truncation_direction.as_deref())?;
        if let Some(name) = self.prompt_name {
            return Err(Error::invalid(
                "prompt_name",
                format!("BGE-M3 has no prompts, got {name:?}"),
            ));
        }
        let dimensions = input::dimensions(Integer::get(self.dimensions), info.dense_dim)?;
        let inputs = self
            .inputs
            .ok_or_else(|| Error::missing("inputs"))?
            .validate(
                "inputs",
                info.vocab_size,
                state.limits(),
                state.allows_token_ids(),
            )?;
        let job = EncodeJob {
            inputs,
            options: EncodeOptions::default()
                .with_outputs(outputs)
                .with_max_length(info.max_length),
            sparse_keys: SparseKeys::Ids,
        };
        Ok((job, dimensions))
    }
}

/// Runs a request on the model, within its memory reservation.
async fn encode(
    state: &AppState,
    request: EmbedRequest,
    reservation: Option<Reservation>,
    outputs: Outputs,
) -> Result<(Encoded, Option<usize>)> {
    let (job, dimensions) = request.job(state, outputs)?;
    let inference = &state.ready()?.inference;
    Ok((inference.encode_within(job, reservation).await?, dimensions))
}

/// A JSON array of `values`, written one element at a time as the client reads it;
/// `reservation` goes back once it is written.
fn respond_array<T: Serialize + 'static>(
    values: Vec<T>,
    reservation: Option<Reservation>,
    tokens: usize,
    timings: Timings,
) -> HttpResponse {
    answered(
        answer::respond(Box::new(array(values.into_iter())), reservation),
        tokens,
        timings,
    )
}

fn missing(output: &str) -> Error {
    Error::Internal(format!("the model returned no {output} output"))
}

/// `POST /embed`.
#[utoipa::path(
    post,
    path = "/embed",
    tag = "text-embeddings-inference",
    summary = "Dense vectors (text-embeddings-inference's shape)",
    description = "One unit-length dense vector per input, as `[[...], ...]`.",
    request_body = EmbedRequest,
    responses(
        (status = 200, description = "One vector per input", body = Vec<Vec<f32>>),
        EncodeErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn embed(
    state: web::Data<AppState>,
    Json(request, reservation): Json<EmbedRequest>,
) -> Result<HttpResponse> {
    let outputs = Outputs {
        dense: true,
        sparse: false,
        colbert: false,
    };
    let (encoded, dimensions) = encode(&state, request, reservation, outputs).await?;
    let tokens = encoded.tokens();
    let vectors = encoded
        .embeddings
        .into_iter()
        .map(|e| {
            let dense = e.dense.ok_or_else(|| missing("dense"))?;
            Ok(match dimensions {
                Some(d) => bge_m3_core::truncate_dense(dense, d),
                None => dense,
            })
        })
        .collect::<Result<Vec<Vec<f32>>>>()?;
    Ok(respond_array(
        vectors,
        encoded.reservation,
        tokens,
        encoded.timings,
    ))
}

/// `POST /`: what text-embeddings-inference answers there for an embedding model, `/embed`'s
/// answer, so that its clients given the server's root URL (`huggingface_hub`'s
/// `InferenceClient`, Haystack's TEI embedders) embed; `GET /` still describes the service.
#[utoipa::path(
    post,
    path = "/",
    tag = "text-embeddings-inference",
    summary = "Dense vectors at the root (text-embeddings-inference's `POST /`)",
    description = "The same request and answer as `POST /embed`: text-embeddings-inference \
        answers `POST /` with the model's main task, for an embedding model `/embed`.",
    request_body = EmbedRequest,
    responses(
        (status = 200, description = "One vector per input", body = Vec<Vec<f32>>),
        EncodeErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn embed_at_root(
    state: web::Data<AppState>,
    request: Json<EmbedRequest>,
) -> Result<HttpResponse> {
    embed(state, request).await
}

/// One lexical weight, text-embeddings-inference's `SparseValue`.
#[derive(Serialize, ToSchema)]
struct SparseValue {
    /// The token id.
    index: u32,
    value: f32,
}

/// `POST /embed_sparse`.
#[utoipa::path(
    post,
    path = "/embed_sparse",
    tag = "text-embeddings-inference",
    summary = "Lexical weights (text-embeddings-inference's shape)",
    description = "BGE-M3's sparse weights of each input as `[{index, value}]`, ascending by \
        token id.",
    request_body = EmbedRequest,
    responses(
        (status = 200, description = "One list per input", body = Vec<Vec<SparseValue>>),
        EncodeErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn embed_sparse(
    state: web::Data<AppState>,
    Json(request, reservation): Json<EmbedRequest>,
) -> Result<HttpResponse> {
    let outputs = Outputs {
        dense: false,
        sparse: true,
        colbert: false,
    };
    let (encoded, _) = encode(&state, request, reservation, outputs).await?;
    let tokens = encoded.tokens();
    let weights = encoded
        .embeddings
        .into_iter()
        .map(|e| {
            let sparse = e.sparse.ok_or_else(|| missing("sparse"))?;
            Ok(sparse
                .ascending()
                .into_iter()
                .map(|(index, value)| SparseValue { index, value })
                .collect())
        })
        .collect::<Result<Vec<Vec<SparseValue>>>>()?;
    Ok(respond_array(
        weights,
        encoded.reservation,
        tokens,
        encoded.timings,
    ))
}

/// `POST /embed_all`.
#[utoipa::path(
    post,
    path = "/embed_all",
    tag = "text-embeddings-inference",
    summary = "Per-token vectors: BGE-M3's ColBERT vectors (text-embeddings-inference's shape)",
    description = "One unit-length ColBERT vector per token of each input but `<s>` (`</s>` \
        included), as `[[[...], ...], ...]`.",
    request_body = EmbedRequest,
    responses(
        (status = 200, description = "One list of vectors per input", body = Vec<Vec<Vec<f32>>>),
        EncodeErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn embed_all(
    state: web::Data<AppState>,
    Json(request, reservation): Json<EmbedRequest>,
) -> Result<HttpResponse> {
    let outputs = Outputs {
        dense: false,
        sparse: false,
        colbert: true,
    };
    let (encoded, _) = encode(&state, request, reservation, outputs).await?;
    let tokens = encoded.tokens();
    let rows = encoded
        .embeddings
        .into_iter()
        .map(|e| e.colbert.ok_or_else(|| missing("colbert")))
        .collect::<Result<Vec<Vec<Vec<f32>>>>>()?;
    Ok(respond_array(
        rows,
        encoded.reservation,
        tokens,
        encoded.timings,
    ))
}

/// `/info`'s `model_type`: an embedding model with CLS pooling.
#[derive(Serialize, ToSchema)]
struct ModelType {
    embedding: Pooling,
}

#[derive(Serialize, ToSchema)]
struct Pooling {
    /// `cls`: BGE-M3's dense vector is the `<s>` token's.
    pooling: &'static str,
}

/// text-embeddings-inference's `Info`, plus the widths of BGE-M3's three outputs.
#[derive(Serialize, ToSchema)]
struct Info<'a> {
    /// The served model id.
    model_id: &'a str,
    /// Always null.
    model_sha: Option<&'a str>,
    /// `float32`, `float16` or `bfloat16`.
    model_dtype: &'a str,
    /// The served model id, as `model_id`.
    served_model_name: &'a str,
    model_type: ModelType,
    /// `--queue-size`: requests admitted at once.
    max_concurrent_requests: usize,
    /// Longest input in tokens, `<s>` and `</s>` included.
    max_input_length: usize,
    /// `--max-batch-tokens`.
    max_batch_tokens: usize,
    /// Always null: passes are bounded by tokens only.
    max_batch_requests: Option<usize>,
    /// `--max-inputs`: the most inputs of one request.
    max_client_batch_size: usize,
    /// Always true: inputs are truncated to `max_input_length`.
    auto_truncate: bool,
    /// One per CPU the process may use: the `tokenizers` crate's pool, on which the embeddings
    /// routes tokenize a request's texts in parallel.
    tokenization_workers: usize,
    /// This server's version.
    version: &'static str,
    /// Always null.
    sha: Option<&'a str>,
    /// Always null.
    docker_label: Option<&'a str>,
    /// Width of the dense vectors.
    embedding_dims: usize,
    /// The vocabulary size: the dimension of the sparse vectors.
    sparse_dims: usize,
    /// Width of the ColBERT vectors.
    colbert_dims: usize,
}

/// `GET /info`.
#[utoipa::path(
    get,
    path = "/info",
    tag = "text-embeddings-inference",
    summary = "The served model and the server's limits (text-embeddings-inference's shape)",
    responses((status = 200, description = "The model and limits", body = Info), ModelErrors),
    security((), ("api_key" = [])),
)]
pub(crate) async fn info(state: web::Data<AppState>) -> Result<HttpResponse> {
    let ready = state.ready()?;
    let info = &ready.info;
    let options = ready.inference.options();
    Ok(HttpResponse::Ok().json(Info {
        model_id: state.model_id(),
        model_sha: None,
        model_dtype: &info.dtype,
        served_model_name: state.model_id(),
        model_type: ModelType {
            embedding: Pooling { pooling: "cls" },
        },
        max_concurrent_requests: options.queue_size,
        max_input_length: info.max_length,
        max_batch_tokens: options.max_batch_tokens,
        max_batch_requests: None,
        max_client_batch_size: state.limits().max_inputs,
        auto_truncate: true,
        tokenization_workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        version: env!("CARGO_PKG_VERSION"),
        sha: None,
        docker_label: None,
        embedding_dims: info.dense_dim,
        sparse_dims: info.vocab_size,
        colbert_dims: info.colbert_dim,
    }))
}
