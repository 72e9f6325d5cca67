//! Encodes texts with a local BGE-M3 directory and prints one JSON object shaped like the
//! server's native `/embeddings` response.
//!
//! ```text
//! cargo run --release --example encode -- --model fixtures/models/tiny-pt --colbert "Hello world"
//! cargo run --release --features hub --example encode -- --model BAAI/bge-m3 "Hello world"
//! ```

#![forbid(unsafe_code)]

use std::path::PathBuf;

use bge_m3_core::{BgeM3, DeviceSpec, EncodeOptions, LoadOptions, Outputs};
use clap::Parser;
use serde::{Serialize, Serializer};

/// Encode texts with BGE-M3 and print dense, sparse (and ColBERT) vectors as JSON.
#[derive(Parser)]
struct Args {
    /// Model directory (config.json, tokenizer.json, pytorch_model.bin or model.safetensors,
    /// colbert_linear.pt, sparse_linear.pt), or with the `hub` feature a Hugging Face
    /// repository id such as BAAI/bge-m3 (downloaded into the Hugging Face cache, see the
    /// HF_* variables of `bge_m3_core::hub::HubOptions::from_env`).
    #[arg(long)]
    model: PathBuf,
    /// Also print the ColBERT multi-vectors.
    #[arg(long)]
    colbert: bool,
    /// Truncate inputs to this many tokens, `<s>` and `</s>` included.
    #[arg(long, default_value_t = 8192)]
    max_length: usize,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    /// Encoder precision: f32, f16 or bf16 (default: f32 on CPU, f16 on GPU).
    #[arg(long, value_parser = bge_m3_core::parse_dtype)]
    dtype: Option<bge_m3_core::DType>,
    /// The texts to encode.
    #[arg(required = true)]
    texts: Vec<String>,
}

/// The native `/embeddings` response shape.
#[derive(Serialize)]
struct Response<'a> {
    dense_vecs: Vec<&'a [f32]>,
    sparse_vecs: Vec<TokenWeights>,
    #[serde(skip_serializing_if = "Option::is_none")]
    colbert_vecs: Option<Vec<&'a [Vec<f32>]>>,
    usage: Usage,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

/// Lexical weights as a JSON object `{token: weight}`, in FlagEmbedding's order.
struct TokenWeights(Vec<(String, f32)>);

impl Serialize for TokenWeights {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(token, weight)| (token, weight)))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    #[cfg(feature = "hub")]
    let dir = bge_m3_core::hub::resolve(&args.model, &bge_m3_core::hub::HubOptions::from_env())?;
    #[cfg(not(feature = "hub"))]
    let dir = args.model.clone();
    let model = BgeM3::load(
        &dir,
        &LoadOptions::default()
            .with_device(args.device)
            .with_dtype(args.dtype),
    )?;
    let options = EncodeOptions::default()
        .with_outputs(Outputs {
            dense: true,
            sparse: true,
            colbert: args.colbert,
        })
        .with_max_length(args.max_length);
    let embeddings = model.encode(&args.texts, &options)?;

    let sparse_vecs = embeddings
        .iter()
        .map(|e| {
            model
                .sparse_by_token(e.sparse.as_ref().expect("asked for"))
                .map(TokenWeights)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tokens = embeddings.iter().map(|e| e.tokens).sum();
    let response = Response {
        dense_vecs: embeddings
            .iter()
            .map(|e| e.dense.as_deref().expect("asked for"))
            .collect(),
        sparse_vecs,
        colbert_vecs: args.colbert.then(|| {
            embeddings
                .iter()
                .map(|e| e.colbert.as_deref().expect("asked for"))
                .collect()
        }),
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    println!("{}", serde_json::to_string(&response)?);
    Ok(())
}
