//! [`Json`], the request body as JSON, failing with this crate's [`Error`] (and so with OpenAI's
//! error body) where actix's own `web::Json` would answer with its plain-text errors.

use std::future::Future;
use std::pin::Pin;

use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{dev::Payload, web, FromRequest, HttpMessage, HttpRequest};
use serde::de::DeserializeOwned;

use crate::inference::memory::{Need, Reservation};
use crate::state::AppState;
use crate::{Error, Result};

/// A JSON request body deserialized into `T`, and the memory reservation that holds it.
///
/// - The body may be at most [`crate::state::Limits::max_body_bytes`] long (413 otherwise).
/// - Before it is read, twice its length (the bytes, then the parsed values) is reserved in the
///   memory budget ([`crate::inference::memory`]); without room the request is refused with 429 at once.
/// - It must arrive within [`crate::state::Limits::body_timeout`] (408 otherwise, and the
///   connection is closed).
/// - A `Content-Type` other than JSON is a 400. A missing one is read as JSON, as the FastAPI
///   service this server replaces did (so `curl -d` without `-H` keeps working). A
///   `Content-Encoding` other than `identity` is a 415: bodies are not decompressed.
/// - A syntax error is a 400 `invalid_json`; a wrong type or value is a 400 naming the field
///   by its JSON path (`input_type.dense`).
/// - A body of [`BLOCKING_PARSE_BYTES`] bytes or more is parsed on the blocking pool
///   (`web::block`), so that the worker goes on serving its other connections meanwhile.
pub struct Json<T>(pub T, pub Option<Reservation>);

/// Bodies of this many bytes or more are parsed on the blocking pool; a shorter one on the actix
/// worker itself, which it holds for under a millisecond (16 MiB of short inputs took
/// about 160 ms to read and parse in a release build: docs/BENCHMARKS.md, "The JSON body's
/// parse").
pub(crate) const BLOCKING_PARSE_BYTES: usize = 64 << 10;

impl<T: DeserializeOwned + Send + 'static> FromRequest for Json<T> {
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let checked = check_content_type(req).and_then(|()| check_content_encoding(req));
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let limit = state
            .as_ref()
            .map_or(0, |state| state.limits().max_body_bytes);
        let reservation = match (&checked, &state) {
            (Ok(()), Some(state)) => {
                let announced = req
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .unwrap_or(limit as u64)
                    .min(limit as u64);
                Some(state.budget().reserve(2 * announced, Need::Body))
            }
            _ => None,
        };
        let deadline = state.as_ref().and_then(|state| state.limits().body_timeout);
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            checked?;
            let reservation = reservation.transpose()?;
            let read = async {
                body.await.map_err(|e| match e.as_error::<PayloadError>() {
                    Some(PayloadError::Overflow) => Error::BodyTooLarge { limit },
                    _ => Error::InvalidRequest {
                        param: None,
                        message: format!("cannot read the request body: {e}"),
                        code: "invalid_body",
                    },
                })
            };
            let body = match deadline {
                None => read.await?,
                Some(deadline) => tokio::time::timeout(deadline, read).await.map_err(|_| {
                    Error::BodyTimeout {
                        seconds: deadline.as_secs(),
                    }
                })??,
            };
            if body.len() < BLOCKING_PARSE_BYTES {
                return Ok(Json(parse(&body)?, reservation));
            }
            // The reservation goes with the parse, so that a client that leaves meanwhile
            // frees its share of the budget only once the parse has.
            let (value, reservation) = web::block(move || (parse(&body), reservation))
                .await
                .map_err(|e| Error::Internal(format!("the parse of a request body failed: {e}")))?;
            Ok(Json(value?, reservation))
        })
    }
}

/// Bodies are read as they come: a compressed one (`gzip`, `br`, ...) is refused rather than
/// parsed as JSON.
fn check_content_encoding(req: &HttpRequest) -> Result<()> {
    match req.headers().get(header::CONTENT_ENCODING) {
        None => Ok(()),
        Some(value) => {
            let value = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
            if value.is_empty() || value.eq_ignore_ascii_case("identity") {
                Ok(())
            } else {
                Err(Error::UnsupportedContentEncoding(value))
            }
        }
    }
}

fn check_content_type(req: &HttpRequest) -> Result<()> {
    let mime = req
        .mime_type()
        .map_err(|_| Error::UnsupportedContentType(req.content_type().to_string()))?;
    match mime {
        None => Ok(()),
        Some(mime) if mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json") => {
            Ok(())
        }
        Some(mime) => Err(Error::UnsupportedContentType(
            mime.essence_str().to_string(),
        )),
    }
}

/// Deserializes a body, which must be a JSON object, naming the field at fault in the error.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    // JSON is UTF-8 (RFC 8259), but serde_json skips the strings it ignores (unknown fields)
    // without checking them: check the whole body first.
    if let Err(e) = std::str::from_utf8(body) {
        return Err(Error::MalformedJson(format!("the body is not UTF-8: {e}")));
    }
    // serde would also fill a struct from an array, positionally: `["a"]` must not pass for
    // `{"input": "a"}`.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Err(e) => Error::MalformedJson(e.to_string()),
                Ok(_) => Error::InvalidRequest {
                    param: None,
                    message: "the request body must be a JSON object".to_string(),
                    code: "invalid_value",
                },
            },
        );
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_json reports a value of the wrong JSON type for a field of named values (a
        // number for `sparse_format`) as a syntax error: the body is JSON, the value is wrong.
        let wrong_type = inner.is_syntax()
            && path != "."
            && is_json(body)
            && inner.to_string().starts_with("expected value");
        if (inner.is_syntax() || inner.is_eof()) && !wrong_type {
            Error::MalformedJson(inner.to_string())
        } else if wrong_type {
            let field = path.split('[').next().unwrap_or(&path);
            Error::InvalidRequest {
                message: format!("invalid `{path}`: expected one of its names, as a string"),
                param: Some(field.to_string()),
                code: "invalid_value",
            }
        } else if path == "." {
            Error::InvalidRequest {
                param: None,
                message: format!("invalid request body: {}", describe(&inner)),
                code: "invalid_value",
            }
        } else {
            // `param` names the field (`weights`), the message the element (`weights[1]`).
            let field = path.split('[').next().unwrap_or(&path);
            Error::InvalidRequest {
                message: format!("invalid `{path}`: {}", describe(&inner)),
                param: Some(field.to_string()),
                code: "invalid_value",
            }
        }
    })?;
    deserializer
        .end()
        .map_err(|e| Error::MalformedJson(e.to_string()))?;
    Ok(value)
}

/// Whether `body` is well-formed JSON (checked without holding its values).
fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// serde_json's message in the caller's terms: without its " at line 1 column 42" suffix,
/// which means little once the field is named, and without Rust type names.
fn describe(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => &message,
    };
    [
        ("expected usize", "expected a non-negative integer"),
        ("expected f32", "expected a number"),
        ("expected a borrowed string", "expected a string"),
    ]
    .iter()
    .fold(message.to_string(), |m, (rust, json)| m.replace(rust, json))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::sync::Mutex;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};
    use tokio::sync::oneshot;

    use super::*;

    /// What the parse of [`Waits`] signals when it begins, and what it waits for then.
    type Parsing = (oneshot::Sender<()>, mpsc::Receiver<()>);
    static PARSING: Mutex<Option<Parsing>> = Mutex::new(None);

    /// A value whose parse says that it has begun, then waits (60 s at most) for a signal that
    /// another task of the test's runtime sends.
    struct Waits;

    impl<'de> Deserialize<'de> for Waits {
        fn deserialize<D: Deserializer<'de>>(
            deserializer: D,
        ) -> std::result::Result<Self, D::Error> {
            serde::de::IgnoredAny::deserialize(deserializer)?;
            let (begun, go) = PARSING.lock().unwrap().take().expect("one parse");
            begun.send(()).unwrap();
            go.recv_timeout(Duration::from_secs(60)).map_err(|_| {
                serde::de::Error::custom("the runtime did not run while the body was parsed")
            })?;
            Ok(Waits)
        }
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Large {
        waits: Waits,
        pad: String,
    }

    /// Issue 24: a 16 MiB body was parsed on the actix worker, which served none of its other
    /// connections meanwhile. On the test's runtime (one thread, as a worker's), the parse of a
    /// large body waits for another task: it ends only if it runs off the runtime's thread.
    #[actix_web::test]
    async fn a_large_body_is_parsed_off_the_worker() {
        let (begun, has_begun) = oneshot::channel();
        let (go, wait_for_go) = mpsc::channel();
        *PARSING.lock().unwrap() = Some((begun, wait_for_go));
        let body = format!(
            r#"{{"waits": null, "pad": "{}"}}"#,
            "x".repeat(BLOCKING_PARSE_BYTES)
        );
        let (req, mut payload) = actix_web::test::TestRequest::post()
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(body)
            .to_http_parts();
        let other_task = async {
            has_begun.await.unwrap();
            let _ = go.send(());
        };
        let (parsed, ()) =
            tokio::join!(Json::<Large>::from_request(&req, &mut payload), other_task);
        if let Err(e) = parsed {
            panic!("{e}");
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Request {
        max_length: Option<usize>,
        weights: Option<Vec<f32>>,
        flags: Option<Flags>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Flags {
        dense: Option<bool>,
        kind: Option<Kind>,
    }

    /// A field of named values, deserialized as serde derives it.
    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        One,
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse::<Request>(br#"{"max_length": "long"}"#).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidRequest { param: Some(p), .. } if p == "max_length"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "invalid `max_length`: invalid type: string \"long\", expected a non-negative integer"
        );
        let err = parse::<Request>(br#"{"weights": [1, null]}"#).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidRequest { param: Some(p), .. } if p == "weights"),
            "{err:?}"
        );
        assert!(err.to_string().contains("`weights[1]`"), "{err}");
        let err = parse::<Request>(br#"{"flags": {"dense": 1}}"#).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidRequest { param: Some(p), .. } if p == "flags.dense"),
            "{err:?}"
        );
        // A number for a named value: not a syntax error (issue 29, item 8).
        for body in [
            &br#"{"flags": {"kind": 5}}"#[..],
            br#"{"flags": {"kind": [1]}}"#,
        ] {
            let err = parse::<Request>(body).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidRequest { param: Some(p), code: "invalid_value", .. } if p == "flags.kind"),
                "{err:?}"
            );
        }
        // Broken JSON at the same place still is one.
        assert!(matches!(
            parse::<Request>(br#"{"flags": {"kind": x}}"#),
            Err(Error::MalformedJson(_))
        ));
    }

    #[test]
    fn syntax_errors_and_wrong_shapes() {
        assert!(matches!(
            parse::<Request>(br#"{"max_length": 1"#),
            Err(Error::MalformedJson(_))
        ));
        assert!(matches!(
            parse::<Request>(b"{} trailing"),
            Err(Error::MalformedJson(_))
        ));
        assert!(matches!(
            parse::<Request>(b""),
            Err(Error::MalformedJson(_))
        ));
        for body in [&b"[1, 2]"[..], b"null", b" \"a\"", b"3"] {
            let err = parse::<Request>(body).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidRequest { param: None, .. }),
                "{err:?}"
            );
        }
        assert!(matches!(
            parse::<Request>(b"nul"),
            Err(Error::MalformedJson(_))
        ));
        // Invalid UTF-8 in a field that is otherwise ignored (found by tests/fuzz).
        assert!(matches!(
            parse::<Request>(b"{\"user\": {\"\x80x\": null}, \"max_length\": 3}"),
            Err(Error::MalformedJson(m)) if m.contains("UTF-8")
        ));
    }
}
