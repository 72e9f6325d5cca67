//! `GET /`, `/health`, `/models`, `/models/{id}`, `/v1/models`, `/v1/models/{id}`.

use serde_json::json;

use crate::common::*;

#[test]
fn health_once_loaded() {
    let reply = get("/health");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        json!({"status": "healthy", "model_loaded": true, "device": "cpu", "dtype": "float32"})
    );
}

#[test]
fn root_names_the_service_and_every_route() {
    let reply = get("/");
    assert_eq!(reply.status, 200);
    let body = &reply.body;
    assert_eq!(body["name"], "bge-m3-server");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["model"], "bge-m3");
    assert_eq!(body["device"], "cpu");
    assert_eq!(body["status"], "healthy");
    let routes: Vec<&str> = body["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for route in [
        "GET /",
        "GET /health",
        "POST /v1/embeddings",
        "POST /embeddings",
        "POST /score",
        "GET /models",
        "GET /models/{id}",
        "GET /v1/models",
        "GET /v1/models/{id}",
    ] {
        assert!(routes.contains(&route), "{route} missing from {routes:?}");
    }
}

fn model_card() -> serde_json::Value {
    json!({
        "id": "bge-m3",
        "object": "model",
        "embedding_dims": model().dense_dim(),
        "max_length": 8192,
        "sparse_dims": model().vocab_size(),
        "colbert_dims": model().colbert_dim(),
        "dtype": "float32",
        "capabilities": {"dense": true, "sparse": true, "colbert": true},
    })
}

#[test]
fn native_model_routes() {
    for path in [
        "/models/bge-m3",
        "/models/BAAI/bge-m3",
        "/models/BAAI%2Fbge-m3",
    ] {
        let reply = get(path);
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        assert_eq!(reply.body, model_card(), "{path}");
    }
    let list = get("/models");
    assert_eq!(list.status, 200);
    assert_eq!(list.body, json!({"object": "list", "data": [model_card()]}));
}

#[test]
fn openai_model_routes() {
    let list = get("/v1/models");
    assert_eq!(list.status, 200);
    assert_eq!(list.body["object"], "list");
    let data = list.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    let model = &data[0];
    assert_eq!(model["id"], "bge-m3");
    assert_eq!(model["object"], "model");
    assert_eq!(model["owned_by"], "BAAI");
    assert!(model["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(model["embedding_dims"], crate::common::model().dense_dim());
    assert_eq!(model["sparse_dims"], 1202, "tiny-pt's vocabulary");
    assert_eq!(model["colbert_dims"], crate::common::model().colbert_dim());

    for path in ["/v1/models/bge-m3", "/v1/models/BAAI/bge-m3"] {
        let reply = get(path);
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(&reply.body, model, "{path}");
    }
}

#[test]
fn unknown_models_are_404_model_not_found() {
    for path in [
        "/models/text-embedding-3-small",
        "/v1/models/text-embedding-3-small",
        "/models/",
        "/v1/models/BAAI/bge-large",
    ] {
        assert_error(&get(path), 404, "model_not_found", Some("model"));
    }
}

#[test]
fn an_int8_server_names_its_precision_and_answers_close_to_f32() {
    let mut settings = config(tiny_pt());
    settings.dtype = Some(bge_m3_core::DType::Int8);
    let base = start(settings);
    let get = |path: &str| try_send(&base, "GET", path, None, None).unwrap();

    let health = get("/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.body["dtype"], "int8");
    assert_eq!(get("/info").body["model_dtype"], "int8");
    assert_eq!(get("/v1/models/bge-m3").body["dtype"], "int8");

    let text = "int8 products, f32 everything else";
    let body = serde_json::to_vec(&json!({"input": text, "model": "bge-m3"})).unwrap();
    let reply = try_send(
        &base,
        "POST",
        "/v1/embeddings",
        Some("application/json"),
        Some(body),
    )
    .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let int8 = floats(&reply.body["data"][0]["embedding"]);
    let f32 = &reference_embeddings(&[text], bge_m3_core::Outputs::default(), 8192)[0];
    let f32 = f32.dense.as_ref().unwrap();
    // Both are unit vectors: their dot product is the cosine.
    let cosine: f32 = int8.iter().zip(f32).map(|(a, b)| a * b).sum();
    assert!(cosine > 0.99, "cosine {cosine} to f32");
    assert!(
        cosine < 1.0 - 1e-7,
        "int8 gave f32's vector: cosine {cosine}"
    );
}
