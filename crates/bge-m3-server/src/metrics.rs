//! Prometheus metrics, served at `GET /metrics` in the text format, every name prefixed
//! `bge_m3_`: requests by route and status, latency split into queue, tokenization and
//! inference, tokens, forward-pass sizes, queue depth, and the model's load time.
//!
//! The registry only: a leaf that every layer may update. The request metrics are recorded by
//! `middleware::metrics`, the queue's by the inference layer's observer.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric of the server, in one registry.
pub struct Metrics {
    registry: Registry,
    /// `requests_total{route, status}`: answered requests. `route` is the route's pattern
    /// (`/models/{id:.*}`), or `other` for paths no route has.
    pub requests: IntCounterVec,
    /// `request_duration_seconds{route}`: from the request's arrival to its response.
    pub request_duration: HistogramVec,
    /// `queue_duration_seconds`: from a request's arrival at the model to its first pass.
    pub queue_duration: Histogram,
    /// `tokenization_duration_seconds`: tokenizing one request's texts.
    pub tokenization_duration: Histogram,
    /// `inference_duration_seconds`: time in the forward passes that held a request's texts.
    pub inference_duration: Histogram,
    /// `tokens_total`: tokens embedded, after truncation, `<s>` and `</s>` not counted.
    pub tokens: IntCounter,
    /// `texts_total`: texts embedded (a `/score` pair counts two).
    pub texts: IntCounter,
    /// `pass_duration_seconds`: one forward pass.
    pub pass_duration: Histogram,
    /// `pass_texts`: texts in one forward pass.
    pub pass_texts: Histogram,
    /// `pass_padded_tokens`: tokens one forward pass computes (texts × longest where the
    /// model pads its batches, the sum of the lengths where it lays them end to end).
    pub pass_padded_tokens: Histogram,
    /// `pass_failures_total`: forward passes that failed or panicked.
    pub pass_failures: IntCounter,
    /// `worker_restarts_total`: times the model's thread was restarted after a panic.
    pub worker_restarts: IntCounter,
    /// `queued_requests`: requests admitted and not yet answered (at most `--queue-size`).
    pub queued_requests: IntGauge,
    /// `waiting_texts`: texts waiting for a forward pass.
    pub waiting_texts: IntGauge,
    /// `tokenizer_tasks`: tasks on the tokenizer pool, waiting or running (a chunk of texts to
    /// tokenize or of ids to decode, the token strings of sparse weights).
    pub tokenizer_tasks: IntGauge,
    /// `model_load_seconds`: how long loading the model took.
    pub model_load_seconds: prometheus::Gauge,
    /// `open_connections`: client connections open now.
    pub open_connections: IntGauge,
    /// `connections_total`: client connections accepted.
    pub connections: IntCounter,
    /// `write_timeouts_total`: connections cut because their client took nothing of its
    /// answer within `--write-timeout`.
    pub write_timeouts: IntCounter,
    /// `memory_budget_bytes`: the memory budget of the requests in flight.
    pub memory_budget_bytes: IntGauge,
    /// `memory_reserved_bytes`: what the requests in flight have reserved of it.
    pub memory_reserved_bytes: IntGauge,
    /// `abandoned_requests_total`: requests answered 503 because the graceful stop ran out of
    /// time.
    pub abandoned: IntCounter,
}

/// The server's metrics (one set per process).
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Latency buckets, in seconds: 1 ms to 10 min.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

impl Metrics {
    fn new() -> Self {
        let registry =
            Registry::new_custom(Some("bge_m3".into()), None).expect("a valid metric prefix");
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("a unique metric");
            metric
        };
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("a unique metric");
            metric
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let opts = HistogramOpts::new(name, help).buckets(buckets);
            let metric = Histogram::with_opts(opts).expect("a valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("a unique metric");
            metric
        };
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "HTTP requests answered, by route and status",
            ),
            &["route", "status"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("a unique metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from a request's arrival to its response, by route",
            )
            .buckets(SECONDS.to_vec()),
            &["route"],
        )
        .expect("a valid metric");
        registry
            .register(Box::new(request_duration.clone()))
            .expect("a unique metric");
        let model_load_seconds =
            prometheus::Gauge::new("model_load_seconds", "Time taken to load the model")
                .expect("a valid metric");
        registry
            .register(Box::new(model_load_seconds.clone()))
            .expect("a unique metric");

        let sizes = prometheus::exponential_buckets(1.0, 2.0, 14).expect("valid buckets");
        let tokens = prometheus::exponential_buckets(16.0, 2.0, 14).expect("valid buckets");
        Self {
            requests,
            request_duration,
            queue_duration: histogram(
                "queue_duration_seconds",
                "Time from a request's arrival at the model to its first forward pass",
                SECONDS.to_vec(),
            ),
            tokenization_duration: histogram(
                "tokenization_duration_seconds",
                "Time tokenizing one request's texts",
                SECONDS.to_vec(),
            ),
            inference_duration: histogram(
                "inference_duration_seconds",
                "Time in the forward passes that held one request's texts",
                SECONDS.to_vec(),
            ),
            tokens: counter(
                "tokens_total",
                "Tokens embedded, after truncation, <s> and </s> not counted",
            ),
            texts: counter("texts_total", "Texts embedded (a /score pair counts two)"),
            pass_duration: histogram(
                "pass_duration_seconds",
                "Duration of one forward pass",
                SECONDS.to_vec(),
            ),
            pass_texts: histogram("pass_texts", "Texts in one forward pass", sizes),
            pass_padded_tokens: histogram(
                "pass_padded_tokens",
                "Tokens one forward pass computes: texts times the longest where the model pads its batches, the sum of their lengths where it does not (the CPU)",
                tokens,
            ),
            pass_failures: counter(
                "pass_failures_total",
                "Forward passes that failed or panicked",
            ),
            worker_restarts: counter(
                "worker_restarts_total",
                "Restarts of the model's thread after a panic",
            ),
            queued_requests: gauge(
                "queued_requests",
                "Requests admitted to the model and not yet answered",
            ),
            waiting_texts: gauge("waiting_texts", "Texts waiting for a forward pass"),
            tokenizer_tasks: gauge(
                "tokenizer_tasks",
                "Tasks on the tokenizer pool, waiting or running: chunks of texts to tokenize or of ids to decode",
            ),
            open_connections: gauge("open_connections", "Client connections open now"),
            connections: counter("connections_total", "Client connections accepted"),
            write_timeouts: counter(
                "write_timeouts_total",
                "Connections cut because their client took nothing of its answer in time",
            ),
            memory_budget_bytes: gauge(
                "memory_budget_bytes",
                "The memory budget of the requests in flight",
            ),
            memory_reserved_bytes: gauge(
                "memory_reserved_bytes",
                "Memory reserved by the requests in flight",
            ),
            abandoned: counter(
                "abandoned_requests_total",
                "Requests answered 503 because the graceful stop ran out of time",
            ),
            model_load_seconds,
            registry,
        }
    }

    /// Every metric in Prometheus' text format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding the metrics failed: {e}\n"))
    }
}
