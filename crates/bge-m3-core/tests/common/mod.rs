//! Shared helpers of the integration tests: the committed fixture models and FlagEmbedding's
//! reference outputs (see `fixtures/README.md`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use bge_m3_core::{BgeM3, DeviceSpec, LoadOptions};
use candle_core::{Device, Tensor};
use serde::Deserialize;

/// Tolerance of every f32 comparison with FlagEmbedding (API.md, "Numerics").
pub const TOLERANCE: f32 = 1e-5;

/// The fixture models: `tiny-pt` ships `pytorch_model.bin`, `tiny-st` `model.safetensors`.
pub const MODELS: [&str; 2] = ["tiny-pt", "tiny-st"];

/// The repository's `fixtures/`, or `$BGE_M3_FIXTURES` where a prebuilt test binary runs
/// away from the tree it was built in (`bench/gpu-check.sh` on a borrowed GPU machine).
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("BGE_M3_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"),
    }
}

pub fn model_dir(name: &str) -> PathBuf {
    fixtures_dir().join("models").join(name)
}

/// Each fixture model, loaded once per test binary on the CPU in f32.
pub fn model(name: &str) -> &'static BgeM3 {
    static MODELS: OnceLock<HashMap<&'static str, BgeM3>> = OnceLock::new();
    let models = MODELS.get_or_init(|| {
        self::MODELS
            .iter()
            .map(|&name| {
                let model = BgeM3::load(
                    model_dir(name),
                    &LoadOptions::default()
                        .with_device(DeviceSpec::Cpu)
                        .with_dtype(None),
                )
                .unwrap_or_else(|e| panic!("loading {name}: {e}"));
                (name, model)
            })
            .collect()
    });
    &models[name]
}

#[derive(Debug, Deserialize)]
pub struct Expected {
    pub model: String,
    pub encode: Vec<EncodeCase>,
    pub scores: Vec<ScoreCase>,
}

#[derive(Debug, Deserialize)]
pub struct EncodeCase {
    pub name: String,
    pub texts: Vec<String>,
    pub max_length: usize,
    pub batch_size: usize,
    pub input_ids: Vec<Vec<u32>>,
    pub dense: Vec<Vec<f32>>,
    pub sparse: Vec<Vec<(u32, f32)>>,
    pub sparse_tokens: Vec<Vec<(String, f32)>>,
}

#[derive(Debug, Deserialize)]
pub struct ScoreCase {
    pub name: String,
    pub pairs: Vec<(String, String)>,
    pub weights: [f32; 3],
    pub max_query_length: usize,
    pub max_passage_length: usize,
    pub dense: Vec<Option<f32>>,
    pub sparse: Vec<Option<f32>>,
    pub colbert: Vec<Option<f32>>,
    #[serde(rename = "sparse+dense")]
    pub sparse_dense: Vec<Option<f32>>,
    #[serde(rename = "colbert+sparse+dense")]
    pub colbert_sparse_dense: Vec<Option<f32>>,
}

/// FlagEmbedding's outputs for a fixture model.
pub fn expected(name: &str) -> &'static Expected {
    static EXPECTED: OnceLock<HashMap<&'static str, Expected>> = OnceLock::new();
    let all = EXPECTED.get_or_init(|| {
        MODELS
            .iter()
            .map(|&name| {
                let path = fixtures_dir().join("expected").join(format!("{name}.json"));
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                let expected: Expected = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
                assert_eq!(expected.model, name);
                (name, expected)
            })
            .collect()
    });
    &all[name]
}

/// FlagEmbedding's ColBERT vectors for a fixture model, keyed `"{case}/{text index}"`.
pub fn expected_colbert(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures_dir()
        .join("expected")
        .join(format!("{name}.colbert.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Asserts `|a - b| <= TOLERANCE` element-wise, naming what differs.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= TOLERANCE,
            "{what}[{i}]: got {a}, FlagEmbedding {e} (diff {})",
            (a - e).abs()
        );
    }
}

/// Compares two keyed weight lists like FlagEmbedding's dicts: every key whose weight is above
/// the tolerance must be in both, with equal weights, in the same order. A key that only one
/// side has must be within the tolerance of zero there (a relu at the edge can drop it).
pub fn assert_same_weights<K: PartialEq + std::fmt::Debug>(
    what: &str,
    actual: &[(K, f32)],
    expected: &[(K, f32)],
) {
    let find = |list: &[(K, f32)], key: &K| list.iter().position(|(k, _)| k == key);
    let mut order_actual = Vec::new();
    let mut order_expected = Vec::new();
    for (i, (key, weight)) in expected.iter().enumerate() {
        match find(actual, key) {
            Some(j) => {
                let got = actual[j].1;
                assert!(
                    (got - weight).abs() <= TOLERANCE,
                    "{what}: weight of {key:?}: got {got}, FlagEmbedding {weight}"
                );
                order_actual.push(j);
                order_expected.push(i);
            }
            None => assert!(
                *weight <= TOLERANCE,
                "{what}: {key:?} ({weight}) missing; got {actual:?}"
            ),
        }
    }
    for (key, weight) in actual {
        if find(expected, key).is_none() {
            assert!(
                *weight <= TOLERANCE,
                "{what}: unexpected {key:?} ({weight}); FlagEmbedding has {expected:?}"
            );
        }
    }
    assert!(
        order_actual.windows(2).all(|w| w[0] < w[1]),
        "{what}: keys in a different order than FlagEmbedding's dict: {actual:?} vs {expected:?}"
    );
    let _ = order_expected;
}
