//! The inputs the valid requests draw from, and each one's answer alone, asked before the load.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{json, Value};

use crate::client;
use crate::rng::Rng;

/// The `max_length`s of the valid requests.
pub const LENGTHS: [usize; 3] = [8192, 512, 16];
/// The `/score` weights of the valid requests; the first is the default.
pub const WEIGHTS: [[f32; 3]; 3] = [[0.4, 0.2, 0.4], [1.0, 0.0, 0.0], [0.2, 0.5, 0.3]];

/// One input of the pools: a text or a token-id list, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Text(usize),
    Ids(usize),
}

/// Every input the valid requests draw from.
pub struct Pools {
    pub texts: Vec<String>,
    pub ids: Vec<Vec<u32>>,
    /// (query, passage) as indices into `texts`.
    pub pairs: Vec<(usize, usize)>,
}

impl Pools {
    /// Texts from empty to a few hundred tokens in several scripts, token-id lists of up to 300
    /// ids below 1201 (inside the vocabulary of the fixture models and of BGE-M3), pairs.
    pub fn new() -> Self {
        let sentences = [
            "What is BGE M3?",
            "BGE M3 is an embedding model supporting dense retrieval, lexical matching and \
             multi-vector interaction.",
            "Defination of BM25",
            "BM25 is a bag-of-words retrieval function that ranks a set of documents.",
            "北京是中国的首都。",
            "机器学习是人工智能的一个分支。",
            "مرحبا بالعالم، هذا نص تجريبي.",
            "Привет, мир! Это тестовый текст.",
            "emoji 😀👩🏽‍💻 and symbols ∑∫√ ≠ ≤",
            "fn main() { println!(\"hello\"); }",
            "Hello world",
            "the quick brown fox jumps over the lazy dog",
        ];
        let mut texts = vec![String::new(), " ".to_string(), "a".to_string()];
        for (i, sentence) in sentences.iter().enumerate() {
            texts.push(sentence.to_string());
            // Longer texts: the sentence and the ones after it.
            for count in [3, 10] {
                let text = (0..count)
                    .map(|k| sentences[(i + k) % sentences.len()])
                    .collect::<Vec<_>>()
                    .join(" ");
                texts.push(text);
            }
        }
        let mut rng = Rng::new(0x5eed);
        let ids = (0..12)
            .map(|i| {
                let len = [0, 1, 2, 5, 17, 40, 120, 300][i % 8];
                (0..len).map(|_| 4 + rng.below(1197) as u32).collect()
            })
            .collect();
        let pairs = (0..24)
            .map(|_| (rng.below(texts.len()), rng.below(texts.len())))
            .collect();
        Self { texts, ids, pairs }
    }

    pub fn input(&self, source: Source) -> Value {
        match source {
            Source::Text(i) => json!(self.texts[i]),
            Source::Ids(i) => json!(self.ids[i]),
        }
    }
}

/// One input's outputs, as a request for it alone got them.
#[derive(Debug, Clone)]
pub struct Alone {
    pub dense: Vec<f32>,
    pub sparse_ids: Vec<(u32, f32)>,
    pub sparse_tokens: Vec<(String, f32)>,
    pub colbert: Vec<Vec<f32>>,
    pub tokens: u64,
}

/// The answers alone: per (input, `LENGTHS` index) and per (pair, `WEIGHTS` index).
pub struct References {
    pub embeddings: HashMap<(Source, usize), Alone>,
    pub scores: HashMap<(usize, usize), [Option<f32>; 5]>,
    pub dense_dim: usize,
    pub requests: usize,
}

/// The five `/score` keys, in the answer's order.
pub const SCORE_KEYS: [&str; 5] = [
    "dense",
    "sparse",
    "colbert",
    "sparse+dense",
    "colbert+sparse+dense",
];

impl References {
    /// Asks the server for every input of `pools` alone, one request at a time.
    pub fn fetch(agent: &ureq::Agent, base: &str, pools: &Pools) -> Result<Self, String> {
        let mut requests = 0;
        let mut ask = |path: &str, body: Value| -> Result<Value, String> {
            requests += 1;
            let reply = client::post_json(agent, base, path, &body)
                .map_err(|e| format!("POST {path} {body}: {e}"))?;
            if reply.status != 200 {
                return Err(format!(
                    "POST {path} {body}: {} {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                ));
            }
            serde_json::from_slice(&reply.body).map_err(|e| format!("POST {path}: {e}"))
        };
        let card = {
            let reply = client::send(agent, base, "GET", "/models/bge-m3", None, None)
                .map_err(|e| format!("GET /models/bge-m3: {e}"))?;
            serde_json::from_slice::<Value>(&reply.body).map_err(|e| e.to_string())?
        };
        let dense_dim = card["embedding_dims"]
            .as_u64()
            .ok_or("no embedding_dims in /models/bge-m3")? as usize;

        let sources = (0..pools.texts.len())
            .map(Source::Text)
            .chain((0..pools.ids.len()).map(Source::Ids));
        let mut embeddings = HashMap::new();
        for source in sources {
            for (l, &max_length) in LENGTHS.iter().enumerate() {
                let input = json!([pools.input(source)]);
                let all = ask(
                    "/embeddings",
                    json!({"input": input, "max_length": max_length, "sparse_format": "id",
                           "input_type": {"dense": true, "sparse": true, "colbert": true}}),
                )?;
                let tokens = ask(
                    "/embeddings",
                    json!({"input": input, "max_length": max_length, "sparse_format": "token",
                           "input_type": {"dense": false, "sparse": true}}),
                )?;
                let alone = Alone {
                    dense: floats(&all["dense_vecs"][0], false)?,
                    sparse_ids: weights(&all["sparse_vecs"][0], |k| k.parse().ok())?,
                    sparse_tokens: weights(&tokens["sparse_vecs"][0], |k| Some(k.to_string()))?,
                    colbert: rows(&all["colbert_vecs"][0], false)?,
                    tokens: all["usage"]["prompt_tokens"]
                        .as_u64()
                        .ok_or("no usage.prompt_tokens")?,
                };
                embeddings.insert((source, l), alone);
            }
        }
        let mut scores = HashMap::new();
        for (p, &(q, d)) in pools.pairs.iter().enumerate() {
            for (w, weights) in WEIGHTS.iter().enumerate() {
                let answer = ask(
                    "/score",
                    json!({"sentences_1": [pools.texts[q]], "sentences_2": [pools.texts[d]],
                           "weights": weights}),
                )?;
                let values = SCORE_KEYS.map(|key| answer[key][0].as_f64().map(|v| v as f32));
                scores.insert((p, w), values);
            }
        }
        Ok(Self {
            embeddings,
            scores,
            dense_dim,
            requests,
        })
    }
}

/// A vector: JSON numbers, or base64 of little-endian f32.
pub fn floats(value: &Value, base64: bool) -> Result<Vec<f32>, String> {
    if base64 {
        let bytes = value
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .filter(|b| b.len() % 4 == 0)
            .ok_or_else(|| format!("not base64 of f32: {value}"))?;
        return Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect());
    }
    value
        .as_array()
        .ok_or_else(|| format!("not an array: {value}"))?
        .iter()
        .map(|v| {
            v.as_f64()
                .map(|v| v as f32)
                .ok_or_else(|| format!("not a number: {v}"))
        })
        .collect()
}

pub fn rows(value: &Value, base64: bool) -> Result<Vec<Vec<f32>>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("ColBERT vectors are not an array: {value}"))?
        .iter()
        .map(|row| floats(row, base64))
        .collect()
}

/// A JSON object of weights, keys read by `key`, in order.
pub fn weights<K>(value: &Value, key: impl Fn(&str) -> Option<K>) -> Result<Vec<(K, f32)>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("sparse weights are not an object: {value}"))?
        .iter()
        .map(|(k, w)| match (key(k), w.as_f64()) {
            (Some(k), Some(w)) => Ok((k, w as f32)),
            _ => Err(format!("sparse weight {k:?}: {w}")),
        })
        .collect()
}
