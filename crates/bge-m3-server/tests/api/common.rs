//! The server under test, started once per test binary on the tiny-pt fixture model behind a
//! real listener on an OS-assigned port, the same model loaded with bge-m3-core for reference
//! values, and a small blocking HTTP client. The tolerance, the close-enough check, the fixture
//! paths and the polling come from bge-m3-test-support, re-exported here.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use bge_m3_core::{BgeM3, DeviceSpec, Embedding, EncodeOptions, LoadOptions, Outputs};
use bge_m3_server::Config;
use serde_json::Value;

pub use bge_m3_test_support::{
    assert_close, check_same_weights, eventually, norm, tiny_pt, Signal, TOLERANCE,
};
/// The test server's `--max-inputs`, small so that the limit is cheap to reach.
pub const MAX_INPUTS: usize = 16;
/// The test server's `--max-body-bytes`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The settings of a test server: tiny-pt on the CPU, small limits, token ids accepted, nothing
/// from the environment.
pub fn config(model_path: PathBuf) -> Config {
    Config {
        model_path,
        revision: "main".into(),
        host: "127.0.0.1".into(),
        port: 0,
        device: DeviceSpec::Cpu,
        dtype: None,
        threads: None,
        model_id: "bge-m3".into(),
        model_aliases: vec!["BAAI/bge-m3".into()],
        max_inputs: MAX_INPUTS,
        max_body_bytes: MAX_BODY_BYTES,
        queue_size: 64,
        max_batch_tokens: 16384,
        request_timeout: 300,
        shutdown_timeout: 30,
        memory_budget_mib: 1024,
        body_timeout: 30,
        write_timeout: 30,
        header_timeout: 5,
        keep_alive: 5,
        max_connections: None,
        tokenizer_threads: None,
        max_text_chars: 1_000_000,
        api_key: None,
        cors_allow_origins: Vec::new(),
        // The token-id tests need ids; the default refusal has its own server (`policy.rs`).
        allow_token_ids: true,
        accept_any_model: false,
        rerank_weights: Default::default(),
        log_format: bge_m3_server::logging::LogFormat::Text,
    }
}

/// The reference: tiny-pt loaded with bge-m3-core, on the CPU in f32.
pub fn model() -> &'static BgeM3 {
    static MODEL: OnceLock<BgeM3> = OnceLock::new();
    MODEL.get_or_init(|| {
        let options = LoadOptions::default()
            .with_device(DeviceSpec::Cpu)
            .with_dtype(None);
        BgeM3::load(tiny_pt(), &options).expect("loading tiny-pt")
    })
}

/// The reference outputs of `texts`: bge-m3-core's `encode` on the same model.
pub fn reference_embeddings(texts: &[&str], outputs: Outputs, max_length: usize) -> Vec<Embedding> {
    let options = EncodeOptions::default()
        .with_outputs(outputs)
        .with_max_length(max_length)
        .with_batch_size(12);
    model().encode(texts, &options).unwrap()
}

/// Base URL (`http://127.0.0.1:PORT`) of the shared server, started on first use; returns
/// once `/health` answers 200.
pub fn base() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| start(config(tiny_pt())))
}

/// Starts a server with `config` on an OS-assigned port; returns its base URL once `/health`
/// answers 200.
pub fn start(config: Config) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        actix_web::rt::System::new()
            .block_on(bge_m3_server::serve(config, listener))
            .expect("the test server failed");
    });
    wait_for_health(&base, 200);
    base
}

/// Polls `/health` until it answers `status` (bounded: 60 s).
pub fn wait_for_health(base: &str, status: u16) {
    let answered = eventually(Duration::from_secs(60), || {
        try_send(base, "GET", "/health", None, None).is_ok_and(|reply| reply.status == status)
    });
    assert!(answered.is_some(), "{base}/health never answered {status}");
}

/// An HTTP reply: its status, `Content-Type` and body (parsed as JSON, `Null` if it is not;
/// `text` is the body as it came, decoded lossily as UTF-8).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                // The server's own `--request-timeout`: the 16 MiB requests of
                // reliability/memory.rs take tens of seconds on a busy 2-core machine.
                .timeout_global(Some(Duration::from_secs(300)))
                .build(),
        )
    })
}

/// Sends a request with an optional body and `Content-Type` to the server at `base`.
pub fn try_send(
    base: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<Reply, ureq::Error> {
    let content_type = content_type.map(|value| ("content-type", value));
    try_send_with_headers(base, method, path, content_type.as_slice(), body)
}

/// Sends a request with these headers and an optional body to the server at `base`.
pub fn try_send_with_headers(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Reply, ureq::Error> {
    let url = format!("{base}{path}");
    let mut request = ureq::http::Request::builder().method(method).uri(&url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = match body {
        Some(body) => agent().run(request.body(body)?)?,
        None => agent().run(request.body(ureq::SendBody::none())?)?,
    };
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect::<Vec<_>>();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(512 * 1024 * 1024)
        .read_to_vec()?;
    Ok(Reply {
        status,
        content_type,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// Sends to the shared server.
pub fn send(method: &str, path: &str, content_type: Option<&str>, body: Option<Vec<u8>>) -> Reply {
    try_send(base(), method, path, content_type, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub fn get(path: &str) -> Reply {
    send("GET", path, None, None)
}

/// POSTs `body` as JSON and expects a 200.
pub fn post_ok(path: &str, body: Value) -> Value {
    let reply = post(path, body.clone());
    assert_eq!(reply.status, 200, "POST {path} {body}: {:?}", reply.body);
    assert_eq!(reply.content_type, "application/json");
    reply.body
}

/// POSTs `body` as JSON.
pub fn post(path: &str, body: Value) -> Reply {
    send(
        "POST",
        path,
        Some("application/json"),
        Some(serde_json::to_vec(&body).unwrap()),
    )
}

/// Checks OpenAI's error shape, the status, the code and the param, and the message again in
/// `detail` (where Jina's clients read it).
pub fn assert_error(reply: &Reply, status: u16, code: &str, param: Option<&str>) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.content_type, "application/json", "{:?}", reply.body);
    let error = &reply.body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{:?}",
        reply.body
    );
    assert_eq!(reply.body["detail"], error["message"], "{:?}", reply.body);
    assert!(error["type"].is_string(), "{:?}", reply.body);
    assert_eq!(error["code"], code, "{:?}", reply.body);
    assert_eq!(error["param"].as_str(), param, "{:?}", reply.body);
}

/// The keys of a JSON object, in order.
pub fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// A JSON array of numbers as f32.
pub fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// A base64 string of little-endian f32 (OpenAI's `encoding_format: "base64"`) decoded.
pub fn decode_base64(value: &Value) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(
            value
                .as_str()
                .unwrap_or_else(|| panic!("not a string: {value}")),
        )
        .unwrap();
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Two answers to the same input are the same JSON, their numbers within [`TOLERANCE`]: a
/// request that shares a forward pass with other requests is padded with them, which moves the
/// last bits of its floats (docs/API.md's "Numerics" allows 1e-5).
pub fn assert_same_answer(actual: &Value, expected: &Value, what: &str) {
    match (actual, expected) {
        (Value::Number(a), Value::Number(e)) => {
            let (a, e) = (a.as_f64().unwrap() as f32, e.as_f64().unwrap() as f32);
            assert_close(&[a], &[e], TOLERANCE, what);
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{what}: lengths");
            for (i, (a, e)) in a.iter().zip(e).enumerate() {
                assert_same_answer(a, e, &format!("{what}[{i}]"));
            }
        }
        (Value::Object(a), Value::Object(e)) => {
            assert_eq!(
                a.keys().collect::<Vec<_>>(),
                e.keys().collect::<Vec<_>>(),
                "{what}: keys"
            );
            for (key, a) in a {
                assert_same_answer(a, &e[key], &format!("{what}.{key}"));
            }
        }
        _ => assert_eq!(actual, expected, "{what}"),
    }
}

/// A JSON number within [`TOLERANCE`] of `expected`.
pub fn assert_close_scalar(actual: &Value, expected: f32, what: &str) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {actual}")) as f32;
    assert_close(&[actual], &[expected], TOLERANCE, what);
}

/// A JSON object of weights, in its order.
pub fn weights(value: &Value) -> Vec<(String, f32)> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap() as f32))
        .collect()
}

/// Checks string-keyed weights against expected ones, keys in the same order.
pub fn assert_weights(actual: &Value, expected: &[(String, f32)], what: &str) {
    let actual = weights(actual);
    let keys: Vec<&str> = actual.iter().map(|(k, _)| k.as_str()).collect();
    let expected_keys: Vec<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, expected_keys, "{what}: keys");
    let values: Vec<f32> = actual.iter().map(|(_, v)| *v).collect();
    let expected_values: Vec<f32> = expected.iter().map(|(_, v)| *v).collect();
    assert_close(&values, &expected_values, TOLERANCE, what);
}
