//! [`Model`]: the loaded model and its queue, as the Python class `bge_m3._bge_m3.Model` on
//! which `bge_m3.BGEM3FlagModel` is built.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use bge_m3_core::hub::{self, HubOptions, TerminalProgress};
use bge_m3_core::queue::Queue;
use bge_m3_core::{
    check_batch_size, check_length, device_name, parse_dtype, score_pairs, BgeM3, DeviceSpec,
    Error, LoadOptions, Outputs, PairScores, ScoreWeights,
};
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::convert::{embeddings_to_python, Encoded};
use crate::errors::{count, flag, guard, numbers, optional_count, to_py, type_name};
use crate::pipeline::Chunks;

/// The default of `max_batch_tokens`: the corpus encoder's and the server's.
const MAX_BATCH_TOKENS: usize = 16384;

/// BGE-M3 loaded from a directory or the Hugging Face Hub, with the queue that runs its
/// forward passes on a thread of its own.
///
/// `Model(model_name_or_path, *, threads=None, dtype=None, devices=None,
/// max_batch_tokens=16384, cache_dir=None)`: `model_name_or_path` is a model directory or a
/// Hub repository id (`owner/name`, fetched into the Hugging Face cache, or `cache_dir`;
/// `HF_HOME`, `HF_HUB_CACHE`, `HF_TOKEN`, `HF_ENDPOINT` and `HF_HUB_OFFLINE` as in
/// huggingface_hub). `threads`: the model's compute threads (default: one per CPU). `dtype`:
/// `"f32"` (default on the CPU), `"f16"`, `"bf16"` or `"int8"` (the CPU only). `devices`: `"cpu"`, `"cuda:N"` or
/// `"auto"`. `max_batch_tokens`: the most tokens in one forward pass.
#[pyclass(module = "bge_m3._bge_m3", frozen)]
pub(crate) struct Model {
    model: Arc<BgeM3>,
    queue: Queue,
    path: PathBuf,
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (
        model_name_or_path, *, threads=None, dtype=None, devices=None,
        max_batch_tokens=None, cache_dir=None
    ))]
    fn new(
        py: Python<'_>,
        model_name_or_path: &Bound<'_, PyAny>,
        threads: Option<&Bound<'_, PyAny>>,
        dtype: Option<&Bound<'_, PyAny>>,
        devices: Option<&Bound<'_, PyAny>>,
        max_batch_tokens: Option<&Bound<'_, PyAny>>,
        cache_dir: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let source = path("model_name_or_path", model_name_or_path)?;
        let mut options = LoadOptions::default().with_threads(optional_count("threads", threads)?);
        if let Some(dtype) = optional_text("dtype", dtype)? {
            options = options.with_dtype(parse_dtype(&dtype).map_err(to_py)?);
        }
        if let Some(devices) = optional_text("devices", devices)? {
            options = options.with_device(devices.parse::<DeviceSpec>().map_err(to_py)?);
        }
        let max_batch_tokens =
            optional_count("max_batch_tokens", max_batch_tokens)?.unwrap_or(MAX_BATCH_TOKENS);
        if max_batch_tokens == 0 {
            return Err(PyValueError::new_err(
                "invalid `max_batch_tokens`: must be at least 1, got 0",
            ));
        }
        let mut hub_options = HubOptions::from_env().with_progress(TerminalProgress);
        if let Some(cache_dir) = cache_dir.filter(|dir| !dir.is_none()) {
            hub_options = hub_options.with_cache_dir(path("cache_dir", cache_dir)?);
        }
        options.check().map_err(to_py)?;
        py.detach(|| {
            guard(|| {
                let path = hub::resolve(&source, &hub_options).map_err(|e| match e {
                    Error::MissingDirectory(path) => PyFileNotFoundError::new_err(format!(
                        "{} is neither a model directory (no such directory) nor a Hugging \
                         Face Hub repository id (owner/name)",
                        path.display()
                    )),
                    other => to_py(other),
                })?;
                let model = Arc::new(BgeM3::load(&path, &options).map_err(to_py)?);
                let queue =
                    Queue::spawn(model.clone(), max_batch_tokens, Arc::new(())).map_err(|e| {
                        PyRuntimeError::new_err(format!("cannot start the model's thread: {e}"))
                    })?;
                Ok(Model { model, queue, path })
            })
        })
    }

    /// Encodes `sentences` (a list or tuple of str) and returns `(dense, sparse, colbert)`:
    /// a float32 array `(n, dim)`, a list of dicts from token-id strings to weights, a list of
    /// float32 arrays `(tokens - 1, dim)` (no row for `<s>`); `None` for an output not asked
    /// for. `truncate_dim` keeps the first values of the dense and ColBERT vectors, made unit
    /// length again. `progress(n)` is called as each chunk of `batch_size` sentences is done.
    #[pyo3(signature = (
        sentences, *, batch_size, max_length, return_dense, return_sparse,
        return_colbert_vecs, truncate_dim=None, progress=None
    ))]
    #[allow(clippy::too_many_arguments)] // Python's keywords, one per FlagEmbedding argument
    fn encode<'py>(
        &self,
        py: Python<'py>,
        sentences: &Bound<'py, PyAny>,
        batch_size: &Bound<'py, PyAny>,
        max_length: &Bound<'py, PyAny>,
        return_dense: &Bound<'py, PyAny>,
        return_sparse: &Bound<'py, PyAny>,
        return_colbert_vecs: &Bound<'py, PyAny>,
        truncate_dim: Option<&Bound<'py, PyAny>>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Encoded<'py>> {
        guard(|| {
            let texts = strings("sentences", sentences)?;
            let batch_size = check_batch_size(count("batch_size", batch_size)?).map_err(to_py)?;
            let max_length = count("max_length", max_length)?;
            check_length("max_length", max_length, self.model.max_length()).map_err(to_py)?;
            let truncate_dim = optional_count("truncate_dim", truncate_dim)?;
            if truncate_dim == Some(0) {
                return Err(PyValueError::new_err(
                    "invalid `truncate_dim`: must be at least 1, got 0",
                ));
            }
            let outputs = Outputs {
                dense: flag("return_dense", return_dense)?,
                sparse: flag("return_sparse", return_sparse)?,
                colbert: flag("return_colbert_vecs", return_colbert_vecs)?,
            };
            if outputs
                == (Outputs {
                    dense: false,
                    sparse: false,
                    colbert: false,
                })
            {
                return Err(PyValueError::new_err(
                    "invalid `return_dense`, `return_sparse`, `return_colbert_vecs`: at least \
                     one output must be asked for",
                ));
            }
            let model = &self.model;
            let embeddings = self.chunks(batch_size, outputs, batch_size, progress).run(
                py,
                &texts,
                |chunk| model.tokenize(chunk, max_length),
            )?;
            let widths = (self.model.dense_dim(), self.model.colbert_dim());
            embeddings_to_python(py, embeddings, outputs, widths, truncate_dim)
        })
    }

    /// Scores each `(query, passage)` of `sentence_pairs` (a list or tuple of pairs of str)
    /// on its own, returning FlagEmbedding's five lists of scores in a dict: `colbert`,
    /// `sparse`, `dense`, `sparse+dense`, `colbert+sparse+dense`.
    #[pyo3(signature = (
        sentence_pairs, *, batch_size, max_query_length, max_passage_length,
        weights_for_different_modes, progress=None
    ))]
    #[allow(clippy::too_many_arguments)] // Python's keywords, one per FlagEmbedding argument
    fn compute_score<'py>(
        &self,
        py: Python<'py>,
        sentence_pairs: &Bound<'py, PyAny>,
        batch_size: &Bound<'py, PyAny>,
        max_query_length: &Bound<'py, PyAny>,
        max_passage_length: &Bound<'py, PyAny>,
        weights_for_different_modes: &Bound<'py, PyAny>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            let pairs = pairs("sentence_pairs", sentence_pairs)?;
            let batch_size = check_batch_size(count("batch_size", batch_size)?).map_err(to_py)?;
            let longest = self.model.max_length();
            let max_query_length = count("max_query_length", max_query_length)?;
            check_length("max_query_length", max_query_length, longest).map_err(to_py)?;
            let max_passage_length = count("max_passage_length", max_passage_length)?;
            check_length("max_passage_length", max_passage_length, longest).map_err(to_py)?;
            let weights = numbers("weights_for_different_modes", weights_for_different_modes)?;
            let weights: [f32; 3] = weights.try_into().map_err(|w: Vec<f32>| {
                PyValueError::new_err(format!(
                    "invalid `weights_for_different_modes`: three weights (dense, sparse, \
                     colbert) are needed, got {}",
                    w.len()
                ))
            })?;
            let weights = ScoreWeights::try_from(weights).map_err(to_py)?;
            // Each chunk's queries, then its passages: the texts of one request.
            let tokenizer = self.model.tokenizer();
            let embeddings = self
                .chunks(batch_size, Outputs::ALL, batch_size, progress)
                .run(py, &pairs, |chunk| {
                    let queries: Vec<&str> = chunk.iter().map(|(q, _)| q.as_str()).collect();
                    let passages: Vec<&str> = chunk.iter().map(|(_, p)| p.as_str()).collect();
                    let mut sequences = tokenizer.encode_batch(&queries, max_query_length)?;
                    sequences.extend(tokenizer.encode_batch(&passages, max_passage_length)?);
                    Ok(sequences)
                })?;
            let mut queries = Vec::with_capacity(pairs.len());
            let mut passages = Vec::with_capacity(pairs.len());
            let mut embeddings = embeddings.into_iter();
            for chunk in pairs.chunks(batch_size.get()) {
                queries.extend(embeddings.by_ref().take(chunk.len()));
                passages.extend(embeddings.by_ref().take(chunk.len()));
            }
            let scores = score_pairs(&queries, &passages, weights).map_err(to_py)?;
            // FlagEmbedding's keys, in its order.
            let out = PyDict::new(py);
            let column = |score: fn(&PairScores) -> f32| {
                PyList::new(py, scores.iter().map(|s| f64::from(score(s))))
            };
            out.set_item("colbert", column(|s| s.colbert)?)?;
            out.set_item("sparse", column(|s| s.sparse)?)?;
            out.set_item("dense", column(|s| s.dense)?)?;
            out.set_item("sparse+dense", column(|s| s.sparse_dense)?)?;
            out.set_item("colbert+sparse+dense", column(|s| s.colbert_sparse_dense)?)?;
            Ok(out)
        })
    }

    /// The string of each token id, each decoded on its own (FlagEmbedding's
    /// `convert_id_to_token`: `▁What` is `What`); an id outside the vocabulary is `""`, as
    /// Hugging Face's tokenizer decodes it.
    fn decode_ids(&self, ids: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
        guard(|| {
            let ids: Vec<Bound<'_, PyAny>> = ids.extract()?;
            let ids = ids
                .iter()
                .map(|id| {
                    let id = count("lexical_weights", id)?;
                    u32::try_from(id).map_err(|_| {
                        PyValueError::new_err(format!(
                            "invalid `lexical_weights`: {id} is not a token id"
                        ))
                    })
                })
                .collect::<PyResult<Vec<u32>>>()?;
            let tokenizer = self.model.tokenizer();
            ids.iter()
                .map(|&id| tokenizer.decode_one(id).map_err(to_py))
                .collect()
        })
    }

    /// Width of the dense vectors.
    #[getter]
    fn dense_dim(&self) -> usize {
        self.model.dense_dim()
    }

    /// Width of the ColBERT vectors.
    #[getter]
    fn colbert_dim(&self) -> usize {
        self.model.colbert_dim()
    }

    /// The longest input in tokens, `<s>` and `</s>` included.
    #[getter]
    fn max_length(&self) -> usize {
        self.model.max_length()
    }

    /// Number of token ids.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    /// Threads of the model's forward passes.
    #[getter]
    fn threads(&self) -> usize {
        self.model.threads()
    }

    /// Where the model runs: `cpu`, `cuda` or `cuda:N`.
    #[getter]
    fn device(&self) -> String {
        device_name(self.model.device())
    }

    /// The encoder's precision: `f32`, `f16`, `bf16` or `int8`.
    #[getter]
    fn dtype(&self) -> String {
        self.model.dtype().as_str().to_string()
    }

    /// The model directory that was loaded (a snapshot in the Hub cache for a repository id).
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }
}

impl Model {
    fn chunks<'a>(
        &'a self,
        size: NonZeroUsize,
        outputs: Outputs,
        batch_size: NonZeroUsize,
        progress: Option<&'a Bound<'a, PyAny>>,
    ) -> Chunks<'a> {
        Chunks {
            queue: &self.queue,
            size,
            outputs,
            batch_size,
            progress,
        }
    }
}

/// A str or an `os.PathLike`, or a `TypeError` naming `argument`.
fn path(argument: &str, value: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    value.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "`{argument}` must be a str or a path, got {}",
            type_name(value)
        ))
    })
}

/// An optional str, or a `TypeError` naming `argument`.
fn optional_text(argument: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<String>> {
    value
        .filter(|v| !v.is_none())
        .map(|v| {
            v.extract().map_err(|_| {
                PyTypeError::new_err(format!("`{argument}` must be a str, got {}", type_name(v)))
            })
        })
        .transpose()
}

/// A list or tuple of str, each copied out so that the GIL can be released.
fn strings(argument: &str, value: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    sequence(argument, value, "a list of str")?
        .iter()
        .enumerate()
        .map(|(i, item)| text(argument, i, &item))
        .collect()
}

/// A list or tuple of (str, str) pairs.
fn pairs(argument: &str, value: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    sequence(argument, value, "a list of (query, passage) pairs")?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let pair = sequence(
                &format!("{argument}[{i}]"),
                &item,
                "a (query, passage) pair",
            )?;
            if pair.len() != 2 {
                return Err(PyValueError::new_err(format!(
                    "invalid `{argument}[{i}]`: a pair has 2 texts, this one has {}",
                    pair.len()
                )));
            }
            let query = text(&format!("{argument}[{i}]"), 0, &pair.get_item(0)?)?;
            let passage = text(&format!("{argument}[{i}]"), 1, &pair.get_item(1)?)?;
            Ok((query, passage))
        })
        .collect()
}

/// `value` as a tuple of its items when it is a list or a tuple.
fn sequence<'py>(
    argument: &str,
    value: &Bound<'py, PyAny>,
    expected: &str,
) -> PyResult<Bound<'py, PyTuple>> {
    if let Ok(list) = value.cast::<PyList>() {
        return Ok(list.to_tuple());
    }
    if let Ok(tuple) = value.cast::<PyTuple>() {
        return Ok(tuple.clone());
    }
    Err(PyTypeError::new_err(format!(
        "`{argument}` must be {expected}, got {}",
        type_name(value)
    )))
}

/// Item `i` of `argument`, which must be a str.
fn text(argument: &str, i: usize, item: &Bound<'_, PyAny>) -> PyResult<String> {
    item.cast::<PyString>()
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "`{argument}[{i}]` must be a str, got {}",
                type_name(item)
            ))
        })?
        .extract()
}
