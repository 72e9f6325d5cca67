//! `POST /v1/embeddings`: OpenAI's shape with the original service's `dense` and `sparse`.

use bge_m3_core::{Embedding, Outputs};
use serde_json::{json, Value};

use crate::common::*;

fn dense_of(embedding: &Embedding) -> &[f32] {
    embedding.dense.as_deref().unwrap()
}

#[test]
fn one_text_has_both_documented_shapes_and_matches_the_core() {
    let body = post_ok(
        "/v1/embeddings",
        json!({"input": "What is BGE M3?", "model": "bge-m3"}),
    );
    let expected = &reference_embeddings(&["What is BGE M3?"], Outputs::default(), 8192)[0];
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], "bge-m3");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    let item = &data[0];
    assert_eq!(item["object"], "embedding");
    assert_eq!(item["index"], 0);
    assert_eq!(floats(&item["embedding"]).len(), model().dense_dim());
    assert_close(
        &floats(&item["embedding"]),
        dense_of(expected),
        TOLERANCE,
        "embedding",
    );
    assert_eq!(item["dense"], item["embedding"]);
    let by_token = model()
        .sparse_by_token(expected.sparse.as_ref().unwrap())
        .unwrap();
    assert!(!by_token.is_empty());
    assert_weights(&item["sparse"], &by_token, "sparse");
    assert!(item.get("colbert").is_none());
    assert_eq!(body["usage"]["prompt_tokens"], expected.tokens);
    assert_eq!(body["usage"]["total_tokens"], expected.tokens);
}

#[test]
fn usage_leaves_out_the_two_special_tokens() {
    let body = post_ok("/v1/embeddings", json!({"input": "Hello world"}));
    let ids = &model().tokenize(&["Hello world"], 8192).unwrap()[0];
    assert_eq!(body["usage"]["prompt_tokens"], ids.len() - 2);
    let body = post_ok("/v1/embeddings", json!({"input": ""}));
    assert_eq!(body["usage"]["prompt_tokens"], 0);
}

#[test]
fn a_batch_keeps_its_order_and_each_item_its_own_vectors() {
    let texts = ["Hello world!", "", "北京是中华人民共和国的首都。", "a"];
    let body = post_ok("/v1/embeddings", json!({"input": texts, "model": "bge-m3"}));
    let expected = reference_embeddings(&texts, Outputs::default(), 8192);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), texts.len());
    for (i, (item, expected)) in data.iter().zip(&expected).enumerate() {
        assert_eq!(item["index"], i);
        assert_close(
            &floats(&item["embedding"]),
            dense_of(expected),
            TOLERANCE,
            format!("data[{i}]"),
        );
        let by_token = model()
            .sparse_by_token(expected.sparse.as_ref().unwrap())
            .unwrap();
        assert_weights(&item["sparse"], &by_token, &format!("data[{i}].sparse"));
    }
    let tokens: usize = expected.iter().map(|e| e.tokens).sum();
    assert_eq!(body["usage"]["total_tokens"], tokens);
}

#[test]
fn base64_is_little_endian_f32_of_embedding_alone() {
    let request = |format: &str| {
        post_ok(
            "/v1/embeddings",
            json!({
                "input": ["What is BGE M3?", "Hello world!"],
                "encoding_format": format,
                "input_type": {"colbert": true},
            }),
        )
    };
    let float = request("float");
    let base64 = request("base64");
    for i in 0..2 {
        let f = &float["data"][i];
        let b = &base64["data"][i];
        assert!(b["embedding"].is_string());
        assert_close(
            &decode_base64(&b["embedding"]),
            &floats(&f["embedding"]),
            TOLERANCE,
            "embedding",
        );
        // OpenAI's SDK asks for base64 by default and decodes `embedding` alone: the extras
        // stay JSON numbers, usable as they come.
        assert!(b["dense"].is_array());
        assert_same_answer(&b["dense"], &f["dense"], "dense");
        assert!(b["colbert"][0].is_array());
        assert_same_answer(&b["colbert"], &f["colbert"], "colbert");
        assert_same_answer(&b["sparse"], &f["sparse"], "sparse");
    }
    let expected = reference_embeddings(&["What is BGE M3?"], Outputs::default(), 8192);
    assert_close(
        &decode_base64(&base64["data"][0]["embedding"]),
        dense_of(&expected[0]),
        TOLERANCE,
        "base64 embedding",
    );
}

#[test]
fn token_ids_embed_like_the_text_they_spell() {
    let text = "What is BGE M3?";
    let sequence = &model().tokenize(&[text], 8192).unwrap()[0];
    let content: Vec<u32> = sequence[1..sequence.len() - 1].to_vec();
    let from_text = post_ok("/v1/embeddings", json!({"input": text}));

    let single = post_ok("/v1/embeddings", json!({"input": content}));
    assert_eq!(single["data"].as_array().unwrap().len(), 1);
    assert_close(
        &floats(&single["data"][0]["embedding"]),
        &floats(&from_text["data"][0]["embedding"]),
        TOLERANCE,
        "token ids",
    );
    assert_same_answer(
        &single["data"][0]["sparse"],
        &from_text["data"][0]["sparse"],
        "sparse",
    );
    assert_eq!(single["usage"], from_text["usage"]);

    let nested = post_ok("/v1/embeddings", json!({"input": [content, [], content]}));
    let data = nested["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let empty = reference_embeddings(&[""], Outputs::default(), 8192);
    assert_close(
        &floats(&data[1]["embedding"]),
        dense_of(&empty[0]),
        TOLERANCE,
        "[]",
    );
    assert_close(
        &floats(&data[2]["embedding"]),
        &floats(&from_text["data"][0]["embedding"]),
        TOLERANCE,
        "input[2]",
    );
    assert_eq!(nested["usage"]["prompt_tokens"], 2 * content.len());
}

#[test]
fn dimensions_truncate_and_renormalise_embedding_and_dense() {
    let body = post_ok(
        "/v1/embeddings",
        json!({"input": "What is BGE M3?", "dimensions": 8, "input_type": {"colbert": true}}),
    );
    let full =
        dense_of(&reference_embeddings(&["What is BGE M3?"], Outputs::default(), 8192)[0]).to_vec();
    let prefix = &full[..8];
    let expected: Vec<f32> = prefix.iter().map(|v| v / norm(prefix)).collect();
    let item = &body["data"][0];
    assert_close(
        &floats(&item["embedding"]),
        &expected,
        TOLERANCE,
        "embedding",
    );
    assert_close(&floats(&item["dense"]), &expected, TOLERANCE, "dense");
    assert_close(
        &[norm(&floats(&item["embedding"]))],
        &[1.0],
        TOLERANCE,
        "norm",
    );
    // ColBERT vectors keep their own width.
    assert_eq!(
        floats(&item["colbert"][0]).len(),
        model().colbert_dim(),
        "colbert rows are not truncated"
    );

    let all = post_ok(
        "/v1/embeddings",
        json!({"input": "What is BGE M3?", "dimensions": model().dense_dim()}),
    );
    assert_close(
        &floats(&all["data"][0]["embedding"]),
        &full,
        TOLERANCE,
        "all dimensions",
    );

    let base64 = post_ok(
        "/v1/embeddings",
        json!({"input": "What is BGE M3?", "dimensions": 8, "encoding_format": "base64"}),
    );
    assert_close(
        &decode_base64(&base64["data"][0]["embedding"]),
        &expected,
        TOLERANCE,
        "base64",
    );
}

#[test]
fn the_three_sparse_formats() {
    let text = "What is BGE M3? BGE";
    let expected = reference_embeddings(&[text], Outputs::default(), 8192);
    let ids = &expected[0].sparse.as_ref().unwrap().weights;
    let request = |format: &str| {
        post_ok(
            "/v1/embeddings",
            json!({"input": text, "sparse_format": format}),
        )["data"][0]["sparse"]
            .clone()
    };

    let by_token = model()
        .sparse_by_token(expected[0].sparse.as_ref().unwrap())
        .unwrap();
    assert_weights(&request("token"), &by_token, "token");

    let by_id: Vec<(String, f32)> = ids.iter().map(|(id, w)| (id.to_string(), *w)).collect();
    assert_weights(&request("id"), &by_id, "id");

    let indices = request("indices");
    let mut sorted = ids.clone();
    sorted.sort_by_key(|(id, _)| *id);
    let got: Vec<u64> = indices["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let want: Vec<u64> = sorted.iter().map(|(id, _)| u64::from(*id)).collect();
    assert_eq!(got, want);
    let values: Vec<f32> = sorted.iter().map(|(_, w)| *w).collect();
    assert_close(&floats(&indices["values"]), &values, TOLERANCE, "values");
}

#[test]
fn colbert_on_request_matches_the_core() {
    let texts = ["What is BGE M3?", ""];
    let body = post_ok(
        "/v1/embeddings",
        json!({"input": texts, "input_type": {"dense": true, "sparse": true, "colbert": true}}),
    );
    let expected = reference_embeddings(&texts, Outputs::ALL, 8192);
    for (i, expected) in expected.iter().enumerate() {
        let rows = body["data"][i]["colbert"].as_array().unwrap();
        let want = expected.colbert.as_ref().unwrap();
        assert_eq!(
            rows.len(),
            expected.tokens + 1,
            "one row per token plus </s>"
        );
        assert_eq!(rows.len(), want.len());
        for (j, (row, want)) in rows.iter().zip(want).enumerate() {
            assert_close(
                &floats(row),
                want,
                TOLERANCE,
                format!("data[{i}].colbert[{j}]"),
            );
        }
    }
}

#[test]
fn outputs_chosen_with_input_type() {
    let no_dense = post_ok(
        "/v1/embeddings",
        json!({"input": "What is BGE M3?", "input_type": {"dense": false}}),
    );
    let item = &no_dense["data"][0];
    assert_eq!(
        item["embedding"],
        Value::Null,
        "embedding is null without dense"
    );
    assert!(item.as_object().unwrap().contains_key("embedding"));
    assert!(item.get("dense").is_none());
    assert!(item["sparse"].is_object());

    let dense_only = post_ok(
        "/v1/embeddings",
        json!({"input": "What is BGE M3?", "input_type": {"sparse": false}}),
    );
    assert!(dense_only["data"][0].get("sparse").is_none());
    assert!(dense_only["data"][0]["dense"].is_array());

    // A string input_type, as some OpenAI-compatible clients send, changes nothing.
    let plain = post_ok("/v1/embeddings", json!({"input": "What is BGE M3?"}));
    for kind in ["query", "passage", "document"] {
        let typed = post_ok(
            "/v1/embeddings",
            json!({"input": "What is BGE M3?", "input_type": kind}),
        );
        assert_same_answer(&typed, &plain, &format!("input_type {kind:?}"));
    }
}

#[test]
fn max_length_and_batch_size_are_honoured() {
    let texts = [
        "The quick brown fox jumps over the lazy dog.",
        "Hello world!",
        "a",
    ];
    let body = post_ok(
        "/v1/embeddings",
        json!({"input": texts, "max_length": 5, "batch_size": 1}),
    );
    let expected = reference_embeddings(&texts, Outputs::default(), 5);
    for (i, expected) in expected.iter().enumerate() {
        assert!(expected.tokens <= 3);
        assert_close(
            &floats(&body["data"][i]["embedding"]),
            dense_of(expected),
            TOLERANCE,
            "truncated",
        );
    }
    assert_eq!(
        body["usage"]["prompt_tokens"],
        expected.iter().map(|e| e.tokens).sum::<usize>()
    );
}

#[test]
fn aliases_no_model_and_user_are_accepted() {
    let plain = post_ok("/v1/embeddings", json!({"input": "x", "model": "bge-m3"}));
    let alias = post_ok(
        "/v1/embeddings",
        json!({"input": "x", "model": "BAAI/bge-m3", "user": "someone"}),
    );
    assert_eq!(alias["model"], "bge-m3", "the response names the served id");
    assert_same_answer(&alias["data"], &plain["data"], "alias");
    let absent = post_ok("/v1/embeddings", json!({"input": "x"}));
    assert_same_answer(&absent["data"], &plain["data"], "no model");
    let nulls = post_ok(
        "/v1/embeddings",
        json!({"input": "x", "model": null, "dimensions": null, "encoding_format": null}),
    );
    assert_same_answer(&nulls["data"], &plain["data"], "nulls");
}
