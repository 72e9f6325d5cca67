//! Finding and opening the files of a BAAI/bge-m3 snapshot as Hugging Face publishes it.
//!
//! The published repository holds `config.json`, `tokenizer.json`, the encoder as
//! `pytorch_model.bin` (a torch zip pickle, fp32, keys without a `roberta.` prefix) and the two
//! heads as `colbert_linear.pt` and `sparse_linear.pt` (torch-saved `{weight, bias}` state dicts
//! in fp16). A `model.safetensors`, where a user has converted one, is preferred.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{Linear, VarBuilder};

use crate::{Error, Result};

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const SAFETENSORS_FILE: &str = "model.safetensors";
pub const PYTORCH_FILE: &str = "pytorch_model.bin";
pub const COLBERT_FILE: &str = "colbert_linear.pt";
pub const SPARSE_FILE: &str = "sparse_linear.pt";

/// The files the model is loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub encoder: EncoderWeights,
    pub colbert: PathBuf,
    pub sparse: PathBuf,
}

/// Where the encoder's weights are, in which format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderWeights {
    Safetensors(PathBuf),
    Pytorch(PathBuf),
}

impl EncoderWeights {
    pub fn path(&self) -> &Path {
        match self {
            EncoderWeights::Safetensors(path) | EncoderWeights::Pytorch(path) => path,
        }
    }
}

impl ModelFiles {
    /// Finds every file in a model directory, or names the first one that is missing.
    pub fn locate(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::MissingDirectory(dir.to_path_buf()));
        }
        let require = |file: &str| {
            let path = dir.join(file);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::MissingFile {
                    file: file.to_string(),
                    dir: dir.to_path_buf(),
                })
            }
        };
        let encoder = if dir.join(SAFETENSORS_FILE).is_file() {
            EncoderWeights::Safetensors(dir.join(SAFETENSORS_FILE))
        } else if dir.join(PYTORCH_FILE).is_file() {
            EncoderWeights::Pytorch(dir.join(PYTORCH_FILE))
        } else {
            return Err(Error::MissingFile {
                file: format!("{SAFETENSORS_FILE} or {PYTORCH_FILE}"),
                dir: dir.to_path_buf(),
            });
        };
        Ok(Self {
            config: require(CONFIG_FILE)?,
            tokenizer: require(TOKENIZER_FILE)?,
            encoder,
            colbert: require(COLBERT_FILE)?,
            sparse: require(SPARSE_FILE)?,
        })
    }
}

/// A `VarBuilder` over the encoder weights that reads each tensor when the model asks for it,
/// so that at most one full copy of the weights (the model's own) is ever in memory:
/// safetensors are memory-mapped, and the torch pickle is read tensor by tensor from its zip.
///
/// Keys are accepted with or without the `roberta.` prefix that `XLMRobertaFor*` checkpoints
/// carry.
pub fn encoder_var_builder(
    weights: &EncoderWeights,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    let path = weights.path();
    let vb = match weights {
        // SAFETY: the file is mapped read-only; like every memory-mapped loader we rely on
        // nobody truncating a model file while the server starts.
        EncoderWeights::Safetensors(_) => unsafe {
            VarBuilder::from_mmaped_safetensors(&[path], dtype, device)
        },
        EncoderWeights::Pytorch(_) => VarBuilder::from_pth(path, dtype, device),
    }
    .map_err(|e| Error::invalid_file(path, e))?;
    if !vb.contains_tensor("embeddings.word_embeddings.weight")
        && vb.contains_tensor("roberta.embeddings.word_embeddings.weight")
    {
        return Ok(vb.pp("roberta"));
    }
    Ok(vb)
}

/// Loads one of the `.pt` heads (a torch-saved `nn.Linear` state dict, fp16 in the published
/// model) as an f32 `Linear` with `in_features` inputs.
pub fn load_linear_head(path: &Path, in_features: usize, device: &Device) -> Result<Linear> {
    let tensors = candle_core::pickle::PthTensors::new(path, None)
        .map_err(|e| Error::invalid_file(path, e))?;
    let get = |name: &str| {
        tensors
            .get(name)
            .map_err(|e| Error::invalid_file(path, e))?
            .ok_or_else(|| Error::InvalidFile {
                path: path.to_path_buf(),
                message: format!("no `{name}` tensor in the state dict"),
                source: None,
            })?
            .to_dtype(DType::F32)?
            .to_device(device)
            .map_err(Error::from)
    };
    let weight = get("weight")?;
    let bias = get("bias")?;
    let (out_features, got_in) = weight.dims2().map_err(|e| Error::invalid_file(path, e))?;
    if got_in != in_features || bias.dims() != [out_features] {
        return Err(Error::InvalidFile {
            path: path.to_path_buf(),
            message: format!(
                "expected a Linear({in_features}, N) state dict, got weight {:?} and bias {:?}",
                weight.dims(),
                bias.dims()
            ),
            source: None,
        });
    }
    Ok(Linear::new(weight, Some(bias)))
}
