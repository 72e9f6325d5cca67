//! `bge-m3-server`: BGE-M3 ([BAAI/bge-m3](https://huggingface.co/BAAI/bge-m3)) over HTTP on
//! actix-web, a drop-in replacement for the original Python service and for OpenAI's
//! embeddings API. The HTTP contract is docs/API.md at the repository root.
//!
//! - [`Config`]: the settings (clap flags, each also an environment variable).
//! - [`run`] binds and serves; [`serve`] serves on a listener you bound (port 0 in tests).
//! - [`app`] builds the actix `App` over an [`AppState`], which starts out loading and is
//!   settled by [`AppState::set_ready`]: the server answers `/health` with 503 meanwhile.
//! - [`Inference`] is the model's own thread behind a bounded queue; handlers never run the
//!   model on the async runtime.
//! - [`Error`] is every failure, mapped to OpenAI's error body and an HTTP status in one place.
//! - [`memory`] is the memory budget of the requests in flight; `connection` the deadlines and
//!   accounting of connections and answers.
//!
//! ```no_run
//! use clap::Parser;
//!
//! # fn main() -> bge_m3_server::Result<()> {
//! let args = ["bge-m3-server", "--model-path", "/models/bge-m3"];
//! let config = bge_m3_server::Config::parse_from(args);
//! let stopped = actix_web::rt::System::new().block_on(bge_m3_server::run(config))?;
//! assert_eq!(stopped.abandoned, 0);
//! # Ok(())
//! # }
//! ```

pub mod config;
mod error;
pub mod inference;
pub mod logging;
pub mod metrics;
mod middleware;
mod routes;
pub mod state;
#[cfg(test)]
mod testing;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::KeepAlive;
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};
use bge_m3_core::hub::{self, HubOptions};
use bge_m3_core::{BgeM3, LoadOptions};

use crate::middleware::{access_log, auth, connection, cors, request_id};

pub use config::Config;
pub use error::{Error, Report, Result};
pub use inference::{Inference, InferenceOptions, ModelInfo};
pub use state::{ApiKey, AppState, Limits};

/// The application: every route of the contract, the 404 and 405 answers, the body limit, the
/// API key and CORS of `state`, request ids and the request log, over `state`.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let body_limit = state.limits().max_body_bytes;
    let cors_origins = state.cors_allow_origins().to_vec();
    App::new()
        .app_data(state)
        .app_data(web::PayloadConfig::new(body_limit))
        // Bodies go through `extract::Json`; these keep actix's plain-text answers away from
        // path and query extractors too.
        .app_data(web::PathConfig::default().error_handler(|e, _| Error::invalid("path", e).into()))
        .app_data(
            web::QueryConfig::default().error_handler(|e, _| Error::invalid("query", e).into()),
        )
        .configure(routes::configure)
        .default_service(web::to(routes::not_found))
        // The last `wrap` is the outermost. CORS comes before the API key, since browsers send
        // preflights without it; the request id around everything, so that every response has
        // one and every log line of the request carries it. The requests in flight are counted,
        // and their answers watched, inside the log and the metrics, which so see the 503s of
        // an aborted stop.
        .wrap(from_fn(connection::supervise))
        .wrap(from_fn(|req, next| {
            auth::require_api_key(req, next, routes::is_public)
        }))
        .wrap(Condition::new(
            !cors_origins.is_empty(),
            cors::cors(&cors_origins),
        ))
        .wrap(from_fn(cors::refusals_as_json))
        .wrap(from_fn(access_log::log_request))
        .wrap(from_fn(|req, next| {
            middleware::metrics::record_request(req, next, routes::is_route)
        }))
        .wrap(from_fn(request_id::assign))
}

/// How the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Requests that were not answered in full: still running when `--shutdown-timeout` was
    /// up (they were answered 503 `shutting_down`), or whose answer was still being written
    /// then. 0 for a clean stop.
    pub abandoned: u64,
}

/// The exit status of the binary when requests were abandoned (see [`Stopped`]).
pub const EXIT_ABANDONED: u8 = 3;

/// After `--shutdown-timeout`, how long the requests answered 503 and the answers still being
/// written get before the server stops anyway.
const ABORT_GRACE: Duration = Duration::from_secs(5);

/// Binds `config.host:config.port`, then [`serve`]s.
pub async fn run(config: Config) -> Result<Stopped> {
    let addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .map_err(|source| Error::Bind { addr, source })?;
    serve(config, listener).await
}

/// Serves on `listener` at once, loading the model meanwhile on its own thread (`/health`
/// answers 503 until it is loaded). Returns when the server has stopped, or with
/// [`Error::Load`] as soon as the model fails to load.
///
/// SIGTERM and SIGINT stop it gracefully: `/health` turns 503 `draining` and new requests are
/// answered 503 `shutting_down` (connections are still accepted, and closed after each answer),
/// while every request already in flight or queued is answered. Those still running after
/// `--shutdown-timeout` are answered 503 `shutting_down`, and counted in
/// [`Stopped::abandoned`]. A second signal exits the process at once, with
/// [`EXIT_ABANDONED`] if requests were still in flight (0 otherwise).
pub async fn serve(config: Config, listener: TcpListener) -> Result<Stopped> {
    let addr = listener.local_addr().map_err(Error::Io)?;
    let state = web::Data::new(config.app_state());
    let model_path = config.model_path.clone();
    let load_options = LoadOptions::default()
        .with_device(config.device)
        .with_dtype(config.dtype)
        .with_threads(config.threads);
    // A Hub repository id is downloaded (or found in the cache) on the model's thread, so
    // that /health answers 503 "loading" meanwhile.
    let hub_options = HubOptions::from_env()
        .with_revision(config.revision.clone())
        .with_progress(bge_m3_core::hub::TerminalProgress);
    let loaded = {
        let model_path = model_path.clone();
        Inference::spawn(
            move || {
                // Settings wrong whatever the model (int8 on a GPU) fail before a download.
                load_options.check()?;
                let dir = hub::resolve(&model_path, &hub_options)?;
                BgeM3::load(&dir, &load_options)
            },
            config.inference_options(),
        )?
    };

    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let descriptors = raise_descriptor_limit();
    let max_connections = config
        .max_connections
        .unwrap_or_else(|| default_max_connections(descriptors, workers));
    let header_timeout = Duration::from_secs(config.header_timeout);
    let server = HttpServer::new({
        let state = state.clone();
        move || app(state.clone())
    })
    .workers(workers)
    // Per worker: connections are handed to the workers in turn.
    .max_connections(max_connections.div_ceil(workers).max(1))
    .keep_alive(match config::seconds(config.keep_alive) {
        Some(idle) => KeepAlive::Timeout(idle),
        None => KeepAlive::Disabled,
    })
    .client_request_timeout(header_timeout)
    // A client that closes its side (FIN) has gone: its request is dropped and cancelled.
    .h1_allow_half_closed(false)
    .on_connect(connection::on_connect(header_timeout))
    .disable_signals()
    // Our own drain runs first (see `stop_on_signals`); this is what is left after it.
    .shutdown_timeout(1)
    .listen(listener)
    .map_err(Error::Io)?
    .run();
    let handle = server.handle();
    let mut server = actix_web::rt::spawn(server);
    actix_web::rt::spawn(stop_on_signals(
        state.clone(),
        handle.clone(),
        Duration::from_secs(config.shutdown_timeout),
    ));
    tracing::info!(
        %addr,
        model = %model_path.display(),
        workers,
        max_connections,
        open_files_limit = descriptors,
        memory_budget_mib = config.memory_budget_mib,
        "listening; loading the model"
    );

    let loaded = tokio::select! {
        stopped = &mut server => return finished(stopped, &state),
        loaded = loaded => loaded,
    };
    match loaded {
        Ok(Ok(inference)) => {
            let info = inference.info();
            tracing::info!(device = %info.device, dense_dim = info.dense_dim, "ready");
            state.set_ready(info, inference);
            finished(server.await, &state)
        }
        failure => {
            let error = match failure {
                Ok(Err(source)) => Error::Load {
                    path: model_path,
                    source,
                },
                _ => Error::Internal("the model thread panicked while loading".into()),
            };
            state.set_failed(Report(&error).to_string());
            handle.stop(false).await;
            let _ = server.await;
            Err(error)
        }
    }
}

/// Stops the server gracefully on the first SIGTERM or SIGINT (see [`serve`]), and exits the
/// process at once on the second.
async fn stop_on_signals(
    state: web::Data<AppState>,
    handle: actix_web::dev::ServerHandle,
    shutdown_timeout: Duration,
) {
    use tokio::signal::unix::{signal, SignalKind};

    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM and SIGINT; the server stops only when killed");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let in_flight = state.in_flight();
    tracing::info!(
        in_flight,
        shutdown_timeout_s = shutdown_timeout.as_secs(),
        "stopping: answering the requests in flight, refusing new ones with 503"
    );
    state.start_draining();
    let drained = async {
        let deadline = Instant::now() + shutdown_timeout;
        if !until_idle(&state, deadline).await {
            tracing::warn!(
                in_flight = state.in_flight(),
                "the shutdown timeout is up: answering the requests still running with 503"
            );
            state.abort_in_flight();
            if !until_idle(&state, Instant::now() + ABORT_GRACE).await {
                let cut = state.in_flight();
                tracing::warn!(cut, "stopping with answers still being written");
                for _ in 0..cut {
                    state.count_abandoned();
                }
            }
        }
        // Stops accepting and closes the idle keep-alive connections.
        handle.stop(true).await;
    };
    tokio::select! {
        () = drained => {}
        _ = term.recv() => exit_now(&state),
        _ = int.recv() => exit_now(&state),
    }
}

/// Waits until no request is in flight, or `deadline`; whether none is.
async fn until_idle(state: &AppState, deadline: Instant) -> bool {
    while state.in_flight() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// The second signal: the process exits now, whatever is in flight.
fn exit_now(state: &AppState) -> ! {
    let in_flight = state.in_flight();
    tracing::warn!(
        in_flight,
        "second signal: exiting at once, without answering the requests in flight"
    );
    std::process::exit(if in_flight > 0 {
        i32::from(EXIT_ABANDONED)
    } else {
        0
    })
}

/// Raises the soft limit on open files to the hard limit, and returns the limit now in force
/// (`None` if it cannot be read).
#[allow(unsafe_code)] // getrlimit(2), setrlimit(2)
fn raise_descriptor_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes the `rlimit` it is given, a valid one.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `setrlimit` reads the `rlimit` it is given, a valid one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Some(limit.rlim_cur)
}

/// Connections the open-file limit leaves room for: the limit less a reserve for the server's
/// own descriptors (the listener, each worker's event loop, logs, the model's files while they
/// load), at most 25,000 per worker (actix's own default).
fn default_max_connections(descriptors: Option<u64>, workers: usize) -> usize {
    let ceiling = 25_000 * workers;
    let Some(limit) = descriptors else {
        return ceiling;
    };
    let reserve = 32 + 4 * workers as u64;
    (limit.saturating_sub(reserve).max(1) as usize).min(ceiling)
}

fn finished(
    joined: std::result::Result<std::io::Result<()>, actix_web::rt::task::JoinError>,
    state: &AppState,
) -> Result<Stopped> {
    joined
        .map_err(|e| Error::Internal(format!("the HTTP server task failed: {e}")))?
        .map_err(Error::Io)?;
    let abandoned = state.abandoned();
    if abandoned > 0 {
        tracing::warn!(abandoned, "stopped; requests were abandoned");
    } else {
        tracing::info!("stopped; every request was answered");
    }
    Ok(Stopped { abandoned })
}

#[cfg(test)]
mod tests {
    use actix_web::test;
    use bge_m3_core::Outputs;
    use serde_json::{json, Value};

    use super::*;
    use crate::inference::Inputs;
    use crate::testing::{gated, job};

    /// A ready state over the gated tiny model (see `testing::gated`).
    fn ready(
        options: InferenceOptions,
    ) -> (
        web::Data<AppState>,
        Inference,
        std::sync::Arc<crate::testing::Gate>,
    ) {
        let state = web::Data::new(AppState::new("bge-m3", vec![], Limits::default()));
        let (inference, gate) = gated(options);
        state.set_ready(inference.info(), inference.clone());
        (state, inference, gate)
    }

    #[actix_web::test]
    async fn a_full_queue_answers_429_at_once() {
        let options = InferenceOptions {
            queue_size: 1,
            ..InferenceOptions::default()
        };
        let (state, inference, gate) = ready(options);
        // One request fills the queue; the closed gate keeps it there.
        let waiting = actix_web::rt::spawn(async move {
            let job = job(Inputs::Texts(vec!["a".into()]), Outputs::default(), 8192);
            inference.encode(job).await
        });
        gate.until_arrived(1).await;

        let app = test::init_service(app(state)).await;
        for path in ["/v1/embeddings", "/embeddings"] {
            let request = test::TestRequest::post()
                .uri(path)
                .set_json(json!({"input": "a"}))
                .to_request();
            let response = test::call_service(&app, request).await;
            assert_eq!(response.status(), 429);
            assert_eq!(response.headers().get("retry-after").unwrap(), "1");
            let body: Value = test::read_body_json(response).await;
            assert_eq!(body["error"]["code"], "queue_full");
            assert_eq!(body["error"]["type"], "rate_limit_error");
        }
        let request = test::TestRequest::post()
            .uri("/score")
            .set_json(json!({"sentences_1": ["a"], "sentences_2": ["b"]}))
            .to_request();
        assert_eq!(test::call_service(&app, request).await.status(), 429);
        gate.open();
        assert!(waiting.await.unwrap().is_ok());
    }

    /// A model fault answers 500 with the request's id and without its cause; the log line of
    /// the 500 has the cause, inside the request's span (so with its id too).
    #[actix_web::test]
    async fn a_model_fault_is_logged_with_the_request_id_and_answered_without_its_cause() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = {
            let capture = capture.clone();
            move || capture.clone()
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        // The test's runtime runs on this thread: every poll of the request sees it.
        let _logs = tracing::subscriber::set_default(subscriber);

        let state = web::Data::new(
            AppState::new("bge-m3", vec![], Limits::default()).with_allow_token_ids(true),
        );
        let (inference, gate) = gated(InferenceOptions::default());
        state.set_ready(inference.info(), inference);
        gate.open();
        let app = test::init_service(app(state)).await;
        let request = test::TestRequest::post()
            .uri("/embeddings")
            .insert_header(("x-request-id", "req-fault-1"))
            .set_json(json!({"input": [crate::testing::Gate::POISON]}))
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 500);
        assert_eq!(
            response.headers().get("x-request-id").unwrap(),
            "req-fault-1"
        );
        let body: Value = test::read_body_json(response).await;
        assert_eq!(body["error"]["code"], "model_fault");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("request id req-fault-1"), "{message}");
        assert!(!message.contains("poisoned"), "{message}");

        let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let failed = logs
            .lines()
            .find(|line| line.contains("request failed"))
            .unwrap_or_else(|| panic!("no 500 in the log: {logs}"));
        assert!(failed.contains("request_id=req-fault-1"), "{failed}");
        assert!(failed.contains("panic: poisoned pass"), "{failed}");
    }

    #[actix_web::test]
    async fn while_draining_health_and_new_requests_answer_503() {
        let (state, _inference, gate) = ready(InferenceOptions::default());
        gate.open();
        let app = test::init_service(app(state.clone())).await;
        let health = test::TestRequest::get().uri("/health").to_request();
        assert_eq!(test::call_service(&app, health).await.status(), 200);

        state.start_draining();
        let health = test::TestRequest::get().uri("/health").to_request();
        let response = test::call_service(&app, health).await;
        assert_eq!(response.status(), 503);
        let body: Value = test::read_body_json(response).await;
        assert_eq!(body["status"], "draining");
        let request = test::TestRequest::post()
            .uri("/embeddings")
            .set_json(json!({"input": "a"}))
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 503);
        let body: Value = test::read_body_json(response).await;
        assert_eq!(body["error"]["code"], "shutting_down");
    }

    /// The value of a metric line `name{labels} value` in `/metrics`, 0 when absent.
    fn metric(text: &str, line_start: &str) -> f64 {
        text.lines()
            .find(|line| line.starts_with(line_start))
            .and_then(|line| line.rsplit(' ').next())
            .map_or(0.0, |value| value.parse().unwrap())
    }

    #[actix_web::test]
    async fn metrics_move_as_requests_are_served() {
        let (state, _inference, gate) = ready(InferenceOptions::default());
        gate.open();
        let app = test::init_service(app(state)).await;
        let scrape = || async {
            let request = test::TestRequest::get().uri("/metrics").to_request();
            let response = test::call_service(&app, request).await;
            assert_eq!(response.status(), 200);
            let body = test::read_body(response).await;
            String::from_utf8(body.to_vec()).unwrap()
        };
        let served = r#"bge_m3_requests_total{route="/embeddings",status="200"}"#;
        let refused = r#"bge_m3_requests_total{route="/embeddings",status="400"}"#;
        let before = scrape().await;

        let request = test::TestRequest::post()
            .uri("/embeddings")
            .set_json(json!({"input": ["What is BGE M3?", "BM25"]}))
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 200);
        for header in [
            "x-queue-time",
            "x-tokenization-time",
            "x-inference-time",
            "x-total-time",
            "x-compute-tokens",
        ] {
            assert!(response.headers().contains_key(header), "{header}");
        }
        let request = test::TestRequest::post()
            .uri("/embeddings")
            .set_json(json!({"input": []}))
            .to_request();
        assert_eq!(test::call_service(&app, request).await.status(), 400);

        let after = scrape().await;
        // Other tests of this binary share the process's metrics: counters only grow.
        assert!(metric(&after, served) >= metric(&before, served) + 1.0);
        assert!(metric(&after, refused) >= metric(&before, refused) + 1.0);
        assert!(
            metric(&after, "bge_m3_tokens_total") >= metric(&before, "bge_m3_tokens_total") + 2.0
        );
        assert!(
            metric(&after, "bge_m3_pass_texts_count") > metric(&before, "bge_m3_pass_texts_count")
        );
        for name in [
            "bge_m3_queue_duration_seconds_bucket",
            "bge_m3_tokenization_duration_seconds_bucket",
            "bge_m3_inference_duration_seconds_bucket",
            "bge_m3_request_duration_seconds_bucket",
            "bge_m3_queued_requests",
            "bge_m3_waiting_texts",
            "bge_m3_model_load_seconds",
        ] {
            assert!(after.contains(name), "{name} missing from:\n{after}");
        }
    }
}
