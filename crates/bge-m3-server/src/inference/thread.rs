//! The model's thread: loading the model on it, starting the queue that merges every request's
//! texts into forward passes, and the pool of tokenizer threads beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bge_m3_core::queue::{self, Forward, Observer, Queue};
use bge_m3_core::BgeM3;
use tokio::sync::{oneshot, Semaphore};

use super::observer::QueueMetrics;
use super::{Error, Inference, Inner, Result};
use crate::metrics::metrics;

/// How the model is shared between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceOptions {
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

impl Default for InferenceOptions {
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

/// Resolves when the model has loaded, with its inference, or with the loading error.
pub type Loaded = oneshot::Receiver<bge_m3_core::Result<Inference>>;

impl Inference {
    /// Loads the model with `load` on a thread of its own, which then becomes the model's
    /// thread. The returned receiver resolves once the model is loaded, with its inference; if
    /// `load` panics, its sender is dropped without a value.
    pub fn spawn<F>(load: F, options: InferenceOptions) -> Result<Loaded>
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
                let inference = Self::from_parts(model.clone(), queue, tokenizers, options);
                let _ = loaded_tx.send(Ok(inference));
                worker.run(model.as_ref());
            })
            .map_err(Error::Io)?;
        Ok(loaded)
    }

    /// Starts the model's thread over a loaded model.
    pub fn start(model: Arc<BgeM3>, options: InferenceOptions) -> Result<Self> {
        Self::start_with(model.clone(), model, options)
    }

    /// Like [`Self::start`], but the forward passes run on `forward` while `model` tokenizes
    /// and answers: for wrappers of the model, such as tests that inject faults.
    pub fn start_with(
        model: Arc<BgeM3>,
        forward: Arc<dyn Forward>,
        options: InferenceOptions,
    ) -> Result<Self> {
        Self::start_observed(model, forward, options, Arc::new(QueueMetrics))
    }

    /// Like [`Self::start_with`], the queue reporting to `observer` rather than to the metrics:
    /// for tests that wait for texts to be queued.
    pub(crate) fn start_observed(
        model: Arc<BgeM3>,
        forward: Arc<dyn Forward>,
        options: InferenceOptions,
        observer: Arc<dyn Observer>,
    ) -> Result<Self> {
        let tokenizers = tokenizer_pool(options.tokenizer_threads)?;
        let queue = Queue::spawn(forward, options.max_batch_tokens, observer).map_err(Error::Io)?;
        Ok(Self::from_parts(model, queue, tokenizers, options))
    }

    fn from_parts(
        model: Arc<BgeM3>,
        queue: Queue,
        tokenizers: Arc<rayon::ThreadPool>,
        options: InferenceOptions,
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
}
