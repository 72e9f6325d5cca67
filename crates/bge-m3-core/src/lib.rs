//! BGE-M3 ([BAAI/bge-m3](https://huggingface.co/BAAI/bge-m3)) on [candle]: the dense vector,
//! the sparse lexical weights and the ColBERT multi-vectors of a text from one forward pass,
//! numerically matching FlagEmbedding's `BGEM3FlagModel`, plus the similarity scores.
//!
//! The main types are [`BgeM3`] (load a model directory, [`BgeM3::encode`],
//! [`BgeM3::compute_score`]), [`EncodeOptions`] and [`Embedding`]; the scoring math is in
//! [`score`] as pure functions. With the cargo feature `hub`, `hub::download` fetches the
//! model from the Hugging Face Hub into the standard cache and returns the directory to load.
//!
//! ```
//! use bge_m3_core::{BgeM3, EncodeOptions, LoadOptions, Outputs};
//!
//! # fn main() -> bge_m3_core::Result<()> {
//! # let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/tiny-pt");
//! // `dir` holds config.json, tokenizer.json, pytorch_model.bin (or model.safetensors),
//! // colbert_linear.pt and sparse_linear.pt, as in the Hugging Face repository.
//! let model = BgeM3::load(dir, &LoadOptions::default())?;
//! let options = EncodeOptions::default().with_outputs(Outputs::ALL);
//! let out = model.encode(&["What is BGE M3?", "Defination of BM25"], &options)?;
//!
//! let dense = out[0].dense.as_ref().unwrap();
//! assert_eq!(dense.len(), model.dense_dim());
//! let sparse = model.sparse_by_token(out[0].sparse.as_ref().unwrap())?;
//! assert!(sparse.iter().all(|(_, weight)| *weight > 0.0));
//! let colbert = out[0].colbert.as_ref().unwrap();
//! assert_eq!(colbert.len(), out[0].tokens + 1); // one row per token, plus `</s>`
//! # Ok(())
//! # }
//! ```

mod batch;
mod config;
mod cpu;
mod device;
mod encoder;
mod error;
mod heads;
#[cfg(feature = "hub")]
pub mod hub;
mod model;
pub mod queue;
pub mod score;
mod tokenize;
mod weights;

pub use candle_core::{DType, Device};
pub use config::{Config, HiddenAct};
pub use device::{device_name, parse_dtype, DeviceSpec};
pub use error::{Error, Report, Result};
pub use heads::SparseEmbedding;
pub use model::{BgeM3, Embedding, EncodeOptions, LoadOptions, Outputs, ScoreOptions};
pub use score::{PairScores, ScoreWeights};
pub use tokenize::{check_token_ids, SpecialTokens, Tokenizer};
