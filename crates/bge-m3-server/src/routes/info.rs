//! `GET /` (what this service is), `GET /health` (whether the model is loaded) and
//! `GET /metrics`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::responses::KeyErrors;
use crate::metrics::metrics as registry;
use crate::state::{AppState, Status};

/// What this service is.
#[derive(Serialize, utoipa::ToSchema)]
struct Root<'a> {
    /// `bge-m3-server`.
    name: &'static str,
    /// The server's version.
    version: &'static str,
    /// The served model id.
    model: &'a str,
    /// `loading`, `healthy`, `draining` or `failed`.
    status: &'static str,
    /// Where the model runs (`cpu`, `cuda:0`); null until it is loaded.
    device: Option<&'a str>,
    /// Every route, as `METHOD /path`.
    routes: &'a [String],
}

/// `GET /`: always 200, also while the model loads.
#[utoipa::path(
    get,
    path = "/",
    tag = "service",
    summary = "What this service is, and its routes",
    responses(
        (status = 200, description = "Always, also while the model loads", body = Root),
        KeyErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn root(state: web::Data<AppState>, listing: web::Data<Listing>) -> HttpResponse {
    let (status, device) = match state.status() {
        Status::Loading => ("loading", None),
        Status::Ready(info) => ("healthy", Some(info.device.as_str())),
        Status::Draining(info) => ("draining", Some(info.device.as_str())),
        Status::Failed(_) => ("failed", None),
    };
    HttpResponse::Ok().json(Root {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        model: state.model_id(),
        status,
        device,
        routes: &listing.0,
    })
}

/// `GET /`'s list of every route, as `METHOD /path`: app data that the route table makes, so
/// that this module need not import the table that lists its handlers.
pub(crate) struct Listing(pub Vec<String>);

/// Whether the model is loaded.
#[derive(Serialize, utoipa::ToSchema)]
struct Health<'a> {
    /// `healthy`, `loading`, `draining` or `failed`.
    status: &'static str,
    model_loaded: bool,
    /// Where the model runs (`cpu`, `cuda:0`); null until it is loaded.
    device: Option<&'a str>,
    /// The encoder's precision, as `/info` names it (`float32`, `float16`, `bfloat16`, `int8`);
    /// null until the model is loaded.
    dtype: Option<&'a str>,
    /// Why the model failed to load (with `failed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// `GET /health`: 200 `{"status": "healthy", "model_loaded": true, "device": "cpu", "dtype":
/// "float32"}` once the model is loaded; 503 with `"status": "loading"` (or `"failed"` and the
/// `error`) before, and `"draining"` while the server stops.
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    summary = "Whether the model is loaded and requests are served",
    description = "Never needs the API key.",
    responses(
        (status = 200, description = "The model is loaded: `healthy`", body = Health),
        (status = 503, description = "`loading`, `draining`, or `failed` with the `error`", body = Health),
    ),
)]
pub(crate) async fn health(state: web::Data<AppState>) -> HttpResponse {
    let (code, health) = match state.status() {
        Status::Ready(info) => (
            StatusCode::OK,
            Health {
                status: "healthy",
                model_loaded: true,
                device: Some(&info.device),
                dtype: Some(&info.dtype),
                error: None,
            },
        ),
        Status::Draining(info) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Health {
                status: "draining",
                model_loaded: true,
                device: Some(&info.device),
                dtype: Some(&info.dtype),
                error: None,
            },
        ),
        Status::Loading => (
            StatusCode::SERVICE_UNAVAILABLE,
            Health {
                status: "loading",
                model_loaded: false,
                device: None,
                dtype: None,
                error: None,
            },
        ),
        Status::Failed(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Health {
                status: "failed",
                model_loaded: false,
                device: None,
                dtype: None,
                error: Some(reason),
            },
        ),
    };
    HttpResponse::build(code).json(health)
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    summary = "Prometheus metrics",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus metrics in the text exposition format", content_type = "text/plain"),
        KeyErrors,
    ),
    security((), ("api_key" = [])),
)]
pub(crate) async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(registry().render())
}
