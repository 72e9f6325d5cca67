//! The inference layer's one error type. The server's error type maps each variant to its HTTP
//! answer; nothing here knows a status code.

use bge_m3_core::queue::QueueError;

use super::memory::Refused;

/// Why the inference layer did not answer a job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `queue_size` requests are already admitted and unanswered.
    #[error("{capacity} requests are already admitted")]
    Overloaded { capacity: usize },

    /// The job was not answered within the request timeout.
    #[error("not answered within {seconds}s")]
    Timeout { seconds: u64 },

    /// The job's memory reservation was refused.
    #[error(transparent)]
    Memory(#[from] Refused),

    /// The model refused the input or failed on it.
    #[error(transparent)]
    Model(#[from] bge_m3_core::Error),

    /// The model's queue is closed, or the forward pass holding the job failed.
    #[error(transparent)]
    Queue(#[from] QueueError),

    /// A fault of the layer itself: a tokenizer task panicked, the model's thread is gone.
    #[error("{0}")]
    Internal(String),

    /// A thread or pool could not be started.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with the inference layer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
