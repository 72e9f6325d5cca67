//! `GET /`, `/health`, `/models`, `/models/{id}`, `/v1/models`, `/v1/models/{id}`.

use serde_json::json;

use crate::common::*;

#[test]
fn health_once_loaded() {
    let reply = get("/health");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        json!({"status": "healthy", "model_loaded": true, "device": "cpu"})
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
