//! The handle to the model: admission, tokenization and the model's thread.
//!
//! Handlers validate a request into a job ([`EncodeJob`], [`ScoreJob`]) and await
//! [`Batcher::encode`] or [`Batcher::score`], which
//! 1. admits the request or refuses it at once with 429 when `queue_size` requests are already
//!    admitted and unanswered, never queueing without bound;
//! 2. grows the request's memory reservation (see [`crate::memory`]) to the bound of its token
//!    ids, or refuses it (429, or 413 when it could never fit);
//! 3. tokenizes its texts on the tokenizer pool, threads of their own (`--tokenizer-threads`),
//!    so that tokenization never runs on the async runtime nor on the model's threads, one job
//!    per chunk of [`TOKENIZE_CHUNK_BYTES`], so that a large request holds its truncated ids and
//!    one chunk's tokenizer state, never all of it, and concurrent requests take turns;
//! 4. sets the reservation to its token ids and the embeddings its answer will hold;
//! 5. hands the sequences to the model's thread ([`bge_m3_core::queue`]), which merges the texts of
//!    every waiting request into forward passes under a token budget;
//! 6. turns the embeddings into the answer (sparse weights keyed by token string on the
//!    tokenizer pool, scores on the blocking pool).
//!
//! The whole is bounded by the request timeout (503). A request whose future is dropped (its
//! client hung up, or it timed out) is cancelled: no chunk of it is tokenized after the one at
//! hand, and its texts leave the model's queue at once.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bge_m3_core::queue::{self, panic_message, Computed, Forward, Queue, QueueError, Request};
use bge_m3_core::{BgeM3, Embedding, EncodeOptions, Outputs, PairScores, ScoreOptions};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::memory::{distinct_tokens, Cost, Need, Reservation};
use crate::metrics::{metrics, QueueMetrics};
use crate::state::ModelInfo;
use crate::{Error, Result};

/// Texts are tokenized in chunks of about this many bytes (at least one text each): the
/// tokenizer's state (every token's string, offsets, the untruncated ids) is some 100 bytes per
/// token, freed after each chunk, so that only the truncated ids of a large request stay.
pub const TOKENIZE_CHUNK_BYTES: usize = 256 << 10;

/// What to embed: texts, or token ids of the model's vocabulary (without `<s>` and `</s>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inputs {
    Texts(Vec<String>),
    TokenIds(Vec<Vec<u32>>),
}

impl Inputs {
    pub fn len(&self) -> usize {
        match self {
            Inputs::Texts(texts) => texts.len(),
            Inputs::TokenIds(ids) => ids.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How the sparse weights are keyed in the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparseKeys {
    /// By token id only.
    Ids,
    /// By token string as well (`BGEM3FlagModel.convert_id_to_token`), decoded on the model's
    /// thread because it needs the tokenizer.
    Tokens,
}

/// A validated embeddings request: every option is in range, every token id in the vocabulary.
#[derive(Debug, Clone)]
pub struct EncodeJob {
    pub inputs: Inputs,
    pub options: EncodeOptions,
    pub sparse_keys: SparseKeys,
}

/// The reply to an [`EncodeJob`].
#[derive(Debug)]
pub struct Encoded {
    /// One per input, in order.
    pub embeddings: Vec<Embedding>,
    /// The sparse weights keyed by token string, one list per input, when the job asked for
    /// sparse weights keyed by [`SparseKeys::Tokens`].
    pub sparse_tokens: Option<Vec<Vec<(String, f32)>>>,
    pub timings: Timings,
    /// The request's memory reservation, now the size of these embeddings: keep it until the
    /// answer is written.
    pub held: Option<Reservation>,
}

impl Encoded {
    /// Tokens of all inputs after truncation, `<s>` and `</s>` not counted.
    pub fn tokens(&self) -> usize {
        self.embeddings.iter().map(|e| e.tokens).sum()
    }
}

/// A validated `/score` or rerank request: each passage scored against its query.
#[derive(Debug, Clone)]
pub struct ScoreJob {
    /// One query per passage (`/score`: `queries[i]` goes with `passages[i]`), or a single
    /// query for every passage (rerank), which is then tokenized and embedded once.
    pub queries: Vec<String>,
    pub passages: Vec<String>,
    pub options: ScoreOptions,
}

impl ScoreJob {
    /// `/score`'s pairs.
    pub fn pairs(pairs: Vec<(String, String)>, options: ScoreOptions) -> Self {
        let (queries, passages) = pairs.into_iter().unzip();
        Self {
            queries,
            passages,
            options,
        }
    }

    /// One query against every passage.
    pub fn rerank(query: String, passages: Vec<String>, options: ScoreOptions) -> Self {
        Self {
            queries: vec![query],
            passages,
            options,
        }
    }
}

/// The reply to a [`ScoreJob`].
#[derive(Debug)]
pub struct Scored {
    /// One per passage, in order.
    pub scores: Vec<PairScores>,
    /// Tokens of the queries and passages embedded, after truncation, `<s>` and `</s>` not
    /// counted (a rerank query once).
    pub tokens: usize,
    pub timings: Timings,
}

/// Where a request's time went, for the response's timing headers and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Tokenizing its texts.
    pub tokenization: Duration,
    /// From its arrival at the model's thread to its first forward pass.
    pub queue: Duration,
    /// In the forward passes that held its texts.
    pub inference: Duration,
}

/// How the model is shared between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatcherOptions {
    /// Most requests admitted and not yet answered; more are refused with 429. Default: 64.
    pub queue_size: usize,
    /// Most tokens in one forward pass, as the model computes them: the sum of the texts'
    /// lengths on the f32 CPU path, texts × longest text where the model pads its batches (the
    /// candle path: GPUs, f16/bf16). A longer text runs alone. Default: 16384.
    pub max_batch_tokens: usize,
    /// Longest time a request may take, from admission to answer; `None` waits without limit.
    /// Default: 300 s.
    pub request_timeout: Option<Duration>,
    /// Threads of the tokenizer pool. Default: [`default_tokenizer_threads`].
    pub tokenizer_threads: usize,
}

impl Default for BatcherOptions {
    fn default() -> Self {
        Self {
            queue_size: 64,
            max_batch_tokens: 16384,
            request_timeout: Some(Duration::from_secs(300)),
            tokenizer_threads: default_tokenizer_threads(),
        }
    }
}

/// Half the CPUs, at least one: the rest are the model's.
pub fn default_tokenizer_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The tokenizer's own threads: tokenization (and the tokenizer's parallel loops inside it) and
/// the decoding of sparse weights run here, never on the threads of the model's kernels.
fn tokenizer_pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("bge-m3-tokenizer-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| Error::Io(std::io::Error::other(e)))
}

/// The handle to the model and its thread; cheap to clone. When the last clone is dropped,
/// the thread answers what it holds and stops.
#[derive(Clone)]
pub struct Batcher {
    inner: Arc<Inner>,
}

struct Inner {
    model: Arc<BgeM3>,
    queue: Queue,
    admission: Arc<Semaphore>,
    tokenizers: Arc<rayon::ThreadPool>,
    options: BatcherOptions,
}

/// Resolves when the model has loaded, with its batcher, or with the loading error.
pub type Loaded = oneshot::Receiver<bge_m3_core::Result<Batcher>>;

impl Batcher {
    /// Loads the model with `load` on a thread of its own, which then becomes the model's
    /// thread. The returned receiver resolves once the model is loaded, with its batcher; if
    /// `load` panics, its sender is dropped without a value.
    pub fn spawn<F>(load: F, options: BatcherOptions) -> Result<Loaded>
    where
        F: FnOnce() -> bge_m3_core::Result<BgeM3> + Send + 'static,
    {
        let (loaded_tx, loaded) = oneshot::channel();
        let tokenizers = tokenizer_pool(options.tokenizer_threads)?;
        std::thread::Builder::new()
            .name("bge-m3-model".into())
            .spawn(move || {
                let start = Instant::now();
                let model = match load() {
                    Ok(model) => Arc::new(model),
                    Err(error) => {
                        let _ = loaded_tx.send(Err(error));
                        return;
                    }
                };
                metrics()
                    .model_load_seconds
                    .set(start.elapsed().as_secs_f64());
                let (queue, worker) =
                    queue::queue(options.max_batch_tokens, Arc::new(QueueMetrics));
                let batcher = Self::from_parts(model.clone(), queue, tokenizers, options);
                let _ = loaded_tx.send(Ok(batcher));
                worker.run(model.as_ref());
            })
            .map_err(Error::Io)?;
        Ok(loaded)
    }

    /// Starts the model's thread over a loaded model.
    pub fn start(model: Arc<BgeM3>, options: BatcherOptions) -> Result<Self> {
        Self::start_with(model.clone(), model, options)
    }

    /// Like [`Self::start`], but the forward passes run on `forward` while `model` tokenizes
    /// and answers: for wrappers of the model, such as tests that inject faults.
    pub fn start_with(
        model: Arc<BgeM3>,
        forward: Arc<dyn Forward>,
        options: BatcherOptions,
    ) -> Result<Self> {
        let tokenizers = tokenizer_pool(options.tokenizer_threads)?;
        let queue = Queue::spawn(forward, options.max_batch_tokens, Arc::new(QueueMetrics))
            .map_err(Error::Io)?;
        Ok(Self::from_parts(model, queue, tokenizers, options))
    }

    fn from_parts(
        model: Arc<BgeM3>,
        queue: Queue,
        tokenizers: Arc<rayon::ThreadPool>,
        options: BatcherOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                model,
                queue,
                admission: Arc::new(Semaphore::new(options.queue_size.max(1))),
                tokenizers,
                options,
            }),
        }
    }

    fn cost(&self) -> Cost {
        Cost {
            dense_dim: self.inner.model.dense_dim(),
            colbert_dim: self.inner.model.colbert_dim(),
        }
    }

    /// Facts about the model for the handlers.
    pub fn info(&self) -> ModelInfo {
        ModelInfo::of(&self.inner.model)
    }

    /// The options it runs with.
    pub fn options(&self) -> BatcherOptions {
        self.inner.options
    }

    /// Embeds a job's inputs, outside any memory budget.
    pub async fn encode(&self, job: EncodeJob) -> Result<Encoded> {
        self.encode_within(job, None).await
    }

    /// Embeds a job's inputs within the memory reservation `held` (see [`crate::memory`]): it
    /// grows to the bound of the job's token ids before tokenization, then becomes its ids and
    /// embeddings, handed back in [`Encoded::held`]; a request that does not fit is refused with
    /// 429, or 413 when it never could.
    pub async fn encode_within(
        &self,
        job: EncodeJob,
        mut held: Option<Reservation>,
    ) -> Result<Encoded> {
        let _admitted = self.admit()?;
        self.within_timeout(async move {
            let EncodeOptions {
                outputs,
                max_length,
                batch_size,
                ..
            } = job.options;
            if let Some(held) = held.as_mut() {
                let bound = match &job.inputs {
                    Inputs::Texts(texts) => Cost::ids_bound(texts, max_length),
                    Inputs::TokenIds(ids) => ids_of(ids, max_length),
                };
                held.resize(held.bytes() + bound, Need::Tokens)?;
            }
            let count_distinct = outputs.sparse && held.is_some();
            let start = Instant::now();
            let mut tokenized = Tokenized::default();
            match job.inputs {
                Inputs::Texts(texts) => {
                    self.tokenize(texts, max_length, count_distinct, &mut tokenized)
                        .await?
                }
                Inputs::TokenIds(ids) => {
                    let model = self.inner.model.clone();
                    let chunk = self
                        .on_tokenizers(move || {
                            Tokenized::of(model.wrap_ids(&ids, max_length)?, count_distinct)
                        })
                        .await??;
                    tokenized.extend(chunk);
                }
            }
            let Tokenized {
                sequences,
                distinct,
            } = tokenized;
            let tokenization = start.elapsed();
            if let Some(held) = held.as_mut() {
                let bytes = self.cost().encode(
                    &sequences,
                    &distinct,
                    outputs.dense,
                    outputs.sparse,
                    job.sparse_keys == SparseKeys::Tokens,
                    outputs.colbert,
                );
                held.resize(bytes, Need::Answer)?;
            }
            drop(distinct);
            let computed = self.compute(sequences, outputs, batch_size).await?;
            let timings = timings(tokenization, &computed);
            let embeddings = computed.embeddings;
            if !(outputs.sparse && job.sparse_keys == SparseKeys::Tokens) {
                return Ok(Encoded {
                    embeddings,
                    sparse_tokens: None,
                    timings,
                    held,
                });
            }
            let model = self.inner.model.clone();
            let (embeddings, sparse_tokens) = self
                .on_tokenizers(move || {
                    let by_token = embeddings
                        .iter()
                        .map(|e| match &e.sparse {
                            Some(sparse) => Ok(model.sparse_by_token(sparse)?),
                            None => Err(missing_output("sparse")),
                        })
                        .collect::<Result<Vec<_>>>();
                    (embeddings, by_token)
                })
                .await?;
            Ok(Encoded {
                embeddings,
                sparse_tokens: Some(sparse_tokens?),
                timings,
                held,
            })
        })
        .await
    }

    /// `BGEM3FlagModel.compute_score` for each (query, passage) pair on its own, as
    /// [`BgeM3::score_tokenized`] computes it: queries and passages share the forward passes
    /// (with every other request's texts), and each pair is scored from its own two
    /// embeddings. A rerank's one query is embedded once for all its passages; a text's
    /// embedding does not depend on its pass, so its scores are those of each pair alone.
    /// Outside any memory budget.
    pub async fn score(&self, job: ScoreJob) -> Result<Scored> {
        self.score_within(job, None).await
    }

    /// [`Self::score`] within the memory reservation `held`, as [`Self::encode_within`]; the
    /// reservation is given back with the scores.
    pub async fn score_within(
        &self,
        job: ScoreJob,
        mut held: Option<Reservation>,
    ) -> Result<Scored> {
        let _admitted = self.admit()?;
        self.within_timeout(async move {
            let ScoreJob {
                queries,
                passages,
                options,
            } = job;
            let weights = options.weights.validate()?;
            if queries.len() != 1 && queries.len() != passages.len() {
                return Err(Error::Internal(format!(
                    "a score job of {} queries for {} passages",
                    queries.len(),
                    passages.len()
                )));
            }
            let query_count = queries.len();
            if let Some(held) = held.as_mut() {
                let bound = Cost::ids_bound(&queries, options.max_query_length)
                    + Cost::ids_bound(&passages, options.max_passage_length);
                held.resize(held.bytes() + bound, Need::Tokens)?;
            }
            let count_distinct = held.is_some();
            let start = Instant::now();
            let mut tokenized = Tokenized::default();
            self.tokenize(
                queries,
                options.max_query_length,
                count_distinct,
                &mut tokenized,
            )
            .await?;
            self.tokenize(
                passages,
                options.max_passage_length,
                count_distinct,
                &mut tokenized,
            )
            .await?;
            let Tokenized {
                sequences,
                distinct,
            } = tokenized;
            let tokenization = start.elapsed();
            if let Some(held) = held.as_mut() {
                // Every output of every text, until the pairs are scored.
                let bytes = self
                    .cost()
                    .encode(&sequences, &distinct, true, true, false, true);
                held.resize(bytes, Need::Answer)?;
            }
            let tokens = sequences.iter().map(|s| s.len() - 2).sum();
            let computed = self
                .compute(sequences, Outputs::ALL, options.batch_size)
                .await?;
            let timings = timings(tokenization, &computed);
            let mut queries = computed.embeddings;
            let scores = blocking(move || {
                let passages = queries.split_off(query_count);
                passages
                    .iter()
                    .enumerate()
                    .map(|(i, p)| queries[if query_count == 1 { 0 } else { i }].score(p, weights))
                    .collect::<bge_m3_core::Result<Vec<_>>>()
            })
            .await??;
            drop(held);
            Ok(Scored {
                scores,
                tokens,
                timings,
            })
        })
        .await
    }

    /// Tokenizes `texts` on the tokenizer pool, one job per chunk of about
    /// [`TOKENIZE_CHUNK_BYTES`] (at least one text): the chunks of concurrent requests take
    /// turns on the pool's threads, the tokenizer's state is freed after each chunk, and a
    /// request whose future is dropped stops after the chunk at hand.
    async fn tokenize(
        &self,
        texts: Vec<String>,
        max_length: usize,
        count_distinct: bool,
        into: &mut Tokenized,
    ) -> Result<()> {
        into.sequences.reserve(texts.len());
        let mut texts = texts.into_iter().peekable();
        while let Some(first) = texts.next() {
            let mut bytes = first.len();
            let mut chunk = vec![first];
            while let Some(next) = texts.next_if(|t| bytes + t.len() <= TOKENIZE_CHUNK_BYTES) {
                bytes += next.len();
                chunk.push(next);
            }
            let model = self.inner.model.clone();
            let tokenized = self
                .on_tokenizers(move || {
                    Tokenized::of(model.tokenize(&chunk, max_length)?, count_distinct)
                })
                .await??;
            into.extend(tokenized);
        }
        Ok(())
    }

    /// Runs tokenizer work on the tokenizer pool; a panic there is a 500 for this request
    /// alone.
    async fn on_tokenizers<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let (done, outcome) = oneshot::channel();
        self.inner.tokenizers.spawn(move || {
            let _ = done.send(catch_unwind(AssertUnwindSafe(work)));
        });
        match outcome.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => Err(Error::Internal(format!(
                "a tokenizer task failed: {}",
                panic_message(panic.as_ref())
            ))),
            Err(_) => Err(Error::Internal("the tokenizer pool dropped a task".into())),
        }
    }

    /// Runs tokenizer work that needs no forward pass (`/tokenize`, `/decode`) on the tokenizer
    /// pool as an admitted request: it takes a place in the queue (429 when it is full) and is
    /// bounded by the request timeout, like every request that runs the model.
    pub async fn run_admitted<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _admitted = self.admit()?;
        self.within_timeout(async move { self.on_tokenizers(work).await? })
            .await
    }

    /// Takes a place among the admitted requests, or refuses at once with 429.
    fn admit(&self) -> Result<Admitted> {
        let permit = self
            .inner
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Overloaded {
                capacity: self.inner.options.queue_size,
            })?;
        metrics().queued_requests.inc();
        Ok(Admitted { _permit: permit })
    }

    async fn within_timeout<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        match self.inner.options.request_timeout {
            None => work.await,
            Some(limit) => tokio::time::timeout(limit, work)
                .await
                .unwrap_or(Err(Error::Timeout {
                    seconds: limit.as_secs(),
                })),
        }
    }

    /// Runs sequences through the model's thread.
    async fn compute(
        &self,
        sequences: Vec<Vec<u32>>,
        outputs: Outputs,
        batch_size: usize,
    ) -> Result<Computed> {
        let texts = sequences.len();
        let tokens: usize = sequences.iter().map(|s| s.len() - 2).sum();
        let (reply, answer) = oneshot::channel();
        self.inner.queue.push(Request {
            sequences,
            outputs,
            batch_size,
            reply,
        });
        let mut pending = Pending {
            answer: Some(answer),
            queue: &self.inner.queue,
        };
        let answer = pending.answer.as_mut().expect("set above");
        let computed = answer.await.map_err(|_| {
            Error::Internal("the model's thread dropped the request without an answer".into())
        })??;
        pending.answer = None;
        let metrics = metrics();
        metrics.texts.inc_by(texts as u64);
        metrics.tokens.inc_by(tokens as u64);
        metrics.queue_duration.observe(computed.queue.as_secs_f64());
        metrics
            .inference_duration
            .observe(computed.inference.as_secs_f64());
        Ok(computed)
    }
}

/// A request on the model's queue: when it is dropped unanswered (its client went, or it timed
/// out), its texts leave the queue at once rather than before the next pass.
struct Pending<'a> {
    answer: Option<oneshot::Receiver<std::result::Result<Computed, QueueError>>>,
    queue: &'a Queue,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            drop(answer);
            self.queue.prune();
        }
    }
}

/// Tokenized texts: their `<s> … </s>` sequences, and the distinct tokens of each when they
/// are counted (for the memory estimate of sparse weights).
#[derive(Default)]
struct Tokenized {
    sequences: Vec<Vec<u32>>,
    distinct: Vec<usize>,
}

impl Tokenized {
    fn of(sequences: Vec<Vec<u32>>, count_distinct: bool) -> Result<Self> {
        let distinct = if count_distinct {
            distinct_tokens(&sequences)
        } else {
            vec![0; sequences.len()]
        };
        Ok(Self {
            sequences,
            distinct,
        })
    }

    fn extend(&mut self, other: Tokenized) {
        self.sequences.extend(other.sequences);
        self.distinct.extend(other.distinct);
    }
}

/// The bytes of token-id inputs once wrapped in `<s> … </s>` and truncated at `max_length`.
fn ids_of(ids: &[Vec<u32>], max_length: usize) -> u64 {
    ids.iter()
        .map(|ids| Cost::ID * (ids.len() + 2).min(max_length.max(2)) as u64 + Cost::SEQUENCE)
        .sum()
}

/// A place among the admitted requests, given back when the request is answered or dropped.
struct Admitted {
    _permit: OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        metrics().queued_requests.dec();
    }
}

fn timings(tokenization: Duration, computed: &Computed) -> Timings {
    metrics()
        .tokenization_duration
        .observe(tokenization.as_secs_f64());
    Timings {
        tokenization,
        queue: computed.queue,
        inference: computed.inference,
    }
}

/// Runs CPU work on the blocking thread pool; a panic there is a 500 for this request alone.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        let cause = match e.try_into_panic() {
            Ok(panic) => panic_message(panic.as_ref()),
            Err(e) => e.to_string(),
        };
        Error::Internal(format!("a blocking task failed: {cause}"))
    })
}

fn missing_output(name: &str) -> Error {
    Error::Internal(format!("the model returned no {name} output"))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Condvar, Mutex, OnceLock};

    use bge_m3_core::{DeviceSpec, LoadOptions};

    use super::*;

    pub(crate) fn tiny() -> Arc<BgeM3> {
        static MODEL: OnceLock<Arc<BgeM3>> = OnceLock::new();
        MODEL
            .get_or_init(|| {
                let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/tiny-pt");
                let options = LoadOptions::default()
                    .with_device(DeviceSpec::Cpu)
                    .with_dtype(None);
                Arc::new(BgeM3::load(dir, &options).expect("loading tiny-pt"))
            })
            .clone()
    }

    /// The tiny model behind a gate: passes wait until [`Gate::open`]; the input made of
    /// [`Gate::POISON`] alone makes its pass panic.
    pub(crate) struct Gate {
        model: Arc<BgeM3>,
        open: Mutex<bool>,
        opened: Condvar,
        /// The number of sequences of each pass run so far.
        passes: Mutex<Vec<usize>>,
    }

    impl Gate {
        /// The last id of tiny-pt's vocabulary, a rare piece.
        pub const POISON: u32 = 1201;

        pub fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
    }

    impl Forward for Gate {
        fn forward(
            &self,
            sequences: &[&[u32]],
            outputs: Outputs,
        ) -> bge_m3_core::Result<Vec<Embedding>> {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            drop(open);
            if sequences.iter().any(|s| s[1..] == [Self::POISON, 2]) {
                panic!("poisoned pass");
            }
            self.passes.lock().unwrap().push(sequences.len());
            self.model.forward(sequences, outputs)
        }

        fn pads_batches(&self) -> bool {
            self.model.pads_batches()
        }
    }

    /// A batcher over the gated tiny model, the gate closed.
    pub(crate) fn gated(options: BatcherOptions) -> (Batcher, Arc<Gate>) {
        let gate = Arc::new(Gate {
            model: tiny(),
            open: Mutex::new(false),
            opened: Condvar::new(),
            passes: Mutex::new(Vec::new()),
        });
        let batcher = Batcher::start_with(tiny(), gate.clone(), options).unwrap();
        (batcher, gate)
    }

    pub(crate) fn job(inputs: Inputs, outputs: Outputs, max_length: usize) -> EncodeJob {
        EncodeJob {
            inputs,
            options: EncodeOptions::default()
                .with_outputs(outputs)
                .with_max_length(max_length)
                .with_batch_size(12),
            sparse_keys: SparseKeys::Tokens,
        }
    }

    fn texts(texts: &[&str]) -> Inputs {
        Inputs::Texts(texts.iter().map(|t| t.to_string()).collect())
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5)
    }

    #[actix_web::test]
    async fn merged_requests_get_the_answers_of_their_texts_alone() {
        let options = BatcherOptions {
            max_batch_tokens: 64,
            ..BatcherOptions::default()
        };
        let (batcher, gate) = gated(options);
        let model = tiny();
        let corpus = [
            "What is BGE M3?",
            "",
            "BM25 is a bag-of-words retrieval function that ranks a set of documents",
            "Definition of BM25",
            "Le chat est assis sur le tapis, et il regarde par la fenêtre.",
            "密集检索、稀疏检索和多向量检索",
        ];
        let mut jobs = Vec::new();
        for (n, max_length) in [(1, 8192), (3, 8), (6, 512), (2, 4)] {
            let outputs = if n % 2 == 0 {
                Outputs::ALL
            } else {
                Outputs::default()
            };
            let chosen: Vec<&str> = corpus.iter().cycle().skip(n).take(n).copied().collect();
            jobs.push((chosen, outputs, max_length));
        }
        // Every request waits behind the closed gate, so they share passes.
        let mut pending = Vec::new();
        for (chosen, outputs, max_length) in &jobs {
            let batcher = batcher.clone();
            let job = job(texts(chosen), *outputs, *max_length);
            pending.push(actix_web::rt::spawn(
                async move { batcher.encode(job).await },
            ));
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        gate.open();
        for ((chosen, outputs, max_length), pending) in jobs.iter().zip(pending) {
            let encoded = pending.await.unwrap().unwrap();
            assert_eq!(encoded.embeddings.len(), chosen.len());
            for (i, text) in chosen.iter().enumerate() {
                let options = EncodeOptions::default()
                    .with_outputs(*outputs)
                    .with_max_length(*max_length)
                    .with_batch_size(1);
                let alone = model.encode(&[text], &options).unwrap().remove(0);
                let got = &encoded.embeddings[i];
                assert_eq!(got.tokens, alone.tokens, "{text:?}");
                assert_eq!(got.dense.is_some(), outputs.dense);
                assert!(close(
                    got.dense.as_ref().unwrap(),
                    alone.dense.as_ref().unwrap()
                ));
                let (g, a) = (got.sparse.as_ref().unwrap(), alone.sparse.as_ref().unwrap());
                assert_eq!(g.len(), a.len(), "{text:?}");
                for ((gi, gw), (ai, aw)) in g.weights.iter().zip(&a.weights) {
                    assert_eq!(gi, ai);
                    assert!((gw - aw).abs() <= 1e-5);
                }
                assert_eq!(
                    got.colbert.is_some(),
                    outputs.colbert,
                    "only what was asked for"
                );
                if let (Some(g), Some(a)) = (&got.colbert, &alone.colbert) {
                    assert_eq!(g.len(), a.len());
                    assert!(g.iter().zip(a).all(|(g, a)| close(g, a)));
                }
            }
            let by_token = encoded.sparse_tokens.unwrap();
            assert_eq!(by_token.len(), chosen.len());
        }
        assert!(encoded_timings_are_set(&batcher).await);
    }

    async fn encoded_timings_are_set(batcher: &Batcher) -> bool {
        let encoded = batcher
            .encode(job(texts(&["timed"]), Outputs::default(), 8192))
            .await
            .unwrap();
        encoded.timings.inference > Duration::ZERO && encoded.timings.tokenization > Duration::ZERO
    }

    #[actix_web::test]
    async fn a_full_queue_refuses_at_once() {
        let options = BatcherOptions {
            queue_size: 1,
            ..BatcherOptions::default()
        };
        let (batcher, gate) = gated(options);
        let waiting = batcher.clone();
        let first = actix_web::rt::spawn(async move {
            waiting
                .encode(job(texts(&["a"]), Outputs::default(), 8192))
                .await
        });
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        let second = batcher
            .encode(job(texts(&["b"]), Outputs::default(), 8192))
            .await;
        assert!(
            matches!(second, Err(Error::Overloaded { capacity: 1 })),
            "{second:?}"
        );
        // Tokenizer work (`/tokenize`, `/decode`) takes a place too.
        let tokenizing = batcher.run_admitted(|| Ok(())).await;
        assert!(
            matches!(tokenizing, Err(Error::Overloaded { capacity: 1 })),
            "{tokenizing:?}"
        );
        gate.open();
        assert!(first.await.unwrap().is_ok());
        // The place is given back.
        let third = batcher
            .encode(job(texts(&["c"]), Outputs::default(), 8192))
            .await;
        assert!(third.is_ok(), "{third:?}");
    }

    #[actix_web::test]
    async fn a_timed_out_request_answers_503_and_leaves_the_queue() {
        let options = BatcherOptions {
            queue_size: 1,
            request_timeout: Some(Duration::from_millis(100)),
            ..BatcherOptions::default()
        };
        let (batcher, gate) = gated(options);
        let late = batcher
            .encode(job(texts(&["slow"]), Outputs::default(), 8192))
            .await;
        assert!(matches!(late, Err(Error::Timeout { .. })), "{late:?}");
        let (release, released) = std::sync::mpsc::channel::<()>();
        let slow_tokenizing = batcher
            .run_admitted(move || {
                let _ = released.recv();
                Ok(())
            })
            .await;
        assert!(
            matches!(slow_tokenizing, Err(Error::Timeout { .. })),
            "{slow_tokenizing:?}"
        );
        release.send(()).unwrap();
        gate.open();
        let next = batcher
            .encode(job(texts(&["next"]), Outputs::default(), 8192))
            .await;
        assert!(next.is_ok(), "{next:?}");
    }

    #[actix_web::test]
    async fn a_faulty_pass_fails_its_requests_and_the_rest_are_served() {
        let options = BatcherOptions {
            // One text per pass, so that the poisoned text has a pass of its own.
            max_batch_tokens: 1,
            ..BatcherOptions::default()
        };
        let (batcher, gate) = gated(options);
        let poisoned = {
            let batcher = batcher.clone();
            let ids = Inputs::TokenIds(vec![vec![Gate::POISON]]);
            actix_web::rt::spawn(
                async move { batcher.encode(job(ids, Outputs::default(), 8192)).await },
            )
        };
        let healthy = {
            let batcher = batcher.clone();
            actix_web::rt::spawn(async move {
                batcher
                    .encode(job(texts(&["fine", "also fine"]), Outputs::default(), 8192))
                    .await
            })
        };
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        gate.open();
        let failed = poisoned.await.unwrap();
        assert!(
            matches!(&failed, Err(Error::ModelFault(m)) if m.contains("poisoned pass")),
            "{failed:?}"
        );
        assert_eq!(healthy.await.unwrap().unwrap().embeddings.len(), 2);
        let after = batcher
            .encode(job(texts(&["after"]), Outputs::default(), 8192))
            .await;
        assert!(after.is_ok(), "{after:?}");
    }

    #[actix_web::test]
    async fn scores_are_those_of_each_pair_alone() {
        let (batcher, gate) = gated(BatcherOptions::default());
        gate.open();
        let pairs = vec![
            (
                "What is BGE M3?".to_string(),
                "BGE M3 is an embedding model".to_string(),
            ),
            ("Definition of BM25".to_string(), "".to_string()),
        ];
        let options = ScoreOptions::default();
        let scored = batcher
            .score(ScoreJob::pairs(pairs.clone(), options))
            .await
            .unwrap();
        let alone = tiny().compute_score(&pairs, &options).unwrap();
        assert_eq!(scored.scores.len(), 2);
        for (got, want) in scored.scores.iter().zip(&alone) {
            assert!((got.dense - want.dense).abs() <= 1e-5);
            assert!((got.sparse - want.sparse).abs() <= 1e-5);
            assert!((got.colbert - want.colbert).abs() <= 1e-5);
        }
    }

    #[actix_web::test]
    async fn a_rerank_shares_its_pass_with_other_requests_and_scores_each_pair_alone() {
        let (batcher, gate) = gated(BatcherOptions::default());
        // Texts of one length, so that the scheduler's "no longer than the seed" rule puts
        // them all in one pass whichever request seeds it (the scores of texts of every kind
        // are tested in tests/api/rerank.rs).
        let query = "What is BGE M3?".to_string();
        let documents: Vec<String> = ["What is BGE M3?", "What is BGE M4?", "What is BGE M5?"]
            .iter()
            .map(|d| d.to_string())
            .collect();
        let options = ScoreOptions::default();
        // A first request holds the model at the closed gate, so that the next two wait
        // together for the following pass.
        let blocker = {
            let batcher = batcher.clone();
            let job = job(texts(&["first"]), Outputs::default(), 8192);
            actix_web::rt::spawn(async move { batcher.encode(job).await })
        };
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        let reranking = {
            let batcher = batcher.clone();
            let job = ScoreJob::rerank(query.clone(), documents.clone(), options);
            actix_web::rt::spawn(async move { batcher.score(job).await })
        };
        let encoding = {
            let batcher = batcher.clone();
            let job = job(
                texts(&["What is BGE M6?", "What is BGE M7?"]),
                Outputs::default(),
                8192,
            );
            actix_web::rt::spawn(async move { batcher.encode(job).await })
        };
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        gate.open();
        assert!(blocker.await.unwrap().is_ok());
        let reranked = reranking.await.unwrap().unwrap();
        assert_eq!(encoding.await.unwrap().unwrap().embeddings.len(), 2);
        // After the first request's pass, the query once, three documents and the other
        // request's two texts: one pass.
        assert_eq!(*gate.passes.lock().unwrap(), [1, 6]);
        let pairs: Vec<(&str, &str)> = documents
            .iter()
            .map(|d| (query.as_str(), d.as_str()))
            .collect();
        let alone = tiny().compute_score(&pairs, &options).unwrap();
        assert_eq!(reranked.scores.len(), 3);
        for (got, want) in reranked.scores.iter().zip(&alone) {
            assert!((got.colbert_sparse_dense - want.colbert_sparse_dense).abs() <= 1e-5);
        }
        let query_tokens = tiny().tokenize(&[&query], 512).unwrap()[0].len() - 2;
        let document_tokens: usize = tiny()
            .tokenize(&documents, 8192)
            .unwrap()
            .iter()
            .map(|s| s.len() - 2)
            .sum();
        assert_eq!(
            reranked.tokens,
            query_tokens + document_tokens,
            "the query counted once"
        );
    }
}
