//! Cross-request batching: a queue whose thread merges the texts of every waiting request into
//! shared forward passes under a token budget. The server puts each HTTP request's texts on it;
//! the corpus encoder (`bge-m3-encode`) puts each window of its input. Replies come on tokio
//! oneshot channels, which an async caller awaits and a thread reads with `blocking_recv`;
//! dropping the receiver cancels the request.
//!
//! Scheduling policy, one pass at a time:
//! - **Seed in turn.** Each pass is seeded with the longest waiting text of the next request in
//!   arrival order that still has texts waiting (round robin). A request therefore waits for at
//!   most one pass per request ahead of it, however many or long their texts are: a batch of
//!   long documents cannot starve the short queries that arrive behind it.
//! - **Fill under the budget**, in one of two ways, by what a pass of the model costs:
//!   - *The model lays a pass's texts end to end* (the f32 CPU encoder): a pass costs the sum
//!     of its texts' lengths, whatever their mix. The rest of the pass is filled with waiting
//!     texts of the requests in arrival order (each request's longest first), skipping those
//!     that do not fit, while `tokens <= max_batch_tokens`. Sixteen waiting queries become one
//!     pass.
//!   - *The model pads a pass to its longest text* (the candle path: GPUs, f16/bf16): a pass
//!     costs `texts × longest`. The rest is filled with the longest waiting texts of any request
//!     that are no longer than the seed, or than [`SHORT_TEXT_TOKENS`] when the seed is
//!     shorter (padding short texts to a few dozen tokens costs little, and lets queries of
//!     different lengths share a pass), while `padded length × texts <= max_batch_tokens`.
//!
//!   A text longer than the budget runs alone.
//! - **Per-request options.** A pass computes the outputs any of its requests asked for; each
//!   request gets back only its own. A request puts at most its `batch_size` texts in one pass.
//! - **Cancellation.** A request whose client has gone (its reply channel is closed, after a
//!   disconnect or a timeout) is dropped before the next pass, with whatever texts it had left.
//!
//! A text's result does not depend on the pass it ran in (within float rounding), so merging
//! requests changes no answer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The reply channels, so that callers need no tokio of their own.
pub use tokio::sync::oneshot;

use crate::{BgeM3, Embedding, Outputs};

/// One forward pass of the model: what the worker needs of it.
///
/// [`BgeM3`] is the real one; a wrapper can inject faults in tests.
pub trait Forward: Send + Sync + 'static {
    /// Embeds `sequences` (each `<s> … </s>`, already checked) in one pass, in order.
    fn forward(&self, sequences: &[&[u32]], outputs: Outputs) -> crate::Result<Vec<Embedding>>;

    /// Whether a pass pads its texts to the longest one ([`BgeM3::pads_batches`]).
    fn pads_batches(&self) -> bool;
}

impl Forward for BgeM3 {
    fn forward(&self, sequences: &[&[u32]], outputs: Outputs) -> crate::Result<Vec<Embedding>> {
        BgeM3::forward(self, sequences, outputs)
    }

    fn pads_batches(&self) -> bool {
        BgeM3::pads_batches(self)
    }
}

/// Where the model pads a pass, texts up to this many tokens may share a pass seeded by a
/// shorter one (see the module's policy).
pub const SHORT_TEXT_TOKENS: usize = 64;

/// The texts of one request, tokenized, on their way to the worker.
pub struct Request {
    /// `<s> … </s>` sequences, each within the model's length.
    pub sequences: Vec<Vec<u32>>,
    /// Which outputs to compute for every text of the request.
    pub outputs: Outputs,
    /// The most texts of this request in one pass ([`crate::check_batch_size`] makes one).
    pub batch_size: std::num::NonZeroUsize,
    /// Where the answer goes. Dropping its receiver cancels the request.
    pub reply: oneshot::Sender<Result<Computed, QueueError>>,
}

/// Why the queue gave no embeddings for a [`Request`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue was closed ([`Queue::close`]) before the request was pushed.
    Closed,
    /// A forward pass that held texts of the request failed or panicked; the queue goes on
    /// with the other requests. Every request of the pass holds the same failure, which is
    /// the error's source (a [`PassFailure`]).
    PassFailed(Arc<PassFailure>),
}

impl std::fmt::Display for QueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QueueError::Closed => "the model's queue is closed",
            QueueError::PassFailed(_) => "the forward pass failed",
        })
    }
}

/// By hand, so that the source is the [`PassFailure`] itself rather than its `Arc`, for a
/// caller that downcasts it.
impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueueError::Closed => None,
            QueueError::PassFailed(failure) => Some(failure.as_ref()),
        }
    }
}

/// Why a forward pass failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PassFailure {
    /// The model returned an error: the core's, as it is.
    #[error(transparent)]
    Model(crate::Error),
    /// The pass panicked; the payload's text.
    #[error("panic: {0}")]
    Panic(String),
    /// The pass returned another number of embeddings than it was given texts.
    #[error("the pass returned {results} results for {texts} texts")]
    Miscounted {
        /// Embeddings returned.
        results: usize,
        /// Texts in the pass.
        texts: usize,
    },
}

/// What the queue reports as it runs, for metrics. Every method has an empty default.
pub trait Observer: Send + Sync + 'static {
    /// Texts waiting for a forward pass, after each change.
    fn waiting_texts(&self, _texts: usize) {}
    /// One forward pass ran; `failure` says why it failed, if it did.
    fn pass(&self, _pass: &PassReport<'_>) {}
    /// The queue's thread panicked outside a pass and was restarted.
    fn restarted(&self) {}
}

/// Reports nothing.
impl Observer for () {}

/// One forward pass, as an [`Observer`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct PassReport<'a> {
    /// Texts in the pass.
    pub texts: usize,
    /// Tokens it computed: texts x the longest where the model pads, the sum of the lengths
    /// where it does not.
    pub padded_tokens: usize,
    /// Wall-clock time of the pass.
    pub elapsed: Duration,
    /// Why it failed, when it did.
    pub failure: Option<&'a PassFailure>,
}

/// The worker's answer to a [`Request`].
#[derive(Debug)]
pub struct Computed {
    /// One per sequence, in order.
    pub embeddings: Vec<Embedding>,
    /// From the request's arrival to its first pass.
    pub queue: Duration,
    /// Time spent in the passes that held its texts.
    pub inference: Duration,
}

/// The sending side of the worker's queue. Dropping it (or [`Self::close`]) lets the worker
/// finish what is queued and stop.
pub struct Queue {
    shared: Arc<Shared>,
}

/// The receiving side: runs the passes on the thread that calls [`Worker::run`].
pub struct Worker {
    shared: Arc<Shared>,
}

impl Worker {
    /// Runs passes on `forward` until the [`Queue`] is closed and empty.
    pub fn run(self, forward: &dyn Forward) {
        supervise(&self.shared, forward);
    }
}

/// A queue whose passes cost at most `max_batch_tokens` tokens (as the model computes them:
/// padded or end to end), and its worker, which reports to `observer`.
pub fn queue(max_batch_tokens: usize, observer: Arc<dyn Observer>) -> (Queue, Worker) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        max_batch_tokens: max_batch_tokens.max(1),
        observer,
    });
    (
        Queue {
            shared: shared.clone(),
        },
        Worker { shared },
    )
}

impl Queue {
    /// A queue whose worker runs on a new thread.
    pub fn spawn(
        forward: Arc<dyn Forward>,
        max_batch_tokens: usize,
        observer: Arc<dyn Observer>,
    ) -> std::io::Result<Self> {
        let (queue, worker) = self::queue(max_batch_tokens, observer);
        std::thread::Builder::new()
            .name("bge-m3-model".into())
            .spawn(move || worker.run(forward.as_ref()))?;
        Ok(queue)
    }

    /// Queues a request; the reply comes on its channel.
    pub fn push(&self, request: Request) {
        let mut state = lock(&self.shared.state);
        if state.closed {
            let _ = request.reply.send(Err(QueueError::Closed));
            return;
        }
        if request.sequences.is_empty() {
            let _ = request.reply.send(Ok(Computed {
                embeddings: Vec::new(),
                queue: Duration::ZERO,
                inference: Duration::ZERO,
            }));
            return;
        }
        state.add(request);
        self.shared.observer.waiting_texts(state.waiting_texts());
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Drops the requests whose client has gone (their reply channel is closed), as the worker
    /// does before each pass, but at once: a request dropped while a long pass runs leaves the
    /// queue (and the waiting count) now rather than after that pass. Call it after dropping a
    /// request's receiver; the scheduling policy is unchanged.
    pub fn prune(&self) {
        let mut state = lock(&self.shared.state);
        state.jobs.retain(|job| !job.reply.is_closed());
        self.shared.observer.waiting_texts(state.waiting_texts());
    }

    /// Refuses new requests; the worker stops once the queued ones are answered.
    pub fn close(&self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_one();
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.close();
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    max_batch_tokens: usize,
    observer: Arc<dyn Observer>,
}

#[derive(Default)]
struct State {
    /// Requests not yet answered, in arrival order.
    jobs: Vec<Job>,
    next_id: u64,
    /// The request that seeded the last pass.
    last_seed: u64,
    closed: bool,
}

struct Job {
    id: u64,
    /// Emptied as the texts go into passes.
    sequences: Vec<Vec<u32>>,
    /// Indices of the texts not yet in a pass, longest first.
    waiting: Vec<usize>,
    outputs: Outputs,
    batch_size: usize,
    results: Vec<Option<Embedding>>,
    done: usize,
    reply: oneshot::Sender<Result<Computed, QueueError>>,
    enqueued: Instant,
    started: Option<Instant>,
    inference: Duration,
}

/// Texts chosen for one forward pass.
struct Pass {
    /// (request id, text index), one per sequence.
    members: Vec<(u64, usize)>,
    sequences: Vec<Vec<u32>>,
    outputs: Outputs,
    padded_tokens: usize,
}

impl State {
    fn add(&mut self, request: Request) {
        self.next_id += 1;
        let mut waiting: Vec<usize> = (0..request.sequences.len()).collect();
        waiting.sort_by_key(|&i| std::cmp::Reverse(request.sequences[i].len()));
        self.jobs.push(Job {
            id: self.next_id,
            results: vec![None; request.sequences.len()],
            sequences: request.sequences,
            waiting,
            outputs: request.outputs,
            batch_size: request.batch_size.get(),
            done: 0,
            reply: request.reply,
            enqueued: Instant::now(),
            started: None,
            inference: Duration::ZERO,
        });
    }

    fn waiting_texts(&self) -> usize {
        self.jobs.iter().map(|job| job.waiting.len()).sum()
    }

    /// Chooses the next pass (see the module's policy), or `None` when no text is waiting.
    fn next_pass(&mut self, max_batch_tokens: usize, padded: bool) -> Option<Pass> {
        self.jobs.retain(|job| !job.reply.is_closed());
        let has_waiting = |job: &Job| !job.waiting.is_empty();
        let seed = self
            .jobs
            .iter()
            .position(|job| job.id > self.last_seed && has_waiting(job))
            .or_else(|| self.jobs.iter().position(has_waiting))?;
        self.last_seed = self.jobs[seed].id;
        let seed_len = {
            let job = &self.jobs[seed];
            job.sequences[job.waiting[0]].len()
        };
        // Per request, the positions in its `waiting` list of the texts this pass takes.
        let chosen = if padded {
            self.fill_padded(seed, seed_len, max_batch_tokens)
        } else {
            self.fill_end_to_end(seed, seed_len, max_batch_tokens)
        };

        let now = Instant::now();
        let mut pass = Pass {
            members: Vec::new(),
            sequences: Vec::new(),
            outputs: Outputs {
                dense: false,
                sparse: false,
                colbert: false,
            },
            padded_tokens: 0,
        };
        for (job, chosen) in self.jobs.iter_mut().zip(chosen) {
            if chosen.is_empty() {
                continue;
            }
            job.started.get_or_insert(now);
            pass.outputs.dense |= job.outputs.dense;
            pass.outputs.sparse |= job.outputs.sparse;
            pass.outputs.colbert |= job.outputs.colbert;
            for &slot in &chosen {
                let i = job.waiting[slot];
                pass.members.push((job.id, i));
                pass.sequences.push(std::mem::take(&mut job.sequences[i]));
            }
            // `chosen` is ascending: remove from the back so the slots stay valid.
            for &slot in chosen.iter().rev() {
                job.waiting.remove(slot);
            }
        }
        let lengths = pass.sequences.iter().map(Vec::len);
        pass.padded_tokens = if padded {
            pass.sequences.len() * lengths.max().unwrap_or(0)
        } else {
            lengths.sum()
        };
        Some(pass)
    }

    /// The padded policy: the seed, then the longest waiting texts no longer than
    /// `max(seed_len, SHORT_TEXT_TOKENS)`, while `count × longest <= max_batch_tokens`.
    fn fill_padded(
        &self,
        seed: usize,
        seed_len: usize,
        max_batch_tokens: usize,
    ) -> Vec<Vec<usize>> {
        let limit = seed_len.max(SHORT_TEXT_TOKENS.min(max_batch_tokens));
        // Each request's texts no longer than `limit` are a run of its `waiting` list (sorted
        // longest first). The seed is always taken.
        let mut candidates: Vec<(usize, usize, usize)> = Vec::new(); // (length, request, slot)
        for (position, job) in self.jobs.iter().enumerate() {
            let start = job
                .waiting
                .partition_point(|&i| job.sequences[i].len() > limit);
            let skip = usize::from(position == seed);
            let first = if position == seed { 1 } else { start };
            let available = job.batch_size - skip;
            candidates.extend(
                (first..job.waiting.len())
                    .take(available)
                    .map(|slot| (job.sequences[job.waiting[slot]].len(), position, slot)),
            );
        }
        // Longest first; the sort is stable, so each request's chosen texts keep their order.
        candidates.sort_by_key(|&(len, _, _)| std::cmp::Reverse(len));
        let mut chosen = vec![Vec::new(); self.jobs.len()];
        chosen[seed].push(0);
        let (mut count, mut longest) = (1, seed_len);
        for (len, position, slot) in candidates {
            let padded_len = longest.max(len);
            if (count + 1) * padded_len > max_batch_tokens {
                // Candidates only get shorter: one that fits may still follow.
                continue;
            }
            chosen[position].push(slot);
            count += 1;
            longest = padded_len;
        }
        for slots in &mut chosen {
            slots.sort_unstable();
        }
        chosen
    }

    /// The end-to-end policy: the seed, then waiting texts of the requests in arrival order
    /// (each request's longest first) that still fit, while `sum of lengths <=
    /// max_batch_tokens`.
    fn fill_end_to_end(
        &self,
        seed: usize,
        seed_len: usize,
        max_batch_tokens: usize,
    ) -> Vec<Vec<usize>> {
        let mut chosen = vec![Vec::new(); self.jobs.len()];
        chosen[seed].push(0);
        let mut tokens = seed_len;
        for (position, job) in self.jobs.iter().enumerate() {
            let first = usize::from(position == seed);
            for slot in first..job.waiting.len() {
                if chosen[position].len() == job.batch_size || tokens >= max_batch_tokens {
                    break;
                }
                let len = job.sequences[job.waiting[slot]].len();
                if tokens + len <= max_batch_tokens {
                    chosen[position].push(slot);
                    tokens += len;
                }
            }
        }
        chosen
    }

    /// Hands out a pass's results, answering every request whose texts are all done; a failed
    /// pass fails every request that had a text in it.
    fn settle(
        &mut self,
        pass: Pass,
        outcome: std::result::Result<Vec<Embedding>, PassFailure>,
        elapsed: Duration,
    ) {
        let mut involved: Vec<u64> = pass.members.iter().map(|&(id, _)| id).collect();
        involved.dedup();
        match outcome {
            Ok(embeddings) => {
                for (&(id, i), embedding) in pass.members.iter().zip(embeddings) {
                    if let Some(job) = self.jobs.iter_mut().find(|job| job.id == id) {
                        // The pass computed what any of its requests asked for.
                        let mut embedding = embedding;
                        let wanted = job.outputs;
                        if !wanted.dense {
                            embedding.dense = None;
                        }
                        if !wanted.sparse {
                            embedding.sparse = None;
                        }
                        if !wanted.colbert {
                            embedding.colbert = None;
                        }
                        job.results[i] = Some(embedding);
                        job.done += 1;
                    }
                }
                for id in involved {
                    let Some(position) = self.jobs.iter().position(|job| job.id == id) else {
                        continue; // cancelled while the pass ran
                    };
                    let job = &mut self.jobs[position];
                    job.inference += elapsed;
                    if job.done == job.results.len() {
                        let job = self.jobs.remove(position);
                        let queue = job.started.unwrap_or(job.enqueued) - job.enqueued;
                        let embeddings = job.results.into_iter().flatten().collect();
                        let _ = job.reply.send(Ok(Computed {
                            embeddings,
                            queue,
                            inference: job.inference,
                        }));
                    }
                }
            }
            Err(failure) => {
                let failure = Arc::new(failure);
                for job in self.jobs.extract_if(.., |job| involved.contains(&job.id)) {
                    let _ = job.reply.send(Err(QueueError::PassFailed(failure.clone())));
                }
            }
        }
    }
}

/// Runs the worker loop, and runs it again if it ever panics outside a forward pass (which is
/// a bug: passes have their own guard). Requests caught in such a panic lose their reply and
/// answer 500; the others go on.
fn supervise(shared: &Shared, forward: &dyn Forward) {
    loop {
        match catch_unwind(AssertUnwindSafe(|| work(shared, forward))) {
            Ok(()) => return,
            Err(panic) => {
                tracing::error!(
                    cause = panic_message(panic.as_ref()),
                    "the model worker panicked; restarting it"
                );
                shared.observer.restarted();
            }
        }
    }
}

/// The worker loop: one pass at a time until the queue is closed and empty.
fn work(shared: &Shared, forward: &dyn Forward) {
    let padded = forward.pads_batches();
    loop {
        let pass = {
            let mut state = lock(&shared.state);
            loop {
                if let Some(pass) = state.next_pass(shared.max_batch_tokens, padded) {
                    shared.observer.waiting_texts(state.waiting_texts());
                    break pass;
                }
                shared.observer.waiting_texts(0);
                if state.closed && state.jobs.is_empty() {
                    return;
                }
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };

        let start = Instant::now();
        let sequences: Vec<&[u32]> = pass.sequences.iter().map(Vec::as_slice).collect();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            forward.forward(&sequences, pass.outputs)
        }));
        let elapsed = start.elapsed();
        let outcome = match outcome {
            Ok(Ok(embeddings)) if embeddings.len() == sequences.len() => Ok(embeddings),
            Ok(Ok(embeddings)) => Err(PassFailure::Miscounted {
                results: embeddings.len(),
                texts: sequences.len(),
            }),
            Ok(Err(error)) => Err(PassFailure::Model(error)),
            Err(panic) => Err(PassFailure::Panic(panic_message(panic.as_ref()))),
        };

        shared.observer.pass(&PassReport {
            texts: sequences.len(),
            padded_tokens: pass.padded_tokens,
            elapsed,
            failure: outcome.as_ref().err(),
        });
        if let Err(failure) = &outcome {
            tracing::error!(
                texts = sequences.len(),
                padded_tokens = pass.padded_tokens,
                cause = %crate::Report(failure),
                "a forward pass failed; failing the requests it held"
            );
        }
        drop(sequences);
        lock(&shared.state).settle(pass, outcome, elapsed);
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The text of a panic's payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

#[cfg(test)]
mod tests;
