//! Request ids: each request gets one, taken from its `X-Request-Id` header when that is sane
//! (what a proxy or the client chose, so that their logs and ours can be joined) or else a new
//! UUID. It is sent back in the `X-Request-Id` header of every response, errors included, and
//! every log line written while the request is served carries it: they all run inside a
//! `request` span with a `request_id` field, and the id is the task's
//! [`logging::request_id`] for the errors that name it.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

use crate::logging;

/// The request and response header.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id taken from a request.
pub(crate) const MAX_LEN: usize = 128;

/// A request id: `X-Request-Id` when it is 1 to [`MAX_LEN`] visible ASCII characters (no
/// spaces, nothing that could forge a log line), else a new UUID v4.
pub(crate) fn request_id(header: Option<&HeaderValue>) -> HeaderValue {
    match header {
        Some(value) if is_sane(value.as_bytes()) => value.clone(),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            HeaderValue::from_str(&id).expect("a UUID is a valid header value")
        }
    }
}

fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
}

/// Middleware, the outermost: serves the request inside its span and puts the id on the
/// response, or on the error that the response will be made of.
pub(crate) async fn assign<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let id = request_id(req.headers().get(X_REQUEST_ID));
    // Sane ids and UUIDs are visible ASCII; `%` writes them unquoted.
    let text = id.to_str().unwrap_or_default().to_string();
    let span = tracing::info_span!("request", request_id = %text);
    match logging::serving(text, next.call(req).instrument(span)).await {
        Ok(mut response) => {
            response.headers_mut().insert(X_REQUEST_ID, id);
            Ok(response)
        }
        Err(mut error) => {
            error.add_response_mapper(move |mut response| {
                response.headers_mut().insert(X_REQUEST_ID, id.clone());
                response
            });
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_others_replaced() {
        for kept in ["abc-123", "req_01HZX", &"x".repeat(MAX_LEN), "a.b:c/d=e"] {
            let header = HeaderValue::from_str(kept).unwrap();
            assert_eq!(request_id(Some(&header)), kept);
        }
        let long = "x".repeat(MAX_LEN + 1);
        for replaced in ["", "has space", "tab\there", long.as_str()] {
            let header = HeaderValue::from_str(replaced).unwrap();
            let id = request_id(Some(&header));
            assert_ne!(id, replaced);
            assert!(
                uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok(),
                "{id:?}"
            );
        }
        let latin1 = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        assert_ne!(request_id(Some(&latin1)), latin1);
        let (a, b) = (request_id(None), request_id(None));
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
    }
}
