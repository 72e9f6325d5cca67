//! The server's settings: one clap flag per setting, each also read from an environment
//! variable. The doc comments below are the `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use bge_m3_core::{DType, DeviceSpec, ScoreWeights};
use clap::Parser;

use crate::inference::InferenceOptions;
use crate::logging::LogFormat;
use crate::state::{ApiKey, AppState, Limits};

/// Serves BGE-M3 (BAAI/bge-m3) embeddings over HTTP: OpenAI-compatible `/v1/embeddings`, the
/// native `/embeddings` (dense, sparse and ColBERT vectors) and `/score`.
///
/// Every flag can also be set with the environment variable shown beside it; a flag given on
/// the command line wins over the variable.
#[derive(Debug, Clone, Parser)]
#[command(name = "bge-m3-server", version)]
pub struct Config {
    /// The model: a Hugging Face Hub repository id (`owner/name`), or a directory laid out like
    /// the BAAI/bge-m3 repository (config.json, tokenizer.json, pytorch_model.bin or
    /// model.safetensors, colbert_linear.pt and sparse_linear.pt). A repository is downloaded
    /// on the first start into the Hugging Face cache (`$HF_HOME/hub`, default
    /// ~/.cache/huggingface/hub) and read from there afterwards without the network. The Hub
    /// is `HF_ENDPOINT` (default https://huggingface.co), with the token `HF_TOKEN` for private
    /// or gated repositories; `HF_HUB_OFFLINE=1` uses the cache only. An existing directory
    /// wins over a repository id of the same name.
    #[arg(long, env = "MODEL_PATH", default_value = "BAAI/bge-m3")]
    pub model_path: PathBuf,

    /// Revision of the Hub repository in MODEL_PATH: a branch, a tag or a commit hash. Unused
    /// when MODEL_PATH is a directory.
    #[arg(long, env = "MODEL_REVISION", default_value = bge_m3_core::hub::DEFAULT_REVISION)]
    pub revision: String,

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

    /// Precision of the encoder: `f32`, `f16`, `bf16` or `int8` (the CPU only: the encoder's
    /// linear layers in 8-bit integers, faster in a third of the memory, rankings as f32's within
    /// the README's measured bounds). Default: f32 on the CPU (matches FlagEmbedding within
    /// 1e-5), f16 on a GPU (FlagEmbedding's `use_fp16=True`).
    #[arg(long, env = "DTYPE", value_parser = parse_dtype)]
    pub dtype: Option<DType>,

    /// Threads that run the model's forward passes (a pool of the model's own; tokenization
    /// runs on other threads). Default: one per CPU the process may use.
    #[arg(long, env = "THREADS", value_parser = at_least_one)]
    pub threads: Option<usize>,

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
    /// `/score`, documents for the rerank routes. A request with more is refused with 413. The
    /// default holds what the common libraries send in one request (Chroma up to 5461,
    /// LangChain 1000); `--max-body-bytes` bounds the request's size anyway.
    #[arg(
        long,
        env = "MAX_INPUTS",
        default_value_t = Limits::default().max_inputs,
        value_parser = at_least_one
    )]
    pub max_inputs: usize,

    /// Largest request body in bytes; a larger one is refused with 413. The default, 16 MiB,
    /// holds `--max-inputs` (8192) texts of about 2 KB each, or 2048 of about 8 KB.
    #[arg(
        long,
        env = "MAX_BODY_BYTES",
        default_value_t = Limits::default().max_body_bytes,
        value_parser = at_least_one
    )]
    pub max_body_bytes: usize,

    /// Most requests waiting for the model. When that many are queued, a new request is
    /// refused at once with 429 rather than waiting without bound.
    #[arg(
        long,
        env = "QUEUE_SIZE",
        default_value_t = InferenceOptions::default().queue_size,
        value_parser = at_least_one
    )]
    pub queue_size: usize,

    /// Most tokens in one forward pass: the sum of the texts' lengths on the CPU (f32, where
    /// texts are laid end to end), texts × the longest text's length where the model pads
    /// (GPUs, f16/bf16). Texts of concurrent requests are merged into passes up to this budget
    /// (a text longer than it runs alone). Larger passes use more memory; on a CPU they gain little past a few
    /// thousand tokens.
    #[arg(
        long,
        env = "MAX_BATCH_TOKENS",
        default_value_t = InferenceOptions::default().max_batch_tokens,
        value_parser = at_least_one
    )]
    pub max_batch_tokens: usize,

    /// Longest time a request may wait and run, in seconds; past it the request is answered
    /// with 503 and its texts leave the queue. 0: no limit.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value_t = 300)]
    pub request_timeout: u64,

    /// On SIGTERM or SIGINT, the most seconds to wait for the requests in flight; those still
    /// running then are answered 503 `shutting_down`, and the exit status is 3.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,

    /// Memory, in MiB, that the requests in flight may hold in all: their bodies while read,
    /// their token ids and their embeddings (`/tokenize`: its tokens; `/decode`: its texts)
    /// until their answer is written (estimated before they are held). A request that does not fit now is refused at once with 429
    /// `memory_full`; one that could never fit, with 413 `answer_too_large`.
    #[arg(
        long,
        env = "MEMORY_BUDGET_MIB",
        default_value_t = Limits::default().memory_budget_bytes >> 20,
        value_parser = at_least_one_u64
    )]
    pub memory_budget_mib: u64,

    /// Longest time, in seconds, for a request's body to arrive once its head has; past it,
    /// 408 `body_timeout` and the connection is closed. 0: no limit.
    #[arg(long, env = "BODY_TIMEOUT", default_value_t = 30)]
    pub body_timeout: u64,

    /// Longest time, in seconds, that an answer may wait for its client to take any of it;
    /// past it the connection is cut and the answer dropped. 0: no limit.
    #[arg(long, env = "WRITE_TIMEOUT", default_value_t = 30)]
    pub write_timeout: u64,

    /// Longest time, in seconds, for a new connection's first request head to arrive; past it,
    /// 408 and the connection is closed. 0: no limit.
    #[arg(long, env = "HEADER_TIMEOUT", default_value_t = 5)]
    pub header_timeout: u64,

    /// Seconds an idle keep-alive connection stays open. 0: one request per connection.
    #[arg(long, env = "KEEP_ALIVE", default_value_t = 5)]
    pub keep_alive: u64,

    /// Most client connections open at once; more wait in the listen backlog. Default: the
    /// process's limit on open files (raised to its hard limit at start) less a reserve for the
    /// server's own files, so that `accept` never fails for want of descriptors.
    #[arg(long, env = "MAX_CONNECTIONS", value_parser = at_least_one)]
    pub max_connections: Option<usize>,

    /// Threads that tokenize (every route's texts, `/tokenize` and `/decode` included) and key
    /// sparse weights by token, apart from the model's. Default: half the CPUs, at least 1.
    #[arg(long, env = "TOKENIZER_THREADS", value_parser = at_least_one)]
    pub tokenizer_threads: Option<usize>,

    /// Most characters in one text (`input`, `input[i]`, `sentences_1[i]`, `sentences_2[i]`); a
    /// longer text is refused with 413, not truncated. Only the first `max_length` tokens of a
    /// text are embedded anyway (8192 at most, a few tens of thousands of characters): this
    /// bounds the CPU time the tokenizer spends on the rest.
    #[arg(
        long,
        env = "MAX_TEXT_CHARS",
        default_value_t = Limits::default().max_text_chars,
        value_parser = at_least_one
    )]
    pub max_text_chars: usize,

    /// Require this API key: every request but /health, /openapi.json and /docs must send
    /// `Authorization: Bearer KEY` (what OpenAI's SDKs send as their `api_key`), or is refused
    /// with 401. Unset: no key is asked for. Prefer the environment variable to the flag, which
    /// other users of the machine can see in the process list.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<ApiKey>,

    /// Origins whose web pages may call this API from a browser (CORS), such as
    /// `https://app.example.com`, or `*` for any. Repeat the flag or separate origins with
    /// commas. Unset: CORS is off and browsers refuse cross-origin calls.
    #[arg(
        long = "cors-allow-origin",
        env = "CORS_ALLOW_ORIGINS",
        value_delimiter = ',',
        value_parser = crate::middleware::cors::parse_origin
    )]
    pub cors_allow_origins: Vec<String>,

    /// Accept token-id arrays in `input`. Off by default: LangChain's `OpenAIEmbeddings` (unless
    /// `check_embedding_ctx_length=False`) sends OpenAI's tiktoken ids, which fall inside
    /// BGE-M3's vocabulary and would be embedded as unrelated pieces, silently. Turn it on only
    /// when the ids come from this model's own tokenizer (`/tokenize`).
    #[arg(long, env = "ALLOW_TOKEN_IDS", value_parser = clap::builder::BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub allow_token_ids: bool,

    /// Answer any `model` name with the served model (as text-embeddings-inference does), so
    /// that library defaults such as `text-embedding-ada-002` work unchanged. Off by default:
    /// a name that is not the model id or an alias is a 404, so that vectors of one model never
    /// pass for another's.
    #[arg(long, env = "ACCEPT_ANY_MODEL", value_parser = clap::builder::BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub accept_any_model: bool,

    /// The default `[dense, sparse, colbert]` weights of the rerank routes' score
    /// (`colbert+sparse+dense`), as three comma-separated numbers from 0 to 1e38, at least one
    /// of them 1e-37 or more (the rule of a request's `weights`); a request's own `weights`
    /// win. FlagEmbedding's default.
    #[arg(long, env = "RERANK_WEIGHTS", default_value = "0.4,0.2,0.4", value_parser = parse_weights)]
    pub rerank_weights: ScoreWeights,

    /// Log format: `text` (one human-readable line per event) or `json` (one JSON object per
    /// line, for log collectors).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// The inference layer's share of the settings.
    pub fn inference_options(&self) -> InferenceOptions {
        InferenceOptions {
            queue_size: self.queue_size,
            max_batch_tokens: self.max_batch_tokens,
            request_timeout: seconds(self.request_timeout),
            tokenizer_threads: self
                .tokenizer_threads
                .unwrap_or_else(crate::inference::default_tokenizer_threads),
        }
    }

    /// The state every handler shares, from these settings: the model's names, the limits,
    /// the API key, CORS, and the request options the routes read (the model not loaded yet).
    pub fn app_state(&self) -> AppState {
        AppState::new(self.model_id.clone(), self.aliases(), self.limits())
            .with_api_key(self.api_key.clone())
            .with_cors_allow_origins(self.cors_allow_origins.clone())
            .with_accept_any_model(self.accept_any_model)
            .with_allow_token_ids(self.allow_token_ids)
            .with_rerank_weights(self.rerank_weights)
    }

    /// The limits on each request.
    pub fn limits(&self) -> Limits {
        Limits {
            max_inputs: self.max_inputs,
            max_body_bytes: self.max_body_bytes,
            max_text_chars: self.max_text_chars,
            memory_budget_bytes: self.memory_budget_mib.saturating_mul(1 << 20),
            body_timeout: seconds(self.body_timeout),
            write_timeout: seconds(self.write_timeout),
        }
    }

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

/// Seconds as a duration, `None` for 0 (no limit).
pub(crate) fn seconds(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n))
}

fn at_least_one_u64(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_dtype(s: &str) -> bge_m3_core::Result<DType> {
    bge_m3_core::parse_dtype(s)
}

fn parse_weights(s: &str) -> Result<ScoreWeights, String> {
    let values = s
        .split(',')
        .map(|w| w.trim().parse::<f32>().map_err(|e| format!("{w:?}: {e}")))
        .collect::<Result<Vec<f32>, String>>()?;
    let [dense, sparse, colbert] = values[..] else {
        return Err(format!(
            "three numbers dense,sparse,colbert are needed, got {}",
            values.len()
        ));
    };
    ScoreWeights::try_from([dense, sparse, colbert]).map_err(|e| e.to_string())
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

    /// `--rerank-weights` has the rule of a request's `weights` (the core's, which the document
    /// states): a default the document would call invalid is refused at start.
    #[test]
    fn rerank_weights_have_the_rule_of_a_requests() {
        let parse = |weights: &str| {
            Config::try_parse_from(["bge-m3-server", &format!("--rerank-weights={weights}")])
                .map(|config| config.rerank_weights)
        };
        let weights = parse("1, 0, 1e38").unwrap();
        assert_eq!(
            [weights.dense, weights.sparse, weights.colbert],
            [1.0, 0.0, 1e38]
        );
        for bad in ["2e38,0,0", "1e-38,1e-40,0", "0,0,0", "-1,1,1", "1,1"] {
            let error = parse(bad).unwrap_err().to_string();
            assert!(error.contains("weights"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_model_comes_from_the_hub_by_default() {
        let config = Config::try_parse_from(["bge-m3-server"]).unwrap();
        assert_eq!(config.model_path, PathBuf::from("BAAI/bge-m3"));
        assert_eq!(config.revision, "main");
        let config = Config::try_parse_from(["bge-m3-server", "--revision", "v1.0"]).unwrap();
        assert_eq!(config.revision, "v1.0");
    }

    #[test]
    fn http_layer_flags() {
        let parse = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("bge-m3-server").chain(args.iter().copied()))
        };
        let defaults = parse(&[]).unwrap();
        assert!(defaults.api_key.is_none());
        assert!(defaults.cors_allow_origins.is_empty());
        assert_eq!(defaults.log_format, LogFormat::Text);
        assert_eq!(defaults.max_text_chars, 1_000_000);
        // The deadlines for slow clients, each under a minute by default.
        assert_eq!(defaults.body_timeout, 30);
        assert_eq!(defaults.write_timeout, 30);
        assert_eq!(defaults.header_timeout, 5);
        assert_eq!(defaults.keep_alive, 5);
        assert_eq!(defaults.memory_budget_mib, 1024);
        let limits = defaults.limits();
        assert_eq!(limits.body_timeout, Some(Duration::from_secs(30)));
        assert_eq!(limits.memory_budget_bytes, 1 << 30);
        assert_eq!(
            parse(&["--body-timeout", "0"])
                .unwrap()
                .limits()
                .body_timeout,
            None
        );
        let config = parse(&[
            "--api-key",
            "sk-local",
            "--cors-allow-origin",
            "https://App.example.com, http://localhost:3000",
            "--cors-allow-origin",
            "*",
            "--log-format",
            "json",
            "--max-text-chars",
            "10",
        ])
        .unwrap();
        assert!(config.api_key.as_ref().unwrap().matches("sk-local"));
        assert_eq!(
            config.cors_allow_origins,
            ["https://app.example.com", "http://localhost:3000", "*"]
        );
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.max_text_chars, 10);
        for bad in [
            &["--api-key", ""][..],
            &["--api-key", "two words"],
            &["--cors-allow-origin", "https://app.example.com/"],
            &["--cors-allow-origin", "app.example.com"],
            &["--log-format", "xml"],
            &["--max-text-chars", "0"],
            &["--memory-budget-mib", "0"],
            &["--max-connections", "0"],
            &["--tokenizer-threads", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        // `--help` shows that API_KEY is read, never its value.
        let command = Config::command();
        let api_key = command
            .get_arguments()
            .find(|arg| arg.get_id() == "api_key")
            .unwrap();
        assert!(api_key.is_hide_env_values_set());
    }
}
