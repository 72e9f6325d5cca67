//! The safe defaults and their opt-ins: token ids refused unless `--allow-token-ids`, foreign
//! model names refused unless `--accept-any-model`, `--rerank-weights`, and the sparse formats
//! each vector database takes as is.

use std::sync::OnceLock;

use bge_m3_core::{ScoreOptions, ScoreWeights};
use serde_json::{json, Value};

use crate::common::*;

/// A server with the defaults of the policies (no token ids, no foreign names), and one with
/// both opt-ins and other rerank weights.
fn strict() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut config = config(tiny_pt());
        config.allow_token_ids = false;
        start(config)
    })
}

fn lenient() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut config = config(tiny_pt());
        config.accept_any_model = true;
        config.rerank_weights = ScoreWeights::try_from([1.0, 0.0, 0.0]).unwrap();
        start(config)
    })
}

fn post_to(base: &str, path: &str, body: serde_json::Value) -> Reply {
    try_send(
        base,
        "POST",
        path,
        Some("application/json"),
        Some(serde_json::to_vec(&body).unwrap()),
    )
    .unwrap()
}

#[test]
fn the_defaults_of_the_cli_are_the_safe_ones() {
    use clap::Parser;
    let config = bge_m3_server::Config::try_parse_from(["bge-m3-server"]).unwrap();
    assert!(!config.allow_token_ids);
    assert!(!config.accept_any_model);
    assert_eq!(config.rerank_weights, ScoreWeights::default());
    assert_eq!(
        config.max_inputs, 8192,
        "Chroma's 5461 documents per add fit"
    );
    let config = bge_m3_server::Config::try_parse_from([
        "bge-m3-server",
        "--allow-token-ids",
        "--accept-any-model",
        "--rerank-weights",
        "1, 0, 0.5",
    ])
    .unwrap();
    assert!(config.allow_token_ids && config.accept_any_model);
    assert_eq!(
        config.rerank_weights,
        ScoreWeights::try_from([1.0, 0.0, 0.5]).unwrap()
    );
    for bad in [
        ["--rerank-weights", "1,1"],
        ["--rerank-weights", "0,0,0"],
        ["--rerank-weights", "a,b,c"],
    ] {
        assert!(
            bge_m3_server::Config::try_parse_from(std::iter::once("bge-m3-server").chain(bad))
                .is_err()
        );
    }
}

#[test]
fn token_ids_are_refused_by_default_with_what_langchain_users_must_set() {
    for (path, body, param) in [
        ("/v1/embeddings", json!({"input": [[9906, 1917]]}), "input"),
        ("/v1/embeddings", json!({"input": [5, 6]}), "input"),
        ("/embeddings", json!({"input": [[5]]}), "input"),
        ("/embed", json!({"inputs": [[5]]}), "inputs"),
    ] {
        let reply = post_to(strict(), path, body);
        assert_error(&reply, 400, "token_ids_not_allowed", Some(param));
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("check_embedding_ctx_length=False"),
            "{message}"
        );
        assert!(message.contains("--allow-token-ids"), "{message}");
    }
    // Texts are served as ever.
    assert_eq!(
        post_to(strict(), "/v1/embeddings", json!({"input": "a"})).status,
        200
    );
}

#[test]
fn foreign_model_names_are_404_by_default_and_served_with_the_opt_in() {
    for name in ["text-embedding-ada-002", "text-embedding-3-small"] {
        let body = json!({"model": name, "input": "a"});
        assert_error(
            &post_to(strict(), "/v1/embeddings", body.clone()),
            404,
            "model_not_found",
            Some("model"),
        );
        let reply = post_to(lenient(), "/v1/embeddings", body);
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(
            reply.body["model"], "bge-m3",
            "answered under the served id"
        );
    }
    let reply = try_send(
        lenient(),
        "GET",
        "/v1/models/text-embedding-ada-002",
        None,
        None,
    )
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["id"], "bge-m3");
    let body = json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"]});
    assert_eq!(post_to(lenient(), "/v2/rerank", body).status, 200);
}

#[test]
fn rerank_weights_set_the_default_and_a_request_overrides_them() {
    let documents = ["BGE M3 is an embedding model", "Definition of BM25"];
    let score = |weights: [f32; 3]| -> Vec<f32> {
        let options =
            ScoreOptions::default().with_weights(ScoreWeights::try_from(weights).unwrap());
        let pairs: Vec<(&str, &str)> = documents.iter().map(|d| ("What is BGE M3?", *d)).collect();
        model()
            .compute_score(&pairs, &options)
            .unwrap()
            .iter()
            .map(|s| s.colbert_sparse_dense)
            .collect()
    };
    let check = |body: &serde_json::Value, expected: &[f32]| {
        for r in body.as_array().unwrap() {
            let i = r["index"].as_u64().unwrap() as usize;
            assert_close_scalar(&r["score"], expected[i], "score");
        }
    };
    let request = json!({"query": "What is BGE M3?", "texts": documents});
    check(
        &post_to(lenient(), "/rerank", request.clone()).body,
        &score([1.0, 0.0, 0.0]),
    );
    let mut own = request;
    own["weights"] = json!([0.4, 0.2, 0.4]);
    check(
        &post_to(lenient(), "/rerank", own).body,
        &score([0.4, 0.2, 0.4]),
    );
}

/// The values of a pgvector `sparsevec` literal (`{i:v,...}/dim`): 1-based indices, the
/// weights as written, and the dimension.
fn sparsevec(literal: &Value) -> (Vec<(u32, String)>, String) {
    let literal = literal
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {literal}"));
    let (elements, dim) = literal.rsplit_once('/').unwrap();
    let elements = elements
        .strip_prefix('{')
        .unwrap()
        .strip_suffix('}')
        .unwrap();
    let elements = elements
        .split(',')
        .map(|e| {
            let (i, v) = e.split_once(':').unwrap();
            (i.parse().unwrap(), v.to_string())
        })
        .collect();
    (elements, dim.to_string())
}

#[test]
fn each_sparse_format_is_what_its_database_takes() {
    // A server of its own, sent one request at a time: no other request shares its forward
    // passes (which would move the last bits of its floats), so its weights are the core's to
    // the bit, and "written exactly" can be checked.
    let alone = start(config(tiny_pt()));
    let post_ok = |path: &str, body: Value| {
        let reply = post_to(&alone, path, body.clone());
        assert_eq!(reply.status, 200, "POST {path} {body}: {:?}", reply.body);
        reply.body
    };
    let text = "What is BGE M3?";
    let expected = model()
        .encode(&[text], &bge_m3_core::EncodeOptions::default())
        .unwrap()
        .remove(0);
    let mut ascending = expected.sparse.unwrap().weights;
    ascending.sort_by_key(|&(id, _)| id);
    let sparse = |format: &str| {
        post_ok(
            "/embeddings",
            json!({"input": text, "sparse_format": format}),
        )["sparse_vecs"][0]
            .clone()
    };
    // Milvus: the id-keyed dict.
    let milvus = sparse("id");
    assert_eq!(milvus.as_object().unwrap().len(), ascending.len());
    for (id, weight) in &ascending {
        assert_close_scalar(&milvus[id.to_string()], *weight, "id");
    }
    // Qdrant: SparseVector(indices, values).
    let qdrant = sparse("indices");
    let ids: Vec<u32> = ascending.iter().map(|(id, _)| *id).collect();
    assert_eq!(qdrant["indices"], json!(ids));
    // pgvector: the 1-based sparsevec literal with the vocabulary size.
    let literal = sparse("sparsevec");
    let (elements, dim) = sparsevec(&literal);
    assert_eq!(dim, model().vocab_size().to_string());
    assert_eq!(elements.len(), ascending.len());
    for ((i, v), (id, weight)) in elements.iter().zip(&ascending) {
        assert_eq!(*i, id + 1, "pgvector's indices start at 1");
        let v: f32 = v.parse().unwrap();
        assert_eq!(v, *weight, "the f32 written exactly");
    }
    // The same on /v1/embeddings: another request, so its weights are compared within the
    // tolerance, its indices and dimension exactly.
    let item = post_ok(
        "/v1/embeddings",
        json!({"input": text, "sparse_format": "sparsevec"}),
    );
    let (v1_elements, v1_dim) = sparsevec(&item["data"][0]["sparse"]);
    assert_eq!(v1_dim, dim);
    let indices = |elements: &[(u32, String)]| elements.iter().map(|(i, _)| *i).collect::<Vec<_>>();
    assert_eq!(indices(&v1_elements), indices(&elements));
    let values = |elements: &[(u32, String)]| {
        elements
            .iter()
            .map(|(_, v)| v.parse::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_close(
        &values(&v1_elements),
        &values(&elements),
        TOLERANCE,
        "/v1/embeddings sparsevec",
    );
    // ... and base64 there applies to `embedding` alone.
    let item = post_ok(
        "/v1/embeddings",
        json!({"input": text, "encoding_format": "base64", "input_type": {"colbert": true}}),
    );
    assert!(item["data"][0]["embedding"].is_string());
    assert!(item["data"][0]["dense"].is_array());
    assert!(item["data"][0]["colbert"][0].is_array());
    // On /embeddings base64 applies to every vector, ColBERT rows included.
    let native = post_ok(
        "/embeddings",
        json!({"input": text, "encoding_format": "base64", "input_type": {"colbert": true}}),
    );
    assert!(native["dense_vecs"][0].is_string());
    assert!(native["colbert_vecs"][0][0].is_string());
}
