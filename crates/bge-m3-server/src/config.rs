//! The server's settings: one clap flag per setting, each also read from an environment
//! variable. The doc comments below are the `--help` text.

use std::path::PathBuf;

use bge_m3_core::{DType, DeviceSpec};
use clap::Parser;

use crate::state::Limits;

/// Serves BGE-M3 (BAAI/bge-m3) embeddings over HTTP: OpenAI-compatible `/v1/embeddings`, the
/// native `/embeddings` (dense, sparse and ColBERT vectors) and `/score`.
///
/// Every flag can also be set with the environment variable shown beside it; a flag given on
/// the command line wins over the variable.
#[derive(Debug, Clone, Parser)]
#[command(name = "bge-m3-server", version)]
pub struct Config {
    /// Model directory laid out like the BAAI/bge-m3 Hugging Face repository: config.json,
    /// tokenizer.json, pytorch_model.bin or model.safetensors, colbert_linear.pt and
    /// sparse_linear.pt (e.g. from `huggingface-cli download BAAI/bge-m3 --local-dir DIR`).
    #[arg(long, env = "MODEL_PATH", default_value = "/models/bge-m3")]
    pub model_path: PathBuf,

    /// Address to listen on: 0.0.0.0 for every IPv4 interface, 127.0.0.1 for this machine only,
    /// :: for every IPv6 (and, on most systems, IPv4) interface.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8101)]
    pub port: u16,

    /// Where to run the model: `auto` (the first GPU when the server was built with
    /// `--features cuda` and one is present, else the CPU), `cpu`, `cuda` or `cuda:N`.
    #[arg(long, env = "DEVICE", default_value = "auto")]
    pub device: DeviceSpec,

    /// Precision of the encoder: `f32`, `f16` or `bf16`. Default: f32 on the CPU (matches
    /// FlagEmbedding within 1e-5), f16 on a GPU (FlagEmbedding's `use_fp16=True`).
    #[arg(long, env = "DTYPE", value_parser = parse_dtype)]
    pub dtype: Option<DType>,

    /// The model id clients send in `model` and see in responses and in `/v1/models`.
    #[arg(long, env = "MODEL_ID", default_value = "bge-m3")]
    pub model_id: String,

    /// Other names accepted in `model` and `/models/{id}` (answered with the model id). Repeat
    /// the flag or separate names with commas. Setting it replaces the default, so list
    /// BAAI/bge-m3 again to keep accepting it.
    #[arg(
        long = "model-alias",
        env = "MODEL_ALIASES",
        value_delimiter = ',',
        default_value = "BAAI/bge-m3"
    )]
    pub model_aliases: Vec<String>,

    /// Most inputs in one request: texts or token arrays for the embeddings routes, pairs for
    /// `/score`. A request with more is refused with 413. OpenAI's own limit is 2048.
    #[arg(
        long,
        env = "MAX_INPUTS",
        default_value_t = Limits::default().max_inputs,
        value_parser = at_least_one
    )]
    pub max_inputs: usize,

    /// Largest request body in bytes; a larger one is refused with 413. The default, 16 MiB,
    /// holds 2048 texts of about 8 KB each.
    #[arg(
        long,
        env = "MAX_BODY_BYTES",
        default_value_t = Limits::default().max_body_bytes,
        value_parser = at_least_one
    )]
    pub max_body_bytes: usize,

    /// Most requests waiting for the model. When that many are queued, a new request is
    /// refused at once with 429 rather than waiting without bound.
    #[arg(long, env = "QUEUE_SIZE", default_value_t = 64, value_parser = at_least_one)]
    pub queue_size: usize,
}

impl Config {
    /// The names accepted for the served model, blank aliases and repeats of the id left out.
    pub fn aliases(&self) -> Vec<String> {
        let mut aliases: Vec<String> = Vec::new();
        for alias in &self.model_aliases {
            let alias = alias.trim();
            if !alias.is_empty() && alias != self.model_id && !aliases.iter().any(|a| a == alias) {
                aliases.push(alias.to_string());
            }
        }
        aliases
    }
}

fn parse_dtype(s: &str) -> bge_m3_core::Result<DType> {
    bge_m3_core::device::parse_dtype(s)
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Config::command().debug_assert();
    }

    #[test]
    fn defaults_and_flags() {
        let config = Config::try_parse_from([
            "bge-m3-server",
            "--model-path",
            "/m",
            "--device",
            "cpu",
            "--dtype",
            "f16",
            "--model-alias",
            "a, b,,bge-m3,a",
            "--port",
            "9000",
        ])
        .unwrap();
        assert_eq!(config.model_path, PathBuf::from("/m"));
        assert_eq!(config.device, DeviceSpec::Cpu);
        assert_eq!(config.dtype, Some(DType::F16));
        assert_eq!(config.port, 9000);
        assert_eq!(config.aliases(), ["a", "b"]);
        assert!(Config::try_parse_from(["bge-m3-server", "--queue-size", "0"]).is_err());
        assert!(Config::try_parse_from(["bge-m3-server", "--device", "tpu"]).is_err());
    }
}
