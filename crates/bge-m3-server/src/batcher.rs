//! The model's own thread, behind a bounded queue.
//!
//! Inference and tokenization never run on the async runtime: handlers validate a request
//! into a job ([`EncodeJob`], [`ScoreJob`]), hand it to [`Batcher`] and await a oneshot reply.
//! When the queue is full the request is refused at once with 429 instead of waiting without
//! bound. Today the thread runs one job at a time; jobs carry their options already validated
//! so that a later version can merge compatible jobs into shared forward passes.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use bge_m3_core::{BgeM3, Embedding, EncodeOptions, PairScores, ScoreOptions};
use tokio::sync::oneshot;

use crate::state::ModelInfo;
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
}

impl Encoded {
    /// Tokens of all inputs after truncation, `<s>` and `</s>` not counted.
    pub fn tokens(&self) -> usize {
        self.embeddings.iter().map(|e| e.tokens).sum()
    }
}

/// A validated `/score` request.
#[derive(Debug, Clone)]
pub struct ScoreJob {
    /// (query, passage) pairs.
    pub pairs: Vec<(String, String)>,
    pub options: ScoreOptions,
}

/// The reply to a [`ScoreJob`].
#[derive(Debug, Clone)]
pub struct Scored {
    /// One per pair, in order.
    pub scores: Vec<PairScores>,
    /// Tokens of all queries and passages after truncation, `<s>` and `</s>` not counted.
    pub tokens: usize,
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Job {
    Encode(EncodeJob, Reply<Encoded>),
    Score(ScoreJob, Reply<Scored>),
}

/// The handle to the model's thread; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    queue: SyncSender<Job>,
    capacity: usize,
}

/// Resolves when the model thread has loaded the model (or failed to).
pub type Loaded = oneshot::Receiver<bge_m3_core::Result<ModelInfo>>;

impl Batcher {
    /// Starts the model's thread: it runs `load`, reports the outcome on the returned
    /// receiver, then answers jobs, at most `capacity` of them waiting at a time.
    ///
    /// If `load` panics, the receiver's sender is dropped without a value.
    pub fn spawn<F>(load: F, capacity: usize) -> Result<(Self, Loaded)>
    where
        F: FnOnce() -> bge_m3_core::Result<BgeM3> + Send + 'static,
    {
        let (queue, jobs) = sync_channel(capacity);
        let (loaded_tx, loaded) = oneshot::channel();
        std::thread::Builder::new()
            .name("bge-m3-model".into())
            .spawn(move || match load() {
                Ok(model) => {
                    let _ = loaded_tx.send(Ok(ModelInfo::of(&model)));
                    work(&model, jobs);
                }
                Err(e) => {
                    let _ = loaded_tx.send(Err(e));
                }
            })
            .map_err(Error::Io)?;
        Ok((Self { queue, capacity }, loaded))
    }

    /// Embeds on the model's thread.
    pub async fn encode(&self, job: EncodeJob) -> Result<Encoded> {
        self.submit(|reply| Job::Encode(job, reply)).await
    }

    /// Scores pairs on the model's thread.
    pub async fn score(&self, job: ScoreJob) -> Result<Scored> {
        self.submit(|reply| Job::Score(job, reply)).await
    }

    async fn submit<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.queue.try_send(job(reply)).map_err(|e| match e {
            TrySendError::Full(_) => Error::Overloaded {
                capacity: self.capacity,
            },
            TrySendError::Disconnected(_) => {
                Error::Internal("the model thread has stopped".to_string())
            }
        })?;
        answer.await.map_err(|_| {
            Error::Internal("the model thread dropped the request without an answer".to_string())
        })?
    }
}

/// The model thread's loop: one job at a time until every [`Batcher`] is dropped.
fn work(model: &BgeM3, jobs: Receiver<Job>) {
    for job in jobs {
        match job {
            Job::Encode(job, reply) => answer(reply, || encode(model, job)),
            Job::Score(job, reply) => answer(reply, || score(model, job)),
        }
    }
}

/// Runs a job unless its requester has gone away, and sends the outcome. A panic becomes a 500
/// for this request alone; the thread goes on with the next job.
fn answer<T>(reply: Reply<T>, run: impl FnOnce() -> Result<T>) {
    if reply.is_closed() {
        return;
    }
    let result = catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(Error::Internal(format!("the model panicked: {message}")))
    });
    let _ = reply.send(result);
}

fn encode(model: &BgeM3, job: EncodeJob) -> Result<Encoded> {
    let EncodeOptions {
        outputs,
        max_length,
        batch_size,
    } = job.options;
    let sequences = match &job.inputs {
        Inputs::Texts(texts) => model.tokenize(texts, max_length)?,
        Inputs::TokenIds(ids) => model.wrap_ids(ids, max_length)?,
    };
    let embeddings = model.encode_tokenized(&sequences, outputs, batch_size)?;
    let sparse_tokens = if outputs.sparse && job.sparse_keys == SparseKeys::Tokens {
        let by_token = embeddings
            .iter()
            .map(|e| match &e.sparse {
                Some(sparse) => Ok(model.sparse_by_token(sparse)?),
                None => Err(missing_output("sparse")),
            })
            .collect::<Result<Vec<_>>>()?;
        Some(by_token)
    } else {
        None
    };
    Ok(Encoded {
        embeddings,
        sparse_tokens,
    })
}

/// `BGEM3FlagModel.compute_score` for each pair on its own, from one batched encoding of all
/// queries and passages.
fn score(model: &BgeM3, job: ScoreJob) -> Result<Scored> {
    let options = job.options;
    let (queries, passages): (Vec<&str>, Vec<&str>) = job
        .pairs
        .iter()
        .map(|(q, p)| (q.as_str(), p.as_str()))
        .unzip();
    let queries = model.tokenize(&queries, options.max_query_length)?;
    let passages = model.tokenize(&passages, options.max_passage_length)?;
    let tokens = queries.iter().chain(&passages).map(|s| s.len() - 2).sum();
    let scores = model.score_tokenized(&queries, &passages, options.weights, options.batch_size)?;
    Ok(Scored { scores, tokens })
}

fn missing_output(name: &str) -> Error {
    Error::Internal(format!("the model returned no {name} output"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A batcher whose queue nobody drains, and the receiving end that keeps it open.
    pub(crate) fn stalled(capacity: usize) -> (Batcher, Receiver<impl Sized>) {
        let (queue, jobs) = sync_channel::<Job>(capacity);
        (Batcher { queue, capacity }, jobs)
    }

    fn job() -> EncodeJob {
        EncodeJob {
            inputs: Inputs::Texts(vec!["a".into()]),
            options: EncodeOptions::default(),
            sparse_keys: SparseKeys::Ids,
        }
    }

    #[actix_web::test]
    async fn a_full_queue_refuses_at_once() {
        let (batcher, _jobs) = stalled(1);
        // The first job waits in the queue forever: start it without awaiting it.
        let waiting = batcher.clone();
        let first = actix_web::rt::spawn(async move { waiting.encode(job()).await });
        actix_web::rt::task::yield_now().await;
        let second = batcher.encode(job()).await;
        assert!(
            matches!(second, Err(Error::Overloaded { capacity: 1 })),
            "{second:?}"
        );
        first.abort();
    }

    #[actix_web::test]
    async fn a_stopped_worker_is_an_internal_error() {
        let (batcher, jobs) = stalled(1);
        drop(jobs);
        let result = batcher.encode(job()).await;
        assert!(matches!(result, Err(Error::Internal(_))), "{result:?}");
    }

    #[test]
    fn a_panicking_job_answers_500_and_the_thread_goes_on() {
        let (reply, mut outcome) = oneshot::channel::<Result<()>>();
        answer(reply, || panic!("boom"));
        let result = outcome.try_recv().unwrap();
        assert!(
            matches!(&result, Err(Error::Internal(m)) if m.contains("boom")),
            "{result:?}"
        );
    }
}
