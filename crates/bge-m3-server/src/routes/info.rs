//! `GET /` (what this service is) and `GET /health` (whether the model is loaded).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::ROUTES;
use crate::state::{AppState, Status};

#[derive(Serialize)]
struct Root<'a> {
    name: &'static str,
    version: &'static str,
    model: &'a str,
    status: &'static str,
    device: Option<&'a str>,
    routes: Vec<String>,
}

/// `GET /`: always 200, also while the model loads.
pub(crate) async fn root(state: web::Data<AppState>) -> HttpResponse {
    let (status, device) = match state.status() {
        Status::Loading => ("loading", None),
        Status::Ready(info) => ("healthy", Some(info.device.as_str())),
        Status::Failed(_) => ("failed", None),
    };
    HttpResponse::Ok().json(Root {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        model: state.model_id(),
        status,
        device,
        routes: ROUTES
            .iter()
            .map(|(method, path)| format!("{method} {path}"))
            .collect(),
    })
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'static str,
    model_loaded: bool,
    device: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// `GET /health`: 200 `{"status": "healthy", "model_loaded": true, "device": "cpu"}` once the
/// model is loaded; 503 with `"status": "loading"` (or `"failed"` and the `error`) before.
pub(crate) async fn health(state: web::Data<AppState>) -> HttpResponse {
    let (code, health) = match state.status() {
        Status::Ready(info) => (
            StatusCode::OK,
            Health {
                status: "healthy",
                model_loaded: true,
                device: Some(&info.device),
                error: None,
            },
        ),
        Status::Loading => (
            StatusCode::SERVICE_UNAVAILABLE,
            Health {
                status: "loading",
                model_loaded: false,
                device: None,
                error: None,
            },
        ),
        Status::Failed(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Health {
                status: "failed",
                model_loaded: false,
                device: None,
                error: Some(reason),
            },
        ),
    };
    HttpResponse::build(code).json(health)
}
