//! Tokenization off the async runtime and off the model's threads: texts in chunks on the
//! tokenizer pool, and what the memory estimate needs of the result.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bge_m3_core::queue::panic_message;
use tokio::sync::oneshot;

use super::memory::{distinct_tokens, Cost};
use super::{Error, Inference, Result};

/// Texts are tokenized in chunks of about this many bytes (at least one text each): the
/// tokenizer's state (every token's string, offsets, the untruncated ids) is some 100 bytes per
/// token, freed after each chunk, so that only the truncated ids of a large request stay.
pub const TOKENIZE_CHUNK_BYTES: usize = 256 << 10;

impl Inference {
    /// Tokenizes `texts` on the tokenizer pool, one job per chunk of about
    /// [`TOKENIZE_CHUNK_BYTES`] (at least one text): the chunks of concurrent requests take
    /// turns on the pool's threads, the tokenizer's state is freed after each chunk, and a
    /// request whose future is dropped stops after the chunk at hand.
    pub(super) async fn tokenize(
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
    pub(super) async fn on_tokenizers<T: Send + 'static>(
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
}

/// Tokenized texts: their `<s> … </s>` sequences, and the distinct tokens of each when they
/// are counted (for the memory estimate of sparse weights).
#[derive(Default)]
pub(super) struct Tokenized {
    pub sequences: Vec<Vec<u32>>,
    pub distinct: Vec<usize>,
}

impl Tokenized {
    pub fn of(sequences: Vec<Vec<u32>>, count_distinct: bool) -> Result<Self> {
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

    pub fn extend(&mut self, other: Tokenized) {
        self.sequences.extend(other.sequences);
        self.distinct.extend(other.distinct);
    }
}

/// The bytes of token-id inputs once wrapped in `<s> … </s>` and truncated at `max_length`.
pub(super) fn ids_of(ids: &[Vec<u32>], max_length: usize) -> u64 {
    ids.iter()
        .map(|ids| Cost::ID * (ids.len() + 2).min(max_length.max(2)) as u64 + Cost::SEQUENCE)
        .sum()
}
