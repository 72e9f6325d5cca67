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
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::input;
use crate::error::ErrorBody;
use crate::inference::ModelInfo;
use crate::state::{AppState, Status};
use crate::{Error, Result};

/// The security scheme of `--api-key`, as the operations name it (`security(("api_key" = []))`).
const API_KEY: &str = "api_key";

#[derive(OpenApi)]
#[openapi(
    components(schemas(ErrorBody)),
    modifiers(&ApiKeyScheme),
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

/// The document of the operations `paths` (the route table's, see `table::openapi`), with this
/// module's components, tags and hand-written parts, serialized.
pub(crate) fn document(paths: utoipa::openapi::OpenApi) -> String {
    let mut doc = ApiDoc::openapi();
    doc.merge(paths);
    let mut doc = serde_json::to_value(doc).expect("the document serializes");
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
}

/// The served document (see [`document`]), as app data: the route table makes it and
/// registers it, so that this module need not import the table that lists its handlers.
#[derive(Clone, Copy)]
pub(crate) struct Document(pub &'static str);

/// The document with the limits of the served model: `dimensions` at most its width, token ids
/// within its vocabulary, lengths within its `max_length`; inputs of token ids only when the
/// server accepts them (`--allow-token-ids`).
pub(crate) fn openapi_for(document: &str, info: &ModelInfo, allow_token_ids: bool) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(document).expect("the document is JSON");
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
pub(crate) async fn openapi_json(
    state: web::Data<AppState>,
    document: web::Data<Document>,
) -> HttpResponse {
    let doc = match state.status() {
        Status::Ready(info) | Status::Draining(info) => state
            .openapi_cache()
            .get_or_init(|| openapi_for(document.0, info, state.allows_token_ids()))
            .clone(),
        Status::Loading | Status::Failed(_) => document.0.to_string(),
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
