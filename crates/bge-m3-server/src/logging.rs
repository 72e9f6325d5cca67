//! Logs: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), and one line per
//! request with its method, path, status, latency and tokens.

use std::io::IsTerminal;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG` takes `tracing`'s filter syntax
/// (`info`, `bge_m3_server=debug,actix_server=warn`); unset or invalid means `info`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Tokens a request took, left by its handler in the response's extensions for the log line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tokens(pub usize);

/// Middleware: one `info` line per request, under the target `bge_m3_server::request`.
pub(crate) async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.path().to_string();
    let result = next.call(req).await;
    let latency_ms = (start.elapsed().as_secs_f64() * 1e3 * 100.0).round() / 100.0;
    let (status, tokens) = match &result {
        Ok(response) => (
            response.status(),
            response
                .response()
                .extensions()
                .get::<Tokens>()
                .map(|t| t.0),
        ),
        Err(error) => (error.as_response_error().status_code(), None),
    };
    tracing::info!(
        target: "bge_m3_server::request",
        %method,
        %path,
        status = status.as_u16(),
        latency_ms,
        tokens,
        "request"
    );
    result
}
