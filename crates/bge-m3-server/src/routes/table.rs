//! The route table: every route's method and path, as `GET /` lists them and the request metrics
//! label them. `super::configure` registers exactly these.

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
