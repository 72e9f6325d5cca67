//! The inference layer: the handle handlers call ([`Inference`]), the model's thread and its
//! supervision, the job types, and its own [`Error`]. It knows nothing of HTTP: the server's
//! error type maps [`Error`] to statuses.
//!
//! Handlers validate a request into a job ([`EncodeJob`], [`ScoreJob`]) and await
//! [`Inference::encode`] or [`Inference::score`]. Their `batch_size` is the one option checked
//! here rather than by the handler: it is checked once for every route (a rerank's comes from
//! the defaults), by the core's [`check_batch_size`], before the job is admitted. Each of them
//! then
//! 1. admits the request or refuses it at once with 429 when `queue_size` requests are already
//!    admitted and unanswered, never queueing without bound;
//! 2. grows the request's memory reservation (see [`memory`]) to the bound of its token
//!    ids, or refuses it (429, or 413 when it could never fit);
//! 3. tokenizes its texts on the tokenizer pool, threads of their own (`--tokenizer-threads`),
//!    so that tokenization never runs on the async runtime nor on the model's threads, one job
//!    per chunk of [`TOKENIZE_CHUNK_BYTES`], so that a large request holds its truncated ids and
//!    one chunk's tokenizer state, never all of it, and concurrent requests take turns; after
//!    each chunk the reservation grows to the answer's size as far as it is known (the texts
//!    tokenized, the smallest the others can be), so that an answer that can never fit is a
//!    413 after the chunk that shows it, not after the whole request;
//! 4. sets the reservation to its token ids and the embeddings its answer will hold (as
//!    [`BgeM3::output_bytes`] counts them);
//! 5. hands the sequences to the model's thread ([`bge_m3_core::queue`]), which merges the texts of
//!    every waiting request into forward passes under a token budget;
//! 6. turns the embeddings into the answer (sparse weights keyed by token string on the
//!    tokenizer pool, scores on the blocking pool).
//!
//! `/tokenize` and `/decode` ([`Inference::text_tokens`], [`Inference::decode`]) take steps 1
//! to 3 the same way, without the model: admitted, reserved (their texts and tokens, or their
//! decoded texts), and worked in chunks on the tokenizer pool.
//!
//! The whole is bounded by the request timeout (503). A request whose future is dropped (its
//! client hung up, or it timed out) is cancelled: no chunk of it is tokenized after the one at
//! hand (`bge_m3_tokenizer_tasks` counts the chunks waiting or running), and its texts leave
//! the model's queue at once.

mod error;
mod info;
mod jobs;
pub(crate) mod memory;
mod observer;
mod thread;
mod tokenize;
mod tokens;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bge_m3_core::queue::{panic_message, Computed, Queue, QueueError, Request};
use bge_m3_core::{check_batch_size, BgeM3, EncodeOptions, Outputs};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

pub use self::error::{Error, Result};
pub use self::info::ModelInfo;
pub use self::jobs::{EncodeJob, Encoded, Inputs, ScoreJob, Scored, SparseKeys, Timings};
use self::memory::{Cost, Need, Reservation};
#[cfg(test)]
pub(crate) use self::observer::QueueMetrics;
pub use self::thread::{default_tokenizer_threads, InferenceOptions, Loaded};
pub use self::tokenize::TOKENIZE_CHUNK_BYTES;
use self::tokenize::{ids_of, AnswerSize, Measure, Tokenized};
pub use self::tokens::{DecodeJob, Decoded, TextTokens, TokenizeJob, DECODE_CHUNK_IDS};
use crate::metrics::metrics;

/// The handle to the model and its thread; cheap to clone. When the last clone is dropped,
/// the thread answers what it holds and stops.
#[derive(Clone)]
pub struct Inference {
    inner: Arc<Inner>,
}

struct Inner {
    model: Arc<BgeM3>,
    queue: Queue,
    admission: Arc<Semaphore>,
    tokenizers: Arc<rayon::ThreadPool>,
    options: InferenceOptions,
}

impl Inference {
    /// The model, for what handlers read of it while they write an answer (the vocabulary's
    /// strings).
    pub fn model(&self) -> &Arc<BgeM3> {
        &self.inner.model
    }

    /// Facts about the model for the handlers.
    pub fn info(&self) -> ModelInfo {
        ModelInfo::of(&self.inner.model)
    }

    /// The options it runs with.
    pub fn options(&self) -> InferenceOptions {
        self.inner.options
    }

    /// Embeds a job's inputs, outside any memory budget.
    pub async fn encode(&self, job: EncodeJob) -> Result<Encoded> {
        self.encode_within(job, None).await
    }

    /// Embeds a job's inputs within the request's memory `reservation` (see [`memory`]): it
    /// grows to the bound of the job's token ids before tokenization, then becomes its ids and
    /// embeddings, handed back in [`Encoded::reservation`]; a request that does not fit is
    /// refused with 429, or 413 when it never could.
    pub async fn encode_within(
        &self,
        job: EncodeJob,
        mut reservation: Option<Reservation>,
    ) -> Result<Encoded> {
        let batch_size = check_batch_size(job.options.batch_size)?;
        let _admitted = self.admit()?;
        self.within_timeout(async move {
            let EncodeOptions {
                outputs,
                max_length,
                ..
            } = job.options;
            let sparse_tokens = outputs.sparse && job.sparse_keys == SparseKeys::Tokens;
            let asked = Asked {
                outputs,
                sparse_tokens,
                batch_size,
            };
            let (computed, timings) = self
                .embed(vec![(job.inputs, max_length)], asked, &mut reservation)
                .await?;
            let embeddings = computed.embeddings;
            if !sparse_tokens {
                return Ok(Encoded {
                    embeddings,
                    sparse_tokens: None,
                    timings,
                    reservation,
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
                reservation,
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

    /// [`Self::score`] within the request's memory `reservation`, as [`Self::encode_within`]; the
    /// reservation is given back with the scores.
    pub async fn score_within(
        &self,
        job: ScoreJob,
        mut reservation: Option<Reservation>,
    ) -> Result<Scored> {
        let batch_size = check_batch_size(job.options.batch_size)?;
        let _admitted = self.admit()?;
        self.within_timeout(async move {
            let ScoreJob {
                queries,
                passages,
                options,
            } = job;
            let query_count = queries.len();
            // Every output of every text, until the pairs are scored.
            let asked = Asked {
                outputs: Outputs::ALL,
                sparse_tokens: false,
                batch_size,
            };
            let parts = vec![
                (Inputs::Texts(queries), options.max_query_length),
                (Inputs::Texts(passages), options.max_passage_length),
            ];
            let (computed, timings) = self.embed(parts, asked, &mut reservation).await?;
            let mut queries = computed.embeddings;
            let tokens = queries.iter().map(|e| e.tokens).sum();
            let scores = blocking(move || {
                let passages = queries.split_off(query_count);
                bge_m3_core::score_pairs(&queries, &passages, options.weights)
            })
            .await??;
            drop(reservation);
            Ok(Scored {
                scores,
                tokens,
                timings,
            })
        })
        .await
    }

    /// What every job does before its answer is written: grows the request's memory
    /// `reservation` to the bound of the token ids of `parts` (inputs and the length they are
    /// truncated to), tokenizes them in order, growing it as soon as the answer is known to need
    /// more (see [`AnswerSize`]), sets it to their ids and the embeddings `asked` will give, and
    /// runs them through the model's thread.
    async fn embed(
        &self,
        parts: Vec<(Inputs, usize)>,
        asked: Asked,
        reservation: &mut Option<Reservation>,
    ) -> Result<(Computed, Timings)> {
        let Asked {
            outputs,
            sparse_tokens,
            batch_size,
        } = asked;
        if let Some(reservation) = reservation.as_mut() {
            let bound = parts
                .iter()
                .map(|(inputs, max_length)| match inputs {
                    Inputs::Texts(texts) => Cost::ids_bound(texts, *max_length),
                    Inputs::TokenIds(ids) => ids_of(ids, *max_length),
                })
                .sum::<u64>();
            reservation.resize(reservation.bytes() + bound, Need::Tokens)?;
        }
        let texts = parts.iter().map(|(inputs, _)| inputs.len()).sum();
        let measure = Measure {
            outputs,
            sparse_tokens,
        };
        let mut size = AnswerSize::new(reservation, &self.inner.model, measure, texts);
        let start = Instant::now();
        let mut tokenized = Tokenized::default();
        for (inputs, max_length) in parts {
            match inputs {
                Inputs::Texts(texts) => {
                    self.tokenize(texts, max_length, &mut tokenized, &mut size)
                        .await?
                }
                Inputs::TokenIds(ids) => {
                    let model = self.inner.model.clone();
                    let measure = size.measure();
                    let count = ids.len();
                    let chunk = self
                        .on_tokenizers(move || {
                            Tokenized::of(model.wrap_ids(&ids, max_length)?, &model, measure)
                        })
                        .await??;
                    size.tokenized(count, chunk.bytes)?;
                    tokenized.extend(chunk);
                }
            }
        }
        let tokenization = start.elapsed();
        size.settle()?;
        let computed = self
            .compute(tokenized.sequences, outputs, batch_size)
            .await?;
        let timings = timings(tokenization, &computed);
        Ok((computed, timings))
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
        batch_size: NonZeroUsize,
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

/// What a job asks of the model (its outputs, their keys, its texts per pass), for the memory
/// estimate and the forward passes.
struct Asked {
    outputs: Outputs,
    /// Sparse weights keyed by token string as well as by id.
    sparse_tokens: bool,
    batch_size: NonZeroUsize,
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
