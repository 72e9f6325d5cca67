//! Hostile requests, each with the statuses it may get.

use serde_json::{json, Value};

use crate::pools::Pools;
use crate::rng::Rng;
use crate::valid::MAX_BATCH;

/// A request a careless or hostile client sends, with the statuses it may be answered.
pub struct Hostile {
    pub kind: &'static str,
    pub method: &'static str,
    pub path: String,
    pub content_type: Option<&'static str>,
    pub body: Option<Vec<u8>>,
    pub expect: &'static [u16],
    /// Sent over raw TCP and dropped: no answer is read.
    pub hang_up: Option<HangUp>,
}

/// How a client hangs up.
pub enum HangUp {
    /// Announces this many body bytes and sends fewer.
    MidBody(usize),
    /// Sends a whole request and leaves before the answer.
    BeforeAnswer,
}

impl Hostile {
    /// A random hostile request; `max_inputs` and `max_body_bytes` are the server's limits.
    pub fn random(rng: &mut Rng, pools: &Pools, max_inputs: usize, max_body_bytes: usize) -> Self {
        let json = |kind, path: &str, body: Value, expect| Self {
            kind,
            method: "POST",
            path: path.to_string(),
            content_type: Some("application/json"),
            body: Some(serde_json::to_vec(&body).unwrap()),
            expect,
            hang_up: None,
        };
        let text = |rng: &mut Rng| pools.texts[rng.below(pools.texts.len())].clone();
        let embeddings = ["/v1/embeddings", "/embeddings"][rng.below(2)];
        match rng.below(12) {
            0 => {
                let body = serde_json::to_vec(&json!({"input": [text(rng), text(rng)]})).unwrap();
                let cut = rng.below(body.len() - 1);
                Self {
                    body: Some(body[..cut].to_vec()),
                    ..json("malformed json", embeddings, Value::Null, &[400])
                }
            }
            1 => {
                let bodies = [
                    json!({"input": 5}),
                    json!({"input": {"text": "a"}}),
                    json!({"input": ["a", 1]}),
                    json!({"input": "a", "max_length": "long"}),
                    json!({"input": "a", "input_type": {"dense": "yes"}}),
                    json!([{"input": "a"}]),
                ];
                let body = bodies[rng.below(bodies.len())].clone();
                json("wrong types", embeddings, body, &[400])
            }
            2 => match rng.below(2) {
                0 => json("empty input", embeddings, json!({"input": []}), &[400]),
                _ => json(
                    "empty input",
                    "/score",
                    json!({"sentences_1": [], "sentences_2": []}),
                    &[400],
                ),
            },
            3 => {
                let input = vec!["a"; max_inputs + 1];
                json(
                    "too many inputs",
                    embeddings,
                    json!({ "input": input }),
                    &[413],
                )
            }
            4 => {
                let input = "x".repeat(max_body_bytes + 1024);
                json(
                    "oversized body",
                    embeddings,
                    json!({ "input": input }),
                    &[413],
                )
            }
            5 => {
                let bodies = [
                    json!({"input": [[5, 6], [7, 99_999_999]]}),
                    json!({"input": [5, -1]}),
                    json!({"input": [4_294_967_296u64]}),
                    json!({"input": [1.5]}),
                ];
                let body = bodies[rng.below(bodies.len())].clone();
                json("bad token ids", embeddings, body, &[400])
            }
            6 => {
                let cases: [(&str, Value, &'static [u16]); 7] = [
                    (embeddings, json!({"input": "a", "max_length": 0}), &[400]),
                    (
                        embeddings,
                        json!({"input": "a", "max_length": 8193}),
                        &[400],
                    ),
                    (embeddings, json!({"input": "a", "dimensions": 0}), &[400]),
                    (embeddings, json!({"input": "a", "model": "gpt-4"}), &[404]),
                    (
                        embeddings,
                        json!({"input": "a", "input_type": {"dense": false, "sparse": false}}),
                        &[400],
                    ),
                    (
                        "/score",
                        json!({"sentences_1": ["a", "b"], "sentences_2": ["c"]}),
                        &[400],
                    ),
                    (
                        "/score",
                        json!({"sentences_1": ["a"], "sentences_2": ["c"], "weights": [-1, 0, 0]}),
                        &[400],
                    ),
                ];
                let (path, body, expect) = cases[rng.below(cases.len())].clone();
                json("bad values", path, body, expect)
            }
            7 => {
                let paths = ["/nope", "/v2/embeddings", "/embeddings/x", "/models/gpt-4"];
                let path = paths[rng.below(paths.len())];
                let method = if path.starts_with("/models") {
                    "GET"
                } else {
                    "POST"
                };
                Self {
                    method,
                    body: None,
                    content_type: None,
                    ..json("unknown route", path, Value::Null, &[404])
                }
            }
            8 => {
                let (method, path) = [
                    ("GET", "/v1/embeddings"),
                    ("DELETE", "/score"),
                    ("PUT", "/embeddings"),
                ][rng.below(3)];
                Self {
                    method,
                    body: None,
                    content_type: None,
                    ..json("wrong method", path, Value::Null, &[405])
                }
            }
            9 => Self {
                content_type: Some(
                    ["text/plain", "application/x-www-form-urlencoded"][rng.below(2)],
                ),
                ..json(
                    "wrong content type",
                    embeddings,
                    json!({"input": "a"}),
                    &[400],
                )
            },
            10 => {
                let body = serde_json::to_vec(&json!({"input": [text(rng), text(rng)]})).unwrap();
                let announced = body.len() + 1 + rng.below(4096);
                Self {
                    hang_up: Some(HangUp::MidBody(announced)),
                    body: Some(body[..rng.below(body.len())].to_vec()),
                    ..json("hang up mid-body", embeddings, Value::Null, &[])
                }
            }
            _ => {
                let input: Vec<String> = (0..MAX_BATCH).map(|_| text(rng)).collect();
                Self {
                    hang_up: Some(HangUp::BeforeAnswer),
                    ..json(
                        "hang up before answer",
                        embeddings,
                        json!({ "input": input }),
                        &[],
                    )
                }
            }
        }
    }
}
