//! Logs: `tracing` to stderr as text or JSON lines (`--log-format`), filtered by `RUST_LOG`
//! (default `info`), and one line per request with its method, path, status, latency and
//! tokens. Every line written while a request is served carries its id: the request-id
//! middleware serves each request inside a `request` span with a `request_id` field.

use std::io::IsTerminal;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event:
    /// `INFO request{request_id=...}: bge_m3_server::request: request method=POST ...`.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields (`message`,
    /// `method`, `status`, ...) at the top level, and `span` with the `request_id`.
    Json,
}

/// Installs the global subscriber, writing to stderr in `format`. `RUST_LOG` takes `tracing`'s
/// filter syntax (`info`, `bge_m3_server=debug,actix_server=warn`); unset or invalid means
/// `info`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(layer(
            format,
            std::io::stderr,
            std::io::stderr().is_terminal(),
        ))
        .init();
}

/// The layer that writes events in `format` to `writer`, with colours if `ansi` (text only).
fn layer<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => layer.with_ansi(ansi).boxed(),
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    }
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

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;

    use super::*;

    /// Log lines written in `format` by an event inside a request's span.
    fn lines(format: LogFormat) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Capture {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = {
            let capture = capture.clone();
            move || capture.clone()
        };
        let subscriber = tracing_subscriber::registry().with(layer(format, writer, false));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before any request");
            let span = tracing::info_span!("request", request_id = %"req-42");
            let _entered = span.enter();
            tracing::info!(
                target: "bge_m3_server::request",
                method = "POST",
                status = 200u16,
                "request"
            );
        });
        let bytes = capture.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn json_lines_carry_the_fields_and_the_request_id() {
        let lines = lines(LogFormat::Json);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let json: Vec<Value> = lines
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(json[0]["message"], "before any request");
        assert!(json[0].get("span").is_none(), "{}", json[0]);
        let request = &json[1];
        assert_eq!(request["level"], "INFO");
        assert_eq!(request["target"], "bge_m3_server::request");
        assert_eq!(request["message"], "request");
        assert_eq!(request["method"], "POST");
        assert_eq!(request["status"], 200);
        assert_eq!(request["span"]["request_id"], "req-42");
        assert!(request["timestamp"].is_string());
    }

    #[test]
    fn text_lines_carry_the_request_id() {
        let lines = lines(LogFormat::Text);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[1].contains("request{request_id=req-42}: bge_m3_server::request: request"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("status=200"), "{}", lines[1]);
        assert!(serde_json::from_str::<Value>(&lines[1]).is_err());
    }
}
