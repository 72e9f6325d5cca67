//! The model's life: 503 while it loads, 200 once it has, and a failed load that stops the
//! server with its cause (and the binary with a non-zero status).

use std::net::TcpListener;
use std::time::Duration;

use actix_web::{web, HttpServer};
use bge_m3_core::{BgeM3, DeviceSpec, LoadOptions};
use bge_m3_server::{app, AppState, Error, Inference, InferenceOptions, Limits};
use bge_m3_test_support::Launch;
use serde_json::json;

use crate::common::*;

#[test]
fn loading_answers_503_then_the_model_serves() {
    let state = web::Data::new(AppState::new(
        "bge-m3",
        vec!["BAAI/bge-m3".into()],
        Limits::default(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    {
        let state = state.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                HttpServer::new(move || app(state.clone()))
                    .workers(1)
                    .listen(listener)
                    .unwrap()
                    .run()
                    .await
            })
        });
    }
    wait_for_health(&base, 503);
    let send = |method: &str, path: &str, body: Option<serde_json::Value>| {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        try_send(&base, method, path, Some("application/json"), body).unwrap()
    };

    let health = send("GET", "/health", None);
    assert_eq!(health.status, 503);
    assert_eq!(
        health.body,
        json!({"status": "loading", "model_loaded": false, "device": null, "dtype": null})
    );
    for (method, path, body) in [
        ("POST", "/v1/embeddings", Some(json!({"input": "a"}))),
        ("POST", "/embeddings", Some(json!({"input": "a"}))),
        (
            "POST",
            "/score",
            Some(json!({"sentences_1": ["a"], "sentences_2": ["b"]})),
        ),
        ("GET", "/models", None),
        ("GET", "/models/bge-m3", None),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/bge-m3", None),
    ] {
        let reply = send(method, path, body);
        assert_error(&reply, 503, "model_loading", None);
        assert_eq!(reply.header("retry-after"), Some("1"), "{path}");
    }
    let root = send("GET", "/", None);
    assert_eq!(root.status, 200);
    assert_eq!(root.body["status"], "loading");

    // The model arrives: the same app now serves it.
    let loaded = Inference::spawn(
        || {
            let options = LoadOptions::default()
                .with_device(DeviceSpec::Cpu)
                .with_dtype(None);
            BgeM3::load(tiny_pt(), &options)
        },
        InferenceOptions::default(),
    )
    .unwrap();
    let inference = loaded.blocking_recv().unwrap().unwrap();
    let info = inference.info();
    assert_eq!(info.dense_dim, model().dense_dim());
    state.set_ready(info, inference);
    let health = send("GET", "/health", None);
    assert_eq!(health.status, 200);
    assert_eq!(health.body["device"], "cpu");
    let reply = send("POST", "/v1/embeddings", Some(json!({"input": "a"})));
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

#[test]
fn a_failed_load_stops_serve_with_the_cause() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let missing = std::env::temp_dir().join("bge-m3-server-test-no-such-model");
    let result = actix_web::rt::System::new()
        .block_on(bge_m3_server::serve(config(missing.clone()), listener));
    match result {
        Err(error @ Error::Load { .. }) => {
            let report = bge_m3_server::Report(&error).to_string();
            assert!(report.contains(&missing.display().to_string()), "{report}");
            assert!(report.contains("does not exist"), "{report}");
        }
        other => panic!("expected a load error, got {other:?}"),
    }
}

#[test]
fn the_binary_exits_non_zero_and_logs_why_when_the_model_fails_to_load() {
    let missing = std::env::temp_dir().join("bge-m3-server-test-no-such-model");
    // Bounded wait: the load fails at once.
    let finished = Launch::new(env!("CARGO_BIN_EXE_bge-m3-server"))
        .env("MODEL_PATH", &missing)
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("RUST_LOG", "info")
        .run(Duration::from_secs(30));
    assert!(
        !finished.timed_out,
        "the server did not exit after a failed load"
    );
    assert!(!finished.status.success());
    let log = &finished.stderr;
    assert!(log.contains("cannot load the model"), "{log}");
    assert!(log.contains("does not exist"), "{log}");
}

#[test]
fn int8_on_a_gpu_is_refused_before_the_model_is_fetched() {
    // A Hub id, offline, with an empty cache: were the cache asked first, the error would name
    // the missing files instead of the setting.
    let cache = tempfile::tempdir().unwrap();
    let log = refused_at_start(
        Launch::new(env!("CARGO_BIN_EXE_bge-m3-server"))
            .env("MODEL_PATH", "BAAI/bge-m3")
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HOME", cache.path())
            .env("DTYPE", "int8")
            .env("DEVICE", "cuda"),
    );
    assert!(
        log.contains("invalid `dtype`: int8 runs on the CPU only"),
        "{log}"
    );
}

#[test]
fn a_name_that_is_not_an_int8_kernel_is_refused_at_start() {
    let log = refused_at_start(
        Launch::new(env!("CARGO_BIN_EXE_bge-m3-server"))
            .env("MODEL_PATH", tiny_pt())
            .env("DTYPE", "int8")
            .env("BGE_M3_INT8_KERNEL", "sse2"),
    );
    assert!(
        log.contains(r#"invalid `BGE_M3_INT8_KERNEL`: "sse2" is not an int8 kernel"#),
        "{log}"
    );
}

/// Starts the server `launch` describes on a free local port, which must exit with 1 (a
/// setting refused at start) within 30 s, and returns its log.
fn refused_at_start(launch: Launch) -> String {
    let finished = launch
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .run(Duration::from_secs(30));
    assert!(!finished.timed_out, "the server did not exit");
    assert_eq!(finished.status.code(), Some(1));
    finished.stderr
}

#[test]
fn help_documents_every_setting() {
    let output = Launch::new(env!("CARGO_BIN_EXE_bge-m3-server"))
        .arg("--help")
        .capture_stdout()
        .run(Duration::from_secs(30));
    output.assert_success();
    let help = String::from_utf8_lossy(&output.stdout);
    for env in [
        "MODEL_PATH",
        "MODEL_REVISION",
        "HOST",
        "PORT",
        "DEVICE",
        "DTYPE",
        "MODEL_ID",
        "MODEL_ALIASES",
        "MAX_INPUTS",
        "MAX_BODY_BYTES",
        "QUEUE_SIZE",
        "MAX_BATCH_TOKENS",
        "REQUEST_TIMEOUT",
        "SHUTDOWN_TIMEOUT",
        "MAX_TEXT_CHARS",
        "API_KEY",
        "CORS_ALLOW_ORIGINS",
        "LOG_FORMAT",
    ] {
        assert!(
            help.contains(&format!("[env: {env}")),
            "{env} missing from --help:\n{help}"
        );
    }
    assert!(help.contains("[default: 8101]"), "{help}");
}
