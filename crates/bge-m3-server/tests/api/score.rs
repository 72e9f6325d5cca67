//! `POST /score`: FlagEmbedding's `compute_score`, pair by pair.

use bge_m3_core::{PairScores, ScoreOptions, ScoreWeights};
use serde_json::{json, Value};

use crate::common::*;

const KEYS: [&str; 5] = [
    "dense",
    "sparse",
    "colbert",
    "sparse+dense",
    "colbert+sparse+dense",
];

fn pairs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("What is BGE M3?", "BGE M3 is an embedding model"),
        (
            "What is the capital of China?",
            "北京是中华人民共和国的首都。",
        ),
        ("", "Hello world!"),
    ]
}

fn reference(pairs: &[(&str, &str)], options: ScoreOptions) -> Vec<PairScores> {
    model().compute_score(pairs, &options).unwrap()
}

fn request(pairs: &[(&str, &str)], extra: Value) -> Value {
    let (queries, passages): (Vec<&str>, Vec<&str>) = pairs.iter().copied().unzip();
    let mut body = json!({"sentences_1": queries, "sentences_2": passages});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post_ok("/score", body)
}

fn assert_scores(body: &Value, expected: &[PairScores]) {
    assert_eq!(keys(body), KEYS);
    for (i, e) in expected.iter().enumerate() {
        assert_close_scalar(&body["dense"][i], e.dense, "dense");
        assert_close_scalar(&body["sparse"][i], e.sparse, "sparse");
        assert_close_scalar(&body["colbert"][i], e.colbert, "colbert");
        assert_close_scalar(&body["sparse+dense"][i], e.sparse_dense, "sparse+dense");
        assert_close_scalar(
            &body["colbert+sparse+dense"][i],
            e.colbert_sparse_dense,
            "colbert+sparse+dense",
        );
    }
    for key in KEYS {
        assert_eq!(body[key].as_array().unwrap().len(), expected.len(), "{key}");
    }
}

#[test]
fn the_seed_request_matches_compute_score_and_its_fusion_arithmetic() {
    let body = post_ok(
        "/score",
        json!({
            "sentences_1": ["What is BGE M3?"],
            "sentences_2": ["BGE M3 is an embedding model"],
            "weights": [0.4, 0.2, 0.4],
        }),
    );
    let expected = reference(&pairs()[..1], ScoreOptions::default());
    assert_scores(&body, &expected);
    let get = |key: &str| body[key][0].as_f64().unwrap() as f32;
    let (d, s, c) = (get("dense"), get("sparse"), get("colbert"));
    let fused = |key: &str| [get(key)];
    assert_close(
        &fused("sparse+dense"),
        &[(0.4 * d + 0.2 * s) / 0.6],
        TOLERANCE,
        "sparse+dense",
    );
    assert_close(
        &fused("colbert+sparse+dense"),
        &[(0.4 * d + 0.2 * s + 0.4 * c) / 1.0],
        TOLERANCE,
        "colbert+sparse+dense",
    );
}

#[test]
fn default_weights_and_several_pairs() {
    let pairs = pairs();
    let body = request(&pairs, json!({}));
    assert_scores(&body, &reference(&pairs, ScoreOptions::default()));
}

#[test]
fn weights_change_only_the_fusions() {
    let pairs = pairs();
    let body = request(&pairs, json!({"weights": [1, 1, 2]}));
    let weights = ScoreWeights::try_from([1.0, 1.0, 2.0]).unwrap();
    let options = ScoreOptions::default().with_weights(weights);
    assert_scores(&body, &reference(&pairs, options));
    for i in 0..pairs.len() {
        let get = |key: &str| body[key][i].as_f64().unwrap() as f32;
        let want = (get("dense") + get("sparse") + 2.0 * get("colbert")) / 4.0;
        let what = |key: &str| format!("{key}[{i}]");
        assert_close(
            &[get("colbert+sparse+dense")],
            &[want],
            TOLERANCE,
            what("colbert+sparse+dense"),
        );
        let want = (get("dense") + get("sparse")) / 2.0;
        assert_close(
            &[get("sparse+dense")],
            &[want],
            TOLERANCE,
            what("sparse+dense"),
        );
    }

    let dense_only = request(&pairs, json!({"weights": [1, 0, 0]}));
    assert_eq!(dense_only["colbert+sparse+dense"], dense_only["dense"]);
    assert_eq!(dense_only["sparse+dense"], dense_only["dense"]);
}

#[test]
fn zero_dense_and_sparse_weights_leave_sparse_dense_null() {
    let body = request(&pairs()[..2], json!({"weights": [0, 0, 1]}));
    assert_eq!(body["sparse+dense"], json!([null, null]));
    assert_eq!(body["colbert+sparse+dense"], body["colbert"]);
}

#[test]
fn query_and_passage_lengths() {
    let pairs = pairs();
    let body = request(
        &pairs,
        json!({"max_query_length": 4, "max_passage_length": 6}),
    );
    let options = ScoreOptions::default()
        .with_max_query_length(4)
        .with_max_passage_length(6);
    assert_scores(&body, &reference(&pairs, options));

    // `max_length` sets both; a specific length wins over it.
    let both = request(&pairs, json!({"max_length": 5}));
    let options = ScoreOptions::default()
        .with_max_query_length(5)
        .with_max_passage_length(5);
    assert_scores(&both, &reference(&pairs, options));
    let mixed = request(&pairs, json!({"max_length": 5, "max_passage_length": 7}));
    let options = ScoreOptions::default()
        .with_max_query_length(5)
        .with_max_passage_length(7);
    assert_scores(&mixed, &reference(&pairs, options));
}

#[test]
fn a_pair_scores_the_same_alone_and_in_a_batch() {
    let pairs = pairs();
    let batch = request(&pairs, json!({"batch_size": 2}));
    for (i, pair) in pairs.iter().enumerate() {
        let alone = request(&[*pair], json!({}));
        for key in KEYS {
            assert_close_scalar(
                &batch[key][i],
                alone[key][0].as_f64().unwrap() as f32,
                &format!("{key}[{i}]"),
            );
        }
    }
}

#[test]
fn a_single_string_on_each_side_is_one_pair() {
    let body = post_ok(
        "/score",
        json!({"sentences_1": "What is BGE M3?", "sentences_2": "BGE M3 is an embedding model"}),
    );
    assert_scores(&body, &reference(&pairs()[..1], ScoreOptions::default()));
}
