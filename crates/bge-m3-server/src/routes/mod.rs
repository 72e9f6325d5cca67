//! The routes of docs/API.md, and the 404 and 405 answers for everything else.

mod answer;
mod docs;
mod embeddings;
pub(crate) mod extract;
mod info;
mod input;
mod models;
mod reply;
mod rerank;
mod responses;
mod score;
mod table;
mod tei;
mod vectors;

use actix_web::http::Method;
use actix_web::{guard, web, HttpRequest, HttpResponse, Resource, Route};

pub(crate) use self::table::ROUTES;
use crate::metrics::metrics;
use crate::Error;

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
        .service(resource("/metrics", Method::GET).route(get().to(prometheus_text)))
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

/// `GET /metrics`.
async fn prometheus_text() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics().render())
}
