//! [`BgeM3`]: the model, from a snapshot directory to embeddings and scores.

use std::path::Path;
use std::time::Instant;

use candle_core::Device;

use crate::batch::HiddenStates;
use crate::checks::{check_batch_size, check_length, check_token_ids};
use crate::config::Config;
use crate::device::{default_dtype, DType, DeviceSpec};
use crate::embedding::{score_pairs, Embedding, TextShape};
use crate::encoder::XlmRobertaEncoder;
use crate::heads::{dense_vectors, per_sequence, ColbertHead, SparseEmbedding, SparseHead};
use crate::score::{PairScores, ScoreWeights};
use crate::tokenize::Tokenizer;
use crate::weights::{encoder_var_builder, ModelFiles};
use crate::{Error, Result};

/// How to load the model: [`BgeM3::load`]'s options.
///
/// Built from [`LoadOptions::default`] with the `with_*` methods, so that a new option can be
/// added without breaking callers:
///
/// ```
/// use bge_m3_core::{DType, DeviceSpec, LoadOptions};
///
/// let options = LoadOptions::default()
///     .with_device(DeviceSpec::Cpu)
///     .with_dtype(DType::F32)
///     .with_threads(4);
/// assert_eq!(options.threads, Some(4));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Where to run. Default: [`DeviceSpec::Auto`].
    pub device: DeviceSpec,
    /// Precision of the encoder. Default (`None`): f32 on the CPU, f16 on a GPU.
    /// [`DType::Int8`] runs on the CPU only. The heads and the normalisation always run in
    /// f32.
    pub dtype: Option<DType>,
    /// Threads of the model's own compute pool, which runs every forward pass (and the packing
    /// of the weights at load). Default (`None`): one per CPU the process may use. The pool is
    /// the model's alone, so that other parallel work of the process (tokenization, which
    /// uses rayon's global pool) never queues in front of a pass, nor a pass in front of it.
    pub threads: Option<usize>,
}

impl LoadOptions {
    /// Checks what can be checked without the model: [`BgeM3::load`] does it first, and a
    /// caller that downloads the model calls it before the download, so that a wrong setting is
    /// refused before gigabytes are fetched.
    pub fn check(&self) -> Result<()> {
        if self.threads == Some(0) {
            return Err(Error::invalid_input("threads", "must be at least 1"));
        }
        if let (Some(DType::Int8), DeviceSpec::Cuda(_)) = (self.dtype, self.device) {
            return Err(int8_on_a_gpu());
        }
        if self.dtype == Some(DType::Int8) {
            crate::cpu::check_int8_kernel()
                .map_err(|why| Error::invalid_input(crate::cpu::INT8_KERNEL_VARIABLE, why))?;
        }
        Ok(())
    }

    /// Sets [`LoadOptions::device`].
    #[must_use]
    pub fn with_device(mut self, device: DeviceSpec) -> Self {
        self.device = device;
        self
    }

    /// Sets [`LoadOptions::dtype`]: a [`DType`], or `None` for the device's default.
    #[must_use]
    pub fn with_dtype(mut self, dtype: impl Into<Option<DType>>) -> Self {
        self.dtype = dtype.into();
        self
    }

    /// Sets [`LoadOptions::threads`]: a count, or `None` for one thread per CPU.
    #[must_use]
    pub fn with_threads(mut self, threads: impl Into<Option<usize>>) -> Self {
        self.threads = threads.into();
        self
    }
}

/// Which of the three outputs to compute.
///
/// A plain set of three flags (BGE-M3 has exactly these outputs), built as a literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outputs {
    /// The dense vector: the normalised `<s>` row ([`Embedding::dense`]).
    pub dense: bool,
    /// The lexical weights of the sparse head ([`Embedding::sparse`]).
    pub sparse: bool,
    /// The ColBERT multi-vector, one row per token ([`Embedding::colbert`]).
    pub colbert: bool,
}

impl Default for Outputs {
    /// Dense and sparse, like the original service's `/embeddings`.
    fn default() -> Self {
        Self {
            dense: true,
            sparse: true,
            colbert: false,
        }
    }
}

impl Outputs {
    /// All three outputs.
    pub const ALL: Outputs = Outputs {
        dense: true,
        sparse: true,
        colbert: true,
    };
}

/// Options of [`BgeM3::encode`] and [`BgeM3::encode_ids`].
///
/// ```
/// use bge_m3_core::{EncodeOptions, Outputs};
///
/// let options = EncodeOptions::default()
///     .with_outputs(Outputs::ALL)
///     .with_max_length(512);
/// assert_eq!(options.batch_size, 12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncodeOptions {
    /// Which outputs to compute. Default: dense and sparse.
    pub outputs: Outputs,
    /// Longest input in tokens, counting `<s>` and `</s>`; longer inputs are truncated,
    /// keeping `</s>`. 1..=8192 for BGE-M3. Default: 8192.
    pub max_length: usize,
    /// Most texts per forward pass. Default: 12.
    pub batch_size: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            outputs: Outputs::default(),
            max_length: 8192,
            batch_size: 12,
        }
    }
}

impl EncodeOptions {
    /// Sets [`EncodeOptions::outputs`].
    #[must_use]
    pub fn with_outputs(mut self, outputs: Outputs) -> Self {
        self.outputs = outputs;
        self
    }

    /// Sets [`EncodeOptions::max_length`].
    #[must_use]
    pub fn with_max_length(mut self, max_length: usize) -> Self {
        self.max_length = max_length;
        self
    }

    /// Sets [`EncodeOptions::batch_size`].
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
}

/// Options of [`BgeM3::compute_score`], with FlagEmbedding's `compute_score` defaults.
///
/// ```
/// use bge_m3_core::{ScoreOptions, ScoreWeights};
///
/// let weights = ScoreWeights::try_from([1.0, 0.0, 0.0])?;
/// let options = ScoreOptions::default().with_weights(weights).with_batch_size(4);
/// assert_eq!(options.max_query_length, 512);
/// # Ok::<(), bge_m3_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ScoreOptions {
    /// Weights of the fused scores. Default: `[0.4, 0.2, 0.4]`.
    pub weights: ScoreWeights,
    /// Truncation of the queries (first texts of the pairs). Default: 512.
    pub max_query_length: usize,
    /// Truncation of the passages (second texts of the pairs). Default: 8192.
    pub max_passage_length: usize,
    /// Most texts per forward pass. Default: 12.
    pub batch_size: usize,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            weights: ScoreWeights::default(),
            max_query_length: 512,
            max_passage_length: 8192,
            batch_size: 12,
        }
    }
}

impl ScoreOptions {
    /// Sets [`ScoreOptions::weights`].
    #[must_use]
    pub fn with_weights(mut self, weights: ScoreWeights) -> Self {
        self.weights = weights;
        self
    }

    /// Sets [`ScoreOptions::max_query_length`].
    #[must_use]
    pub fn with_max_query_length(mut self, max_query_length: usize) -> Self {
        self.max_query_length = max_query_length;
        self
    }

    /// Sets [`ScoreOptions::max_passage_length`].
    #[must_use]
    pub fn with_max_passage_length(mut self, max_passage_length: usize) -> Self {
        self.max_passage_length = max_passage_length;
        self
    }

    /// Sets [`ScoreOptions::batch_size`].
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }
}

/// BGE-M3: tokenizer, XLM-RoBERTa encoder and the dense, sparse and ColBERT heads.
pub struct BgeM3 {
    /// Runs every forward pass; see [`LoadOptions::threads`].
    pool: rayon::ThreadPool,
    config: Config,
    tokenizer: Tokenizer,
    encoder: XlmRobertaEncoder,
    sparse: SparseHead,
    colbert: ColbertHead,
}

fn int8_on_a_gpu() -> Error {
    Error::invalid_input(
        "dtype",
        "int8 runs on the CPU only; on a GPU choose f16 (the default), bf16 or f32",
    )
}

/// Checks that the model can run in int8 on `device`, and tokenizes the calibration texts
/// ([`crate::cpu`]'s int8 layers) with its tokenizer.
fn int8_calibration(
    device: &Device,
    config: &Config,
    tokenizer: &Tokenizer,
) -> Result<Vec<Vec<u32>>> {
    if !device.is_cpu() {
        return Err(int8_on_a_gpu());
    }
    if config.hidden_act != crate::config::HiddenAct::Gelu {
        return Err(Error::invalid_input(
            "dtype",
            format!(
                "int8 needs a model with the erf GELU (hidden_act \"gelu\"); this one has {:?}: \
                 choose f32",
                config.hidden_act
            ),
        ));
    }
    tokenizer.encode_batch(
        crate::cpu::CALIBRATION_TEXTS,
        config.max_tokens().min(crate::cpu::CALIBRATION_LENGTH),
    )
}

impl BgeM3 {
    /// Loads a model directory laid out like the BAAI/bge-m3 Hugging Face repository.
    ///
    /// A missing or malformed file is an error naming the file and the directory.
    pub fn load(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let start = Instant::now();
        options.check()?;
        let dir = dir.as_ref();
        let files = ModelFiles::locate(dir)?;
        let config = Config::from_file(&files.config)?;
        let tokenizer = Tokenizer::from_file(&files.tokenizer)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::InvalidFile {
                path: files.tokenizer.clone(),
                message: format!(
                    "the tokenizer has {} ids but the model embeds only {} (config.json vocab_size)",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
                source: None,
            });
        }
        let threads = match options.threads {
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("bge-m3-compute-{i}"))
            .build()
            .map_err(|e| {
                let message = format!("cannot start {threads} compute threads: {e}");
                Error::device(message, Some(Box::new(e)))
            })?;
        let device = options.device.open()?;
        let dtype = options.dtype.unwrap_or_else(|| default_dtype(&device));
        let calibration = match dtype {
            DType::Int8 => int8_calibration(&device, &config, &tokenizer)?,
            _ => Vec::new(),
        };
        let weights_path = files.encoder.path();
        let encoder = pool
            .install(|| {
                let (vb, file) = encoder_var_builder(&files.encoder, dtype.candle(), &device)?;
                match dtype {
                    DType::Int8 => XlmRobertaEncoder::load_int8(vb, &file, &config, &calibration),
                    _ => XlmRobertaEncoder::load(vb, &config),
                }
            })
            .map_err(|e| match e {
                Error::Candle(e) => Error::invalid_file(weights_path, e),
                other => other,
            })?;
        let sparse = SparseHead::load(&files.sparse, config.hidden_size, &device)?;
        let colbert = ColbertHead::load(&files.colbert, config.hidden_size, &device)?;
        tracing::info!(
            dir = %dir.display(),
            weights = %weights_path.display(),
            device = %crate::device::device_name(&device),
            dtype = dtype.as_str(),
            threads,
            seconds = start.elapsed().as_secs_f32(),
            "model loaded"
        );
        Ok(Self {
            pool,
            config,
            tokenizer,
            encoder,
            sparse,
            colbert,
        })
    }

    /// The model's `config.json`.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The model's tokenizer, for callers that tokenize ahead of [`Self::encode_tokenized`]
    /// or count tokens.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The device the encoder runs on ([`LoadOptions::device`] resolved).
    pub fn device(&self) -> &Device {
        self.encoder.device()
    }

    /// The encoder's precision ([`LoadOptions::dtype`] resolved); the heads run in f32.
    pub fn dtype(&self) -> DType {
        self.encoder.dtype()
    }

    /// Width of the dense vectors (the hidden size, 1024 for BGE-M3).
    pub fn dense_dim(&self) -> usize {
        self.config.hidden_size
    }

    /// Width of the ColBERT vectors.
    pub fn colbert_dim(&self) -> usize {
        self.colbert.dim()
    }

    /// Longest input in tokens, `<s>` and `</s>` included (8192 for BGE-M3).
    pub fn max_length(&self) -> usize {
        self.config.max_tokens()
    }

    /// Number of token ids the model accepts.
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// The shape of a `<s> … </s>` sequence (from [`Self::tokenize`] or [`Self::wrap_ids`]),
    /// what the memory of its outputs depends on ([`Self::output_bytes`]).
    ///
    /// ```
    /// # let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/tiny-pt");
    /// # let model = bge_m3_core::BgeM3::load(dir, &Default::default())?;
    /// let sequence = model.wrap_ids(&[[7, 8, 7]], 8192)?.remove(0);
    /// let shape = model.text_shape(&sequence);
    /// assert_eq!((shape.ids, shape.lexical), (5, 2)); // `<s> a b a </s>`
    /// # Ok::<(), bge_m3_core::Error>(())
    /// ```
    pub fn text_shape(&self, sequence: &[u32]) -> TextShape {
        let specials = self.tokenizer.specials();
        let mut weighted: Vec<u32> = sequence
            .iter()
            .copied()
            .filter(|&id| !specials.is_unused_for_sparse(id))
            .collect();
        weighted.sort_unstable();
        weighted.dedup();
        TextShape {
            ids: sequence.len(),
            lexical: weighted.len(),
        }
    }

    /// The bytes that the `outputs` of one text of `shape` hold in memory once computed (its
    /// [`Embedding`]: the dense vector, one entry per sparse weight, one ColBERT vector per token
    /// after `<s>`), with the token strings of its sparse weights when `sparse_tokens` (what
    /// [`Self::sparse_by_token`] makes of them): what a server reserves for a text before it
    /// computes it. An estimate of the allocator's share, exact in the values; it grows with
    /// `shape`, so [`TextShape::at_most`] bounds a text before it is tokenized.
    ///
    /// ```
    /// use bge_m3_core::{Outputs, TextShape};
    /// # let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/tiny-pt");
    /// # let model = bge_m3_core::BgeM3::load(dir, &Default::default())?;
    /// let dense = Outputs { dense: true, sparse: false, colbert: false };
    /// let colbert = Outputs { dense: false, sparse: false, colbert: true };
    /// let short = TextShape::at_most(10);
    /// // The dense vector does not grow with the text; ColBERT vectors do.
    /// assert_eq!(model.output_bytes(short, dense, false), model.output_bytes(TextShape::at_most(20), dense, false));
    /// assert!(model.output_bytes(short, colbert, false) < model.output_bytes(TextShape::at_most(20), colbert, false));
    /// # Ok::<(), bge_m3_core::Error>(())
    /// ```
    pub fn output_bytes(&self, shape: TextShape, outputs: Outputs, sparse_tokens: bool) -> u64 {
        /// A vector's own bytes: the `Vec` and its allocation's overhead.
        const VECTOR: u64 = 48;
        /// One sparse weight as [`SparseEmbedding`] holds it: `(id, weight)`.
        const SPARSE_ENTRY: u64 = std::mem::size_of::<(u32, f32)>() as u64;
        /// One weight keyed by token string: `(String, f32)` and the string's allocation.
        const SPARSE_TOKEN: u64 = 48;
        const F32: u64 = std::mem::size_of::<f32>() as u64;
        let mut bytes = 0;
        if outputs.dense {
            bytes += VECTOR + F32 * self.dense_dim() as u64;
        }
        if outputs.sparse {
            let per = SPARSE_ENTRY + if sparse_tokens { SPARSE_TOKEN } else { 0 };
            bytes += VECTOR + per * shape.lexical as u64;
        }
        if outputs.colbert {
            // One row per token after `<s>`, `</s>` included (see `forward_here`).
            let rows = shape.ids.saturating_sub(1) as u64;
            bytes += VECTOR + rows * (VECTOR + F32 * self.colbert_dim() as u64);
        }
        bytes
    }

    /// Tokenizes texts into `<s> … </s>` sequences of at most `max_length` ids.
    pub fn tokenize<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        max_length: usize,
    ) -> Result<Vec<Vec<u32>>> {
        self.check_max_length("max_length", max_length)?;
        self.tokenizer.encode_batch(texts, max_length)
    }

    /// Wraps pre-tokenized inputs (content ids, without `<s>`/`</s>`, as OpenAI-style clients
    /// send token arrays) into `<s> … </s>` sequences of at most `max_length` ids. An id outside
    /// the vocabulary is an [`Error::InvalidInput`] on field `input`.
    pub fn wrap_ids<I: AsRef<[u32]>>(
        &self,
        inputs: &[I],
        max_length: usize,
    ) -> Result<Vec<Vec<u32>>> {
        self.check_max_length("max_length", max_length)?;
        check_token_ids(inputs, self.config.vocab_size)?;
        Ok(inputs
            .iter()
            .map(|ids| self.tokenizer.wrap(ids.as_ref(), max_length))
            .collect())
    }

    /// Encodes texts. The result has one [`Embedding`] per text, in order, and does not
    /// depend on `batch_size` or on the other texts: the same bits on the f32 CPU path, the
    /// same within float rounding elsewhere (see [`Self::forward`]).
    pub fn encode<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        options: &EncodeOptions,
    ) -> Result<Vec<Embedding>> {
        let sequences = self.tokenize(texts, options.max_length)?;
        self.encode_tokenized(&sequences, options.outputs, options.batch_size)
    }

    /// Encodes pre-tokenized inputs (content ids without `<s>`/`</s>`); see [`Self::wrap_ids`].
    pub fn encode_ids<I: AsRef<[u32]>>(
        &self,
        inputs: &[I],
        options: &EncodeOptions,
    ) -> Result<Vec<Embedding>> {
        let sequences = self.wrap_ids(inputs, options.max_length)?;
        self.encode_tokenized(&sequences, options.outputs, options.batch_size)
    }

    /// Encodes `<s> … </s>` sequences (from [`Self::tokenize`] or [`Self::wrap_ids`]): sorted
    /// by length, so that each forward pass pads little, in passes of at most `batch_size`.
    pub fn encode_tokenized<I: AsRef<[u32]>>(
        &self,
        sequences: &[I],
        outputs: Outputs,
        batch_size: usize,
    ) -> Result<Vec<Embedding>> {
        let batch_size = check_batch_size(batch_size)?.get();
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(sequences[i].as_ref().len()));
        let mut results: Vec<Option<Embedding>> = vec![None; sequences.len()];
        for chunk in order.chunks(batch_size) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| sequences[i].as_ref()).collect();
            let embeddings = self.forward(&batch, outputs)?;
            for (&i, embedding) in chunk.iter().zip(embeddings) {
                results[i] = Some(embedding);
            }
        }
        Ok(results
            .into_iter()
            .map(|e| e.expect("every index is in exactly one chunk"))
            .collect())
    }

    /// Whether a forward pass pads its sequences to the longest one, so that it costs `texts x
    /// longest` tokens: true on the candle path (GPUs, f16/bf16). The f32 CPU path lays the
    /// sequences end to end instead, and a pass costs the sum of their lengths (plus each
    /// one's attention, which grows with its own length only).
    pub fn pads_batches(&self) -> bool {
        self.encoder.pads_batches()
    }

    /// Threads of the model's compute pool ([`LoadOptions::threads`]).
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// One forward pass over `sequences` (each `<s> … </s>`, at most [`Self::max_length`]
    /// ids, every id in the vocabulary), on the model's compute pool. Each text's result does
    /// not depend on the other texts of the pass: on the f32 CPU path it is the same bits
    /// alone or in any pass (its encoder and heads compute each text's rows alike wherever it
    /// lies); on the candle path (GPUs, f16/bf16), which pads a pass to its longest text, the
    /// same within float rounding.
    pub fn forward(&self, sequences: &[&[u32]], outputs: Outputs) -> Result<Vec<Embedding>> {
        self.pool.install(|| self.forward_here(sequences, outputs))
    }

    fn forward_here(&self, sequences: &[&[u32]], outputs: Outputs) -> Result<Vec<Embedding>> {
        if sequences.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(seq) = sequences
            .iter()
            .find(|s| s.len() < 2 || s.len() > self.max_length())
        {
            return Err(Error::invalid_input(
                "input",
                format!(
                    "a sequence of {} ids is outside 2..={} (`<s>` and `</s>` included)",
                    seq.len(),
                    self.max_length()
                ),
            ));
        }
        let hidden = self.encoder.forward(sequences)?;
        let hidden = HiddenStates {
            rows: hidden.rows.to_dtype(candle_core::DType::F32)?,
            starts: hidden.starts,
        };

        let dense = if outputs.dense {
            Some(dense_vectors(&hidden)?.to_vec2::<f32>()?)
        } else {
            None
        };
        let lens: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
        let sparse = if outputs.sparse {
            Some(per_sequence(&hidden, &lens, 0, |rows| {
                self.sparse.token_weights(rows)
            })?)
        } else {
            None
        };
        // One vector per token after `<s>` up to the sequence's end.
        let colbert = if outputs.colbert {
            Some(per_sequence(&hidden, &lens, 1, |rows| {
                Ok(self.colbert.forward(rows)?.to_vec2::<f32>()?)
            })?)
        } else {
            None
        };

        let specials = self.tokenizer.specials();
        let mut dense = dense.map(Vec::into_iter);
        let mut sparse = sparse.map(Vec::into_iter);
        let mut colbert = colbert.map(Vec::into_iter);
        Ok(sequences
            .iter()
            .map(|seq| Embedding {
                dense: dense.as_mut().and_then(Iterator::next),
                sparse: sparse
                    .as_mut()
                    .and_then(Iterator::next)
                    .map(|weights| SparseEmbedding::from_token_weights(seq, &weights, specials)),
                colbert: colbert.as_mut().and_then(Iterator::next),
                tokens: seq.len() - 2,
            })
            .collect())
    }

    /// Lexical weights keyed by token string, the way `BGEM3FlagModel.convert_id_to_token`
    /// does it: each id decoded on its own (`▁What` becomes `What`).
    ///
    /// FlagEmbedding builds a dict from the id-keyed weights in their order; when two ids
    /// decode to the same string, the later id overwrites the weight of the earlier one but the
    /// key keeps its first place. This reproduces that quirk, so the result can have fewer
    /// entries than `sparse`.
    pub fn sparse_by_token(&self, sparse: &SparseEmbedding) -> Result<Vec<(String, f32)>> {
        let mut out: Vec<(String, f32)> = Vec::with_capacity(sparse.len());
        let mut slot: std::collections::HashMap<String, usize> =
            std::collections::HashMap::with_capacity(sparse.len());
        for &(id, weight) in &sparse.weights {
            let token = self.tokenizer.decode_one(id)?;
            match slot.get(&token) {
                Some(&i) => out[i].1 = weight,
                None => {
                    slot.insert(token.clone(), out.len());
                    out.push((token, weight));
                }
            }
        }
        Ok(out)
    }

    /// Scores each (query, passage) pair independently of the others, like FlagEmbedding's
    /// `compute_score` run on one pair at a time (its batched version pads ColBERT passages
    /// together, which can change a batched score).
    pub fn compute_score<Q: AsRef<str> + Sync, P: AsRef<str> + Sync>(
        &self,
        pairs: &[(Q, P)],
        options: &ScoreOptions,
    ) -> Result<Vec<PairScores>> {
        let queries: Vec<&str> = pairs.iter().map(|(q, _)| q.as_ref()).collect();
        let passages: Vec<&str> = pairs.iter().map(|(_, p)| p.as_ref()).collect();
        self.check_max_length("max_query_length", options.max_query_length)?;
        self.check_max_length("max_passage_length", options.max_passage_length)?;
        let queries = self
            .tokenizer
            .encode_batch(&queries, options.max_query_length)?;
        let passages = self
            .tokenizer
            .encode_batch(&passages, options.max_passage_length)?;
        self.score_tokenized(&queries, &passages, options.weights, options.batch_size)
    }

    /// [`Self::compute_score`] on `<s> … </s>` sequences (from [`Self::tokenize`] or
    /// [`Self::wrap_ids`]): `queries[i]` is scored against `passages[i]`. Queries and passages
    /// share the forward passes.
    pub fn score_tokenized<Q: AsRef<[u32]>, P: AsRef<[u32]>>(
        &self,
        queries: &[Q],
        passages: &[P],
        weights: ScoreWeights,
        batch_size: usize,
    ) -> Result<Vec<PairScores>> {
        if queries.len() != passages.len() {
            return Err(Error::invalid_input(
                "pairs",
                format!("{} queries but {} passages", queries.len(), passages.len()),
            ));
        }
        let weights = weights.validate()?;
        let sequences: Vec<&[u32]> = queries
            .iter()
            .map(AsRef::as_ref)
            .chain(passages.iter().map(AsRef::as_ref))
            .collect();
        let mut embeddings = self.encode_tokenized(&sequences, Outputs::ALL, batch_size)?;
        let passages = embeddings.split_off(queries.len());
        score_pairs(&embeddings, &passages, weights)
    }

    fn check_max_length(&self, field: &str, max_length: usize) -> Result<()> {
        check_length(field, max_length, self.max_length()).map(drop)
    }
}
