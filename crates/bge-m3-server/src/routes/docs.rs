//! The API's own description: the OpenAPI 3.1 document at `GET /openapi.json`, generated from
//! the request and response types (`ToSchema`) and the handlers' `#[utoipa::path]` attributes,
//! and Swagger UI at `GET /docs`. Swagger UI's files are compiled into the binary (the zip that
//! `utoipa-swagger-ui-vendored` ships), so nothing is fetched from the internet, neither at
//! build time nor when a browser opens the page.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use actix_web::http::header::{self, ContentType};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use utoipa::openapi::path::{HttpMethod, OperationBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::responses::KeyErrors;
use super::{embeddings, info, input, models, rerank, score, tei, tokens};
use crate::error::ErrorBody;
use crate::inference::ModelInfo;
use crate::state::{AppState, Status};
use crate::{Error, Result};

/// The security scheme of `--api-key`, as the operations name it (`security(("api_key" = []))`).
const API_KEY: &str = "api_key";

#[derive(OpenApi)]
#[openapi(
    paths(
        info::root,
        info::health,
        embeddings::openai,
        embeddings::native,
        score::score,
        rerank::tei,
        rerank::cohere_v1,
        rerank::cohere_v2,
        tei::embed,
        tei::embed_at_root,
        tei::embed_sparse,
        tei::embed_all,
        tokens::tokenize,
        tokens::decode,
        tei::info,
        models::native_list,
        models::native_get,
        models::openai_list,
        models::openai_get,
        openapi_json,
        page,
    ),
    components(schemas(ErrorBody)),
    modifiers(&ApiKeyScheme, &Metrics),
    tags(
        (name = "embeddings", description = "Dense, sparse and ColBERT vectors of texts or token ids"),
        (name = "score", description = "Similarity scores of sentence pairs"),
        (name = "rerank", description = "Documents ranked against a query, as FlagEmbedding reranks with BGE-M3"),
        (name = "text-embeddings-inference", description = "text-embeddings-inference's routes, computed by BGE-M3's heads"),
        (name = "models", description = "The served model"),
        (name = "service", description = "What this service is and whether it is ready"),
        (name = "docs", description = "This description of the API"),
    )
)]
struct ApiDoc;

/// `components.securitySchemes.api_key`: the Bearer token of `--api-key`.
struct ApiKeyScheme;

impl Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The server's API key, when it runs with `--api-key` (`API_KEY`); without one, \
                 no key is needed.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(API_KEY, SecurityScheme::Http(scheme));
    }
}

/// `GET /metrics`, whose Prometheus text has no schema to derive.
struct Metrics;

impl Modify for Metrics {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let ok = ResponseBuilder::new()
            .description("Prometheus metrics in the text exposition format")
            .content("text/plain", ContentBuilder::new().build())
            .build();
        let operation = KeyErrors::responses()
            .into_iter()
            .fold(OperationBuilder::new(), |operation, (status, response)| {
                operation.response(status, response)
            })
            .tag("service")
            .summary(Some("Prometheus metrics"))
            .operation_id(Some("metrics"))
            .response("200", ok)
            .securities(Some(security()))
            .build();
        openapi
            .paths
            .add_path_operation("/metrics", vec![HttpMethod::Get], operation);
    }
}

/// Either no key (the server runs without one) or the Bearer key.
fn security() -> [utoipa::openapi::security::SecurityRequirement; 2] {
    use utoipa::openapi::security::SecurityRequirement;
    [
        SecurityRequirement::default(),
        SecurityRequirement::new::<_, _, &str>(API_KEY, []),
    ]
}

/// The document, serialized once.
pub(crate) fn openapi() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
        // utoipa's schema model has no `contains`: the weights need one that counts.
        for schema in doc["components"]["schemas"]
            .as_object_mut()
            .expect("the document has schemas")
            .values_mut()
        {
            if let Some(weights) = schema.pointer_mut("/properties/weights") {
                weights["contains"] = input::weights_contains();
            }
        }
        serde_json::to_string_pretty(&doc).expect("the OpenAPI document serializes")
    })
}

/// The document with the limits of the served model: `dimensions` at most its width, token ids
/// within its vocabulary, lengths within its `max_length`; inputs of token ids only when the
/// server accepts them (`--allow-token-ids`).
pub(crate) fn openapi_for(info: &ModelInfo, allow_token_ids: bool) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(openapi()).expect("the document is JSON");
    let schemas = &mut doc["components"]["schemas"];
    for request in ["EmbeddingsRequest", "EmbedRequest"] {
        schemas[request]["properties"]["dimensions"]["maximum"] = info.dense_dim.into();
    }
    for (request, field) in [
        ("EmbeddingsRequest", "max_length"),
        ("ScoreRequest", "max_length"),
        ("ScoreRequest", "max_query_length"),
        ("ScoreRequest", "max_passage_length"),
        ("CohereRerankRequest", "max_tokens_per_doc"),
    ] {
        schemas[request]["properties"][field]["maximum"] = info.max_length.into();
    }
    let last_id = info.vocab_size.saturating_sub(1);
    if let Some(shapes) = schemas["Input"]["oneOf"].as_array_mut() {
        if allow_token_ids {
            shapes[2]["items"]["maximum"] = last_id.into();
            shapes[3]["items"]["items"]["maximum"] = last_id.into();
        } else {
            shapes.truncate(2);
            schemas["Input"]["description"] =
                "A text or an array of texts (token ids only with `--allow-token-ids`)".into();
        }
    }
    if let Some(shapes) = schemas["Ids"]["oneOf"].as_array_mut() {
        shapes[0]["items"]["maximum"] = last_id.into();
        shapes[1]["items"]["items"]["maximum"] = last_id.into();
    }
    serde_json::to_string_pretty(&doc).expect("the document serializes")
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    summary = "This OpenAPI document",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")),
)]
pub(crate) async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    let doc = match state.status() {
        Status::Ready(info) | Status::Draining(info) => state
            .openapi_cache()
            .get_or_init(|| openapi_for(info, state.allows_token_ids()))
            .clone(),
        Status::Loading | Status::Failed(_) => openapi().to_string(),
    };
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(doc)
}

/// Swagger UI over `/openapi.json`. Relative paths, so that it also works behind a proxy that
/// serves the API under a prefix: from `/docs`, `docs/x` is `/docs/x` and `openapi.json` is
/// `/openapi.json`.
const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>bge-m3-server API</title>
  <link rel="stylesheet" href="docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="docs/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
    });
  </script>
</body>
</html>
"##;

/// `GET /docs`.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    summary = "Swagger UI: this API, interactive",
    responses((status = 200, description = "An HTML page; its scripts are served from /docs/", content_type = "text/html")),
)]
pub(crate) async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(PAGE)
}

/// `GET /docs/{file}`: Swagger UI's scripts, styles and icons; `/docs/` leads to `/docs`.
pub(crate) async fn asset(req: HttpRequest, file: web::Path<String>) -> Result<HttpResponse> {
    if file.is_empty() {
        return Ok(HttpResponse::PermanentRedirect()
            .insert_header((header::LOCATION, "../docs"))
            .finish());
    }
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    let config =
        CONFIG.get_or_init(|| Arc::new(utoipa_swagger_ui::Config::from("../openapi.json")));
    match utoipa_swagger_ui::serve(&file, config.clone()) {
        Ok(Some(asset)) => {
            let mut response = HttpResponse::Ok();
            response.content_type(asset.content_type);
            if asset.gzpipped {
                response.insert_header(header::ContentEncoding::Gzip);
            }
            Ok(match asset.bytes {
                Cow::Borrowed(bytes) => response.body(bytes),
                Cow::Owned(bytes) => response.body(bytes),
            })
        }
        Ok(None) => Err(Error::RouteNotFound {
            method: Method::GET,
            path: req.path().to_string(),
        }),
        Err(e) => Err(Error::Internal(format!("serving Swagger UI's {file}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::routes::ROUTES;

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
        let doc: Value = serde_json::from_str(&openapi_for(&info, true)).unwrap();
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
            let doc: Value = serde_json::from_str(&openapi_for(&info, allow)).unwrap();
            let shapes = doc["components"]["schemas"]["Input"]["oneOf"].clone();
            shapes.as_array().unwrap().len()
        };
        assert_eq!(shapes(false), 2);
        assert_eq!(shapes(true), 4);
    }
}
