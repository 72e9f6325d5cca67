//! The committed fixture models and FlagEmbedding's outputs recorded for them
//! (`fixtures/README.md` says how they were made, with which packages).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Deserialize;

/// The fixture model with `pytorch_model.bin` (the format of BAAI/bge-m3's own repository); the
/// one that the server and encoder tests serve.
pub const TINY_PT: &str = "tiny-pt";
/// The same architecture with `model.safetensors`.
pub const TINY_ST: &str = "tiny-st";
/// Every fixture model.
pub const MODELS: [&str; 2] = [TINY_PT, TINY_ST];

/// The repository's `fixtures/`, or `$BGE_M3_FIXTURES` where a prebuilt test binary runs away
/// from the tree it was built in (`bench/gpu-check.sh` on a borrowed GPU machine).
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("BGE_M3_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"),
    }
}

/// The directory of a fixture model, [`TINY_PT`] or [`TINY_ST`].
pub fn model_dir(name: &str) -> PathBuf {
    fixtures_dir().join("models").join(name)
}

/// The directory of [`TINY_PT`].
pub fn tiny_pt() -> PathBuf {
    model_dir(TINY_PT)
}

/// FlagEmbedding's outputs for one fixture model (`fixtures/expected/<model>.json`).
#[derive(Debug, Deserialize)]
pub struct Expected {
    pub model: String,
    /// The package versions that produced them.
    pub versions: HashMap<String, String>,
    pub encode: Vec<EncodeCase>,
    pub scores: Vec<ScoreCase>,
}

/// `BGEM3FlagModel.encode` of some texts.
#[derive(Debug, Deserialize)]
pub struct EncodeCase {
    pub name: String,
    pub texts: Vec<String>,
    pub max_length: usize,
    pub batch_size: usize,
    /// Each text's ids, `<s>` and `</s>` included, truncated at `max_length`.
    pub input_ids: Vec<Vec<u32>>,
    pub dense: Vec<Vec<f32>>,
    /// Each text's weights by token id, in FlagEmbedding's dict order.
    pub sparse: Vec<Vec<(u32, f32)>>,
    /// The same weights by token string (`convert_id_to_token`).
    pub sparse_tokens: Vec<Vec<(String, f32)>>,
}

/// `BGEM3FlagModel.compute_score` of some pairs; `None` where FlagEmbedding has no score.
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

/// FlagEmbedding's outputs for a fixture model, read once per test binary. Panics, naming the
/// file, when it cannot be read or parsed, or holds another model.
///
/// ```
/// use bge_m3_test_support::{expected, TINY_PT};
///
/// let expected = expected(TINY_PT);
/// assert!(expected.versions.contains_key("FlagEmbedding"));
/// let case = &expected.encode[0];
/// assert_eq!(case.dense.len(), case.texts.len());
/// ```
pub fn expected(name: &str) -> &'static Expected {
    static EXPECTED: OnceLock<HashMap<&'static str, Expected>> = OnceLock::new();
    let all = EXPECTED.get_or_init(|| {
        MODELS
            .iter()
            .map(|&model| {
                let path = fixtures_dir()
                    .join("expected")
                    .join(format!("{model}.json"));
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                let expected: Expected = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
                assert_eq!(expected.model, model, "{}", path.display());
                (model, expected)
            })
            .collect()
    });
    all.get(name)
        .unwrap_or_else(|| panic!("no fixture model {name:?}; there are {MODELS:?}"))
}
