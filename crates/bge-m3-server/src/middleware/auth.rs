//! The API key (`--api-key`): when one is configured, every request but those to the public
//! paths (the route table says which) must carry `Authorization: Bearer <key>`, as OpenAI's API and SDKs do; others are refused
//! with 401 before any route runs.
//!
//! The key is checked by [`crate::state::ApiKey`] (a digest compared in constant time). Nothing
//! here logs the key or the presented one.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web;

use crate::state::AppState;
use crate::Error;

/// Middleware: with an API key configured, refuses a request to a non-public path that lacks
/// it with 401 (and `WWW-Authenticate: Bearer`) without running the route; `is_public`
/// tells the paths answered without the key.
pub(crate) async fn require_api_key<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
    is_public: fn(&str) -> bool,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let verdict = match req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.api_key())
    {
        Some(key) if !is_public(req.path()) => key.check(req.headers().get(header::AUTHORIZATION)),
        _ => Ok(()),
    };
    match verdict {
        Ok(()) => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        Err(failure) => Ok(req
            .error_response(Error::Unauthorized(failure))
            .map_into_right_body()),
    }
}
