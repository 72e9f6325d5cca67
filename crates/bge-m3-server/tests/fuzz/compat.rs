//! The routes in other servers' shapes: rerank (`/rerank`, `/v1/rerank`, `/v2/rerank`) and
//! text-embeddings-inference's (`/embed` and `POST /`, which answers as `/embed`;
//! `/embed_sparse`, `/embed_all`, `/tokenize`, `/decode`). Their generators, biased towards
//! each route's fields, and the checks of a 2xx answer; 4xx answers are checked by
//! [`crate::checks`] like every other.

use proptest::collection::vec;
use proptest::option::weighted as maybe;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::checks::{check_sparse, check_vector, fail, input_count, integral, NORM_TOLERANCE};
use crate::strategies::{
    body, choice, dimensions, extra_fields, flag, input, junk, length, model, text, texts,
    token_id, weights,
};
use crate::{Served, MAX_INPUTS};

/// The POST routes of this module.
pub(crate) const ROUTES: [&str; 9] = [
    "/",
    "/rerank",
    "/v1/rerank",
    "/v2/rerank",
    "/embed",
    "/embed_sparse",
    "/embed_all",
    "/tokenize",
    "/decode",
];

fn query() -> impl Strategy<Value = Value> {
    prop_oneof![6 => text().prop_map(Value::from), 1 => junk()]
}

fn truncation_direction() -> impl Strategy<Value = Value> {
    choice(&["Right", "right", "Left", "left"])
}

fn prompt_name() -> impl Strategy<Value = Value> {
    prop_oneof![3 => Just(Value::Null), 1 => choice(&["query", ""])]
}

/// A list of texts (`texts`, `inputs` of `/tokenize`): usually a few, sometimes one string,
/// none, too many, or not texts.
fn text_list() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => texts(1..6),
        2 => text().prop_map(Value::from),
        1 => Just(json!([])),
        1 => texts(MAX_INPUTS + 1..MAX_INPUTS + 3),
        1 => junk(),
    ]
}

/// Cohere's and Jina's `documents`: strings and `{"text": ...}` objects, or not.
fn documents() -> impl Strategy<Value = Value> {
    let document = prop_oneof![
        4 => text().prop_map(Value::from),
        2 => (text(), junk()).prop_map(|(text, title)| json!({"text": text, "title": title})),
        1 => junk(),
    ];
    prop_oneof![
        6 => vec(document, 0..6).prop_map(Value::Array),
        1 => texts(MAX_INPUTS + 1..MAX_INPUTS + 3),
        1 => junk(),
    ]
}

fn top_n() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u64..8).prop_map(Value::from),
        1 => crate::strategies::number(),
        1 => junk(),
    ]
}

fn tei_rerank_body() -> impl Strategy<Value = Value> {
    (
        (
            maybe(0.95, query()),
            maybe(0.95, text_list()),
            maybe(0.4, flag()),
            maybe(0.2, flag()),
        ),
        (
            maybe(0.2, flag()),
            maybe(0.2, truncation_direction()),
            maybe(0.3, weights()),
            extra_fields(),
        ),
    )
        .prop_map(
            |((query, texts, return_text, truncate), (raw_scores, direction, weights, extra))| {
                body(
                    extra,
                    [
                        ("query", query),
                        ("texts", texts),
                        ("return_text", return_text),
                        ("truncate", truncate),
                        ("raw_scores", raw_scores),
                        ("truncation_direction", direction),
                        ("weights", weights),
                    ],
                )
            },
        )
}

fn cohere_rerank_body() -> impl Strategy<Value = Value> {
    (
        (
            maybe(0.3, model()),
            maybe(0.95, query()),
            maybe(0.95, documents()),
            maybe(0.4, top_n()),
        ),
        (
            maybe(0.4, flag()),
            maybe(0.3, length()),
            maybe(0.3, weights()),
            extra_fields(),
        ),
    )
        .prop_map(
            |((model, query, documents, top_n), (return_documents, max_tokens, weights, extra))| {
                body(
                    extra,
                    [
                        ("model", model),
                        ("query", query),
                        ("documents", documents),
                        ("top_n", top_n),
                        ("return_documents", return_documents),
                        ("max_tokens_per_doc", max_tokens),
                        ("weights", weights),
                    ],
                )
            },
        )
}

fn embed_body() -> impl Strategy<Value = Value> {
    (
        (maybe(0.95, input()), maybe(0.3, flag()), maybe(0.3, flag())),
        (
            maybe(0.2, truncation_direction()),
            maybe(0.2, prompt_name()),
            maybe(0.3, dimensions()),
            extra_fields(),
        ),
    )
        .prop_map(
            |((inputs, normalize, truncate), (direction, prompt_name, dimensions, extra))| {
                body(
                    extra,
                    [
                        ("inputs", inputs),
                        ("normalize", normalize),
                        ("truncate", truncate),
                        ("truncation_direction", direction),
                        ("prompt_name", prompt_name),
                        ("dimensions", dimensions),
                    ],
                )
            },
        )
}

fn tokenize_body() -> impl Strategy<Value = Value> {
    (
        maybe(0.95, text_list()),
        maybe(0.4, flag()),
        maybe(0.2, prompt_name()),
        extra_fields(),
    )
        .prop_map(|(inputs, add_special_tokens, prompt_name, extra)| {
            body(
                extra,
                [
                    ("inputs", inputs),
                    ("add_special_tokens", add_special_tokens),
                    ("prompt_name", prompt_name),
                ],
            )
        })
}

fn decode_body() -> impl Strategy<Value = Value> {
    let ids = prop_oneof![
        4 => vec(token_id(), 0..12).prop_map(Value::Array),
        4 => vec(vec(token_id(), 0..10).prop_map(Value::Array), 0..4).prop_map(Value::Array),
        1 => texts(1..3),
        1 => junk(),
    ];
    (maybe(0.95, ids), maybe(0.4, flag()), extra_fields()).prop_map(
        |(ids, skip_special_tokens, extra)| {
            body(
                extra,
                [("ids", ids), ("skip_special_tokens", skip_special_tokens)],
            )
        },
    )
}

/// A route of this module and a body for it.
pub(crate) fn request() -> impl Strategy<Value = (&'static str, Value)> {
    let on = |route: &'static str, bodies: BoxedStrategy<Value>| {
        prop_oneof![
            10 => bodies,
            1 => junk(),
            1 => Just(json!({})),
        ]
        .prop_map(move |body| (route, body))
    };
    prop_oneof![
        on("/rerank", tei_rerank_body().boxed()),
        on("/v1/rerank", cohere_rerank_body().boxed()),
        on("/v2/rerank", cohere_rerank_body().boxed()),
        on("/", embed_body().boxed()),
        on("/embed", embed_body().boxed()),
        on("/embed_sparse", embed_body().boxed()),
        on("/embed_all", embed_body().boxed()),
        on("/tokenize", tokenize_body().boxed()),
        on("/decode", decode_body().boxed()),
    ]
}

/// The texts a request's list field holds, as the server reads it (one string is a list of
/// one); `documents` objects stand for their `text`.
fn text_values(field: &Value) -> Result<Vec<&str>, TestCaseError> {
    fn text(v: &Value) -> Option<&str> {
        v.as_str().or_else(|| v.get("text")?.as_str())
    }
    match field {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(items) => items
            .iter()
            .map(|item| text(item).ok_or_else(|| fail(format!("a 2xx for the text {item}"))))
            .collect(),
        other => Err(fail(format!("a 2xx for the texts {other}"))),
    }
}

/// The checks of a 2xx answer of a route of this module.
pub(crate) fn check(
    served: &Served,
    route: &str,
    request: &Value,
    body: &Value,
) -> Result<(), TestCaseError> {
    match route {
        "/rerank" => check_tei_rerank(request, body),
        "/v1/rerank" => check_cohere_rerank(request, body, "1", true),
        "/v2/rerank" => check_cohere_rerank(request, body, "2", false),
        // text-embeddings-inference answers `POST /` as `/embed` for an embedding model.
        "/" | "/embed" => check_embed(served, request, body),
        "/embed_sparse" => check_embed_sparse(served, request, body),
        "/embed_all" => check_embed_all(served, request, body),
        "/tokenize" => check_tokenize(served, request, body),
        "/decode" => check_decode(request, body),
        other => Err(fail(format!("a 2xx for POST {other}"))),
    }
}

/// Scores best first, each finite and at least -1 (a weighted mean of dense and ColBERT
/// scores in [-1, 1] and a sparse score >= 0, so unbounded above).
fn check_ranked(indices: &[u64], scores: &[Value], count: usize) -> Result<(), TestCaseError> {
    let mut seen = vec![false; count];
    for &index in indices {
        let slot = seen
            .get_mut(index as usize)
            .ok_or_else(|| fail(format!("index {index} of {count} documents")))?;
        prop_assert!(!*slot, "index {} twice", index);
        *slot = true;
    }
    let scores: Vec<f64> = scores
        .iter()
        .map(|s| s.as_f64().ok_or_else(|| fail(format!("score {s}"))))
        .collect::<Result<_, _>>()?;
    prop_assert!(
        scores
            .iter()
            .all(|s| s.is_finite() && *s >= -1.0 - NORM_TOLERANCE),
        "scores {:?}",
        scores
    );
    prop_assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {:?}",
        scores
    );
    Ok(())
}

fn check_tei_rerank(request: &Value, body: &Value) -> Result<(), TestCaseError> {
    let texts = text_values(&request["texts"])?;
    let ranks = body
        .as_array()
        .ok_or_else(|| fail("the answer is not an array"))?;
    prop_assert_eq!(ranks.len(), texts.len(), "one rank per text");
    let return_text = request["return_text"] == true;
    let indices: Vec<u64> = ranks.iter().filter_map(|r| r["index"].as_u64()).collect();
    prop_assert_eq!(indices.len(), ranks.len(), "every index an integer");
    for (rank, &index) in ranks.iter().zip(&indices) {
        let keys: Vec<&str> = rank
            .as_object()
            .ok_or_else(|| fail("a rank that is not an object"))?
            .keys()
            .map(String::as_str)
            .collect();
        if return_text {
            prop_assert_eq!(keys, ["index", "text", "score"]);
            prop_assert_eq!(rank["text"].as_str(), texts.get(index as usize).copied());
        } else {
            prop_assert_eq!(keys, ["index", "score"]);
        }
    }
    let scores: Vec<Value> = ranks.iter().map(|r| r["score"].clone()).collect();
    check_ranked(&indices, &scores, texts.len())
}

fn check_cohere_rerank(
    request: &Value,
    body: &Value,
    version: &str,
    documents_by_default: bool,
) -> Result<(), TestCaseError> {
    let documents = text_values(&request["documents"])?;
    prop_assert!(body["id"].as_str().is_some_and(|id| !id.is_empty()));
    prop_assert_eq!(body["model"].as_str(), Some("bge-m3"));
    prop_assert_eq!(
        body["meta"]["api_version"]["version"].as_str(),
        Some(version)
    );
    let tokens = body["usage"]["prompt_tokens"].as_u64();
    prop_assert!(tokens.is_some());
    prop_assert_eq!(body["usage"]["total_tokens"].as_u64(), tokens);
    let results = body["results"]
        .as_array()
        .ok_or_else(|| fail("`results` is not an array"))?;
    let top_n = integral(&request["top_n"]).map_or(documents.len(), |n| n as usize);
    prop_assert_eq!(results.len(), top_n.min(documents.len()), "top_n results");
    let return_documents = request["return_documents"]
        .as_bool()
        .unwrap_or(documents_by_default);
    let indices: Vec<u64> = results.iter().filter_map(|r| r["index"].as_u64()).collect();
    prop_assert_eq!(indices.len(), results.len(), "every index an integer");
    for (result, &index) in results.iter().zip(&indices) {
        if return_documents {
            prop_assert_eq!(
                result["document"]["text"].as_str(),
                documents.get(index as usize).copied()
            );
        } else {
            prop_assert!(result.get("document").is_none(), "a document not asked for");
        }
    }
    let scores: Vec<Value> = results
        .iter()
        .map(|r| r["relevance_score"].clone())
        .collect();
    check_ranked(&indices, &scores, documents.len())
}

/// The list of one answer per input, as many as `inputs` holds.
fn per_input<'a>(request: &Value, body: &'a Value) -> Result<&'a [Value], TestCaseError> {
    let count = input_count(&request["inputs"]).ok_or_else(|| fail("a 2xx without `inputs`"))?;
    let items = body
        .as_array()
        .ok_or_else(|| fail("the answer is not an array"))?;
    prop_assert_eq!(items.len(), count, "one answer per input");
    Ok(items)
}

fn check_embed(served: &Served, request: &Value, body: &Value) -> Result<(), TestCaseError> {
    let width = integral(&request["dimensions"]).map_or(served.info.dense_dim, |d| d as usize);
    for vector in per_input(request, body)? {
        check_vector(vector, width, false)?;
    }
    Ok(())
}

fn check_embed_sparse(served: &Served, request: &Value, body: &Value) -> Result<(), TestCaseError> {
    for weights in per_input(request, body)? {
        let weights = weights
            .as_array()
            .ok_or_else(|| fail("sparse weights that are not an array"))?;
        let mut indices = Vec::new();
        let mut values = Vec::new();
        for weight in weights {
            let keys: Vec<&str> = weight
                .as_object()
                .ok_or_else(|| fail("a weight that is not an object"))?
                .keys()
                .map(String::as_str)
                .collect();
            prop_assert_eq!(keys, ["index", "value"]);
            indices.push(weight["index"].clone());
            values.push(weight["value"].clone());
        }
        // The same rules as `sparse_format: "indices"`: ascending ids of the vocabulary, no
        // special token, weights > 0.
        check_sparse(
            served,
            &json!({"indices": indices, "values": values}),
            "indices",
        )?;
    }
    Ok(())
}

fn check_embed_all(served: &Served, request: &Value, body: &Value) -> Result<(), TestCaseError> {
    for rows in per_input(request, body)? {
        let rows = rows
            .as_array()
            .ok_or_else(|| fail("ColBERT vectors that are not an array"))?;
        // `</s>` is kept: at least one row.
        prop_assert!(!rows.is_empty());
        for row in rows {
            check_vector(row, served.info.colbert_dim, false)?;
        }
    }
    Ok(())
}

fn check_tokenize(served: &Served, request: &Value, body: &Value) -> Result<(), TestCaseError> {
    let texts = text_values(&request["inputs"])?;
    let lists = body
        .as_array()
        .ok_or_else(|| fail("the answer is not an array"))?;
    prop_assert_eq!(lists.len(), texts.len(), "one list per text");
    let markers = request["add_special_tokens"] != false;
    for (tokens, text) in lists.iter().zip(texts) {
        let tokens = tokens
            .as_array()
            .ok_or_else(|| fail("tokens that are not an array"))?;
        if markers {
            prop_assert!(tokens.len() >= 2, "<s> and </s>");
            prop_assert_eq!(tokens[0]["special"].as_bool(), Some(true));
            prop_assert_eq!(tokens[tokens.len() - 1]["special"].as_bool(), Some(true));
        }
        for token in tokens {
            let id = token["id"]
                .as_u64()
                .ok_or_else(|| fail(format!("token {token}")))?;
            prop_assert!((id as usize) < served.info.vocab_size, "id {}", id);
            prop_assert!(token["text"].is_string());
            match token["special"].as_bool() {
                Some(true) => {
                    prop_assert!(token["start"].is_null() && token["stop"].is_null());
                }
                Some(false) => {
                    let (start, stop) = (token["start"].as_u64(), token["stop"].as_u64());
                    let (Some(start), Some(stop)) = (start, stop) else {
                        return Err(fail(format!("a text token without its span: {token}")));
                    };
                    prop_assert!(
                        start <= stop && stop as usize <= text.len(),
                        "span {}..{} of {} bytes",
                        start,
                        stop,
                        text.len()
                    );
                }
                None => return Err(fail(format!("`special` of {token}"))),
            }
        }
    }
    Ok(())
}

fn check_decode(request: &Value, body: &Value) -> Result<(), TestCaseError> {
    let count = match &request["ids"] {
        Value::Array(items) if items.first().is_some_and(Value::is_array) => items.len(),
        Value::Array(_) => 1,
        other => return Err(fail(format!("a 2xx for `ids` {other}"))),
    };
    let texts = body
        .as_array()
        .ok_or_else(|| fail("the answer is not an array"))?;
    prop_assert_eq!(texts.len(), count, "one text per list of ids");
    prop_assert!(texts.iter().all(Value::is_string));
    Ok(())
}
