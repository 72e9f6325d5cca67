//! Property tests of the HTTP surface: arbitrary JSON biased towards the real fields, arbitrary
//! bytes under arbitrary content types, and arbitrary paths and methods, sent in-process to
//! [`bge_m3_server::app`] over the tiny-pt fixture model, loaded and served by a real
//! [`Inference`].
//!
//! Whatever comes in, the answer is a 2xx or a 4xx, never a 5xx and never a panic; it is JSON;
//! every 4xx is OpenAI's error body with a non-empty message; every 2xx has the documented
//! shape: one item per input, the requested outputs and only those, vectors of the right width
//! and encoding with unit length, positive sparse weights keyed as asked, ColBERT rows that add
//! up to `usage`, and `/score` values in range (fusions between their parts).
//!
//! Cases per property: `PROPTEST_CASES`, default [`DEFAULT_CASES`].
//!
//! `checks.rs` holds the checks of one answer, `strategies.rs` the generators, `compat.rs` both
//! for the routes in other servers' shapes (rerank, text-embeddings-inference's).

#![forbid(unsafe_code)]

mod checks;
mod compat;
mod strategies;

use actix_web::body::MessageBody;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::{Method, StatusCode};
use actix_web::test::{init_service, read_body, try_call_service, TestRequest};
use actix_web::web;
use bge_m3_core::{BgeM3, DeviceSpec, LoadOptions, SpecialTokens};
use bge_m3_server::{AppState, Inference, InferenceOptions, Limits, ModelInfo};
use bge_m3_test_support::tiny_pt;
use proptest::option::weighted as maybe;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

use checks::check;
use strategies::{content_type, embeddings_body, method, path, raw_body, score_body};

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 128;
/// `--max-inputs` of the app under test: small, so that the limit is reached often.
const MAX_INPUTS: usize = 16;
/// `--max-body-bytes` of the app under test.
const MAX_BODY_BYTES: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// The app under test and the runner.

/// What the checks need to know about the served model.
struct Served {
    info: ModelInfo,
    specials: SpecialTokens,
}

/// A state whose model has loaded, as `serve` leaves it: tiny-pt on the CPU behind a inference.
async fn ready_state() -> (web::Data<AppState>, Served) {
    let limits = Limits {
        max_inputs: MAX_INPUTS,
        max_body_bytes: MAX_BODY_BYTES,
        ..Limits::default()
    };
    // Token ids accepted, so that the fuzzer's id inputs reach the model.
    let state = web::Data::new(
        AppState::new("bge-m3", vec!["BAAI/bge-m3".into()], limits).with_allow_token_ids(true),
    );
    let load = LoadOptions::default()
        .with_device(DeviceSpec::Cpu)
        .with_dtype(None);
    let options = InferenceOptions {
        queue_size: 8,
        ..InferenceOptions::default()
    };
    let loaded =
        Inference::spawn(move || BgeM3::load(tiny_pt(), &load), options).expect("model thread");
    let inference = loaded
        .await
        .expect("the model thread panicked")
        .expect("loading tiny-pt");
    let info = inference.info();
    state.set_ready(info.clone(), inference);
    let tokenizer = bge_m3_core::Tokenizer::from_file(&tiny_pt().join("tokenizer.json"))
        .expect("tokenizer.json");
    let specials = tokenizer.specials();
    (state, Served { info, specials })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// One request as the fuzzer built it.
#[derive(Debug, Clone)]
struct Sent {
    method: Method,
    uri: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Sent {
    fn post_json(route: &str, body: &Value) -> Self {
        Self {
            method: Method::POST,
            uri: route.to_string(),
            content_type: Some("application/json".into()),
            body: serde_json::to_vec(body).unwrap(),
        }
    }

    fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

impl std::fmt::Display for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let cut = body.char_indices().nth(600).map_or(body.len(), |(i, _)| i);
        write!(
            f,
            "{} {} (Content-Type {:?}, {} bytes): {}",
            self.method,
            self.uri,
            self.content_type,
            self.body.len(),
            &body[..cut]
        )
    }
}

/// An answer: status, `Content-Type`, body.
struct Reply {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

/// Stack of the thread that runs a property: proptest's generators of nested strategies take
/// large frames in an unoptimised build, more than a test thread's 2 MiB.
const STACK_BYTES: usize = 64 << 20;

/// Runs `cases()` requests built by `request` from the strategy that `strategy` makes, through
/// the app, and checks each answer with [`check`].
fn fuzz<S, F>(strategy: impl FnOnce() -> S + Send + 'static, request: F)
where
    S: Strategy,
    F: Fn(S::Value) -> Sent + Send + 'static,
{
    let runner = std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(STACK_BYTES)
        .spawn(move || run(strategy(), request))
        .expect("a thread for the property");
    if let Err(panic) = runner.join() {
        std::panic::resume_unwind(panic);
    }
}

fn run<S: Strategy>(strategy: S, request: impl Fn(S::Value) -> Sent) {
    let system = actix_web::rt::System::new();
    let (state, served) = system.block_on(ready_state());
    let app = system.block_on(init_service(bge_m3_server::app(state)));
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        // The failing case is printed, shrunk; nothing is written next to the sources.
        failure_persistence: None,
        max_shrink_time: 60_000,
        ..Config::default()
    });
    let result = runner.run(&strategy, |value| {
        let sent = request(value);
        let reply = system.block_on(async {
            let mut request = TestRequest::default()
                .method(sent.method.clone())
                .uri(&sent.uri);
            if let Some(content_type) = &sent.content_type {
                request = request.insert_header((CONTENT_TYPE, content_type.as_str()));
            }
            let request = request.set_payload(sent.body.clone()).to_request();
            match try_call_service(&app, request).await {
                Ok(response) => Reply {
                    status: response.status(),
                    content_type: header(response.headers()),
                    body: read_body(response).await.to_vec(),
                },
                // What actix would send for an error that escaped the handlers.
                Err(error) => {
                    let response = error.error_response();
                    Reply {
                        status: response.status(),
                        content_type: header(response.headers()),
                        body: response
                            .into_body()
                            .try_into_bytes()
                            .map(|b| b.to_vec())
                            .unwrap_or_default(),
                    }
                }
            }
        });
        check(&served, &sent, &reply).map_err(|e| {
            TestCaseError::fail(format!(
                "{e}\nrequest: {sent}\nanswer: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ))
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

fn header(headers: &actix_web::http::header::HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// The properties.

#[test]
fn embeddings_routes_answer_any_json_with_a_documented_2xx_or_4xx() {
    let strategy = || {
        (
            select(vec!["/v1/embeddings", "/embeddings"]),
            embeddings_body(),
        )
    };
    fuzz(strategy, |(route, body)| Sent::post_json(route, &body));
}

#[test]
fn score_answers_any_json_with_a_documented_2xx_or_4xx() {
    fuzz(score_body, |body| Sent::post_json("/score", &body));
}

#[test]
fn rerank_and_tei_routes_answer_any_json_with_a_documented_2xx_or_4xx() {
    fuzz(compat::request, |(route, body)| {
        Sent::post_json(route, &body)
    });
}

#[test]
fn post_routes_answer_any_bytes_under_any_content_type() {
    let strategy = || {
        let routes = ["/v1/embeddings", "/embeddings", "/score"];
        (
            select(routes.into_iter().chain(compat::ROUTES).collect::<Vec<_>>()),
            maybe(0.8, content_type()),
            raw_body(),
        )
    };
    fuzz(strategy, |(route, content_type, body)| Sent {
        method: Method::POST,
        uri: route.to_string(),
        content_type,
        body,
    });
}

#[test]
fn any_path_and_method_is_answered_in_the_error_shape() {
    let strategy = || (method(), path(), any::<bool>());
    fuzz(strategy, |(method, uri, with_body)| {
        let body = if with_body {
            // Valid on every POST route, so that the route, not the body, decides.
            serde_json::to_vec(&json!({
                "input": "a", "sentences_1": ["a"], "sentences_2": ["b"],
                "inputs": "a", "query": "a", "texts": ["b"], "documents": ["b"], "ids": [5],
            }))
            .unwrap()
        } else {
            Vec::new()
        };
        Sent {
            method,
            content_type: with_body.then(|| "application/json".to_string()),
            uri,
            body,
        }
    });
}
