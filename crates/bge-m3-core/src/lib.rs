//! BGE-M3 ([BAAI/bge-m3](https://huggingface.co/BAAI/bge-m3)) on
//! [candle](https://github.com/huggingface/candle): the dense vector,
//! the sparse lexical weights and the ColBERT multi-vectors of a text from one forward pass,
//! numerically matching FlagEmbedding's `BGEM3FlagModel`, plus the similarity scores.
//!
//! # Map
//!
//! - [`BgeM3`]: the model. [`BgeM3::load`] reads a model directory (laid out like the Hugging
//!   Face repository) with [`LoadOptions`]; [`BgeM3::encode`] turns texts into one
//!   [`Embedding`] each (dense vector, [`SparseEmbedding`], ColBERT rows), choosing the
//!   [`Outputs`] and lengths with [`EncodeOptions`]; [`BgeM3::compute_score`] scores
//!   (query, passage) pairs with [`ScoreOptions`] into [`PairScores`].
//! - [`score`]: the scoring math as pure functions over slices, with [`ScoreWeights`].
//! - [`queue`]: the scheduler that merges the texts of concurrent requests into forward
//!   passes on the model's own thread, shared by the server and the corpus encoder.
//! - `hub` (cargo feature `hub`): `hub::download` fetches the model from the Hugging Face Hub
//!   into the standard cache and returns the directory to load; `hub::resolve` takes a
//!   directory or a repository id.
//! - [`Tokenizer`] and [`SpecialTokens`]: the model's own `tokenizer.json`, reachable as
//!   [`BgeM3::tokenizer`], with each token's span in its text ([`TextToken`]) and the decoding
//!   of id sequences; [`check_token_ids`] checks pre-tokenized input.
//! - [`BgeM3::output_bytes`]: the memory a text's outputs hold, from its [`TextShape`], for
//!   callers that budget memory before computing.
//! - [`DeviceSpec`], [`parse_dtype`], [`device_name`]: where and in which precision the model
//!   runs; [`Config`]: its `config.json`.
//! - [`Error`] (one enum, its variants naming what failed), [`Result`], and [`Report`] to show
//!   an error with its causes.
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

#![deny(missing_docs)]

mod batch;
mod checks;
mod config;
mod cpu;
mod device;
mod embedding;
mod encoder;
mod error;
mod heads;
#[cfg(feature = "hub")]
pub mod hub;
mod model;
pub mod queue;
pub mod score;
mod sparse_format;
mod tokenize;
mod weights;

pub use candle_core::Device;
pub use checks::{check_batch_size, check_length, check_token_ids};
pub use config::{Config, HiddenAct};
pub use device::{device_name, parse_dtype, DType, DeviceSpec};
pub use embedding::{score_pairs, truncate_dense, Embedding, TextShape};
pub use error::{Error, Report, Result};
pub use heads::SparseEmbedding;
pub use model::{BgeM3, EncodeOptions, LoadOptions, Outputs, ScoreOptions};
pub use score::{PairScores, ScoreWeights};
pub use sparse_format::{SparseFormat, SparseWeights};
pub use tokenize::{SpecialTokens, TextToken, Tokenizer};
