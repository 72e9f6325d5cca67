//! The route table, the one place a route is declared: its method, its path as `GET /` lists
//! it and the request metrics label it, the pattern it is registered with, whether it is
//! answered without the API key, and its handler. [`super::configure`] registers exactly these,
//! `GET /` lists them ([`listing`]) and the OpenAPI document describes exactly these ([`openapi`]:
//! its paths are the operations of the same list). The table imports the handlers; none of them
//! imports the table: `GET /` and `GET /openapi.json` get its list and its document as app data.

use std::sync::OnceLock;

use actix_web::http::Method;
use actix_web::Route;
use utoipa::OpenApi;

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

/// `table! { GET "/path" => module::handler, ... }` writes [`ROUTES`] and [`Paths`], the
/// OpenAPI operations of the same handlers, from one list: `public` before a route answered
/// without the key, `as "pattern"` after a path registered with another pattern.
macro_rules! table {
    ($($(#[$public:ident])? $method:ident $path:literal $(as $pattern:literal)?
        => $module:ident :: $handler:ident),* $(,)?) => {
        /// Every route, in the order `GET /` lists them.
        pub(crate) static ROUTES: &[Entry] = &[$(
            Entry {
                method: Method::$method,
                path: $path,
                pattern: table!(@first $($pattern,)? $path),
                public: table!(@public $($public)?),
                to: |route| route.to($module::$handler),
            }
        ),*];

        /// The operations of [`ROUTES`], in their order, as their `#[utoipa::path]` describe them.
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($module::$handler),*))]
        struct Paths;
    };
    (@first $first:literal $(, $rest:literal)*) => { $first };
    (@public public) => { true };
    (@public) => { false };
}

table! {
    GET "/" => info::root,
    #[public] GET "/health" => info::health,
    POST "/v1/embeddings" => embeddings::openai,
    POST "/embeddings" => embeddings::native,
    POST "/score" => score::score,
    POST "/rerank" => rerank::tei,
    POST "/v1/rerank" => rerank::cohere_v1,
    POST "/v2/rerank" => rerank::cohere_v2,
    POST "/embed" => tei::embed,
    POST "/" => tei::embed_at_root,
    POST "/embed_sparse" => tei::embed_sparse,
    POST "/embed_all" => tei::embed_all,
    POST "/tokenize" => tokens::tokenize,
    POST "/decode" => tokens::decode,
    GET "/info" => tei::info,
    GET "/models" => models::native_list,
    GET "/models/{id}" as "/models/{id:.*}" => models::native_get,
    GET "/v1/models" => models::openai_list,
    GET "/v1/models/{id}" as "/v1/models/{id:.*}" => models::openai_get,
    GET "/metrics" => info::metrics,
    #[public] GET "/openapi.json" => docs::openapi_json,
    #[public] GET "/docs" => docs::page,
}

/// `GET /`'s list of the routes, as `METHOD /path`.
pub(crate) fn listing() -> info::Listing {
    info::Listing(
        ROUTES
            .iter()
            .map(|entry| format!("{} {}", entry.method, entry.path))
            .collect(),
    )
}

/// The OpenAPI document of [`ROUTES`] (see [`docs::document`]), made once.
pub(crate) fn openapi() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| docs::document(Paths::openapi()))
}

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

    /// The document that [`openapi`] makes of the table (`docs::document`).
    mod document {
        use serde_json::Value;

        use super::*;
        use crate::inference::ModelInfo;
        use crate::routes::docs::openapi_for;

        /// A served model whose limits differ from the document's defaults.
        fn served_model() -> ModelInfo {
            ModelInfo {
                dense_dim: 32,
                colbert_dim: 16,
                max_length: 4096,
                vocab_size: 1202,
                device: "cpu".into(),
                dtype: "float32".into(),
                loaded_at: 0,
            }
        }

        fn document() -> Value {
            serde_json::from_str(openapi()).unwrap()
        }

        #[test]
        fn every_route_is_described() {
            let doc = document();
            assert!(
                doc["openapi"].as_str().unwrap().starts_with("3."),
                "{}",
                doc["openapi"]
            );
            for entry in ROUTES {
                let (method, path) = (entry.method.as_str(), entry.path);
                let operation = &doc["paths"][path][method.to_ascii_lowercase()];
                assert!(
                    operation.is_object(),
                    "{method} {path} is not in the document"
                );
                assert!(operation["responses"]["200"].is_object(), "{method} {path}");
            }
            let described = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .map(|item| item.as_object().unwrap().len())
                .sum::<usize>();
            assert_eq!(described, ROUTES.len(), "routes described but not served");
        }

        #[test]
        fn every_reference_resolves() {
            fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
                match value {
                    Value::Object(map) => {
                        if let Some(Value::String(target)) = map.get("$ref") {
                            found.push(target);
                        }
                        map.values().for_each(|v| references(v, found));
                    }
                    Value::Array(items) => items.iter().for_each(|v| references(v, found)),
                    _ => {}
                }
            }
            let doc = document();
            let mut found = Vec::new();
            references(&doc, &mut found);
            assert!(!found.is_empty());
            for target in found {
                let name = target.strip_prefix("#/components/schemas/").unwrap();
                assert!(
                    doc["components"]["schemas"][name].is_object(),
                    "{target} is not defined"
                );
            }
        }

        /// The served model's limits land on the integer fields they bound (the document is
        /// indexed by position and name, which a change of the types could silently move).
        #[test]
        fn the_served_models_limits_are_written_on_their_fields() {
            let info = served_model();
            let doc: Value = serde_json::from_str(&openapi_for(openapi(), &info, true)).unwrap();
            let schemas = &doc["components"]["schemas"];
            let integer = |schema: &Value| {
                let kind = &schema["type"];
                kind == "integer"
                    || kind
                        .as_array()
                        .is_some_and(|k| k.contains(&"integer".into()))
            };
            let dimensions = &schemas["EmbeddingsRequest"]["properties"]["dimensions"];
            assert!(integer(dimensions), "{dimensions}");
            assert_eq!(dimensions["maximum"], 32);
            for (request, field) in [
                ("EmbeddingsRequest", "max_length"),
                ("ScoreRequest", "max_length"),
                ("ScoreRequest", "max_query_length"),
                ("ScoreRequest", "max_passage_length"),
            ] {
                let schema = &schemas[request]["properties"][field];
                assert!(integer(schema), "{request}.{field}: {schema}");
                assert_eq!(schema["maximum"], 4096, "{request}.{field}");
            }
            let shapes = schemas["Input"]["oneOf"].as_array().unwrap();
            let decoded = schemas["Ids"]["oneOf"].as_array().unwrap();
            for ids in [
                &shapes[2]["items"],
                &shapes[3]["items"]["items"],
                &decoded[0]["items"],
                &decoded[1]["items"]["items"],
            ] {
                assert!(integer(ids), "{ids}");
                assert_eq!(ids["maximum"], 1201);
            }
            assert_eq!(
                schemas["EmbedRequest"]["properties"]["dimensions"]["maximum"],
                32
            );
            assert_eq!(
                schemas["CohereRerankRequest"]["properties"]["max_tokens_per_doc"]["maximum"],
                4096
            );
        }

        /// Without `--allow-token-ids`, `input` and `inputs` are documented as texts alone, as
        /// the server refuses token ids.
        #[test]
        fn token_id_inputs_are_documented_only_when_accepted() {
            let info = served_model();
            let shapes = |allow: bool| {
                let doc: Value =
                    serde_json::from_str(&openapi_for(openapi(), &info, allow)).unwrap();
                let shapes = doc["components"]["schemas"]["Input"]["oneOf"].clone();
                shapes.as_array().unwrap().len()
            };
            assert_eq!(shapes(false), 2);
            assert_eq!(shapes(true), 4);
        }
    }
}
