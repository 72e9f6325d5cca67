//! `/tokenize` and `/decode`: tokenizer work without a forward pass, admitted, reserved in the
//! memory budget and worked in chunks on the tokenizer pool like the texts of an embeddings
//! request, with the core's tokenizer (the server reads `tokenizer.json` once).

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bge_m3_core::TextToken;

use super::memory::{Cost, Need, Reservation};
use super::tokenize::{chunks, TOKENIZE_CHUNK_BYTES};
use super::{Inference, Result};
use crate::metrics::metrics;

/// `/decode` decodes its lists in chunks of about this many ids (at least one list each).
pub const DECODE_CHUNK_IDS: usize = TOKENIZE_CHUNK_BYTES / 4;

/// A validated `/tokenize` request.
#[derive(Debug, Clone)]
pub struct TokenizeJob {
    pub texts: Vec<String>,
    /// Put `<s>` and `</s>` around each text's tokens.
    pub add_special_tokens: bool,
}

/// The reply to a [`TokenizeJob`]: each text's tokens, 16 bytes each, with the texts their spans
/// point into.
#[derive(Debug)]
pub struct TextTokens {
    pub texts: Arc<Vec<String>>,
    /// One list per text, in order.
    pub tokens: Vec<Vec<TextToken>>,
    pub tokenization: Duration,
    /// The request's memory reservation, now the size of these texts and tokens: keep it until
    /// the answer is written.
    pub reservation: Option<Reservation>,
}

/// A validated `/decode` request: every id in the vocabulary.
#[derive(Debug, Clone)]
pub struct DecodeJob {
    pub ids: Vec<Vec<u32>>,
    /// Leave out `<s>`, `</s>`, `<pad>`, `<unk>` and `<mask>`.
    pub skip_special_tokens: bool,
}

/// The reply to a [`DecodeJob`].
#[derive(Debug)]
pub struct Decoded {
    /// One per list of ids, in order.
    pub texts: Vec<String>,
    pub decoding: Duration,
    /// The request's memory reservation, now the size of these texts: keep it until the answer
    /// is written.
    pub reservation: Option<Reservation>,
}

impl Inference {
    /// `/tokenize`: each text's tokens and their spans, not truncated, within the request's
    /// memory `reservation`. Admitted like every request (429 when the queue is full) and
    /// bounded by the request timeout; the reservation first grows to the texts and the most tokens
    /// they can have (one per byte, see [`Cost::text_tokens_bound`]), then follows the tokens
    /// found, chunk by chunk of [`TOKENIZE_CHUNK_BYTES`] on the tokenizer pool (429 or 413 when
    /// it does not fit). A request whose future is dropped stops after the chunk at hand.
    pub async fn text_tokens(
        &self,
        job: TokenizeJob,
        mut reservation: Option<Reservation>,
    ) -> Result<TextTokens> {
        let _admitted = self.admit()?;
        self.within_timeout(async move {
            let TokenizeJob {
                texts,
                add_special_tokens,
            } = job;
            let bound = |texts: &[String]| -> u64 {
                texts
                    .iter()
                    .map(|t| Cost::text_tokens_bound(t, add_special_tokens))
                    .sum()
            };
            // What is known (the texts, the tokens found), and the bound of the rest.
            let mut known = Cost::ANSWER_BUFFER + Cost::texts(&texts);
            let mut pending = bound(&texts);
            if let Some(reservation) = reservation.as_mut() {
                reservation.resize(known + pending, Need::Tokens)?;
            }
            let start = Instant::now();
            let texts = Arc::new(texts);
            let mut tokens = Vec::with_capacity(texts.len());
            for range in chunks(texts.iter().map(String::len), TOKENIZE_CHUNK_BYTES) {
                pending -= bound(&texts[range.clone()]);
                let chunk = {
                    let model = self.inner.model.clone();
                    let texts = texts.clone();
                    self.on_tokenizers(move || tokenize(&model, &texts, range, add_special_tokens))
                        .await??
                };
                known += chunk
                    .iter()
                    .map(|t| Cost::text_tokens(t.len()))
                    .sum::<u64>();
                tokens.extend(chunk);
                if let Some(reservation) = reservation.as_mut() {
                    reservation.resize(known + pending, Need::Tokens)?;
                }
            }
            let tokenization = start.elapsed();
            metrics()
                .tokenization_duration
                .observe(tokenization.as_secs_f64());
            Ok(TextTokens {
                texts,
                tokens,
                tokenization,
                reservation,
            })
        })
        .await
    }

    /// `/decode`: the text of each list of ids, within the request's memory `reservation`.
    /// Admitted and bounded by the request timeout like every request; the lists are decoded in
    /// chunks of [`DECODE_CHUNK_IDS`] ids on the tokenizer pool, and after each the reservation
    /// becomes the ids still to decode and the texts decoded (429 or 413 when it does not fit).
    /// A request whose future is dropped stops after the chunk at hand.
    pub async fn decode(
        &self,
        job: DecodeJob,
        mut reservation: Option<Reservation>,
    ) -> Result<Decoded> {
        let _admitted = self.admit()?;
        self.within_timeout(async move {
            let DecodeJob {
                ids,
                skip_special_tokens,
            } = job;
            let start = Instant::now();
            let mut waiting: u64 = ids.iter().map(|ids| Cost::ids(ids)).sum();
            let mut known = Cost::ANSWER_BUFFER;
            let mut texts = Vec::with_capacity(ids.len());
            let ranges = chunks(ids.iter().map(Vec::len), DECODE_CHUNK_IDS);
            let mut ids = ids.into_iter();
            for range in ranges {
                let lists: Vec<Vec<u32>> = ids.by_ref().take(range.len()).collect();
                waiting -= lists.iter().map(|ids| Cost::ids(ids)).sum::<u64>();
                let model = self.inner.model.clone();
                let decoded = self
                    .on_tokenizers(move || {
                        lists
                            .iter()
                            .map(|ids| model.tokenizer().decode(ids, skip_special_tokens))
                            .collect::<bge_m3_core::Result<Vec<String>>>()
                    })
                    .await??;
                known += decoded.iter().map(|t| Cost::decoded(t)).sum::<u64>();
                texts.extend(decoded);
                if let Some(reservation) = reservation.as_mut() {
                    reservation.resize(known + waiting, Need::Answer)?;
                }
            }
            Ok(Decoded {
                texts,
                decoding: start.elapsed(),
                reservation,
            })
        })
        .await
    }
}

/// The tokens of `texts[range]`, each list no longer than it needs to be.
fn tokenize(
    model: &bge_m3_core::BgeM3,
    texts: &[String],
    range: Range<usize>,
    add_special_tokens: bool,
) -> bge_m3_core::Result<Vec<Vec<TextToken>>> {
    texts[range]
        .iter()
        .map(|text| {
            let mut tokens = model.tokenizer().text_tokens(text, add_special_tokens)?;
            tokens.shrink_to_fit();
            Ok(tokens)
        })
        .collect()
}
