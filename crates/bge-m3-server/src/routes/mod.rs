//! The routes of API.md, and the 404 and 405 answers for everything else.

mod embeddings;
mod info;
mod input;
mod models;
mod score;
mod vectors;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, Resource};
use serde::Serialize;

use crate::logging::Tokens;
use crate::Error;

/// Every route, as `GET /` lists them.
pub(crate) const ROUTES: [(&str, &str); 9] = [
    ("GET", "/"),
    ("GET", "/health"),
    ("POST", "/v1/embeddings"),
    ("POST", "/embeddings"),
    ("POST", "/score"),
    ("GET", "/models"),
    ("GET", "/models/{id}"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{id}"),
];

/// Registers the routes of [`ROUTES`].
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(resource("/", Method::GET).route(web::get().to(info::root)))
        .service(resource("/health", Method::GET).route(web::get().to(info::health)))
        .service(resource("/v1/embeddings", Method::POST).route(web::post().to(embeddings::openai)))
        .service(resource("/embeddings", Method::POST).route(web::post().to(embeddings::native)))
        .service(resource("/score", Method::POST).route(web::post().to(score::score)))
        .service(resource("/models", Method::GET).route(web::get().to(models::native_list)))
        // `{id:.*}`: model ids such as `BAAI/bge-m3` contain a slash.
        .service(resource("/models/{id:.*}", Method::GET).route(web::get().to(models::native_get)))
        .service(resource("/v1/models", Method::GET).route(web::get().to(models::openai_list)))
        .service(
            resource("/v1/models/{id:.*}", Method::GET).route(web::get().to(models::openai_get)),
        );
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
#[derive(Debug, Serialize)]
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

/// A 200 JSON response that tells the request log how many tokens it took.
pub(crate) fn ok_with_tokens(body: &impl Serialize, tokens: usize) -> HttpResponse {
    let mut response = HttpResponse::Ok().json(body);
    response.extensions_mut().insert(Tokens(tokens));
    response
}
