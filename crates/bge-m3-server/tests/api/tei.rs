//! text-embeddings-inference's routes: its shapes, BGE-M3's values (bge-m3-core's within 1e-5).

use bge_m3_core::{EncodeOptions, Outputs};
use serde_json::json;

use crate::common::*;

const TEXTS: [&str; 3] = ["What is BGE M3?", "", "北京是中华人民共和国的首都。"];

fn reference(texts: &[&str]) -> Vec<bge_m3_core::Embedding> {
    let options = EncodeOptions::default().with_outputs(Outputs::ALL);
    model().encode(texts, &options).unwrap()
}

#[test]
fn embed_gives_the_dense_vectors() {
    let expected = reference(&TEXTS);
    let body = post_ok("/embed", json!({"inputs": TEXTS}));
    assert_eq!(body.as_array().unwrap().len(), 3);
    for (i, e) in expected.iter().enumerate() {
        assert_close(
            &floats(&body[i]),
            e.dense.as_ref().unwrap(),
            TOLERANCE,
            format!("[{i}]"),
        );
    }
    // One string is a batch of one; `normalize` and `truncate` change nothing.
    let body = post_ok(
        "/embed",
        json!({"inputs": TEXTS[0], "normalize": false, "truncate": true, "truncation_direction": "right"}),
    );
    assert_close(
        &floats(&body[0]),
        expected[0].dense.as_ref().unwrap(),
        TOLERANCE,
        "lone",
    );
    // `dimensions`: the first N values, re-normalised.
    let body = post_ok("/embed", json!({"inputs": [TEXTS[0]], "dimensions": 4}));
    let head = &expected[0].dense.as_ref().unwrap()[..4];
    let scaled: Vec<f32> = head.iter().map(|v| v / norm(head)).collect();
    assert_close(&floats(&body[0]), &scaled, TOLERANCE, "dimensions");
}

/// text-embeddings-inference answers `POST /` with `/embed` for an embedding model, and its
/// clients given the server's root URL post there; `GET /` still describes the service.
#[test]
fn post_at_the_root_is_embed() {
    let expected = reference(&TEXTS);
    for body in [
        json!({"inputs": TEXTS}),
        json!({"inputs": TEXTS[2], "normalize": false, "truncate": true}),
        json!({"inputs": [TEXTS[0]], "dimensions": 4}),
    ] {
        let root = post_ok("/", body.clone());
        assert_same_answer(&root, &post_ok("/embed", body.clone()), &body.to_string());
    }
    let root = post_ok("/", json!({"inputs": TEXTS}));
    for (i, e) in expected.iter().enumerate() {
        assert_close(
            &floats(&root[i]),
            e.dense.as_ref().unwrap(),
            TOLERANCE,
            format!("[{i}]"),
        );
    }
    // `/embed`'s errors, naming `inputs`.
    assert_error(&post("/", json!({})), 400, "missing_field", Some("inputs"));
    assert_error(
        &post("/", json!({"inputs": []})),
        400,
        "invalid_value",
        Some("inputs"),
    );
    assert_error(
        &post("/", json!({"input": "OpenAI's field"})),
        400,
        "missing_field",
        Some("inputs"),
    );
    // GET / is unchanged, and lists both.
    let described = get("/");
    assert_eq!(described.status, 200);
    assert_eq!(described.body["name"], "bge-m3-server");
    let routes = described.body["routes"].as_array().unwrap();
    for route in ["GET /", "POST /"] {
        assert!(routes.contains(&json!(route)), "{route} in {routes:?}");
    }
}

#[test]
fn embed_sparse_gives_the_lexical_weights_by_id_ascending() {
    let expected = reference(&TEXTS);
    let body = post_ok("/embed_sparse", json!({"inputs": TEXTS}));
    for (i, e) in expected.iter().enumerate() {
        let mut want = e.sparse.as_ref().unwrap().weights.clone();
        want.sort_by_key(|&(id, _)| id);
        let got = body[i].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "[{i}]");
        for (g, (id, weight)) in got.iter().zip(&want) {
            assert_eq!(keys(g), ["index", "value"]);
            assert_eq!(g["index"], *id);
            assert_close_scalar(&g["value"], *weight, "value");
        }
    }
}

#[test]
fn embed_all_gives_the_colbert_vectors() {
    let expected = reference(&TEXTS);
    let body = post_ok("/embed_all", json!({"inputs": TEXTS}));
    for (i, e) in expected.iter().enumerate() {
        let rows = body[i].as_array().unwrap();
        let want = e.colbert.as_ref().unwrap();
        assert_eq!(rows.len(), want.len(), "one row per token but <s>");
        for (row, w) in rows.iter().zip(want) {
            assert_close(&floats(row), w, TOLERANCE, "colbert");
        }
    }
}

#[test]
fn tokenize_and_decode() {
    let text = "Hello world, what is BGE M3?";
    let body = post_ok("/tokenize", json!({"inputs": text}));
    let tokens = body[0].as_array().unwrap();
    let ids: Vec<u32> = tokens
        .iter()
        .map(|t| t["id"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(ids, model().tokenize(&[text], 8192).unwrap()[0]);
    assert_eq!(
        tokens[0],
        json!({"id": 0, "text": "<s>", "special": true, "start": null, "stop": null})
    );
    for t in &tokens[1..tokens.len() - 1] {
        let (start, stop) = (
            t["start"].as_u64().unwrap() as usize,
            t["stop"].as_u64().unwrap() as usize,
        );
        assert_eq!(t["text"], text[start..stop]);
        assert_eq!(t["special"], false);
    }
    let body = post_ok(
        "/tokenize",
        json!({"inputs": [text, "BM25"], "add_special_tokens": false}),
    );
    assert_eq!(body[0].as_array().unwrap().len(), tokens.len() - 2);
    assert_eq!(body.as_array().unwrap().len(), 2);

    let decoded = post_ok("/decode", json!({"ids": ids}));
    assert_eq!(decoded, json!([text]));
    let decoded = post_ok(
        "/decode",
        json!({"ids": [ids.clone(), ids], "skip_special_tokens": false}),
    );
    assert!(decoded[1].as_str().unwrap().starts_with("<s>"), "{decoded}");
}

#[test]
fn info_describes_the_model_and_the_limits() {
    let reply = get("/info");
    assert_eq!(reply.status, 200);
    let info = &reply.body;
    assert_eq!(info["model_id"], "bge-m3");
    assert_eq!(info["served_model_name"], "bge-m3");
    assert!(info["tokenization_workers"].as_u64().unwrap() >= 1);
    assert_eq!(info["model_dtype"], "float32");
    assert_eq!(info["model_type"], json!({"embedding": {"pooling": "cls"}}));
    assert_eq!(info["max_input_length"], 8192);
    assert_eq!(info["max_client_batch_size"], MAX_INPUTS);
    assert_eq!(info["max_concurrent_requests"], 64);
    assert_eq!(info["max_batch_tokens"], 16384);
    assert_eq!(info["auto_truncate"], true);
    assert_eq!(info["embedding_dims"], model().dense_dim());
    assert_eq!(info["sparse_dims"], model().vocab_size());
    assert_eq!(info["colbert_dims"], model().colbert_dim());
    assert!(info["version"].is_string());
}

#[test]
fn tei_errors_have_the_documented_shape() {
    for (path, body, status, code, param) in [
        ("/embed", json!({}), 400, "missing_field", Some("inputs")),
        (
            "/embed",
            json!({"inputs": []}),
            400,
            "invalid_value",
            Some("inputs"),
        ),
        (
            "/embed",
            json!({"inputs": "a", "dimensions": 0}),
            400,
            "invalid_value",
            Some("dimensions"),
        ),
        (
            "/embed",
            json!({"inputs": "a", "prompt_name": "query"}),
            400,
            "invalid_value",
            Some("prompt_name"),
        ),
        (
            "/embed",
            json!({"inputs": "a", "truncation_direction": "left"}),
            400,
            "invalid_value",
            Some("truncation_direction"),
        ),
        (
            "/embed",
            json!({"inputs": vec!["a"; MAX_INPUTS + 1]}),
            413,
            "too_many_inputs",
            Some("inputs"),
        ),
        (
            "/embed_sparse",
            json!({"inputs": 5}),
            400,
            "invalid_value",
            Some("inputs"),
        ),
        (
            "/embed_all",
            json!({"inputs": [[1, 99999]]}),
            400,
            "invalid_value",
            Some("inputs"),
        ),
        ("/tokenize", json!({}), 400, "missing_field", Some("inputs")),
        (
            "/tokenize",
            json!({"inputs": []}),
            400,
            "invalid_value",
            Some("inputs"),
        ),
        (
            "/tokenize",
            json!({"inputs": "a", "prompt_name": "q"}),
            400,
            "invalid_value",
            Some("prompt_name"),
        ),
        ("/decode", json!({}), 400, "missing_field", Some("ids")),
        (
            "/decode",
            json!({"ids": []}),
            400,
            "invalid_value",
            Some("ids"),
        ),
        (
            "/decode",
            json!({"ids": [[]]}),
            400,
            "invalid_value",
            Some("ids"),
        ),
        (
            "/decode",
            json!({"ids": "text"}),
            400,
            "invalid_value",
            Some("ids"),
        ),
        (
            "/decode",
            json!({"ids": [1, 99999]}),
            400,
            "invalid_value",
            Some("ids"),
        ),
        (
            "/decode",
            json!({"ids": [-1]}),
            400,
            "invalid_value",
            Some("ids"),
        ),
    ] {
        assert_error(&post(path, body.clone()), status, code, param);
    }
    assert_error(&post("/info", json!({})), 405, "method_not_allowed", None);
}
