//! The error answers of each kind of route, as the OpenAPI document lists them: a leaf that the
//! handlers name in their `#[utoipa::path(responses(...))]` and `docs` never needs to know.

use std::collections::BTreeMap;

use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::IntoResponses;

const BAD_REQUEST: (u16, &str) = (
    400,
    "The body is not JSON, or a field is missing, of the wrong type or out of range",
);
const UNAUTHORIZED: (u16, &str) = (
    401,
    "The server has an API key and the request did not send it as `Authorization: Bearer KEY`",
);
const MODEL_NOT_FOUND: (u16, &str) = (404, "`model` is not the served model id or an alias");
const TOO_LARGE: (u16, &str) = (
    413,
    "The body, the number of inputs or a text is over the server's limits",
);
const OVERLOADED: (u16, &str) = (
    429,
    "The queue in front of the model is full; retry after `Retry-After` seconds",
);
const FAULT: (u16, &str) = (500, "A fault of the server or the model, logged");
const UNAVAILABLE: (u16, &str) = (
    503,
    "The model is loading, failed to load, or the server is stopping",
);

/// Error answers, each with OpenAI's error body.
fn errors(statuses: &[(u16, &str)]) -> Vec<(String, RefOr<Response>)> {
    statuses
        .iter()
        .map(|&(status, description)| {
            let body = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", body)
                .build();
            (status.to_string(), response.into())
        })
        .collect()
}

/// The errors of the routes that run the model.
pub(crate) struct EncodeErrors;

impl IntoResponses for EncodeErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[
            BAD_REQUEST,
            UNAUTHORIZED,
            MODEL_NOT_FOUND,
            TOO_LARGE,
            OVERLOADED,
            FAULT,
            UNAVAILABLE,
        ])
        .into_iter()
        .collect()
    }
}

/// The errors of the model cards.
pub(crate) struct ModelErrors;

impl IntoResponses for ModelErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[UNAUTHORIZED, MODEL_NOT_FOUND, UNAVAILABLE])
            .into_iter()
            .collect()
    }
}

/// The one error of a route that needs nothing but the key.
pub(crate) struct KeyErrors;

impl IntoResponses for KeyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        errors(&[UNAUTHORIZED]).into_iter().collect()
    }
}
