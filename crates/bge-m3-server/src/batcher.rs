//! The handle to the model: admission, tokenization and the model's thread.
//!
//! Handlers validate a request into a job ([`EncodeJob`], [`ScoreJob`]) and await
//! [`Batcher::encode`] or [`Batcher::score`], which
//! 1. admits the request or refuses it at once with 429 when `queue_size` requests are already
//!    admitted and unanswered, never queueing without bound;
//! 2. tokenizes its texts on the blocking thread pool, so that tokenization runs beside the
//!    model, never on the async runtime;
//! 3. hands the sequences to the model's thread ([`crate::worker`]), which merges the texts of
//!    every waiting request into forward passes under a token budget;
//! 4. turns the embeddings into the answer (sparse weights keyed by token string, scores), again
//!    on the blocking pool.
//!
//! The whole is bounded by the request timeout (503). A request whose client disconnects is
//! dropped: its texts leave the queue before the next pass.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bge_m3_core::{BgeM3, Embedding, EncodeOptions, Outputs, PairScores, ScoreOptions};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::metrics::metrics;
use crate::state::ModelInfo;
use crate::worker::{self, Computed, Forward, Queue, Request};
use crate::{Error, Result};

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
#[derive(Debug, Clone)]
pub struct Encoded {
    /// One per input, in order.
    pub embeddings: Vec<Embedding>,
    /// The sparse weights keyed by token string, one list per input, when the job asked for
    /// sparse weights keyed by [`SparseKeys::Tokens`].
    pub sparse_tokens: Option<Vec<Vec<(String, f32)>>>,
    pub timings: Timings,
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
#[derive(Debug, Clone)]
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
    /// Most padded tokens (texts × longest text) in one forward pass; a longer text runs
    /// alone. Default: 16384.
    pub max_batch_tokens: usize,
    /// Longest time a request may take, from admission to answer; `None` waits without limit.
    /// Default: 300 s.
    pub request_timeout: Option<Duration>,
}

impl Default for BatcherOptions {
    fn default() -> Self {
        Self {
            queue_size: 64,
            max_batch_tokens: 16384,
            request_timeout: Some(Duration::from_secs(300)),
        }
    }
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
                let (queue, worker) = worker::queue(options.max_batch_tokens);
                let _ = loaded_tx.send(Ok(Self::from_parts(model.clone(), queue, options)));
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
        let queue = Queue::spawn(forward, options.max_batch_tokens)?;
        Ok(Self::from_parts(model, queue, options))
    }

    fn from_parts(model: Arc<BgeM3>, queue: Queue, options: BatcherOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                model,
                queue,
                admission: Arc::new(Semaphore::new(options.queue_size.max(1))),
                options,
            }),
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

    /// Embeds a job's inputs.
    pub async fn encode(&self, job: EncodeJob) -> Result<Encoded> {
        let _admitted = self.admit()?;
        self.within_timeout(async move {
            let EncodeOptions {
                outputs,
                max_length,
                batch_size,
            } = job.options;
            let model = self.inner.model.clone();
            let (sequences, tokenization) = blocking(move || {
                let start = Instant::now();
                let sequences = match &job.inputs {
                    Inputs::Texts(texts) => model.tokenize(texts, max_length),
                    Inputs::TokenIds(ids) => model.wrap_ids(ids, max_length),
                };
                sequences.map(|s| (s, start.elapsed()))
            })
            .await??;
            let computed = self.compute(sequences, outputs, batch_size).await?;
            let timings = timings(tokenization, &computed);
            let embeddings = computed.embeddings;
            if !(outputs.sparse && job.sparse_keys == SparseKeys::Tokens) {
                return Ok(Encoded {
                    embeddings,
                    sparse_tokens: None,
                    timings,
                });
            }
            let model = self.inner.model.clone();
            let (embeddings, sparse_tokens) = blocking(move || {
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
            })
        })
        .await
    }

    /// `BGEM3FlagModel.compute_score` for each (query, passage) pair on its own, as
    /// [`BgeM3::score_tokenized`] computes it: queries and passages share the forward passes
    /// (with every other request's texts), and each pair is scored from its own two
    /// embeddings. A rerank's one query is embedded once for all its passages; a text's
    /// embedding does not depend on its pass, so its scores are those of each pair alone.
    pub async fn score(&self, job: ScoreJob) -> Result<Scored> {
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
            let model = self.inner.model.clone();
            let (sequences, tokenization) = blocking(move || {
                let start = Instant::now();
                let mut sequences = model.tokenize(&queries, options.max_query_length)?;
                sequences.extend(model.tokenize(&passages, options.max_passage_length)?);
                Ok::<_, Error>((sequences, start.elapsed()))
            })
            .await??;
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
            Ok(Scored {
                scores,
                tokens,
                timings,
            })
        })
        .await
    }

    /// Runs tokenizer work that needs no forward pass (`/tokenize`, `/decode`) on the blocking
    /// pool as an admitted request: it takes a place in the queue (429 when it is full) and is
    /// bounded by the request timeout, like every request that runs the model.
    pub async fn run_admitted<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _admitted = self.admit()?;
        self.within_timeout(async move { blocking(work).await? })
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
        let computed = answer.await.map_err(|_| {
            Error::Internal("the model's thread dropped the request without an answer".into())
        })??;
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
            Ok(panic) => crate::worker::panic_message(panic.as_ref()),
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
                let options = LoadOptions {
                    device: DeviceSpec::Cpu,
                    dtype: None,
                };
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
            options: EncodeOptions {
                outputs,
                max_length,
                batch_size: 12,
            },
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
                let options = EncodeOptions {
                    outputs: *outputs,
                    max_length: *max_length,
                    batch_size: 1,
                };
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
