//! `bge-m3-server`: BGE-M3 ([BAAI/bge-m3](https://huggingface.co/BAAI/bge-m3)) over HTTP on
//! actix-web, a drop-in replacement for the original Python service and for OpenAI's
//! embeddings API. The HTTP contract is the crate's README.
//!
//! - [`Config`]: the settings (clap flags, each also an environment variable).
//! - [`run`] binds and serves; [`serve`] serves on a listener you bound (port 0 in tests).
//! - [`app`] builds the actix `App` over an [`AppState`], which starts out loading and is
//!   settled by [`AppState::set_ready`]: the server answers `/health` with 503 meanwhile.
//! - [`Batcher`] is the model's own thread behind a bounded queue; handlers never run the
//!   model on the async runtime.
//! - [`Error`] is every failure, mapped to OpenAI's error body and an HTTP status in one place.
//!
//! ```no_run
//! use clap::Parser;
//!
//! # fn main() -> bge_m3_server::Result<()> {
//! let args = ["bge-m3-server", "--model-path", "/models/bge-m3"];
//! let config = bge_m3_server::Config::parse_from(args);
//! actix_web::rt::System::new().block_on(bge_m3_server::run(config))
//! # }
//! ```

pub mod batcher;
pub mod config;
mod error;
mod extract;
pub mod logging;
mod routes;
pub mod state;

use std::net::TcpListener;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{middleware, web, App, HttpServer};
use bge_m3_core::{BgeM3, LoadOptions};

pub use batcher::Batcher;
pub use config::Config;
pub use error::{Error, Report, Result};
pub use state::{AppState, Limits, ModelInfo};

/// The application: every route of the contract, the 404 and 405 answers, the body limit and
/// the request log, over `state`.
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
        .wrap(middleware::from_fn(logging::log_request))
}

/// Binds `config.host:config.port`, then [`serve`]s.
pub async fn run(config: Config) -> Result<()> {
    let addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind((config.host.as_str(), config.port))
        .map_err(|source| Error::Bind { addr, source })?;
    serve(config, listener).await
}

/// Serves on `listener` at once, loading the model meanwhile on its own thread (`/health`
/// answers 503 until it is loaded). Returns when the server is stopped (SIGINT, SIGTERM), or
/// with [`Error::Load`] as soon as the model fails to load.
pub async fn serve(config: Config, listener: TcpListener) -> Result<()> {
    let addr = listener.local_addr().map_err(Error::Io)?;
    let state = web::Data::new(AppState::from_config(&config));
    let model_path = config.model_path.clone();
    let load_options = LoadOptions {
        device: config.device,
        dtype: config.dtype,
    };
    let (batcher, loaded) = {
        let model_path = model_path.clone();
        Batcher::spawn(
            move || BgeM3::load(&model_path, &load_options),
            config.queue_size,
        )?
    };

    let server = HttpServer::new({
        let state = state.clone();
        move || app(state.clone())
    })
    .listen(listener)
    .map_err(Error::Io)?
    .run();
    let handle = server.handle();
    let mut server = actix_web::rt::spawn(server);
    tracing::info!(
        %addr,
        model = %model_path.display(),
        "listening; loading the model"
    );

    let loaded = tokio::select! {
        stopped = &mut server => return finished(stopped),
        loaded = loaded => loaded,
    };
    match loaded {
        Ok(Ok(info)) => {
            tracing::info!(device = %info.device, dense_dim = info.dense_dim, "ready");
            state.set_ready(info, batcher);
            finished(server.await)
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

fn finished(
    joined: std::result::Result<std::io::Result<()>, actix_web::rt::task::JoinError>,
) -> Result<()> {
    joined
        .map_err(|e| Error::Internal(format!("the HTTP server task failed: {e}")))?
        .map_err(Error::Io)
}

#[cfg(test)]
mod tests {
    use actix_web::test;
    use serde_json::{json, Value};

    use super::*;
    use crate::batcher::{EncodeJob, Inputs, SparseKeys};

    #[actix_web::test]
    async fn a_full_queue_answers_429_at_once() {
        let state = web::Data::new(AppState::new("bge-m3", vec![], Limits::default()));
        let (batcher, _jobs) = batcher::tests::stalled(1);
        state.set_ready(
            ModelInfo {
                dense_dim: 4,
                colbert_dim: 4,
                max_length: 8192,
                vocab_size: 10,
                device: "cpu".into(),
                loaded_at: 0,
            },
            batcher.clone(),
        );
        // One job fills the queue, which nobody drains.
        let waiting = actix_web::rt::spawn(async move {
            let job = EncodeJob {
                inputs: Inputs::Texts(vec!["a".into()]),
                options: bge_m3_core::EncodeOptions::default(),
                sparse_keys: SparseKeys::Ids,
            };
            batcher.encode(job).await
        });
        actix_web::rt::task::yield_now().await;

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
        waiting.abort();
    }
}
