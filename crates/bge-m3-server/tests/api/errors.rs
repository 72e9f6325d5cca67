//! Every error path of docs/API.md: OpenAI's error body, the right status, the field named.

use serde_json::{json, Value};

use crate::common::*;

const EMBEDDINGS: [&str; 2] = ["/v1/embeddings", "/embeddings"];

fn post_raw(path: &str, content_type: Option<&str>, body: &str) -> Reply {
    send("POST", path, content_type, Some(body.as_bytes().to_vec()))
}

#[test]
fn malformed_json_is_400() {
    for path in ["/v1/embeddings", "/embeddings", "/score"] {
        for body in [
            r#"{"input": "a""#,
            "{input: 'a'}",
            "",
            "nul",
            r#"{"input": "a"} x"#,
        ] {
            let reply = post_raw(path, Some("application/json"), body);
            assert_error(&reply, 400, "invalid_json", None);
        }
    }
}

#[test]
fn content_type() {
    let body = r#"{"input": "Hello world"}"#;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "nonsense",
    ] {
        let reply = post_raw("/v1/embeddings", Some(content_type), body);
        assert_error(&reply, 400, "invalid_content_type", None);
    }
    // JSON with a charset or a +json suffix is JSON; a missing Content-Type is read as JSON,
    // as the FastAPI service did.
    for content_type in [
        Some("application/json; charset=utf-8"),
        Some("application/vnd.api+json"),
        None,
    ] {
        let reply = post_raw("/v1/embeddings", content_type, body);
        assert_eq!(reply.status, 200, "{content_type:?}: {:?}", reply.body);
    }
}

#[test]
fn wrong_types_name_the_field() {
    let cases: [(&str, Value, &str); 12] = [
        ("/v1/embeddings", json!({"input": 5}), "input"),
        ("/v1/embeddings", json!({"input": {"text": "a"}}), "input"),
        ("/v1/embeddings", json!({"input": ["a", 1]}), "input"),
        ("/v1/embeddings", json!({"input": [[1, 2], 3]}), "input"),
        ("/v1/embeddings", json!({"input": "a", "model": 3}), "model"),
        (
            "/v1/embeddings",
            json!({"input": "a", "max_length": "long"}),
            "max_length",
        ),
        (
            "/v1/embeddings",
            json!({"input": "a", "dimensions": 1.5}),
            "dimensions",
        ),
        (
            "/embeddings",
            json!({"input": "a", "input_type": {"dense": "yes"}}),
            "input_type.dense",
        ),
        (
            "/embeddings",
            json!({"input": "a", "input_type": 7}),
            "input_type",
        ),
        (
            "/embeddings",
            json!({"input": "a", "batch_size": -1}),
            "batch_size",
        ),
        (
            "/score",
            json!({"sentences_1": ["a"], "sentences_2": [1]}),
            "sentences_2",
        ),
        (
            "/score",
            json!({"sentences_1": ["a"], "sentences_2": ["b"], "weights": "equal"}),
            "weights",
        ),
    ];
    for (path, body, param) in cases {
        let reply = post(path, body.clone());
        assert_error(&reply, 400, "invalid_value", Some(param));
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(param), "{body}: {message}");
    }
    // A body that is not an object at all.
    assert_error(
        &post("/embeddings", json!(["a"])),
        400,
        "invalid_value",
        None,
    );
}

#[test]
fn unknown_enum_values() {
    let reply = post(
        "/v1/embeddings",
        json!({"input": "a", "encoding_format": "float16"}),
    );
    assert_error(&reply, 400, "invalid_value", Some("encoding_format"));
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("base64"), "{message}");
    let reply = post("/embeddings", json!({"input": "a", "sparse_format": "csr"}));
    assert_error(&reply, 400, "invalid_value", Some("sparse_format"));
}

/// Issue 29, item 8: a value of the wrong JSON type for a field of named values was a 400
/// `invalid_json` without a field, as if the body were not JSON.
#[test]
fn named_values_of_the_wrong_type_name_their_field() {
    for path in EMBEDDINGS {
        for (field, value) in [
            ("sparse_format", json!(5)),
            ("sparse_format", json!(true)),
            ("encoding_format", json!(["float"])),
            ("encoding_format", json!(1.5)),
        ] {
            let mut body = json!({"input": "a"});
            body[field] = value.clone();
            let reply = post(path, body);
            assert_error(&reply, 400, "invalid_value", Some(field));
            let message = reply.body["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(field) && message.contains("expected one of"),
                "{field}: {value}: {message}"
            );
        }
    }
}

#[test]
fn missing_fields() {
    for path in EMBEDDINGS {
        assert_error(&post(path, json!({})), 400, "missing_field", Some("input"));
        assert_error(
            &post(path, json!({"input": null})),
            400,
            "missing_field",
            Some("input"),
        );
    }
    let reply = post("/score", json!({"sentences_2": ["b"]}));
    assert_error(&reply, 400, "missing_field", Some("sentences_1"));
    let reply = post("/score", json!({"sentences_1": ["a"]}));
    assert_error(&reply, 400, "missing_field", Some("sentences_2"));
}

#[test]
fn empty_input_arrays() {
    for path in EMBEDDINGS {
        let reply = post(path, json!({"input": []}));
        assert_error(&reply, 400, "invalid_value", Some("input"));
    }
    let reply = post("/score", json!({"sentences_1": [], "sentences_2": []}));
    assert_error(&reply, 400, "invalid_value", Some("sentences_1"));
}

#[test]
fn max_length_out_of_range() {
    for path in EMBEDDINGS {
        for max_length in [0, 8193, 100_000] {
            let reply = post(path, json!({"input": "a", "max_length": max_length}));
            assert_error(&reply, 400, "invalid_value", Some("max_length"));
        }
        let reply = post(path, json!({"input": "a", "max_length": -1}));
        assert_error(&reply, 400, "invalid_value", Some("max_length"));
    }
    let pair = json!({"sentences_1": ["a"], "sentences_2": ["b"]});
    for (field, value) in [
        ("max_length", 0),
        ("max_length", 8193),
        ("max_query_length", 0),
        ("max_passage_length", 9000),
    ] {
        let mut body = pair.clone();
        body[field] = json!(value);
        assert_error(&post("/score", body), 400, "invalid_value", Some(field));
    }
}

#[test]
fn batch_size_and_dimensions_out_of_range() {
    for path in EMBEDDINGS {
        let reply = post(path, json!({"input": "a", "batch_size": 0}));
        assert_error(&reply, 400, "invalid_value", Some("batch_size"));
        for dimensions in [0, model().dense_dim() + 1] {
            let reply = post(path, json!({"input": "a", "dimensions": dimensions}));
            assert_error(&reply, 400, "invalid_value", Some("dimensions"));
        }
    }
    let reply = post(
        "/score",
        json!({"sentences_1": ["a"], "sentences_2": ["b"], "batch_size": 0}),
    );
    assert_error(&reply, 400, "invalid_value", Some("batch_size"));
}

#[test]
fn no_output_asked_for() {
    let reply = post(
        "/embeddings",
        json!({"input": "a", "input_type": {"dense": false, "sparse": false, "colbert": false}}),
    );
    assert_error(&reply, 400, "invalid_value", Some("input_type"));
}

#[test]
fn mismatched_score_lengths() {
    let reply = post(
        "/score",
        json!({"sentences_1": ["a", "b"], "sentences_2": ["c"]}),
    );
    assert_error(&reply, 400, "invalid_value", Some("sentences_2"));
}

#[test]
fn bad_weights() {
    for weights in [
        json!([-0.1, 0.5, 0.6]),
        json!([0.5, 0.5]),
        json!([0.2, 0.2, 0.2, 0.4]),
        json!([]),
        json!([0, 0, 0]),
        json!([1e39, 0, 0]),
        json!([0.4, null, 0.4]),
        // Beyond what the document allows: one weight over 1e38 (the f32 sum of three would
        // overflow), or every weight below 1e-37 (it may round to 0).
        json!([2e38, 0, 0]),
        json!([1e-38, 1e-50, 0]),
    ] {
        let reply = post(
            "/score",
            json!({"sentences_1": ["a"], "sentences_2": ["b"], "weights": weights}),
        );
        assert_error(&reply, 400, "invalid_value", Some("weights"));
        let reply = post(
            "/rerank",
            json!({"query": "a", "texts": ["b"], "weights": weights}),
        );
        assert_error(&reply, 400, "invalid_value", Some("weights"));
    }
}

#[test]
fn bad_token_ids() {
    let vocab = model().vocab_size();
    for input in [
        json!([5, vocab]),
        json!([[5], [vocab + 100]]),
        json!([5, -1]),
        json!([[5, -3]]),
        json!([5, 2.5]),
        json!([5, 1u64 << 40]),
        json!([[5], ["a"]]),
    ] {
        for path in EMBEDDINGS {
            let reply = post(path, json!({"input": input}));
            assert_error(&reply, 400, "invalid_value", Some("input"));
        }
    }
    let reply = post("/v1/embeddings", json!({"input": [5, vocab]}));
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("outside the vocabulary"), "{message}");
    let reply = post("/v1/embeddings", json!({"input": [5, -1]}));
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("input[1]") && message.contains("-1"),
        "{message}"
    );
}

#[test]
fn unknown_model() {
    for path in ["/v1/embeddings", "/embeddings"] {
        let reply = post(
            path,
            json!({"input": "a", "model": "text-embedding-3-small"}),
        );
        assert_error(&reply, 404, "model_not_found", Some("model"));
        assert!(reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("text-embedding-3-small"));
    }
    let reply = post(
        "/score",
        json!({"sentences_1": ["a"], "sentences_2": ["b"], "model": "bge-m4"}),
    );
    assert_error(&reply, 404, "model_not_found", Some("model"));
}

#[test]
fn unknown_routes() {
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/v1/embedding"),
        ("GET", "/v1"),
        ("DELETE", "/v2/embeddings"),
        ("GET", "/health/"),
    ] {
        let reply = send(method, path, None, None);
        assert_error(&reply, 404, "not_found", None);
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(path), "{message}");
    }
}

#[test]
fn wrong_methods() {
    for (method, path, allowed) in [
        ("GET", "/v1/embeddings", "POST"),
        ("GET", "/embeddings", "POST"),
        ("PUT", "/score", "POST"),
        ("POST", "/health", "GET, HEAD"),
        ("DELETE", "/models/bge-m3", "GET, HEAD"),
        ("POST", "/v1/models", "GET, HEAD"),
        ("PUT", "/", "GET, HEAD, POST"),
        ("DELETE", "/", "GET, HEAD, POST"),
    ] {
        let reply = send(method, path, None, None);
        assert_error(&reply, 405, "method_not_allowed", None);
        assert_eq!(reply.header("allow"), Some(allowed), "{method} {path}");
    }
}

#[test]
fn oversized_bodies_are_413() {
    let big = "x".repeat(MAX_BODY_BYTES + 1);
    for path in ["/v1/embeddings", "/embeddings", "/score"] {
        let body = serde_json::to_vec(&json!({"input": big, "sentences_1": [big]})).unwrap();
        let reply = send("POST", path, Some("application/json"), Some(body));
        assert_error(&reply, 413, "body_too_large", None);
    }
    // Just under the limit is fine.
    let text = "x ".repeat((MAX_BODY_BYTES - 64) / 2);
    let reply = post("/embeddings", json!({"input": text, "max_length": 16}));
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

#[test]
fn too_many_inputs_are_413() {
    let texts = vec!["a"; MAX_INPUTS + 1];
    for path in EMBEDDINGS {
        let reply = post(path, json!({"input": texts}));
        assert_error(&reply, 413, "too_many_inputs", Some("input"));
        let ids = vec![vec![5]; MAX_INPUTS + 1];
        let reply = post(path, json!({"input": ids}));
        assert_error(&reply, 413, "too_many_inputs", Some("input"));
        // The limit itself is fine, and a single token array is one input however long.
        assert_eq!(
            post(path, json!({"input": vec!["a"; MAX_INPUTS]})).status,
            200
        );
        assert_eq!(post(path, json!({"input": vec![5; 100]})).status, 200);
    }
    let reply = post(
        "/score",
        json!({"sentences_1": texts, "sentences_2": texts}),
    );
    assert_error(&reply, 413, "too_many_inputs", Some("sentences_1"));
}

#[test]
fn empty_strings_are_valid_inputs() {
    let body = post_ok("/v1/embeddings", json!({"input": ["", " "]}));
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    let body = post_ok("/score", json!({"sentences_1": [""], "sentences_2": [""]}));
    assert_eq!(body["dense"].as_array().unwrap().len(), 1);
}

/// A server of its own, so that the test holds alone and in any order: the same good request
/// gets the same answer before and after one bad request of every kind, and `/health` stays
/// 200.
#[test]
fn the_server_survives_bad_requests() {
    let base = start(config(tiny_pt()));
    let json = Some("application/json");
    let good = || {
        let body = serde_json::to_vec(&json!({"input": "still here"})).unwrap();
        let reply = try_send(&base, "POST", "/v1/embeddings", json, Some(body)).unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.body
    };
    let before = good();
    let too_big = format!("{{\"input\": \"{}\"}}", "x".repeat(MAX_BODY_BYTES));
    let too_many = json!({"input": vec!["a"; MAX_INPUTS + 1]}).to_string();
    let bad_ids = json!({"input": [5, model().vocab_size()]}).to_string();
    let bad: [(&str, &str, Option<&str>, &str, u16); 14] = [
        ("POST", "/v1/embeddings", json, "{", 400),
        ("POST", "/v1/embeddings", json, "[]", 400),
        ("POST", "/v1/embeddings", json, "null", 400),
        ("POST", "/v1/embeddings", json, "\"a\"", 400),
        ("POST", "/v1/embeddings", json, "{\"input\": [[[1]]]}", 400),
        (
            "POST",
            "/v1/embeddings",
            Some("text/plain"),
            "{\"input\": \"a\"}",
            400,
        ),
        (
            "POST",
            "/embeddings",
            json,
            "{\"input\": \"a\", \"max_length\": 0}",
            400,
        ),
        ("POST", "/embeddings", json, &bad_ids, 400),
        ("POST", "/embeddings", json, &too_many, 413),
        ("POST", "/embeddings", json, &too_big, 413),
        (
            "POST",
            "/score",
            json,
            "{\"sentences_1\": [\"a\"], \"sentences_2\": []}",
            400,
        ),
        (
            "POST",
            "/rerank",
            json,
            "{\"query\": \"a\", \"texts\": [\"b\"], \"weights\": [1]}",
            400,
        ),
        ("GET", "/v1/embeddings", None, "", 405),
        ("GET", "/nope", None, "", 404),
    ];
    for (method, path, content_type, body, status) in bad {
        let body = (!body.is_empty()).then(|| body.as_bytes().to_vec());
        let reply = try_send(&base, method, path, content_type, body).unwrap();
        assert_eq!(reply.status, status, "{method} {path}: {:?}", reply.body);
    }
    let health = try_send(&base, "GET", "/health", None, None).unwrap();
    assert_eq!(health.status, 200);
    assert_same_answer(&good(), &before, "after the bad requests");
}
