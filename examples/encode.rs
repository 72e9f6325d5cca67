//! Encodes texts with a local BGE-M3 directory and prints one JSON object shaped like the
//! server's native `/embeddings` response.
//!
//! ```text
//! cargo run --release --example encode -- --model fixtures/models/tiny-pt --colbert "Hello world"
//! ```

use std::path::PathBuf;

use bge_m3_core::{BgeM3, DeviceSpec, EncodeOptions, LoadOptions, Outputs};
use clap::Parser;
use serde_json::{json, Map, Value};

/// Encode texts with BGE-M3 and print dense, sparse (and ColBERT) vectors as JSON.
#[derive(Parser)]
struct Args {
    /// Model directory (config.json, tokenizer.json, pytorch_model.bin or model.safetensors,
    /// colbert_linear.pt, sparse_linear.pt).
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
    #[arg(long, value_parser = bge_m3_core::device::parse_dtype)]
    dtype: Option<bge_m3_core::DType>,
    /// The texts to encode.
    #[arg(required = true)]
    texts: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let model = BgeM3::load(
        &args.model,
        &LoadOptions {
            device: args.device,
            dtype: args.dtype,
        },
    )?;
    let options = EncodeOptions {
        outputs: Outputs {
            dense: true,
            sparse: true,
            colbert: args.colbert,
        },
        max_length: args.max_length,
        ..EncodeOptions::default()
    };
    let embeddings = model.encode(&args.texts, &options)?;

    let mut sparse_vecs = Vec::with_capacity(embeddings.len());
    for embedding in &embeddings {
        let by_token = model.sparse_by_token(embedding.sparse.as_ref().expect("asked for"))?;
        let map: Map<String, Value> = by_token.into_iter().map(|(t, w)| (t, json!(w))).collect();
        sparse_vecs.push(Value::Object(map));
    }
    let tokens: usize = embeddings.iter().map(|e| e.tokens).sum();
    let mut out = Map::new();
    out.insert(
        "dense_vecs".into(),
        json!(embeddings.iter().map(|e| &e.dense).collect::<Vec<_>>()),
    );
    out.insert("sparse_vecs".into(), Value::Array(sparse_vecs));
    if args.colbert {
        out.insert(
            "colbert_vecs".into(),
            json!(embeddings.iter().map(|e| &e.colbert).collect::<Vec<_>>()),
        );
    }
    out.insert(
        "usage".into(),
        json!({"prompt_tokens": tokens, "total_tokens": tokens}),
    );
    println!("{}", Value::Object(out));
    Ok(())
}
