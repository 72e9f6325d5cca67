//! What the core's integration tests add to `bge-m3-test-support` (the fixtures, FlagEmbedding's
//! outputs, the tolerance): the fixture models loaded by the core, their ColBERT references,
//! and sparse weights compared in FlagEmbedding's dict order.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::OnceLock;

use bge_m3_core::{BgeM3, DeviceSpec, LoadOptions};
#[allow(unused_imports)] // each test binary uses some of them
pub use bge_m3_test_support::{expected, fixtures_dir, model_dir, MODELS, TOLERANCE};
use candle_core::{Device, Tensor};

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

/// FlagEmbedding's ColBERT vectors for a fixture model, keyed `"{case}/{text index}"`.
pub fn expected_colbert(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures_dir()
        .join("expected")
        .join(format!("{name}.colbert.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Compares two keyed weight lists like FlagEmbedding's dicts: the shared check (each key's
/// weight within [`TOLERANCE`], a key only one side has within it of zero), and the keys both
/// have in the same order, which decides which id wins a token string in
/// [`BgeM3::sparse_by_token`].
pub fn assert_same_weights<K: Eq + std::hash::Hash + std::fmt::Debug>(
    what: &str,
    actual: &[(K, f32)],
    expected: &[(K, f32)],
) {
    if let Err(difference) = bge_m3_test_support::check_same_weights(actual, expected, TOLERANCE) {
        panic!("{what}: {difference}; got {actual:?}, FlagEmbedding {expected:?}");
    }
    let order: Vec<usize> = expected
        .iter()
        .filter_map(|(key, _)| actual.iter().position(|(k, _)| k == key))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "{what}: keys in a different order than FlagEmbedding's dict: {actual:?} vs {expected:?}"
    );
}
