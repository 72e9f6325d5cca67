//! `POST /rerank`, `/v1/rerank`, `/v2/rerank`: each document's score is bge-m3-core's
//! `compute_score` `colbert+sparse+dense` for its (query, document) pair, best first.

use bge_m3_core::{ScoreOptions, ScoreWeights};
use serde_json::{json, Value};

use crate::common::*;

const QUERY: &str = "What is BGE M3?";

fn documents() -> Vec<String> {
    vec![
        "BGE M3 is an embedding model supporting dense, sparse and multi-vector retrieval".into(),
        "Definition of BM25".into(),
        "".into(),
        "北京是中华人民共和国的首都。".into(),
        QUERY.into(),
        "BM25 is a bag-of-words retrieval function. ".repeat(20),
    ]
}

/// bge-m3-core's scores of each (query, document) pair, and the indices best first.
fn reference(query: &str, documents: &[String], weights: ScoreWeights) -> (Vec<f32>, Vec<usize>) {
    let pairs: Vec<(&str, &str)> = documents.iter().map(|d| (query, d.as_str())).collect();
    let options = ScoreOptions::default().with_weights(weights);
    let scores: Vec<f32> = model()
        .compute_score(&pairs, &options)
        .unwrap()
        .iter()
        .map(|s| s.colbert_sparse_dense)
        .collect();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    (scores, order)
}

/// Checks ranked results (`index` and `score_key` in each) against the reference.
fn assert_ranked(results: &Value, score_key: &str, scores: &[f32], order: &[usize]) {
    let results = results.as_array().expect("an array of results");
    let indices: Vec<usize> = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(indices, order[..results.len()], "best first");
    for r in results {
        let index = r["index"].as_u64().unwrap() as usize;
        assert_close_scalar(&r[score_key], scores[index], &format!("score of {index}"));
    }
}

#[test]
fn tei_rerank_scores_every_text_as_compute_score_and_sorts_them() {
    let texts = documents();
    let body = post_ok("/rerank", json!({"query": QUERY, "texts": texts}));
    let (scores, order) = reference(QUERY, &texts, ScoreWeights::default());
    assert_ranked(&body, "score", &scores, &order);
    assert_eq!(body[0]["index"], 4, "the query itself ranks first");
    assert_eq!(keys(&body[0]), ["index", "score"]);

    let body = post_ok(
        "/rerank",
        json!({"query": QUERY, "texts": texts, "return_text": true, "truncate": true,
               "raw_scores": false, "truncation_direction": "Right"}),
    );
    assert_ranked(&body, "score", &scores, &order);
    for r in body.as_array().unwrap() {
        assert_eq!(keys(r), ["index", "text", "score"]);
        assert_eq!(r["text"], texts[r["index"].as_u64().unwrap() as usize]);
    }
}

#[test]
fn a_long_query_is_truncated_at_512_tokens() {
    let query = "What is BGE M3 and how does it rank documents? ".repeat(200);
    assert!(model().tokenize(&[&query], 8192).unwrap()[0].len() > 600);
    let texts = documents()[..3].to_vec();
    let body = post_ok("/rerank", json!({"query": query, "texts": texts}));
    let (scores, order) = reference(&query, &texts, ScoreWeights::default());
    assert_ranked(&body, "score", &scores, &order);
}

#[test]
fn a_long_document_is_truncated_at_8192_tokens() {
    // Over 8192 tokens (a few seconds on the tiny model, so in this test alone).
    let long = "BM25 is a bag-of-words retrieval function. ".repeat(1200);
    assert!(
        model()
            .tokenizer()
            .encode_batch(&[&long], usize::MAX)
            .unwrap()[0]
            .len()
            > 8192
    );
    let texts = vec![long, documents()[0].clone()];
    let body = post_ok("/rerank", json!({"query": QUERY, "texts": texts}));
    let (scores, order) = reference(QUERY, &texts, ScoreWeights::default());
    assert_ranked(&body, "score", &scores, &order);
}

#[test]
fn weights_change_the_score_and_the_order_may_follow() {
    let texts = documents();
    let weights = ScoreWeights::try_from([1.0, 0.0, 0.0]).unwrap();
    let (scores, order) = reference(QUERY, &texts, weights);
    let body = post_ok(
        "/rerank",
        json!({"query": QUERY, "texts": texts, "weights": [1, 0, 0]}),
    );
    assert_ranked(&body, "score", &scores, &order);
    let body = post_ok(
        "/v1/rerank",
        json!({"query": QUERY, "documents": texts, "weights": [1, 0, 0]}),
    );
    assert_ranked(&body["results"], "relevance_score", &scores, &order);
}

#[test]
fn cohere_v1_and_jina_shape() {
    let texts = documents();
    let (scores, order) = reference(QUERY, &texts, ScoreWeights::default());
    let documents: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i % 2 == 0 {
                json!(t)
            } else {
                json!({"text": t, "title": "ignored"})
            }
        })
        .collect();
    let body = post_ok(
        "/v1/rerank",
        json!({"model": "bge-m3", "query": QUERY, "documents": documents, "top_n": 3}),
    );
    assert_eq!(keys(&body), ["id", "model", "results", "meta", "usage"]);
    assert!(!body["id"].as_str().unwrap().is_empty());
    assert_eq!(body["model"], "bge-m3");
    assert_eq!(body["meta"]["api_version"]["version"], "1");
    assert_eq!(body["meta"]["billed_units"]["search_units"], 1);
    assert_eq!(body["results"].as_array().unwrap().len(), 3, "top_n");
    assert_ranked(&body["results"], "relevance_score", &scores, &order);
    // Jina's default: the documents come back.
    for r in body["results"].as_array().unwrap() {
        assert_eq!(
            r["document"]["text"],
            texts[r["index"].as_u64().unwrap() as usize]
        );
    }
    let body = post_ok(
        "/v1/rerank",
        json!({"query": QUERY, "documents": texts, "return_documents": false, "top_n": 100}),
    );
    assert_eq!(body["results"].as_array().unwrap().len(), texts.len());
    assert!(body["results"][0].get("document").is_none());
    // A whole number written as a float is that integer, as everywhere in the API.
    let body = post_ok(
        "/v1/rerank",
        json!({"query": QUERY, "documents": texts, "top_n": 2.0, "max_tokens_per_doc": 512.0}),
    );
    assert_eq!(body["results"].as_array().unwrap().len(), 2, "top_n 2.0");
}

#[test]
fn cohere_v2_shape_and_max_tokens_per_doc() {
    let texts = documents();
    let (scores, order) = reference(QUERY, &texts, ScoreWeights::default());
    let body = post_ok(
        "/v2/rerank",
        json!({"model": "BAAI/bge-m3", "query": QUERY, "documents": texts}),
    );
    assert_eq!(body["meta"]["api_version"]["version"], "2");
    assert_ranked(&body["results"], "relevance_score", &scores, &order);
    assert_eq!(keys(&body["results"][0]), ["index", "relevance_score"]);

    // `max_tokens_per_doc` truncates the documents like `max_passage_length`.
    let pairs: Vec<(&str, &str)> = texts.iter().map(|d| (QUERY, d.as_str())).collect();
    let options = ScoreOptions::default().with_max_passage_length(4);
    let short: Vec<f32> = model()
        .compute_score(&pairs, &options)
        .unwrap()
        .iter()
        .map(|s| s.colbert_sparse_dense)
        .collect();
    let body = post_ok(
        "/v2/rerank",
        json!({"query": QUERY, "documents": texts, "max_tokens_per_doc": 4}),
    );
    for r in body["results"].as_array().unwrap() {
        let index = r["index"].as_u64().unwrap() as usize;
        assert_close_scalar(&r["relevance_score"], short[index], "truncated");
    }
}

#[test]
fn rerank_errors_have_the_documented_shape() {
    let long = "a".repeat(MAX_BODY_BYTES);
    for (path, body, status, code, param) in [
        (
            "/rerank",
            json!({"texts": ["a"]}),
            400,
            "missing_field",
            Some("query"),
        ),
        (
            "/rerank",
            json!({"query": "q"}),
            400,
            "missing_field",
            Some("texts"),
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": []}),
            400,
            "invalid_value",
            Some("texts"),
        ),
        (
            "/rerank",
            json!({"query": ["q"], "texts": ["a"]}),
            400,
            "invalid_value",
            Some("query"),
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": [1]}),
            400,
            "invalid_value",
            Some("texts"),
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": ["a"], "weights": [1, 1]}),
            400,
            "invalid_value",
            Some("weights"),
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": ["a"], "weights": [0, 0, 0]}),
            400,
            "invalid_value",
            Some("weights"),
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": ["a"], "truncation_direction": "Left"}),
            400,
            "invalid_value",
            Some("truncation_direction"),
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": vec!["a"; MAX_INPUTS + 1]}),
            413,
            "too_many_inputs",
            Some("texts"),
        ),
        (
            "/rerank",
            json!({"query": long, "texts": ["a"]}),
            413,
            "body_too_large",
            None,
        ),
        (
            "/v1/rerank",
            json!({"query": "q"}),
            400,
            "missing_field",
            Some("documents"),
        ),
        (
            "/v1/rerank",
            json!({"documents": ["a"]}),
            400,
            "missing_field",
            Some("query"),
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": []}),
            400,
            "invalid_value",
            Some("documents"),
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": [{"title": "t"}]}),
            400,
            "invalid_value",
            Some("documents"),
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": ["a"], "top_n": 0}),
            400,
            "invalid_value",
            Some("top_n"),
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": ["a"], "top_n": -1}),
            400,
            "invalid_value",
            Some("top_n"),
        ),
        (
            "/v2/rerank",
            json!({"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}),
            400,
            "invalid_value",
            Some("max_tokens_per_doc"),
        ),
        (
            "/v2/rerank",
            json!({"query": "q", "documents": ["a"], "max_tokens_per_doc": 8193}),
            400,
            "invalid_value",
            Some("max_tokens_per_doc"),
        ),
        (
            "/v2/rerank",
            json!({"model": "rerank-v3.5", "query": "q", "documents": ["a"]}),
            404,
            "model_not_found",
            Some("model"),
        ),
        (
            "/v2/rerank",
            json!({"query": "q", "documents": vec!["a"; MAX_INPUTS + 1]}),
            413,
            "too_many_inputs",
            Some("documents"),
        ),
    ] {
        assert_error(&post(path, body.clone()), status, code, param);
    }
    assert_error(&get("/rerank"), 405, "method_not_allowed", None);
}

/// Issue 29, item 9: identical documents scored about 7e-8 apart and swapped places (101 times
/// in a soak), against "equal scores keep the request's order": the sparse head's product over
/// a whole pass summed a row differently with its place among the pass's rows. Here 30 to 64
/// copies of a document (the query itself, so that they share every token with it), in passes
/// of up to 2,048 tokens: every copy gets the same score, and the copies keep the request's
/// order. (Before the fix, 30, 37, 60 and 64 copies each got two different scores.)
#[test]
fn identical_documents_get_the_same_score_and_keep_their_order() {
    static BASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let base = BASE.get_or_init(|| {
        start(bge_m3_server::Config {
            max_batch_tokens: 2048,
            max_inputs: 64,
            ..config(tiny_pt())
        })
    });
    let copy = "BM25 is a bag-of-words retrieval function that ranks documents";
    // The fused score, and the sparse score alone (a difference in the last bits of one head
    // can round away in the fusion).
    for (copies, weights) in [30, 37, 60, 64]
        .into_iter()
        .flat_map(|n| [[0.4, 0.2, 0.4], [0.0, 1.0, 0.0]].map(|w| (n, w)))
    {
        let documents = vec![copy; copies];
        for path in ["/v1/rerank", "/rerank"] {
            let body = if path == "/rerank" {
                json!({"query": copy, "texts": documents, "weights": weights})
            } else {
                json!({"query": copy, "documents": documents, "return_documents": false,
                       "weights": weights})
            };
            let body = Some(serde_json::to_vec(&body).unwrap());
            let reply = try_send(base, "POST", path, Some("application/json"), body).unwrap();
            assert_eq!(reply.status, 200, "{:?}", reply.body);
            let (results, key) = match path {
                "/rerank" => (reply.body.clone(), "score"),
                _ => (reply.body["results"].clone(), "relevance_score"),
            };
            let ranked: Vec<(u64, f64)> = results
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["index"].as_u64().unwrap(), r[key].as_f64().unwrap()))
                .collect();
            let what = format!("{path}, {copies} copies, weights {weights:?}");
            assert!(
                ranked.iter().all(|(_, score)| *score == ranked[0].1),
                "{what}: {ranked:?}"
            );
            let order: Vec<u64> = ranked.iter().map(|(index, _)| *index).collect();
            assert_eq!(order, (0..copies as u64).collect::<Vec<_>>(), "{what}");
        }
    }
}

/// The Jina rerank wrappers of LangChain, LlamaIndex and Haystack send Jina's default model
/// name, and on an error read `detail` alone (Jina's API answers FastAPI's `{"detail": ...}`):
/// the error body carries its message there too, beside OpenAI's `error`, so their users see
/// it rather than `KeyError: 'detail'`. Haystack's `JinaRanker` sends `"top_n": null` when it
/// wants every document.
#[test]
fn jina_wrappers_read_the_error_in_detail() {
    let body = json!({"model": "jina-reranker-v1-base-en", "query": QUERY, "documents": ["a", "b"], "top_n": null});
    let reply = post("/v1/rerank", body);
    assert_error(&reply, 404, "model_not_found", Some("model"));
    let detail = reply.body["detail"].as_str().unwrap();
    assert!(detail.contains("`jina-reranker-v1-base-en`"), "{detail}");
    assert_eq!(keys(&reply.body), ["error", "detail"]);

    let body = json!({"model": "bge-m3", "query": QUERY, "documents": ["a", "b"], "top_n": null});
    assert_eq!(
        post_ok("/v1/rerank", body)["results"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let reply = post(
        "/v1/rerank",
        json!({"model": "bge-m3", "query": QUERY, "documents": []}),
    );
    assert_error(&reply, 400, "invalid_value", Some("documents"));
}
