//! Tokenization off the async runtime and off the model's threads: texts in chunks on the
//! tokenizer pool, what the memory budget needs of the result, and the answer's size checked
//! after each chunk.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bge_m3_core::queue::panic_message;
use bge_m3_core::{BgeM3, Outputs, TextShape};
use tokio::sync::oneshot;

use super::memory::{Cost, Need, Reservation};
use super::{Error, Inference, Result};
use crate::metrics::metrics;

/// Texts are tokenized in chunks of about this many bytes (at least one text each): the
/// tokenizer's state (every token's string, offsets, the untruncated ids) is some 100 bytes per
/// token, freed after each chunk, so that only the truncated ids of a large request stay; and a
/// chunk is the longest a request makes the others wait on the pool.
pub const TOKENIZE_CHUNK_BYTES: usize = 256 << 10;

/// Consecutive ranges of items whose `sizes` add up to about `limit`, at least one item each.
pub(super) fn chunks(sizes: impl IntoIterator<Item = usize>, limit: usize) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut bytes = 0;
    for (i, size) in sizes.into_iter().enumerate() {
        match ranges.last_mut() {
            Some(last) if bytes + size <= limit => {
                last.end = i + 1;
                bytes += size;
            }
            _ => {
                ranges.push(i..i + 1);
                bytes = size;
            }
        }
    }
    ranges
}

impl Inference {
    /// Tokenizes `texts` on the tokenizer pool, one job per chunk of about
    /// [`TOKENIZE_CHUNK_BYTES`] (at least one text): the chunks of concurrent requests take
    /// turns on the pool's threads, the tokenizer's state is freed after each chunk, a request
    /// whose future is dropped stops after the chunk at hand, and the answer's size is checked
    /// after each chunk (see [`AnswerSize`]).
    pub(super) async fn tokenize(
        &self,
        texts: Vec<String>,
        max_length: usize,
        into: &mut Tokenized,
        size: &mut AnswerSize<'_>,
    ) -> Result<()> {
        into.sequences.reserve(texts.len());
        let ranges = chunks(texts.iter().map(String::len), TOKENIZE_CHUNK_BYTES);
        let mut texts = texts.into_iter();
        for range in ranges {
            let chunk: Vec<String> = texts.by_ref().take(range.len()).collect();
            let model = self.inner.model.clone();
            let measure = size.measure();
            let tokenized = self
                .on_tokenizers(move || {
                    Tokenized::of(model.tokenize(&chunk, max_length)?, &model, measure)
                })
                .await??;
            size.tokenized(range.len(), tokenized.bytes)?;
            into.extend(tokenized);
        }
        Ok(())
    }

    /// Runs tokenizer work on the tokenizer pool, counted in `bge_m3_tokenizer_tasks` while it
    /// waits or runs; a panic there is a 500 for this request alone.
    pub(super) async fn on_tokenizers<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let (done, outcome) = oneshot::channel();
        let task = Task::new();
        self.inner.tokenizers.spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(work));
            drop(task);
            let _ = done.send(outcome);
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
}

/// A task on the tokenizer pool, counted from its spawn to its end: the work of a request whose
/// client has gone shows there until the chunk at hand is done.
struct Task;

impl Task {
    fn new() -> Self {
        metrics().tokenizer_tasks.inc();
        Task
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        metrics().tokenizer_tasks.dec();
    }
}

/// What an answer's estimate needs of each tokenized text: the outputs it will hold.
#[derive(Clone, Copy)]
pub(super) struct Measure {
    pub outputs: Outputs,
    /// Sparse weights keyed by token string as well as by id.
    pub sparse_tokens: bool,
}

/// Tokenized texts: their `<s> … </s>` sequences, and what they and their outputs will hold
/// when measured.
#[derive(Default)]
pub(super) struct Tokenized {
    pub sequences: Vec<Vec<u32>>,
    /// The bytes of the sequences and of their outputs (0 when not measured).
    pub bytes: u64,
}

impl Tokenized {
    pub fn of(sequences: Vec<Vec<u32>>, model: &BgeM3, measure: Option<Measure>) -> Result<Self> {
        let bytes = match measure {
            None => 0,
            Some(Measure {
                outputs,
                sparse_tokens,
            }) => sequences
                .iter()
                .map(|s| {
                    Cost::sequence(s.len())
                        + model.output_bytes(model.text_shape(s), outputs, sparse_tokens)
                })
                .sum(),
        };
        Ok(Self { sequences, bytes })
    }

    pub fn extend(&mut self, other: Tokenized) {
        self.sequences.extend(other.sequences);
        self.bytes += other.bytes;
    }
}

/// The bytes of token-id inputs once wrapped in `<s> … </s>` and truncated at `max_length`.
pub(super) fn ids_of(ids: &[Vec<u32>], max_length: usize) -> u64 {
    ids.iter()
        .map(|ids| Cost::sequence((ids.len() + 2).min(max_length.max(2))))
        .sum()
}

/// The size of an embeddings request's answer while its texts are tokenized: exact for the
/// texts tokenized, the smallest a text can be ([`TextShape::SMALLEST`]) for the others. Each
/// time it grows past the reservation, the reservation grows to it, so that an answer that can
/// never fit is refused with 413 (or 429 when there is no room for it now) after the chunk that
/// shows it, rather than after the whole request was tokenized.
pub(super) struct AnswerSize<'a> {
    reservation: &'a mut Option<Reservation>,
    measure: Measure,
    /// What each text not tokenized yet holds at least.
    smallest: u64,
    untokenized: usize,
    known: u64,
}

impl<'a> AnswerSize<'a> {
    pub fn new(
        reservation: &'a mut Option<Reservation>,
        model: &BgeM3,
        measure: Measure,
        texts: usize,
    ) -> Self {
        let smallest = Cost::sequence(TextShape::SMALLEST.ids)
            + model.output_bytes(TextShape::SMALLEST, measure.outputs, measure.sparse_tokens);
        Self {
            reservation,
            measure,
            smallest,
            untokenized: texts,
            known: Cost::ANSWER_BUFFER,
        }
    }

    /// What to measure of each tokenized text: nothing without a budget.
    pub fn measure(&self) -> Option<Measure> {
        self.reservation.is_some().then_some(self.measure)
    }

    /// Checks the size once `texts` more texts, holding `bytes`, are tokenized.
    pub fn tokenized(&mut self, texts: usize, bytes: u64) -> Result<()> {
        self.untokenized = self.untokenized.saturating_sub(texts);
        self.known += bytes;
        let Some(reservation) = self.reservation.as_mut() else {
            return Ok(());
        };
        let least = self.known + self.smallest * self.untokenized as u64;
        if least > reservation.bytes() {
            reservation.resize(least, Need::Answer)?;
        }
        Ok(())
    }

    /// Sets the reservation to the answer, every text tokenized.
    pub fn settle(self) -> Result<()> {
        if let Some(reservation) = self.reservation.as_mut() {
            reservation.resize(self.known, Need::Answer)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_hold_about_the_limit_and_at_least_one_item() {
        assert_eq!(chunks([3, 3, 3, 3], 7), [0..2, 2..4]);
        assert_eq!(chunks([10, 1, 10], 7), [0..1, 1..2, 2..3]);
        assert_eq!(chunks([1, 1, 1], 7), vec![0..3]);
        assert!(chunks([], 7).is_empty());
    }
}
