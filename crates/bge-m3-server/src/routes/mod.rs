//! The routes of API.md, and the 404 and 405 answers for everything else.

mod answer;
mod docs;
mod embeddings;
mod info;
mod input;
mod models;
mod rerank;
mod score;
mod tei;
mod vectors;

use actix_web::http::header::HeaderName;
use actix_web::http::Method;
use actix_web::{guard, web, HttpRequest, HttpResponse, Resource, Route};
use serde::Serialize;

use crate::batcher::Timings;
use crate::logging::Tokens;
use crate::metrics::milliseconds;
use crate::Error;

/// Every route, as `GET /` lists them.
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/health"),
    ("POST", "/v1/embeddings"),
    ("POST", "/embeddings"),
    ("POST", "/score"),
    ("POST", "/rerank"),
    ("POST", "/v1/rerank"),
    ("POST", "/v2/rerank"),
    ("POST", "/embed"),
    ("POST", "/embed_sparse"),
    ("POST", "/embed_all"),
    ("POST", "/tokenize"),
    ("POST", "/decode"),
    ("GET", "/info"),
    ("GET", "/models"),
    ("GET", "/models/{id}"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{id}"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
];

/// Registers the routes of [`ROUTES`].
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource("/", Method::GET).route(get().to(info::root)))
        .service(resource("/health", Method::GET).route(get().to(info::health)))
        .service(resource("/v1/embeddings", Method::POST).route(web::post().to(embeddings::openai)))
        .service(resource("/embeddings", Method::POST).route(web::post().to(embeddings::native)))
        .service(resource("/score", Method::POST).route(web::post().to(score::score)))
        .service(resource("/rerank", Method::POST).route(web::post().to(rerank::tei)))
        .service(resource("/v1/rerank", Method::POST).route(web::post().to(rerank::cohere_v1)))
        .service(resource("/v2/rerank", Method::POST).route(web::post().to(rerank::cohere_v2)))
        .service(resource("/embed", Method::POST).route(web::post().to(tei::embed)))
        .service(resource("/embed_sparse", Method::POST).route(web::post().to(tei::embed_sparse)))
        .service(resource("/embed_all", Method::POST).route(web::post().to(tei::embed_all)))
        .service(resource("/tokenize", Method::POST).route(web::post().to(tei::tokenize)))
        .service(resource("/decode", Method::POST).route(web::post().to(tei::decode)))
        .service(resource("/info", Method::GET).route(get().to(tei::info)))
        .service(resource("/models", Method::GET).route(get().to(models::native_list)))
        // `{id:.*}`: model ids such as `BAAI/bge-m3` contain a slash.
        .service(resource("/models/{id:.*}", Method::GET).route(get().to(models::native_get)))
        .service(resource("/v1/models", Method::GET).route(get().to(models::openai_list)))
        .service(resource("/v1/models/{id:.*}", Method::GET).route(get().to(models::openai_get)))
        .service(resource("/metrics", Method::GET).route(get().to(crate::metrics::serve)))
        .service(resource("/openapi.json", Method::GET).route(get().to(docs::openapi_json)))
        .service(resource("/docs", Method::GET).route(get().to(docs::page)))
        // Swagger UI's scripts and styles, which `/docs` loads.
        .service(resource("/docs/{file:.*}", Method::GET).route(get().to(docs::asset)));
}

/// A GET route, which answers HEAD too (with the headers of GET and no body), as load
/// balancers ask `HEAD /health`.
fn get() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// A route that answers any method but `allowed` with 405 in OpenAI's error shape.
fn resource(path: &str, allowed: Method) -> Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| {
        let error = Error::MethodNotAllowed {
            method: req.method().clone(),
            path: req.path().to_string(),
            allowed: allowed.clone(),
        };
        async move { Err::<HttpResponse, _>(error) }
    }))
}

/// The answer for a path that no route has.
pub(crate) async fn not_found(req: HttpRequest) -> Result<HttpResponse, Error> {
    Err(Error::RouteNotFound {
        method: req.method().clone(),
        path: req.path().to_string(),
    })
}

/// `usage`: tokens of the inputs after truncation, `<s>` and `</s>` not counted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

impl Usage {
    pub fn new(tokens: usize) -> Self {
        Self {
            prompt_tokens: tokens,
            total_tokens: tokens,
        }
    }
}

/// The 200 `response` of a request the model answered: the request log learns its tokens, the
/// client where its time went (`x-queue-time`, `x-tokenization-time`, `x-inference-time` in
/// milliseconds, `x-compute-tokens`; the metrics middleware adds `x-total-time`).
pub(crate) fn answered(
    mut response: HttpResponse,
    tokens: usize,
    timings: Timings,
) -> HttpResponse {
    let headers = response.headers_mut();
    for (name, duration) in [
        ("x-queue-time", timings.queue),
        ("x-tokenization-time", timings.tokenization),
        ("x-inference-time", timings.inference),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            milliseconds(duration.as_secs_f64()),
        );
    }
    headers.insert(HeaderName::from_static("x-compute-tokens"), tokens.into());
    response.extensions_mut().insert(Tokens(tokens));
    response.extensions_mut().insert(timings);
    response
}
