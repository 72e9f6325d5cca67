//! The configured API key (`--api-key`). The key itself is never kept: [`ApiKey`] holds its
//! SHA-256 digest, and a presented key is checked by comparing digests in constant time, so
//! neither the key's bytes nor its length can be learnt from response times.

use std::fmt;
use std::str::FromStr;

use actix_web::http::header::HeaderValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::AuthFailure;

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
}
