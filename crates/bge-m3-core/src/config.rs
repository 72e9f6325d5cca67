//! The model's `config.json`: an XLM-RoBERTa configuration.

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// The fields of an XLM-RoBERTa `config.json` that the encoder needs.
///
/// Mirrors `transformers.XLMRobertaConfig`; unknown fields are ignored. For BAAI/bge-m3 this is
/// hidden size 1024, 24 layers, 16 heads, vocabulary 250002 and 8194 positions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    /// Rows of the word embedding table: the token ids the model accepts.
    pub vocab_size: usize,
    /// Width of the hidden states, and so of the dense vector.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; `hidden_size` must be a multiple of it.
    pub num_attention_heads: usize,
    /// Width of the feed-forward block's inner layer.
    pub intermediate_size: usize,
    /// The feed-forward activation. Default: `gelu`.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: HiddenAct,
    /// Rows of the position table; RoBERTa positions start after `pad_token_id`, see
    /// [`Config::max_tokens`].
    pub max_position_embeddings: usize,
    /// Rows of the token-type table (only row 0 is used). Default: 1.
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// The LayerNorms' epsilon. Default: 1e-5.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Id of `<pad>`, which is also RoBERTa's padding position. Default: 1.
    #[serde(default = "default_pad_token_id")]
    pub pad_token_id: u32,
    /// Only `"absolute"` is supported. Default: `"absolute"`.
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
}

/// The activation of the feed-forward blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HiddenAct {
    /// The exact, erf-based GELU (PyTorch's default `nn.GELU()`), what XLM-RoBERTa uses.
    Gelu,
    /// The tanh approximation.
    #[serde(alias = "gelu_pytorch_tanh")]
    GeluNew,
    /// `max(0, x)`.
    Relu,
}

fn default_hidden_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn default_type_vocab_size() -> usize {
    1
}
fn default_layer_norm_eps() -> f64 {
    1e-5
}
fn default_pad_token_id() -> u32 {
    1
}
fn default_position_embedding_type() -> String {
    "absolute".to_string()
}

impl Config {
    /// Reads and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::invalid_file(path, e))?;
        let config: Config =
            serde_json::from_str(&text).map_err(|e| Error::invalid_file(path, e))?;
        config.validate().map_err(|message| Error::InvalidFile {
            path: path.to_path_buf(),
            message,
            source: None,
        })?;
        Ok(config)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            return Err("hidden_size and num_attention_heads must be positive".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                self.position_embedding_type
            ));
        }
        if self.max_position_embeddings <= self.pad_token_id as usize + 2 {
            return Err(format!(
                "max_position_embeddings {} leaves no room for positions after pad_token_id {}",
                self.max_position_embeddings, self.pad_token_id
            ));
        }
        if self.type_vocab_size == 0 {
            return Err("type_vocab_size must be positive".into());
        }
        Ok(())
    }

    /// The longest input, in tokens including `<s>` and `</s>`, that the position table can
    /// hold: RoBERTa positions start after `pad_token_id`, so 8194 positions give 8192 tokens.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.pad_token_id as usize - 1
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}
