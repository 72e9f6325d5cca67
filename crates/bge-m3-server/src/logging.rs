//! Logs: `tracing` to stderr as text or JSON lines (`--log-format`), filtered by `RUST_LOG`
//! (default `info`); the access log (`middleware::access_log`) writes one line per request.
//! Every line written while a request is served carries its id: the request-id
//! middleware serves each request inside a `request` span with a `request_id` field.
//!
//! The HTTP layer's own complaints about clients are not server errors: [`HttpNoise`] keeps
//! actix's ERROR line for a request it could not parse out of the log (the request is logged
//! and counted as a 400 or 431 by `connection`, when its connection ends), and lets through
//! one `accept` error a minute rather than one every half second.

use std::cell::Cell;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
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
        .with(HttpNoise)
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

tokio::task_local! {
    /// The id of the request this task is serving, set by the request-id middleware around
    /// everything the request runs, so that an error can tell the client which log lines hold
    /// its cause.
    static REQUEST_ID: String;
}

/// Runs `serve` as the request `id` (see [`request_id`]).
pub(crate) async fn serving<F: std::future::Future>(id: String, serve: F) -> F::Output {
    REQUEST_ID.scope(id, serve).await
}

/// The id of the request being served on this task, or `None` outside a request.
pub(crate) fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// The HTTP layer's noise about clients, filtered (see the module's documentation).
pub(crate) struct HttpNoise;

thread_local! {
    /// The status of a request the HTTP layer just refused on this thread (it runs the
    /// connection), for the connection's end to log and count.
    static REFUSED: Cell<Option<u16>> = const { Cell::new(None) };
}

/// The status of the request the HTTP layer refused last on this thread, if any, taken.
pub(crate) fn take_refused() -> Option<u16> {
    REFUSED.with(Cell::take)
}

/// Most one accept error a minute is logged.
const ACCEPT_ERRORS_EVERY_S: u64 = 60;

impl<S: Subscriber> Layer<S> for HttpNoise {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if *metadata.level() != Level::ERROR {
            return true;
        }
        match metadata.target() {
            "actix_http::h1::dispatcher" => {
                let message = message(event);
                let Some(cause) = message.strip_prefix("stream error: ") else {
                    return true;
                };
                if let Some(parse) = cause.strip_prefix("request parse error: ") {
                    let status = if parse.contains("too large") {
                        431
                    } else {
                        400
                    };
                    REFUSED.with(|refused| refused.set(Some(status)));
                }
                // A client's broken connection (`I/O error: ...`) is its own business.
                false
            }
            "actix_server::accept" => {
                static LAST: AtomicU64 = AtomicU64::new(0);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let last = LAST.load(Ordering::Relaxed);
                (last == 0 || now >= last + ACCEPT_ERRORS_EVERY_S)
                    && LAST
                        .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
            }
            _ => true,
        }
    }
}

/// An event's message.
fn message(event: &Event<'_>) -> String {
    struct Message(String);
    impl Visit for Message {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }
    let mut visitor = Message(String::new());
    event.record(&mut visitor);
    visitor.0
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
