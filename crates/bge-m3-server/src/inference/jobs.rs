//! What handlers hand the inference layer, and what it answers.

use std::time::Duration;

use bge_m3_core::{Embedding, EncodeOptions, PairScores, ScoreOptions};

use super::memory::Reservation;

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

/// A validated embeddings request: every option is in range (but `batch_size`, which
/// [`super::Inference`] checks), every token id in the vocabulary.
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
    pub reservation: Option<Reservation>,
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
