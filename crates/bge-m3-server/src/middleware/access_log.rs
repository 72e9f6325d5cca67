//! The access log: one `info` line per request, with its method, path, status, latency and
//! tokens, under the target `bge_m3_server::request` (the format is `logging`'s).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

use super::OnDrop;

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
    // A request whose client hangs up is dropped here, unanswered.
    let gone = OnDrop::new(|| {
        let latency_ms = (start.elapsed().as_secs_f64() * 1e3 * 100.0).round() / 100.0;
        tracing::info!(
            target: "bge_m3_server::request",
            %method,
            %path,
            status = 499u16,
            latency_ms,
            "request: the client closed the connection before the answer"
        );
    });
    let result = next.call(req).await;
    gone.disarm();
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
