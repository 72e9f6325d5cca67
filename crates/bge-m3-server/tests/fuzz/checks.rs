//! The checks of one answer, given the request that got it.

use actix_web::http::{Method, StatusCode};
use base64::Engine;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use crate::{Reply, Sent, Served};

/// Slack of the unit-length and range checks on values that went through JSON as f32
/// ([`bge_m3_test_support::NORM_TOLERANCE`], in the f64 these checks compute in).
pub(crate) const NORM_TOLERANCE: f64 = bge_m3_test_support::NORM_TOLERANCE as f64;

/// An integer field as the server reads it: a JSON integer, or a number without a fraction
/// (`2.0`, which the OpenAPI document allows and the server serves as 2).
pub(crate) fn integral(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        let number = value.as_f64()?;
        (number >= 0.0 && number.fract() == 0.0 && number < u64::MAX as f64)
            .then_some(number as u64)
    })
}

pub(crate) fn fail(message: impl Into<String>) -> TestCaseError {
    TestCaseError::fail(message.into())
}

/// The properties every answer has; see the crate's doc.
pub(crate) fn check(served: &Served, sent: &Sent, reply: &Reply) -> Result<(), TestCaseError> {
    let status = reply.status;
    // The one redirect: `/docs/` leads to the docs page (`src/routes/docs.rs`).
    if status == StatusCode::PERMANENT_REDIRECT
        && sent.path() == "/docs/"
        && (sent.method == Method::GET || sent.method == Method::HEAD)
    {
        return Ok(());
    }
    prop_assert!(
        status.is_success() || status.is_client_error(),
        "status {status}, expected a 2xx or a 4xx"
    );
    // Successful GETs may be other documents (`/metrics` is Prometheus text, `/docs` HTML).
    if status.is_success() && sent.method != Method::POST {
        return Ok(());
    }
    prop_assert_eq!(reply.content_type.as_str(), "application/json");
    let body: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| fail(format!("the answer is not JSON: {e}")))?;
    if status.is_client_error() {
        return check_error(&body);
    }
    let request: Value = serde_json::from_slice(&sent.body)
        .map_err(|e| fail(format!("a 2xx for a body that is not JSON: {e}")))?;
    prop_assert!(
        request.is_object(),
        "a 2xx for a body that is not an object"
    );
    match sent.path() {
        "/v1/embeddings" => check_embeddings(served, &request, &body, true),
        "/embeddings" => check_embeddings(served, &request, &body, false),
        "/score" => check_score(&request, &body),
        route if crate::compat::ROUTES.contains(&route) => {
            crate::compat::check(served, route, &request, &body)
        }
        other => Err(fail(format!("a 2xx for POST {other}"))),
    }
}

/// OpenAI's `{"error": {"message", "type", "param", "code"}}`, message not empty, and the
/// message again in `detail`.
fn check_error(body: &Value) -> Result<(), TestCaseError> {
    let error = body
        .get("error")
        .and_then(Value::as_object)
        .ok_or_else(|| fail("a 4xx without an `error` object"))?;
    prop_assert!(
        error
            .get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.trim().is_empty()),
        "`error.message` missing or empty"
    );
    prop_assert_eq!(body.get("detail"), error.get("message"));
    prop_assert!(error.get("type").is_some_and(Value::is_string));
    prop_assert!(error
        .get("param")
        .is_some_and(|p| p.is_null() || p.is_string()));
    prop_assert!(error
        .get("code")
        .is_some_and(|c| c.is_null() || c.is_string()));
    Ok(())
}

/// How many inputs an accepted `input` holds.
pub(crate) fn input_count(input: &Value) -> Option<usize> {
    match input {
        Value::String(_) => Some(1),
        Value::Array(items) => match items.first()? {
            Value::Number(_) => Some(1),
            _ => Some(items.len()),
        },
        _ => None,
    }
}

/// The outputs a request asked for: `input_type` as the server reads it.
fn requested_outputs(input_type: Option<&Value>) -> [bool; 3] {
    let defaults = [true, true, false];
    match input_type {
        Some(Value::Object(flags)) => {
            let flag = |name: &str, default: bool| {
                flags.get(name).and_then(Value::as_bool).unwrap_or(default)
            };
            [
                flag("dense", defaults[0]),
                flag("sparse", defaults[1]),
                flag("colbert", defaults[2]),
            ]
        }
        _ => defaults,
    }
}

fn check_embeddings(
    served: &Served,
    request: &Value,
    body: &Value,
    openai: bool,
) -> Result<(), TestCaseError> {
    let info = &served.info;
    let count = input_count(&request["input"]).ok_or_else(|| fail("a 2xx without an input"))?;
    let [dense, sparse, colbert] = requested_outputs(request.get("input_type"));
    let base64 = request["encoding_format"] == "base64";
    let dims = integral(&request["dimensions"]).map_or(info.dense_dim, |d| d as usize);
    let sparse_format = request["sparse_format"].as_str().unwrap_or("token");
    let max_length = integral(&request["max_length"]).map_or(info.max_length, |n| n as usize);

    // One (dense, sparse, colbert) triple per input, whichever the shape.
    let mut items: Vec<[Option<&Value>; 3]> = Vec::new();
    if openai {
        prop_assert_eq!(body["object"].as_str(), Some("list"));
        prop_assert_eq!(body["model"].as_str(), Some("bge-m3"));
        let data = body["data"]
            .as_array()
            .ok_or_else(|| fail("`data` is not an array"))?;
        prop_assert_eq!(data.len(), count, "one item per input");
        for (i, item) in data.iter().enumerate() {
            prop_assert_eq!(item["object"].as_str(), Some("embedding"));
            prop_assert_eq!(item["index"].as_u64(), Some(i as u64));
            let object = item.as_object().unwrap();
            prop_assert!(
                object.contains_key("embedding"),
                "`embedding` is always there"
            );
            prop_assert_eq!(object.contains_key("dense"), dense);
            prop_assert_eq!(object.contains_key("sparse"), sparse);
            prop_assert_eq!(object.contains_key("colbert"), colbert);
            if dense && base64 {
                // `encoding_format` applies to `embedding` alone: the same f32 as `dense`.
                check_vector(&item["embedding"], dims, true)?;
                let dense: Option<Vec<f32>> = item["dense"].as_array().map(|values| {
                    values
                        .iter()
                        .filter_map(Value::as_f64)
                        .map(|v| v as f32)
                        .collect()
                });
                prop_assert_eq!(Some(decode_f32(&item["embedding"])?), dense);
            } else if dense {
                prop_assert_eq!(&item["embedding"], &item["dense"]);
            } else {
                prop_assert!(item["embedding"].is_null());
            }
            items.push([
                object.get("dense"),
                object.get("sparse"),
                object.get("colbert"),
            ]);
        }
    } else {
        let object = body
            .as_object()
            .ok_or_else(|| fail("the answer is not an object"))?;
        let outputs = [
            (dense, "dense_vecs"),
            (sparse, "sparse_vecs"),
            (colbert, "colbert_vecs"),
        ];
        let mut columns = Vec::new();
        for (asked, key) in outputs {
            prop_assert_eq!(object.contains_key(key), asked, "`{}`", key);
            let column = match object.get(key) {
                Some(value) => {
                    let values = value
                        .as_array()
                        .ok_or_else(|| fail(format!("`{key}` is not an array")))?;
                    prop_assert_eq!(values.len(), count, "`{}`: one per input", key);
                    Some(values)
                }
                None => None,
            };
            columns.push(column);
        }
        for i in 0..count {
            items.push([0, 1, 2].map(|c| columns[c].map(|values| &values[i])));
        }
    }

    // On `/v1/embeddings` the extras are JSON numbers whatever `encoding_format` says.
    let base64 = base64 && !openai;
    let tokens = body["usage"]["prompt_tokens"]
        .as_u64()
        .ok_or_else(|| fail("`usage.prompt_tokens` is not a count"))?;
    prop_assert_eq!(body["usage"]["total_tokens"].as_u64(), Some(tokens));
    let mut colbert_tokens = 0;
    for [dense, sparse, colbert] in items {
        if let Some(vector) = dense {
            check_vector(vector, dims, base64)?;
        }
        if let Some(weights) = sparse {
            check_sparse(served, weights, sparse_format)?;
        }
        if let Some(rows) = colbert {
            let rows = rows
                .as_array()
                .ok_or_else(|| fail("ColBERT vectors are not an array"))?;
            // `</s>` is kept: one row per token, plus one.
            prop_assert!(!rows.is_empty() && rows.len() < max_length.max(2));
            for row in rows {
                check_vector(row, info.colbert_dim, base64)?;
            }
            colbert_tokens += rows.len() as u64 - 1;
        }
    }
    if colbert {
        prop_assert_eq!(colbert_tokens, tokens, "ColBERT rows add up to `usage`");
    }
    Ok(())
}

/// A vector of `width` finite values, JSON numbers or base64 of f32, of unit length (or zero,
/// where `dimensions` kept only zeros).
pub(crate) fn check_vector(
    vector: &Value,
    width: usize,
    base64: bool,
) -> Result<(), TestCaseError> {
    let values: Vec<f64> = if base64 {
        decode_f32(vector)?.into_iter().map(f64::from).collect()
    } else {
        vector
            .as_array()
            .ok_or_else(|| fail("a vector that is not an array"))?
            .iter()
            .map(|v| v.as_f64().ok_or_else(|| fail(format!("not a number: {v}"))))
            .collect::<Result<_, _>>()?
    };
    prop_assert_eq!(values.len(), width, "vector width");
    prop_assert!(
        values.iter().all(|v| v.is_finite()),
        "a value is not finite"
    );
    let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt();
    prop_assert!(
        (norm - 1.0).abs() <= NORM_TOLERANCE || norm == 0.0,
        "vector norm {norm}"
    );
    Ok(())
}

/// The little-endian f32 values of a base64 string.
fn decode_f32(vector: &Value) -> Result<Vec<f32>, TestCaseError> {
    let text = vector
        .as_str()
        .ok_or_else(|| fail("a base64 vector that is not a string"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| fail(format!("bad base64: {e}")))?;
    prop_assert_eq!(bytes.len() % 4, 0);
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Sparse weights in the requested format: every weight finite and > 0, every id in the
/// vocabulary and none of `<s>`, `</s>`, `<pad>`, `<unk>`.
pub(crate) fn check_sparse(
    served: &Served,
    weights: &Value,
    format: &str,
) -> Result<(), TestCaseError> {
    let positive = |w: &Value| {
        w.as_f64()
            .is_some_and(|w| w.is_finite() && w > 0.0 && w <= f32::MAX as f64)
    };
    let check_id = |id: u64| -> Result<(), TestCaseError> {
        prop_assert!((id as usize) < served.info.vocab_size, "id {id}");
        prop_assert!(
            !served.specials.is_unused_for_sparse(id as u32),
            "special id {id} in the sparse weights"
        );
        Ok(())
    };
    if format == "sparsevec" {
        // pgvector's `{id+1:weight,...}/vocab_size`, ascending.
        let literal = weights
            .as_str()
            .ok_or_else(|| fail("a sparsevec that is not a string"))?;
        let (elements, dim) = literal
            .rsplit_once('/')
            .ok_or_else(|| fail(format!("no dimension in {literal:?}")))?;
        prop_assert_eq!(dim, served.info.vocab_size.to_string());
        let elements = elements
            .strip_prefix('{')
            .and_then(|e| e.strip_suffix('}'))
            .ok_or_else(|| fail(format!("no braces in {literal:?}")))?;
        let mut previous = 0;
        for element in elements.split(',').filter(|e| !e.is_empty()) {
            let (index, weight) = element
                .split_once(':')
                .ok_or_else(|| fail(format!("element {element:?}")))?;
            let index: u64 = index
                .parse()
                .map_err(|_| fail(format!("index {index:?}")))?;
            let weight: f64 = weight
                .parse()
                .map_err(|_| fail(format!("weight {weight:?}")))?;
            prop_assert!(index > previous, "1-based, ascending: {}", literal);
            previous = index;
            check_id(index - 1)?;
            prop_assert!(positive(&Value::from(weight)), "weight {weight}");
        }
        return Ok(());
    }
    let object = weights
        .as_object()
        .ok_or_else(|| fail("sparse weights are not an object"))?;
    match format {
        "indices" => {
            let keys: Vec<&str> = object.keys().map(String::as_str).collect();
            prop_assert_eq!(keys, ["indices", "values"]);
            let indices = object["indices"].as_array().unwrap();
            let values = object["values"].as_array().unwrap();
            prop_assert_eq!(indices.len(), values.len());
            let ids: Vec<u64> = indices.iter().filter_map(Value::as_u64).collect();
            prop_assert_eq!(ids.len(), indices.len(), "indices are integers");
            prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending indices");
            for id in ids {
                check_id(id)?;
            }
            prop_assert!(values.iter().all(positive), "weights > 0");
        }
        "id" => {
            for (key, weight) in object {
                let id: u64 = key.parse().map_err(|_| fail(format!("id key {key:?}")))?;
                check_id(id)?;
                prop_assert!(positive(weight), "weight {weight}");
            }
        }
        _ => prop_assert!(object.values().all(positive), "weights > 0"),
    }
    Ok(())
}

fn check_score(request: &Value, body: &Value) -> Result<(), TestCaseError> {
    let pairs = match &request["sentences_1"] {
        Value::String(_) => 1,
        Value::Array(items) => items.len(),
        other => return Err(fail(format!("a 2xx for sentences_1 {other}"))),
    };
    let weights: Vec<f64> = match request["weights"].as_array() {
        // As the server reads them: f32.
        Some(w) => w
            .iter()
            .map(|w| w.as_f64().unwrap() as f32 as f64)
            .collect(),
        None => vec![0.4, 0.2, 0.4],
    };
    let object = body
        .as_object()
        .ok_or_else(|| fail("the answer is not an object"))?;
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    prop_assert_eq!(
        keys,
        [
            "dense",
            "sparse",
            "colbert",
            "sparse+dense",
            "colbert+sparse+dense"
        ]
    );
    let column = |key: &str| -> Result<Vec<Option<f64>>, TestCaseError> {
        let values = object[key]
            .as_array()
            .ok_or_else(|| fail(format!("`{key}` is not an array")))?;
        prop_assert_eq!(values.len(), pairs, "`{}`: one per pair", key);
        Ok(values.iter().map(Value::as_f64).collect())
    };
    let [dense, sparse, colbert, sparse_dense, all] = [
        column("dense")?,
        column("sparse")?,
        column("colbert")?,
        column("sparse+dense")?,
        column("colbert+sparse+dense")?,
    ];
    let within = |value: f64, parts: &[f64]| {
        let low = parts.iter().copied().fold(f64::INFINITY, f64::min);
        let high = parts.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let slack = NORM_TOLERANCE * high.abs().max(low.abs()).max(1.0);
        value.is_finite() && value >= low - slack && value <= high + slack
    };
    for i in 0..pairs {
        let (d, s, c) = match (dense[i], sparse[i], colbert[i]) {
            (Some(d), Some(s), Some(c)) => (d, s, c),
            other => return Err(fail(format!("pair {i}: scores {other:?}"))),
        };
        prop_assert!(
            (-1.0 - NORM_TOLERANCE..=1.0 + NORM_TOLERANCE).contains(&d),
            "dense {d}"
        );
        prop_assert!(
            (-1.0 - NORM_TOLERANCE..=1.0 + NORM_TOLERANCE).contains(&c),
            "colbert {c}"
        );
        prop_assert!(s.is_finite() && s >= 0.0, "sparse {s}");
        // The fusions are FlagEmbedding's formula, `(w0*d + w1*s) / (w0 + w1)`, computed in f64
        // so that it holds for subnormal weights and for products past f32::MAX alike.
        // A weighted mean lies between its parts; with dense and sparse both weighted 0
        // `sparse+dense` is undefined and answered `null`.
        let active = [weights[0] > 0.0, weights[1] > 0.0];
        let parts = [d, s];
        match sparse_dense[i] {
            None => prop_assert!(
                !active.iter().any(|a| *a),
                "pair {}: `sparse+dense` is null with weights {:?}",
                i,
                weights
            ),
            Some(v) => prop_assert!(
                within(v, &active_parts(&active, &parts)),
                "pair {}: sparse+dense {} outside {:?} (weights {:?})",
                i,
                v,
                parts,
                weights
            ),
        }
        let active = [weights[0] > 0.0, weights[1] > 0.0, weights[2] > 0.0];
        let parts = [d, s, c];
        let v = all[i].ok_or_else(|| fail(format!("pair {i}: colbert+sparse+dense is null")))?;
        prop_assert!(
            within(v, &active_parts(&active, &parts)),
            "pair {}: colbert+sparse+dense {} outside {:?} (weights {:?})",
            i,
            v,
            parts,
            weights
        );
    }
    Ok(())
}

/// The scores whose weight is not zero: the only ones a weighted mean is made of.
fn active_parts(active: &[bool], parts: &[f64]) -> Vec<f64> {
    active
        .iter()
        .zip(parts)
        .filter(|(a, _)| **a)
        .map(|(_, p)| *p)
        .collect()
}
