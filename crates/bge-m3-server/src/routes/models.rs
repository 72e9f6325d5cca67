//! `GET /models`, `/models/{id}` (the original service's model card) and `GET /v1/models`,
//! `/v1/models/{id}` (the same in OpenAI's list and model objects).

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::responses::ModelErrors;
use crate::inference::ModelInfo;
use crate::state::AppState;
use crate::Result;

/// What `owned_by` says in OpenAI's model object.
const OWNED_BY: &str = "BAAI";

/// The served models: this one.
#[derive(Serialize, utoipa::ToSchema)]
struct List<'a> {
    /// `list`.
    object: &'static str,
    #[schema(value_type = Vec<ModelObject>, min_items = 1, max_items = 1)]
    data: [ModelObject<'a>; 1],
}

/// The model card; `created` and `owned_by` only in the OpenAI routes.
#[derive(Serialize, utoipa::ToSchema)]
struct ModelObject<'a> {
    /// The served model id.
    id: &'a str,
    /// `model`.
    object: &'static str,
    /// When the model was loaded, in Unix seconds (`/v1/models` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<u64>,
    /// `BAAI` (`/v1/models` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    owned_by: Option<&'static str>,
    /// Width of the dense vectors.
    embedding_dims: usize,
    /// Longest input in tokens, `<s>` and `</s>` included.
    max_length: usize,
    /// The dimension of the sparse vectors: the vocabulary size (pgvector's `sparsevec(N)`).
    sparse_dims: usize,
    /// Width of each ColBERT vector.
    colbert_dims: usize,
    /// The encoder's precision, as `/info` names it (`float32`, `float16`, `bfloat16`, `int8`).
    dtype: &'a str,
    capabilities: Capabilities,
}

/// The outputs the model has.
#[derive(Serialize, utoipa::ToSchema)]
struct Capabilities {
    dense: bool,
    sparse: bool,
    colbert: bool,
}

#[derive(Clone, Copy)]
enum Flavour {
    Native,
    OpenAi,
}

fn model_object<'a>(state: &'a AppState, info: &'a ModelInfo, flavour: Flavour) -> ModelObject<'a> {
    let openai = matches!(flavour, Flavour::OpenAi);
    ModelObject {
        id: state.model_id(),
        object: "model",
        created: openai.then_some(info.loaded_at),
        owned_by: openai.then_some(OWNED_BY),
        embedding_dims: info.dense_dim,
        max_length: info.max_length,
        sparse_dims: info.vocab_size,
        colbert_dims: info.colbert_dim,
        dtype: &info.dtype,
        capabilities: Capabilities {
            dense: true,
            sparse: true,
            colbert: true,
        },
    }
}

fn list(state: &AppState, flavour: Flavour) -> Result<HttpResponse> {
    let info = &state.ready()?.info;
    Ok(HttpResponse::Ok().json(List {
        object: "list",
        data: [model_object(state, info, flavour)],
    }))
}

/// The model under `id` (the served id or an alias; the card always shows the served id).
fn get(state: &AppState, id: &str, flavour: Flavour) -> Result<HttpResponse> {
    let info = &state.ready()?.info;
    state.check_model(Some(id))?;
    Ok(HttpResponse::Ok().json(model_object(state, info, flavour)))
}

/// `GET /models`.
#[utoipa::path(
    get,
    path = "/models",
    tag = "models",
    summary = "The served model's card",
    responses((status = 200, description = "A list of the one served model", body = List), ModelErrors),
    security((), ("api_key" = [])),
)]
pub(crate) async fn native_list(state: web::Data<AppState>) -> Result<HttpResponse> {
    list(&state, Flavour::Native)
}

/// `GET /models/{id}`; `id` may contain a slash (`BAAI/bge-m3`).
#[utoipa::path(
    get,
    path = "/models/{id}",
    tag = "models",
    summary = "The card of the model under an id or an alias",
    params(("id" = String, Path, description = "The model id or an alias; may contain a slash (`BAAI/bge-m3`)")),
    responses((status = 200, description = "The card, under the served id", body = ModelObject), ModelErrors),
    security((), ("api_key" = [])),
)]
pub(crate) async fn native_get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    get(&state, &id, Flavour::Native)
}

/// `GET /v1/models`.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    summary = "The served model, as OpenAI's model list",
    responses((status = 200, description = "A list of the one served model", body = List), ModelErrors),
    security((), ("api_key" = [])),
)]
pub(crate) async fn openai_list(state: web::Data<AppState>) -> Result<HttpResponse> {
    list(&state, Flavour::OpenAi)
}

/// `GET /v1/models/{id}`.
#[utoipa::path(
    get,
    path = "/v1/models/{id}",
    tag = "models",
    summary = "The model under an id or an alias, as OpenAI's model object",
    params(("id" = String, Path, description = "The model id or an alias; may contain a slash (`BAAI/bge-m3`)")),
    responses((status = 200, description = "The model object, under the served id", body = ModelObject), ModelErrors),
    security((), ("api_key" = [])),
)]
pub(crate) async fn openai_get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    get(&state, &id, Flavour::OpenAi)
}
