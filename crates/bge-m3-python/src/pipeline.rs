//! One call's texts on the model's queue: tokenized and queued a chunk at a time, answered in
//! order.
//!
//! Every chunk is one request of the core's queue ([`bge_m3_core::queue`]), which merges the
//! waiting texts of every request (of this call, of other chunks, of other Python threads) into
//! forward passes of at most `max_batch_tokens` tokens. All chunks are queued before the first
//! answer is awaited, so the model starts on the first chunk while the next ones are
//! tokenized, and the passes stay full up to the last chunk. The answers are read in order,
//! which is when the progress callback hears of each chunk.

use std::num::NonZeroUsize;

use bge_m3_core::queue::{oneshot, Queue, Request};
use bge_m3_core::{Embedding, Outputs};
use pyo3::prelude::*;

use crate::errors::{guard, to_py};
use crate::wait::{wait, Reply};

/// How a call's items become requests.
pub(crate) struct Chunks<'a> {
    /// The model's queue.
    pub queue: &'a Queue,
    /// Items per request (FlagEmbedding's batches).
    pub size: NonZeroUsize,
    /// Which outputs every text needs.
    pub outputs: Outputs,
    /// Most texts of one request in a forward pass.
    pub batch_size: NonZeroUsize,
    /// Called with the number of items of each chunk once it is answered.
    pub progress: Option<&'a Bound<'a, PyAny>>,
}

impl Chunks<'_> {
    /// Embeds `items`, each of which `tokenize` turns into one or more `<s> … </s>`
    /// sequences (a text: one; a pair: two), returning the embeddings of every chunk's
    /// sequences in order. The GIL is released while tokenizing and waiting.
    pub(crate) fn run<T: Sync>(
        &self,
        py: Python<'_>,
        items: &[T],
        tokenize: impl Fn(&[T]) -> bge_m3_core::Result<Vec<Vec<u32>>> + Sync,
    ) -> PyResult<Vec<Embedding>> {
        let mut pending: Vec<(usize, oneshot::Receiver<Reply>)> = Vec::new();
        // Only what may cross threads goes into the closure (not the progress callback).
        let (queue, size, outputs, batch_size) =
            (self.queue, self.size, self.outputs, self.batch_size);
        let queued = py.detach(|| {
            guard(|| {
                for chunk in items.chunks(size.get()) {
                    let sequences = tokenize(chunk).map_err(to_py)?;
                    let (reply, answer) = oneshot::channel();
                    queue.push(Request {
                        sequences,
                        outputs,
                        batch_size,
                        reply,
                    });
                    pending.push((chunk.len(), answer));
                }
                Ok(())
            })
        });
        let answered = queued.and_then(|()| self.collect(py, &mut pending));
        if answered.is_err() && !pending.is_empty() {
            // The receivers left are dropped: the queue forgets their texts now, not after
            // the pass it may be running.
            pending.clear();
            self.queue.prune();
        }
        answered
    }

    /// The answers of `pending`, in order, each taken out as it arrives.
    fn collect(
        &self,
        py: Python<'_>,
        pending: &mut Vec<(usize, oneshot::Receiver<Reply>)>,
    ) -> PyResult<Vec<Embedding>> {
        let mut embeddings = Vec::new();
        let mut answered = 0;
        while answered < pending.len() {
            let (items, receiver) = &mut pending[answered];
            let computed = wait(py, receiver)?;
            embeddings.extend(computed.embeddings);
            answered += 1;
            if let Some(progress) = self.progress {
                progress.call1((*items,))?;
            }
        }
        pending.clear();
        Ok(embeddings)
    }
}
