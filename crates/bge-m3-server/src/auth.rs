//! The API key (`--api-key`): when one is configured, every request but those of [`PUBLIC`]
//! must carry `Authorization: Bearer <key>`, as OpenAI's API and SDKs do; others are refused
//! with 401 before any route runs.
//!
//! The key itself is never kept: [`ApiKey`] holds its SHA-256 digest, and a presented key is
//! checked by comparing digests in constant time, so neither the key's bytes nor its length can
//! be learnt from response times. Nothing here logs the key or the presented one.

use std::fmt;
use std::str::FromStr;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::state::AppState;
use crate::Error;

/// Paths answered without the key: the health check (for load balancers and orchestrators,
/// which send no credentials) and the API's description, which a browser opens without a way
/// to add a header; the docs page then sends the key on the requests it makes.
pub const PUBLIC: [&str; 3] = ["/health", "/openapi.json", "/docs"];

/// Why a request was refused with 401 ([`Error::Unauthorized`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not `Bearer <key>` (another scheme, no token).
    NotBearer,
    /// A Bearer token that is not the key.
    WrongKey,
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthFailure::Missing => {
                "no API key was sent: this server requires one, in an `Authorization: Bearer \
                 YOUR_KEY` header"
            }
            AuthFailure::NotBearer => {
                "the Authorization header is not `Bearer YOUR_KEY`: send the API key as a \
                 Bearer token"
            }
            AuthFailure::WrongKey => "the API key sent is not this server's API key",
        })
    }
}

/// The configured API key, kept as its SHA-256 digest.
#[derive(Clone)]
pub struct ApiKey {
    digest: [u8; 32],
}

impl ApiKey {
    /// Whether `presented` is the key, in time independent of where or whether they differ.
    pub fn matches(&self, presented: &str) -> bool {
        self.digest.ct_eq(&digest(presented)).into()
    }

    /// Checks an `Authorization` header: `Bearer <key>`, the scheme in any case.
    pub(crate) fn check(&self, authorization: Option<&HeaderValue>) -> Result<(), AuthFailure> {
        let value = authorization.ok_or(AuthFailure::Missing)?;
        let value = value.to_str().map_err(|_| AuthFailure::NotBearer)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthFailure::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthFailure::NotBearer);
        }
        if self.matches(token.trim()) {
            Ok(())
        } else {
            Err(AuthFailure::WrongKey)
        }
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl FromStr for ApiKey {
    type Err = String;

    /// A key is 1 or more visible ASCII characters: anything else could not be sent as a
    /// Bearer token, and would only ever answer 401.
    fn from_str(key: &str) -> Result<Self, String> {
        if key.is_empty() {
            return Err("must not be empty".into());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "must be visible ASCII characters only (no spaces), as it is sent in an \
                 `Authorization: Bearer` header"
                    .into(),
            );
        }
        Ok(Self {
            digest: digest(key),
        })
    }
}

/// Never shows the key, not even its digest (`Config` is `Debug`).
impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Whether `path` is answered without the key: [`PUBLIC`] and the docs page's assets.
pub fn is_public(path: &str) -> bool {
    PUBLIC.contains(&path) || path.starts_with("/docs/")
}

/// Middleware: with an API key configured, refuses a request to a non-public path that lacks
/// it with 401 (and `WWW-Authenticate: Bearer`) without running the route.
pub(crate) async fn require_api_key<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    #[test]
    fn bearer_tokens() {
        let key: ApiKey = "sk-test-123".parse().unwrap();
        assert!(key.matches("sk-test-123"));
        assert!(!key.matches("sk-test-12"));
        assert!(!key.matches("sk-test-1234"));
        assert!(!key.matches(""));
        assert_eq!(key.check(Some(&header("Bearer sk-test-123"))), Ok(()));
        assert_eq!(key.check(Some(&header("bearer  sk-test-123 "))), Ok(()));
        assert_eq!(key.check(None), Err(AuthFailure::Missing));
        assert_eq!(
            key.check(Some(&header("Bearer sk-other"))),
            Err(AuthFailure::WrongKey)
        );
        assert_eq!(
            key.check(Some(&header("Bearer"))),
            Err(AuthFailure::NotBearer)
        );
        assert_eq!(
            key.check(Some(&header("Basic c2stdGVzdC0xMjM="))),
            Err(AuthFailure::NotBearer)
        );
        assert_eq!(
            key.check(Some(&header("sk-test-123"))),
            Err(AuthFailure::NotBearer)
        );
        assert_eq!(
            key.check(Some(&HeaderValue::from_bytes(b"Bearer \xff").unwrap())),
            Err(AuthFailure::NotBearer)
        );
    }

    #[test]
    fn keys_are_checked_and_never_shown() {
        assert!("".parse::<ApiKey>().is_err());
        assert!("with space".parse::<ApiKey>().is_err());
        assert!("tab\t".parse::<ApiKey>().is_err());
        assert!("clé".parse::<ApiKey>().is_err());
        let key: ApiKey = "sk-secret-value".parse().unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("sk-secret-value"), "{shown}");
        assert_eq!(shown, "ApiKey(<redacted>)");
    }

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
