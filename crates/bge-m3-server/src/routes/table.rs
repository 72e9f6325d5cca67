//! The route table, the one place a route is declared: its method, its path as `GET /` lists
//! it and the request metrics label it, the pattern it is registered with, whether it is
//! answered without the API key, and its handler. [`super::configure`] registers exactly these;
//! the OpenAPI document describes exactly these (a test in `docs` checks it).

use actix_web::http::Method;
use actix_web::Route;

use super::{docs, embeddings, info, models, rerank, score, tei, tokens};

/// One route of the table.
pub(crate) struct Entry {
    pub method: Method,
    /// As listed and described: `/models/{id}`.
    pub path: &'static str,
    /// As registered: `/models/{id:.*}` (model ids such as `BAAI/bge-m3` contain a slash).
    pub pattern: &'static str,
    /// Answered without the API key: the health check (load balancers and orchestrators send
    /// no credentials) and the API's description, which a browser opens without a way to add
    /// a header (the docs page then sends the key on the requests it makes).
    pub public: bool,
    /// Puts the handler on the method's route.
    pub to: fn(Route) -> Route,
}

/// `route!(GET "/path" => handler)`, with `public` first for a route without the key and
/// `as "pattern"` after the path when it is registered with another pattern.
macro_rules! route {
    (@entry $public:literal $method:ident $path:literal $pattern:literal $handler:path) => {
        Entry {
            method: Method::$method,
            path: $path,
            pattern: $pattern,
            public: $public,
            to: |route| route.to($handler),
        }
    };
    (public $method:ident $path:literal => $handler:path) => {
        route!(@entry true $method $path $path $handler)
    };
    ($method:ident $path:literal as $pattern:literal => $handler:path) => {
        route!(@entry false $method $path $pattern $handler)
    };
    ($method:ident $path:literal => $handler:path) => {
        route!(@entry false $method $path $path $handler)
    };
}

/// Every route, in the order `GET /` lists them.
pub(crate) static ROUTES: &[Entry] = &[
    route!(GET "/" => info::root),
    route!(public GET "/health" => info::health),
    route!(POST "/v1/embeddings" => embeddings::openai),
    route!(POST "/embeddings" => embeddings::native),
    route!(POST "/score" => score::score),
    route!(POST "/rerank" => rerank::tei),
    route!(POST "/v1/rerank" => rerank::cohere_v1),
    route!(POST "/v2/rerank" => rerank::cohere_v2),
    route!(POST "/embed" => tei::embed),
    route!(POST "/" => tei::embed_at_root),
    route!(POST "/embed_sparse" => tei::embed_sparse),
    route!(POST "/embed_all" => tei::embed_all),
    route!(POST "/tokenize" => tokens::tokenize),
    route!(POST "/decode" => tokens::decode),
    route!(GET "/info" => tei::info),
    route!(GET "/models" => models::native_list),
    route!(GET "/models/{id}" as "/models/{id:.*}" => models::native_get),
    route!(GET "/v1/models" => models::openai_list),
    route!(GET "/v1/models/{id}" as "/v1/models/{id:.*}" => models::openai_get),
    route!(GET "/metrics" => super::prometheus_text),
    route!(public GET "/openapi.json" => docs::openapi_json),
    route!(public GET "/docs" => docs::page),
];

/// Swagger UI's scripts and styles, which `/docs` loads: public, and not listed.
pub(crate) const DOCS_ASSETS: &str = "/docs/";

/// Whether `path` is one of the table's (as listed).
pub(crate) fn is_route(path: &str) -> bool {
    ROUTES.iter().any(|entry| entry.path == path)
}

/// Whether `path` is answered without the API key: the public routes and the docs page's
/// assets.
pub(crate) fn is_public(path: &str) -> bool {
    path.starts_with(DOCS_ASSETS)
        || ROUTES
            .iter()
            .any(|entry| entry.public && entry.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths() {
        for path in ["/health", "/openapi.json", "/docs", "/docs/swagger-ui.css"] {
            assert!(is_public(path), "{path}");
        }
        for path in [
            "/",
            "/v1/embeddings",
            "/healthz",
            "/health/",
            "/docsx",
            "/models",
        ] {
            assert!(!is_public(path), "{path}");
        }
    }
}
