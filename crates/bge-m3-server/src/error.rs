//! The server's one error type and its mapping to HTTP: every failure, from a malformed body to
//! a model fault, leaves as OpenAI's error body with the status of the contract (docs/API.md),
//! decided here and nowhere else.

use std::fmt;
use std::path::PathBuf;

use actix_web::http::{header, Method, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use bge_m3_core::queue::QueueError;
use serde::Serialize;

use crate::inference;
use crate::inference::memory::{Need, Refused};
use crate::logging;

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

/// A fault of the server's side on a request: its cause, which the log gets (the 500's log
/// line shows the whole chain, inside the request's span), and the request's id, which the
/// client gets instead of the cause. Shows as its cause, whose source is its own.
#[derive(Debug)]
pub struct Fault<E> {
    request_id: Option<String>,
    /// Boxed: the core's errors are large, and every `Result` of the server carries an
    /// [`Error`].
    cause: Box<E>,
}

impl<E> Fault<E> {
    /// `cause`, on the request this task serves.
    fn new(cause: E) -> Self {
        Self {
            request_id: logging::request_id(),
            cause: Box::new(cause),
        }
    }

    /// Where the client finds the cause.
    fn where_logged(&self) -> String {
        match &self.request_id {
            Some(id) => format!("the server log has the cause under request id {id}"),
            None => "the server log has the cause".to_string(),
        }
    }
}

impl<E: fmt::Display> fmt::Display for Fault<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cause.fmt(f)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Fault<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.source()
    }
}

/// Everything that can go wrong in the server, while starting or while answering a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 400: a field is missing, has the wrong type or an invalid value.
    #[error("{message}")]
    InvalidRequest {
        /// The offending field, as a JSON path (`input`, `input_type.dense`, `weights`).
        param: Option<String>,
        message: String,
        code: &'static str,
    },

    /// 400: the body is not JSON.
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),

    /// 400: the body was sent with a Content-Type other than JSON.
    #[error("Content-Type must be application/json, got {0:?}")]
    UnsupportedContentType(String),

    /// 415: the body is compressed or otherwise encoded (`Content-Encoding`); the server reads
    /// plain bodies only.
    #[error("Content-Encoding {0:?} is not supported: send the body uncompressed")]
    UnsupportedContentEncoding(String),

    /// 408: the body did not arrive within `--body-timeout`.
    #[error("the request body did not arrive within {seconds}s (the server's body timeout)")]
    BodyTimeout { seconds: u64 },

    /// 400: a browser's CORS preflight that the configured origins, methods or headers do
    /// not allow (`--cors-allow-origin`).
    #[error("CORS: {0}")]
    CorsRefused(String),

    /// 401: an API key is configured and the request lacks it or brings another one.
    #[error("{0}")]
    Unauthorized(AuthFailure),

    /// 404: `model` names no model served here.
    #[error("The model `{0}` does not exist")]
    ModelNotFound(String),

    /// 404: no route has this path.
    #[error("Invalid URL ({method} {path})")]
    RouteNotFound { method: Method, path: String },

    /// 405: the route exists but not for this method.
    #[error("Method {method} is not allowed on {path}; it accepts {allowed}")]
    MethodNotAllowed {
        method: Method,
        path: String,
        /// The methods the path answers, as the `Allow` header lists them (`GET, HEAD, POST`).
        allowed: String,
    },

    /// 413: the body is larger than the configured limit.
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },

    /// 413: more inputs than the configured limit.
    #[error("`{param}` has {count} items, more than the limit of {limit} per request")]
    TooManyInputs {
        param: &'static str,
        count: usize,
        limit: usize,
    },

    /// 413: a text longer than the configured limit in characters.
    #[error("`{path}` has {chars} characters, more than the limit of {limit} per text")]
    TextTooLong {
        /// The field (`input`, `sentences_2`).
        param: &'static str,
        /// The text within it (`input[1]`, or `input` for a lone string).
        path: String,
        chars: usize,
        limit: usize,
    },

    /// 413: the request would hold more memory than the whole budget of the requests in
    /// flight: it can never be served as it is.
    #[error(
        "this request would hold about {} MiB {}, more than the server's memory budget of {} MiB for all requests in flight: split it into at least {} requests{}",
        mib(*needed),
        need_phrase(*what),
        mib(*budget),
        parts(*needed, *budget),
        match what { Need::Answer => ", or ask for fewer outputs (colbert takes one vector per token)", _ => "" }
    )]
    AnswerTooLarge {
        needed: u64,
        budget: u64,
        what: Need,
    },

    /// 429: the memory budget of the requests in flight has no room for this one now.
    #[error(
        "the server is busy: this request needs about {} MiB {} and {} of the {} MiB of the memory budget are taken; retry later or send a smaller request",
        mib(*needed),
        need_phrase(*what),
        mib(*in_use),
        mib(*budget)
    )]
    MemoryFull {
        needed: u64,
        in_use: u64,
        budget: u64,
        what: Need,
    },

    /// 429: the queue in front of the model is full.
    #[error("the server is overloaded ({capacity} requests are already waiting); retry later")]
    Overloaded { capacity: usize },

    /// 503: the model is still loading.
    #[error("the model is still loading; retry when /health answers 200")]
    ModelLoading,

    /// 503: the model failed to load (the process is about to exit).
    #[error("the model failed to load: {0}")]
    ModelFailed(String),

    /// 500: the model failed on a valid request. The cause goes to the log, not to the client,
    /// who is told the request id to find it under.
    #[error("the model failed on this request; {}", .0.where_logged())]
    Inference(#[source] Fault<bge_m3_core::Error>),

    /// 500: the forward pass that held this request's texts failed or panicked; the requests
    /// in other passes are unaffected. The cause goes to the log, as for [`Error::Inference`].
    #[error("the forward pass that held this request failed; {}", .0.where_logged())]
    ModelFault(#[source] Fault<QueueError>),

    /// 503: the request was not answered within the configured request timeout.
    #[error("the request was not answered within {}s (the server's request timeout); retry later or send fewer or shorter texts", seconds)]
    Timeout { seconds: u64 },

    /// 503: the server is stopping and takes no new requests.
    #[error("the server is shutting down")]
    ShuttingDown,

    /// 500: the server itself is broken (the model worker panicked or is gone).
    #[error("internal error: {0}")]
    Internal(String),

    /// At startup: the listening socket cannot be opened.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// At startup: the model cannot be loaded.
    #[error("cannot load the model from {}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: bge_m3_core::Error,
    },

    /// At startup or shutdown: the HTTP server or the model thread failed.
    #[error("server: {0}")]
    Io(#[source] std::io::Error),
}

/// Bytes in MiB, rounded up, for messages.
fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

fn need_phrase(what: Need) -> &'static str {
    match what {
        Need::Body => "to read its body",
        Need::Tokens => "for its token ids",
        Need::Answer => "for its token ids and embeddings",
    }
}

/// How many requests `needed` should be split into for each part to take at most half the
/// budget.
fn parts(needed: u64, budget: u64) -> u64 {
    (2 * needed).div_ceil(budget.max(1)).max(2)
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// 400 for `param`, with code `invalid_value`.
    pub fn invalid(param: impl Into<String>, message: impl fmt::Display) -> Self {
        let param = param.into();
        Error::InvalidRequest {
            message: format!("invalid `{param}`: {message}"),
            param: Some(param),
            code: "invalid_value",
        }
    }

    /// 400 for a required field that is absent (or `null`).
    pub fn missing(param: &str) -> Self {
        Error::InvalidRequest {
            param: Some(param.to_string()),
            message: format!("`{param}` is required"),
            code: "missing_field",
        }
    }

    /// The JSON path of the field at fault, when there is one.
    fn param(&self) -> Option<&str> {
        match self {
            Error::InvalidRequest { param, .. } => param.as_deref(),
            Error::ModelNotFound(_) => Some("model"),
            Error::TooManyInputs { param, .. } | Error::TextTooLong { param, .. } => Some(param),
            _ => None,
        }
    }

    /// OpenAI's `type` and our machine-readable `code`.
    fn kind(&self) -> (&'static str, &'static str) {
        const INVALID: &str = "invalid_request_error";
        match self {
            Error::InvalidRequest { code, .. } => (INVALID, code),
            Error::MalformedJson(_) => (INVALID, "invalid_json"),
            Error::UnsupportedContentType(_) => (INVALID, "invalid_content_type"),
            Error::UnsupportedContentEncoding(_) => (INVALID, "unsupported_content_encoding"),
            Error::BodyTimeout { .. } => (INVALID, "body_timeout"),
            Error::AnswerTooLarge { .. } => (INVALID, "answer_too_large"),
            Error::MemoryFull { .. } => ("rate_limit_error", "memory_full"),
            Error::ModelNotFound(_) => (INVALID, "model_not_found"),
            Error::RouteNotFound { .. } => (INVALID, "not_found"),
            Error::MethodNotAllowed { .. } => (INVALID, "method_not_allowed"),
            Error::BodyTooLarge { .. } => (INVALID, "body_too_large"),
            Error::TooManyInputs { .. } => (INVALID, "too_many_inputs"),
            Error::TextTooLong { .. } => (INVALID, "text_too_long"),
            Error::CorsRefused(_) => (INVALID, "cors_refused"),
            // OpenAI's type and code for a missing or wrong key.
            Error::Unauthorized(_) => (INVALID, "invalid_api_key"),
            Error::Overloaded { .. } => ("rate_limit_error", "queue_full"),
            Error::ModelLoading => ("server_error", "model_loading"),
            Error::ModelFailed(_) => ("server_error", "model_load_failed"),
            Error::ModelFault(_) => ("server_error", "model_fault"),
            Error::Timeout { .. } => ("server_error", "timeout"),
            Error::ShuttingDown => ("server_error", "shutting_down"),
            Error::Inference(_)
            | Error::Internal(_)
            | Error::Bind { .. }
            | Error::Load { .. }
            | Error::Io(_) => ("server_error", "internal_error"),
        }
    }
}

impl From<bge_m3_core::Error> for Error {
    /// The core's [`bge_m3_core::Error::InvalidInput`] is the caller's fault; the rest are ours.
    fn from(e: bge_m3_core::Error) -> Self {
        match e {
            bge_m3_core::Error::InvalidInput { field, message } => Error::invalid(field, message),
            other => Error::Inference(Fault::new(other)),
        }
    }
}

/// `{"error": {...}, "detail": "..."}`, OpenAI's error body, on every route, with the message
/// also in `detail` as Jina's API and FastAPI services answer, since their clients read it
/// alone (the Jina rerank wrappers of LangChain, LlamaIndex and Haystack raise
/// `KeyError: 'detail'` without it).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
    /// `error.message` again, where Jina's and FastAPI's clients read it.
    detail: &'a str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail<'a> {
    /// What was wrong, naming the field or element at fault (`input[3]`).
    message: String,
    /// OpenAI's error type: `invalid_request_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The field at fault (`input`, `weights`, `input_type.dense`), or null.
    param: Option<&'a str>,
    /// A machine-readable code: `invalid_value`, `model_not_found`, `too_many_inputs`, ...
    code: &'static str,
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::InvalidRequest { .. }
            | Error::MalformedJson(_)
            | Error::UnsupportedContentType(_)
            | Error::CorsRefused(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::UnsupportedContentEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::ModelNotFound(_) | Error::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::BodyTooLarge { .. }
            | Error::TooManyInputs { .. }
            | Error::TextTooLong { .. }
            | Error::AnswerTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Overloaded { .. } | Error::MemoryFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::ModelLoading
            | Error::ModelFailed(_)
            | Error::Timeout { .. }
            | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::Inference(_)
            | Error::ModelFault(_)
            | Error::Internal(_)
            | Error::Bind { .. }
            | Error::Load { .. }
            | Error::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %Report(self), "request failed");
        }
        let mut response = HttpResponse::build(status);
        match self {
            Error::MethodNotAllowed { allowed, .. } => {
                response.insert_header((header::ALLOW, allowed.as_str()));
            }
            // RFC 6750: the scheme to use, and `invalid_token` when a wrong one was sent.
            Error::Unauthorized(failure) => {
                let challenge = match failure {
                    AuthFailure::WrongKey => r#"Bearer error="invalid_token""#,
                    _ => "Bearer",
                };
                response.insert_header((header::WWW_AUTHENTICATE, challenge));
            }
            Error::Overloaded { .. }
            | Error::MemoryFull { .. }
            | Error::ModelLoading
            | Error::Timeout { .. } => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        // The rest of an unread body makes the connection unusable; during a stop, clients
        // should go elsewhere.
        if matches!(self, Error::BodyTimeout { .. } | Error::ShuttingDown) {
            response.force_close();
        }
        let (kind, code) = self.kind();
        let message = self.to_string();
        response.json(ErrorBody {
            error: ErrorDetail {
                message: message.clone(),
                kind,
                param: self.param(),
                code,
            },
            detail: &message,
        })
    }
}

pub use bge_m3_core::Report;

impl From<Refused> for Error {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::TooLarge {
                needed,
                budget,
                what,
            } => Error::AnswerTooLarge {
                needed,
                budget,
                what,
            },
            Refused::Full {
                needed,
                in_use,
                budget,
                what,
            } => Error::MemoryFull {
                needed,
                in_use,
                budget,
                what,
            },
        }
    }
}

/// The inference layer's errors, each as the variant that carries its status.
impl From<inference::Error> for Error {
    fn from(error: inference::Error) -> Self {
        match error {
            inference::Error::Overloaded { capacity } => Error::Overloaded { capacity },
            inference::Error::Timeout { seconds } => Error::Timeout { seconds },
            inference::Error::Memory(refused) => refused.into(),
            inference::Error::Model(error) => error.into(),
            inference::Error::Queue(error) => error.into(),
            inference::Error::Internal(message) => Error::Internal(message),
            inference::Error::Io(error) => Error::Io(error),
        }
    }
}

impl From<QueueError> for Error {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::Closed => Error::ShuttingDown,
            other => Error::ModelFault(Fault::new(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use actix_web::body::to_bytes;
    use bge_m3_core::queue::PassFailure;

    async fn body(error: Error) -> (StatusCode, serde_json::Value) {
        let response = error.error_response();
        let status = response.status();
        let bytes = to_bytes(response.into_body()).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[actix_web::test]
    async fn every_error_has_openais_shape() {
        let cases = [
            (
                Error::invalid("max_length", "must be between 1 and 8192, got 0"),
                400,
                "invalid_value",
                Some("max_length"),
            ),
            (Error::missing("input"), 400, "missing_field", Some("input")),
            (
                Error::MalformedJson("EOF".into()),
                400,
                "invalid_json",
                None,
            ),
            (
                Error::ModelNotFound("gpt-4".into()),
                404,
                "model_not_found",
                Some("model"),
            ),
            (
                Error::TooManyInputs {
                    param: "input",
                    count: 3,
                    limit: 2,
                },
                413,
                "too_many_inputs",
                Some("input"),
            ),
            (
                Error::BodyTooLarge { limit: 10 },
                413,
                "body_too_large",
                None,
            ),
            (
                Error::TextTooLong {
                    param: "sentences_2",
                    path: "sentences_2[0]".into(),
                    chars: 11,
                    limit: 10,
                },
                413,
                "text_too_long",
                Some("sentences_2"),
            ),
            (
                Error::Unauthorized(AuthFailure::Missing),
                401,
                "invalid_api_key",
                None,
            ),
            (
                Error::CorsRefused("origin not allowed".into()),
                400,
                "cors_refused",
                None,
            ),
            (Error::Overloaded { capacity: 4 }, 429, "queue_full", None),
            (Error::ModelLoading, 503, "model_loading", None),
            (Error::Timeout { seconds: 5 }, 503, "timeout", None),
            (Error::ShuttingDown, 503, "shutting_down", None),
            (
                Error::ModelFault(Fault::new(QueueError::PassFailed(Arc::new(
                    PassFailure::Panic("boom".into()),
                )))),
                500,
                "model_fault",
                None,
            ),
            (
                Error::Internal("worker gone".into()),
                500,
                "internal_error",
                None,
            ),
        ];
        for (error, status, code, param) in cases {
            let message = error.to_string();
            let (got_status, json) = body(error).await;
            assert_eq!(got_status.as_u16(), status, "{json}");
            assert_eq!(json["error"]["code"], code);
            assert_eq!(json["error"]["param"].as_str(), param);
            assert_eq!(json["error"]["message"], message.as_str());
            assert!(json["error"]["type"].is_string());
        }
    }

    /// A model fault tells the client the request id, not the cause; the cause is the error's
    /// source, for the log line (`Report`).
    #[actix_web::test]
    async fn a_fault_names_the_request_not_its_cause() {
        let pass = || QueueError::PassFailed(Arc::new(PassFailure::Panic("poisoned".into())));
        let model = || bge_m3_core::Error::Device {
            message: "out of memory".into(),
            source: None,
        };
        let (fault, inference) = logging::serving("req-7".into(), async {
            (Error::from(pass()), Error::from(model()))
        })
        .await;
        for (error, code, cause) in [
            (fault, "model_fault", "panic: poisoned"),
            (inference, "internal_error", "device: out of memory"),
        ] {
            let logged = Report(&error).to_string();
            assert!(logged.contains(cause), "{logged}");
            assert!(logged.contains("req-7"), "{logged}");
            let (status, json) = body(error).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(json["error"]["code"], code);
            let message = json["error"]["message"].as_str().unwrap();
            assert!(message.contains("under request id req-7"), "{message}");
            assert!(!message.contains(cause), "{message}");
        }
        // Outside a request there is no id to give.
        let message = Error::from(pass()).to_string();
        assert!(
            message.ends_with("the server log has the cause"),
            "{message}"
        );
    }

    #[test]
    fn a_401_names_the_scheme_and_says_which_failure() {
        let challenge = |failure| {
            let response = Error::Unauthorized(failure).error_response();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(challenge(AuthFailure::Missing), "Bearer");
        assert_eq!(challenge(AuthFailure::NotBearer), "Bearer");
        assert_eq!(
            challenge(AuthFailure::WrongKey),
            r#"Bearer error="invalid_token""#
        );
        let missing = Error::Unauthorized(AuthFailure::Missing).to_string();
        let wrong = Error::Unauthorized(AuthFailure::WrongKey).to_string();
        assert!(missing.contains("no API key was sent"), "{missing}");
        assert!(wrong.contains("not this server's API key"), "{wrong}");
    }

    #[test]
    fn core_input_errors_are_the_callers_fault() {
        let core = bge_m3_core::score::ScoreWeights::try_from([-1.0, 1.0, 1.0]).unwrap_err();
        let error = Error::from(core);
        assert_eq!(error.status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(error.param(), Some("weights"));
        let fault = Error::from(bge_m3_core::Error::Tokenizer {
            message: "boom".into(),
            source: None,
        });
        assert_eq!(fault.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn report_shows_the_causes() {
        let error = Error::Bind {
            addr: "0.0.0.0:1".into(),
            source: std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use"),
        };
        assert_eq!(
            Report(&error).to_string(),
            "cannot listen on 0.0.0.0:1: address in use"
        );
    }
}
