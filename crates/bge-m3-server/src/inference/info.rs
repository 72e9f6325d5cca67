//! [`ModelInfo`]: what the handlers know of the loaded model without asking its thread.

use std::time::{SystemTime, UNIX_EPOCH};

use bge_m3_core::BgeM3;

/// Facts about the loaded model that the handlers need without asking the model's thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Width of the dense vectors (1024 for BGE-M3).
    pub dense_dim: usize,
    /// Width of the ColBERT vectors.
    pub colbert_dim: usize,
    /// Longest input in tokens, `<s>` and `</s>` included (8192 for BGE-M3).
    pub max_length: usize,
    /// Number of token ids the model accepts.
    pub vocab_size: usize,
    /// Where the model runs: `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// The encoder's precision: `float32`, `float16`, `bfloat16`.
    pub dtype: String,
    /// When the model finished loading, in Unix seconds (`created` in `/v1/models`).
    pub loaded_at: u64,
}

impl ModelInfo {
    /// Reads the facts off a loaded model.
    pub fn of(model: &BgeM3) -> Self {
        Self {
            dense_dim: model.dense_dim(),
            colbert_dim: model.colbert_dim(),
            max_length: model.max_length(),
            vocab_size: model.vocab_size(),
            device: bge_m3_core::device_name(model.device()),
            dtype: dtype_name(model.dtype()).to_string(),
            loaded_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// A dtype as PyTorch names it (`float32`), the way text-embeddings-inference's `/info` does.
fn dtype_name(dtype: bge_m3_core::DType) -> &'static str {
    match dtype {
        bge_m3_core::DType::F32 => "float32",
        bge_m3_core::DType::F16 => "float16",
        bge_m3_core::DType::BF16 => "bfloat16",
        other => other.as_str(),
    }
}
