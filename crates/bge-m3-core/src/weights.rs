//! Finding and opening the files of a BAAI/bge-m3 snapshot as Hugging Face publishes it.
//!
//! The published repository holds `config.json`, `tokenizer.json`, the encoder as
//! `pytorch_model.bin` (a torch zip pickle, fp32, keys without a `roberta.` prefix) and the two
//! heads as `colbert_linear.pt` and `sparse_linear.pt` (torch-saved `{weight, bias}` state dicts
//! in fp16). A `model.safetensors`, where a user has converted one, is preferred.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::{Error, Result};

pub(crate) const CONFIG_FILE: &str = "config.json";
pub(crate) const TOKENIZER_FILE: &str = "tokenizer.json";
pub(crate) const SAFETENSORS_FILE: &str = "model.safetensors";
pub(crate) const PYTORCH_FILE: &str = "pytorch_model.bin";
pub(crate) const COLBERT_FILE: &str = "colbert_linear.pt";
pub(crate) const SPARSE_FILE: &str = "sparse_linear.pt";

/// The files the model is loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModelFiles {
    pub(crate) config: PathBuf,
    pub(crate) tokenizer: PathBuf,
    pub(crate) encoder: EncoderWeights,
    pub(crate) colbert: PathBuf,
    pub(crate) sparse: PathBuf,
}

/// Where the encoder's weights are, in which format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EncoderWeights {
    Safetensors(PathBuf),
    Pytorch(PathBuf),
}

impl EncoderWeights {
    pub(crate) fn path(&self) -> &Path {
        match self {
            EncoderWeights::Safetensors(path) | EncoderWeights::Pytorch(path) => path,
        }
    }
}

impl ModelFiles {
    /// Finds every file in a model directory, or names the first one that is missing.
    pub(crate) fn locate(dir: &Path) -> Result<Self> {
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

/// A `VarBuilder` over the encoder weights that reads each tensor from the file when the model
/// asks for it, straight into the buffer that holds it afterwards ([`TensorFile`]). Nothing is
/// memory-mapped, so the file's pages never count towards the process's memory, and loading
/// holds one copy of the weights plus at most the tensor being converted.
///
/// Keys are accepted with or without the `roberta.` prefix that `XLMRobertaFor*` checkpoints
/// carry.
///
/// Also returns the file itself, for the readers that bypass the `VarBuilder` (the word
/// embeddings read a chunk at a time into int8).
pub(crate) fn encoder_var_builder(
    weights: &EncoderWeights,
    dtype: DType,
    device: &Device,
) -> Result<(VarBuilder<'static>, Arc<TensorFile>)> {
    let path = weights.path();
    let file = Arc::new(TensorFile::open(weights).map_err(|e| Error::invalid_file(path, e))?);
    let vb = VarBuilder::from_backend(Box::new(SharedFile(file.clone())), dtype, device.clone());
    if !vb.contains_tensor("embeddings.word_embeddings.weight")
        && vb.contains_tensor("roberta.embeddings.word_embeddings.weight")
    {
        return Ok((vb.pp("roberta"), file));
    }
    Ok((vb, file))
}

/// A [`TensorFile`] shared between a `VarBuilder` and the loader.
struct SharedFile(Arc<TensorFile>);

impl candle_nn::var_builder::SimpleBackend for SharedFile {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.get(shape, name, init, dtype, device)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// The tensors of a `model.safetensors` or `pytorch_model.bin`, read one at a time with plain
/// file reads into a buffer of the tensor's size, so that a tensor stored in the dtype it is
/// used in (f32 on the CPU) is never copied after it is read.
pub(crate) struct TensorFile {
    path: PathBuf,
    format: Format,
}

enum Format {
    Safetensors {
        metadata: safetensors::tensor::Metadata,
        /// Offset of the data section (after the header).
        data_start: u64,
        file: Mutex<File>,
    },
    Pytorch {
        infos: HashMap<String, candle_core::pickle::TensorInfo>,
        zip: Mutex<zip::ZipArchive<BufReader<File>>>,
    },
}

impl TensorFile {
    /// Opens the file and reads its index of tensors (not their data).
    pub(crate) fn open(weights: &EncoderWeights) -> candle_core::Result<Self> {
        let path = weights.path().to_path_buf();
        let format = match weights {
            EncoderWeights::Safetensors(_) => {
                let mut file = File::open(&path)?;
                let len = file.metadata()?.len();
                let mut n = [0u8; 8];
                file.read_exact(&mut n)
                    .map_err(|_| candle_core::Error::Msg("not a safetensors file".into()))?;
                let n = u64::from_le_bytes(n);
                if n > 100_000_000 || 8 + n > len {
                    candle_core::bail!("not a safetensors file: header of {n} bytes");
                }
                let mut header = vec![0u8; n as usize];
                file.read_exact(&mut header)?;
                let metadata: safetensors::tensor::Metadata = serde_json::from_slice(&header)
                    .map_err(|e| candle_core::Error::Msg(format!("safetensors header: {e}")))?;
                if 8 + n + metadata.data_len() as u64 != len {
                    candle_core::bail!(
                        "the safetensors header describes {} bytes of data, the file has {}",
                        metadata.data_len(),
                        len - 8 - n
                    );
                }
                Format::Safetensors {
                    metadata,
                    data_start: 8 + n,
                    file: Mutex::new(file),
                }
            }
            EncoderWeights::Pytorch(_) => {
                let infos = candle_core::pickle::read_pth_tensor_info(&path, false, None)?
                    .into_iter()
                    .map(|info| (info.name.clone(), info))
                    .collect();
                let zip = zip::ZipArchive::new(BufReader::new(File::open(&path)?))
                    .map_err(candle_core::Error::wrap)?;
                Format::Pytorch {
                    infos,
                    zip: Mutex::new(zip),
                }
            }
        };
        Ok(Self { path, format })
    }

    /// The tensor `name` on the CPU in the dtype it is stored in, or `None` if the file has
    /// no such tensor.
    pub(crate) fn read(&self, name: &str) -> candle_core::Result<Option<Tensor>> {
        self.with_reader(name, |reader, dtype, shape| {
            read_tensor(reader, dtype, shape)
        })
    }

    /// Reads the 2-D tensor `name`, of `shape`, in chunks of at most `rows` rows converted to
    /// f32, and hands each chunk, in order, to `chunk` with the index of its first row: a large
    /// table stored in f32 is never held whole when the caller keeps it in another form.
    pub(crate) fn read_rows(
        &self,
        name: &str,
        shape: (usize, usize),
        rows: usize,
        mut chunk: impl FnMut(usize, &[f32]),
    ) -> candle_core::Result<()> {
        let found = self.with_reader(name, |reader, dtype, dims| {
            if dims != [shape.0, shape.1] {
                candle_core::bail!(
                    "shape mismatch for {name}: the file has {dims:?}, the model expects {:?}",
                    [shape.0, shape.1]
                );
            }
            let rows = rows.max(1);
            let mut first = 0;
            while first < shape.0 {
                let n = rows.min(shape.0 - first);
                let values = read_tensor(reader, dtype, &[n, shape.1])?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                chunk(first, &values);
                first += n;
            }
            Ok(())
        })?;
        found.ok_or_else(|| candle_core::Error::CannotFindTensor {
            path: name.to_string(),
        })
    }

    /// Calls `read` with a reader at the start of the data of `name` (contiguous, in the dtype
    /// and shape it is stored in), or returns `None` if the file has no such tensor.
    fn with_reader<T>(
        &self,
        name: &str,
        read: impl FnOnce(&mut dyn Read, DType, &[usize]) -> candle_core::Result<T>,
    ) -> candle_core::Result<Option<T>> {
        match &self.format {
            Format::Safetensors {
                metadata,
                data_start,
                file,
            } => {
                let Some(info) = metadata.info(name) else {
                    return Ok(None);
                };
                let dtype = safetensors_dtype(info.dtype)?;
                let (start, end) = info.data_offsets;
                let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
                file.seek(SeekFrom::Start(data_start + start as u64))?;
                read(
                    &mut file.by_ref().take((end - start) as u64),
                    dtype,
                    &info.shape,
                )
                .map(Some)
            }
            Format::Pytorch { infos, zip } => {
                let Some(info) = infos.get(name) else {
                    return Ok(None);
                };
                if !info.layout.is_contiguous() {
                    // Strided storage (rare in checkpoints): candle's reader handles it, and
                    // the tensor is read again from its contiguous copy.
                    let Some(tensor) =
                        candle_core::pickle::PthTensors::new(&self.path, None)?.get(name)?
                    else {
                        return Ok(None);
                    };
                    let tensor = tensor.contiguous()?;
                    let bytes = tensor_bytes(&tensor)?;
                    return read(&mut bytes.as_slice(), tensor.dtype(), tensor.dims()).map(Some);
                }
                let mut zip = zip.lock().unwrap_or_else(PoisonError::into_inner);
                let mut entry = zip.by_name(&info.path).map_err(candle_core::Error::wrap)?;
                let skip = (info.layout.start_offset() * info.dtype.size_in_bytes()) as u64;
                std::io::copy(&mut entry.by_ref().take(skip), &mut std::io::sink())?;
                read(&mut entry, info.dtype, info.layout.dims()).map(Some)
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        match &self.format {
            Format::Safetensors { metadata, .. } => metadata.info(name).is_some(),
            Format::Pytorch { infos, .. } => infos.contains_key(name),
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for TensorFile {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, device)?;
        if tensor.shape() != &shape {
            candle_core::bail!(
                "shape mismatch for {name}: the file has {:?}, the model expects {:?}",
                tensor.dims(),
                shape.dims()
            );
        }
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self
            .read(name)?
            .ok_or_else(|| candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            })?;
        tensor.to_dtype(dtype)?.to_device(device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.contains(name)
    }
}

fn safetensors_dtype(dtype: safetensors::Dtype) -> candle_core::Result<DType> {
    Ok(match dtype {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::F16 => DType::F16,
        safetensors::Dtype::BF16 => DType::BF16,
        safetensors::Dtype::F64 => DType::F64,
        other => candle_core::bail!("unsupported dtype {other:?} in a safetensors file"),
    })
}

/// The little-endian bytes of a contiguous CPU tensor of f32, f64, f16 or bf16.
fn tensor_bytes(tensor: &Tensor) -> candle_core::Result<Vec<u8>> {
    let flat = tensor.flatten_all()?;
    Ok(match tensor.dtype() {
        DType::F32 => flat
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F64 => flat
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F16 => flat
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::BF16 => flat
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        other => candle_core::bail!("unsupported dtype {other:?} for encoder weights"),
    })
}

/// Reads a little-endian tensor of `dtype` and `shape` from `reader` into a buffer of its
/// size.
fn read_tensor(
    reader: &mut (impl Read + ?Sized),
    dtype: DType,
    shape: &[usize],
) -> candle_core::Result<Tensor> {
    let numel: usize = shape.iter().product();
    /// Reads `numel` values of `T` into a zeroed buffer (freshly mapped zero pages for a big
    /// one, so the zeroing costs nothing).
    fn values<T: candle_core::WithDType + Default + bytemuck::Pod>(
        reader: &mut (impl Read + ?Sized),
        numel: usize,
        shape: &[usize],
    ) -> candle_core::Result<Tensor> {
        let mut data = vec![T::default(); numel];
        // Plain numbers (f32, f64, f16, bf16): every byte pattern is a value.
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut data);
        reader
            .read_exact(bytes)
            .map_err(|e| candle_core::Error::Msg(format!("tensor data cut short ({e})")))?;
        Tensor::from_vec(data, shape, &Device::Cpu)
    }
    #[cfg(not(target_endian = "little"))]
    candle_core::bail!("model files are little-endian; this machine is not");
    match dtype {
        DType::F32 => values::<f32>(reader, numel, shape),
        DType::F64 => values::<f64>(reader, numel, shape),
        DType::F16 => values::<half::f16>(reader, numel, shape),
        DType::BF16 => values::<half::bf16>(reader, numel, shape),
        other => candle_core::bail!("unsupported dtype {other:?} for encoder weights"),
    }
}

/// Loads one of the `.pt` heads (a torch-saved `nn.Linear` state dict, fp16 in the published
/// model) as an f32 `Linear` with `in_features` inputs.
pub(crate) fn load_linear_head(path: &Path, in_features: usize, device: &Device) -> Result<Linear> {
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
