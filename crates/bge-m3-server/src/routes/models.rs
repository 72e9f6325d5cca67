//! `GET /models`, `/models/{id}` (the original service's model card) and `GET /v1/models`,
//! `/v1/models/{id}` (the same in OpenAI's list and model objects).

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::state::{AppState, ModelInfo};
use crate::Result;

/// What `owned_by` says in OpenAI's model object.
const OWNED_BY: &str = "BAAI";

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: [ModelObject<'a>; 1],
}

/// The model card; `created` and `owned_by` only in the OpenAI routes.
#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owned_by: Option<&'static str>,
    embedding_dims: usize,
    max_length: usize,
    capabilities: Capabilities,
}

#[derive(Serialize)]
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

fn model_object<'a>(state: &'a AppState, info: &ModelInfo, flavour: Flavour) -> ModelObject<'a> {
    let openai = matches!(flavour, Flavour::OpenAi);
    ModelObject {
        id: state.model_id(),
        object: "model",
        created: openai.then_some(info.loaded_at),
        owned_by: openai.then_some(OWNED_BY),
        embedding_dims: info.dense_dim,
        max_length: info.max_length,
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
pub(crate) async fn native_list(state: web::Data<AppState>) -> Result<HttpResponse> {
    list(&state, Flavour::Native)
}

/// `GET /models/{id}`; `id` may contain a slash (`BAAI/bge-m3`).
pub(crate) async fn native_get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    get(&state, &id, Flavour::Native)
}

/// `GET /v1/models`.
pub(crate) async fn openai_list(state: web::Data<AppState>) -> Result<HttpResponse> {
    list(&state, Flavour::OpenAi)
}

/// `GET /v1/models/{id}`.
pub(crate) async fn openai_get(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse> {
    get(&state, &id, Flavour::OpenAi)
}
