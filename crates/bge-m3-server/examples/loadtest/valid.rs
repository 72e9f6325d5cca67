//! Valid requests over the pools, each answer checked against the answers alone.

use bge_m3_test_support::{check_close, check_same_weights, close, TOLERANCE};
use serde_json::{json, Value};

use crate::client::Reply;
use crate::pools::{
    floats, rows, weights, Alone, Pools, References, Source, LENGTHS, SCORE_KEYS, WEIGHTS,
};
use crate::rng::Rng;

/// Most inputs of a valid embeddings request.
pub const MAX_BATCH: usize = 16;

/// `sparse_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SparseFormat {
    Token,
    Id,
    Indices,
}

/// What a valid request asked for, to check its answer.
#[derive(Debug, Clone)]
enum Expect {
    Embeddings {
        /// `/v1/embeddings` rather than `/embeddings`.
        openai: bool,
        inputs: Vec<Source>,
        /// Index into [`LENGTHS`].
        length: usize,
        /// Dense, sparse, ColBERT.
        outputs: [bool; 3],
        base64: bool,
        dimensions: Option<usize>,
        sparse: SparseFormat,
    },
    Score {
        /// The pool pair at each position.
        pairs: Vec<usize>,
        /// Index into [`WEIGHTS`].
        weights: usize,
    },
}

/// A valid request: its kind (for the report), route, body and what its answer must be.
pub struct Valid {
    pub kind: &'static str,
    pub path: &'static str,
    pub body: Value,
    expect: Expect,
}

impl Valid {
    /// A random valid request over `pools`.
    pub fn random(rng: &mut Rng, pools: &Pools, dense_dim: usize) -> Self {
        if rng.chance(0.15) {
            return Self::score(rng, pools);
        }
        let ids = rng.chance(0.2);
        let count = if rng.chance(0.5) {
            1 + rng.below(4)
        } else {
            1 + rng.below(MAX_BATCH)
        };
        let inputs: Vec<Source> = (0..count)
            .map(|_| match ids {
                true => Source::Ids(rng.below(pools.ids.len())),
                false => Source::Text(rng.below(pools.texts.len())),
            })
            .collect();
        let openai = rng.chance(0.6);
        let base64 = rng.chance(if openai { 0.5 } else { 0.2 });
        let kind = match (ids, openai, base64) {
            (true, _, _) => "token ids",
            (false, true, false) => "openai float",
            (false, true, true) => "openai base64",
            (false, false, _) => "native",
        };

        let mut body = serde_json::Map::new();
        // One input on its own: a string, or a flat list of ids (but a flat `[]` is no input).
        let alone = count == 1
            && !matches!(inputs[0], Source::Ids(i) if pools.ids[i].is_empty())
            && rng.chance(0.5);
        let input = match alone {
            true => pools.input(inputs[0]),
            false => Value::Array(inputs.iter().map(|&s| pools.input(s)).collect()),
        };
        body.insert("input".into(), input);
        let length = rng.below(LENGTHS.len());
        if length != 0 || rng.chance(0.5) {
            body.insert("max_length".into(), json!(LENGTHS[length]));
        }
        if base64 {
            body.insert("encoding_format".into(), json!("base64"));
        } else if rng.chance(0.2) {
            body.insert("encoding_format".into(), json!("float"));
        }
        let dimensions = rng
            .chance(0.25)
            .then(|| [1, dense_dim / 4, dense_dim / 2, dense_dim][rng.below(4)].max(1));
        if let Some(d) = dimensions {
            body.insert("dimensions".into(), json!(d));
        }
        let sparse = match rng.below(4) {
            0 => SparseFormat::Token,
            1 => {
                body.insert("sparse_format".into(), json!("token"));
                SparseFormat::Token
            }
            2 => {
                body.insert("sparse_format".into(), json!("id"));
                SparseFormat::Id
            }
            _ => {
                body.insert("sparse_format".into(), json!("indices"));
                SparseFormat::Indices
            }
        };
        let (input_type, outputs) = match rng.below(6) {
            0 => (Some(json!({"colbert": true})), [true, true, true]),
            1 => (Some(json!({"dense": false})), [false, true, false]),
            2 => (
                Some(json!({"sparse": false, "colbert": true})),
                [true, false, true],
            ),
            3 => (Some(json!("query")), [true, true, false]),
            _ => (None, [true, true, false]),
        };
        if let Some(input_type) = input_type {
            body.insert("input_type".into(), input_type);
        }
        if rng.chance(0.3) {
            body.insert("batch_size".into(), json!(1 + rng.below(16)));
        }
        match rng.below(4) {
            0 => body.insert("model".into(), json!("bge-m3")),
            1 => body.insert("model".into(), json!("BAAI/bge-m3")),
            _ => None,
        };
        Self {
            kind,
            path: if openai {
                "/v1/embeddings"
            } else {
                "/embeddings"
            },
            body: Value::Object(body),
            expect: Expect::Embeddings {
                openai,
                inputs,
                length,
                outputs,
                base64,
                dimensions,
                sparse,
            },
        }
    }

    /// The heaviest valid request: the [`MAX_BATCH`] longest texts, uncut, with every output.
    pub fn heaviest(pools: &Pools, refs: &References) -> Self {
        let mut longest: Vec<(u64, usize)> = (0..pools.texts.len())
            .map(|i| (refs.embeddings[&(Source::Text(i), 0)].tokens, i))
            .collect();
        longest.sort_unstable_by(|a, b| b.cmp(a));
        let inputs: Vec<Source> = longest
            .iter()
            .take(MAX_BATCH)
            .map(|&(_, i)| Source::Text(i))
            .collect();
        let texts: Vec<Value> = inputs.iter().map(|&s| pools.input(s)).collect();
        Self {
            kind: "native",
            path: "/embeddings",
            body: json!({"input": texts, "input_type": {"colbert": true}}),
            expect: Expect::Embeddings {
                openai: false,
                inputs,
                length: 0,
                outputs: [true, true, true],
                base64: false,
                dimensions: None,
                sparse: SparseFormat::Token,
            },
        }
    }

    fn score(rng: &mut Rng, pools: &Pools) -> Self {
        let count = 1 + rng.below(8);
        let pairs: Vec<usize> = (0..count).map(|_| rng.below(pools.pairs.len())).collect();
        let weights = rng.below(WEIGHTS.len());
        let (queries, passages): (Vec<&str>, Vec<&str>) = pairs
            .iter()
            .map(|&p| {
                let (q, d) = pools.pairs[p];
                (pools.texts[q].as_str(), pools.texts[d].as_str())
            })
            .unzip();
        let mut body = if count == 1 && rng.chance(0.3) {
            json!({"sentences_1": queries[0], "sentences_2": passages[0]})
        } else {
            json!({"sentences_1": queries, "sentences_2": passages})
        };
        if weights != 0 || rng.chance(0.5) {
            body["weights"] = json!(WEIGHTS[weights]);
        }
        Self {
            kind: "score",
            path: "/score",
            body,
            expect: Expect::Score { pairs, weights },
        }
    }

    /// How many inputs (texts, id lists, pairs) the request holds.
    pub fn inputs(&self) -> usize {
        match &self.expect {
            Expect::Embeddings { inputs, .. } => inputs.len(),
            Expect::Score { pairs, .. } => pairs.len(),
        }
    }

    /// Checks a 200 answer against the answers alone.
    pub fn check(&self, refs: &References, reply: &Reply) -> Result<(), String> {
        if reply.status != 200 {
            return Err(format!(
                "status {}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
        }
        let body: Value =
            serde_json::from_slice(&reply.body).map_err(|e| format!("not JSON: {e}"))?;
        match &self.expect {
            Expect::Embeddings {
                openai,
                inputs,
                length,
                outputs,
                base64,
                dimensions,
                sparse,
            } => {
                let items = items(&body, *openai, *base64, inputs.len(), *outputs)?;
                // On /v1/embeddings `encoding_format` applies to `embedding` alone (checked in
                // `items`): the extras are JSON numbers.
                let base64 = *base64 && !*openai;
                let mut tokens = 0;
                for (i, (source, item)) in inputs.iter().zip(items).enumerate() {
                    let alone = &refs.embeddings[&(*source, *length)];
                    tokens += alone.tokens;
                    let what = format!("input {i} ({source:?}, max_length {})", LENGTHS[*length]);
                    if let Some(dense) = item[0] {
                        let expected = match dimensions {
                            Some(d) => bge_m3_core::truncate_dense(alone.dense.clone(), *d),
                            None => alone.dense.clone(),
                        };
                        check_close(&floats(dense, base64)?, &expected, TOLERANCE)
                            .map_err(|m| from_alone(m.of(format!("{what}: dense"))))?;
                    }
                    if let Some(weights) = item[1] {
                        check_sparse(&what, weights, *sparse, alone)?;
                    }
                    if let Some(colbert) = item[2] {
                        let rows = rows(colbert, base64)?;
                        if rows.len() != alone.colbert.len() {
                            return Err(format!(
                                "{what}: {} ColBERT rows, {} alone",
                                rows.len(),
                                alone.colbert.len()
                            ));
                        }
                        for (r, (row, expected)) in rows.iter().zip(&alone.colbert).enumerate() {
                            check_close(row, expected, TOLERANCE).map_err(|m| {
                                from_alone(m.of(format!("{what}: colbert row {r}")))
                            })?;
                        }
                    }
                }
                let usage = body["usage"]["prompt_tokens"].as_u64();
                if usage != Some(tokens) {
                    return Err(format!(
                        "usage {usage:?}, the inputs alone add up to {tokens}"
                    ));
                }
            }
            Expect::Score { pairs, weights } => {
                for (k, key) in SCORE_KEYS.iter().enumerate() {
                    let values = body[key]
                        .as_array()
                        .filter(|v| v.len() == pairs.len())
                        .ok_or_else(|| format!("`{key}` is not {} scores", pairs.len()))?;
                    for (i, (value, pair)) in values.iter().zip(pairs).enumerate() {
                        let expected = refs.scores[&(*pair, *weights)][k];
                        let actual = value.as_f64().map(|v| v as f32);
                        let same = match (actual, expected) {
                            (Some(a), Some(e)) => close(&[a], &[e], TOLERANCE),
                            (a, e) => a.is_none() && e.is_none(),
                        };
                        if !same {
                            return Err(format!(
                                "pair {i} (pool pair {pair}) `{key}`: {actual:?}, {expected:?} alone"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Each input's (dense, sparse, colbert), checking the answer's shape on the way; on
/// `/v1/embeddings`, `embedding` must be `dense` (base64 of the same f32 under `base64`).
fn items(
    body: &Value,
    openai: bool,
    base64: bool,
    count: usize,
    outputs: [bool; 3],
) -> Result<Vec<[Option<&Value>; 3]>, String> {
    if openai {
        let data = body["data"]
            .as_array()
            .filter(|d| d.len() == count)
            .ok_or_else(|| format!("`data` is not {count} items"))?;
        data.iter()
            .enumerate()
            .map(|(i, item)| {
                if item["index"].as_u64() != Some(i as u64) {
                    return Err(format!("data[{i}].index is {}", item["index"]));
                }
                let dense = item.get("dense");
                if dense.is_some() != outputs[0]
                    || item.get("sparse").is_some() != outputs[1]
                    || item.get("colbert").is_some() != outputs[2]
                {
                    return Err(format!("data[{i}] has other outputs than {outputs:?}"));
                }
                let embedding_is_dense = match dense {
                    None => item["embedding"].is_null(),
                    Some(dense) if base64 => {
                        floats(&item["embedding"], true)? == floats(dense, false)?
                    }
                    Some(dense) => item["embedding"] == *dense,
                };
                if !embedding_is_dense {
                    return Err(format!("data[{i}].embedding is not its dense vector"));
                }
                Ok([dense, item.get("sparse"), item.get("colbert")])
            })
            .collect()
    } else {
        let column = |asked: bool, key: &str| -> Result<Option<&Vec<Value>>, String> {
            match (asked, body.get(key)) {
                (false, None) => Ok(None),
                (true, Some(Value::Array(values))) if values.len() == count => Ok(Some(values)),
                _ => Err(format!("`{key}` is not {count} items (asked: {asked})")),
            }
        };
        let columns = [
            column(outputs[0], "dense_vecs")?,
            column(outputs[1], "sparse_vecs")?,
            column(outputs[2], "colbert_vecs")?,
        ];
        Ok((0..count)
            .map(|i| columns.map(|c| c.map(|values| &values[i])))
            .collect())
    }
}

fn check_sparse(
    what: &str,
    weights: &Value,
    format: SparseFormat,
    alone: &Alone,
) -> Result<(), String> {
    let what = format!("{what}: sparse ({format:?})");
    match format {
        SparseFormat::Token => same_weights(
            &what,
            &self::weights(weights, |k| Some(k.to_string()))?,
            &alone.sparse_tokens,
        ),
        SparseFormat::Id => same_weights(
            &what,
            &self::weights(weights, |k| k.parse().ok())?,
            &alone.sparse_ids,
        ),
        SparseFormat::Indices => {
            let indices: Vec<u32> = weights["indices"]
                .as_array()
                .ok_or_else(|| format!("{what}: no indices"))?
                .iter()
                .map(|v| v.as_u64().map(|v| v as u32))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("{what}: an index is not an integer"))?;
            let values = floats(&weights["values"], false)?;
            if indices.len() != values.len() || indices.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!(
                    "{what}: indices not ascending or not one per value"
                ));
            }
            let pairs: Vec<(u32, f32)> = indices.into_iter().zip(values).collect();
            same_weights(&what, &pairs, &alone.sparse_ids)
        }
    }
}

/// The same weights as the input's alone (see [`check_same_weights`]).
fn same_weights<K: Eq + std::hash::Hash + std::fmt::Debug>(
    what: &str,
    actual: &[(K, f32)],
    expected: &[(K, f32)],
) -> Result<(), String> {
    check_same_weights(actual, expected, TOLERANCE).map_err(|e| from_alone(format!("{what}: {e}")))
}

/// A difference from what the same input got alone, the expected value in it.
fn from_alone(difference: String) -> String {
    format!("{difference} (expected: the input's answer alone)")
}
