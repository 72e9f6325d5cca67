//! The checks of request values shared by the routes: each names the field at fault.

use bge_m3_core::ScoreWeights;

use crate::{Error, Result};

/// The 400 for token ids while `--allow-token-ids` is off. Ids of another tokenizer fall inside
/// BGE-M3's 250,002 ids and would be embedded silently as unrelated pieces; LangChain's
/// `OpenAIEmbeddings` sends OpenAI's tiktoken ids by default, so the message says what to set.
pub(crate) fn token_ids_refused(param: &str) -> Error {
    Error::InvalidRequest {
        param: Some(param.to_string()),
        message: format!(
            "`{param}` holds token ids, which this server refuses unless it runs with \
             --allow-token-ids (ALLOW_TOKEN_IDS=true): ids of another tokenizer would be \
             embedded as unrelated BGE-M3 pieces without any error. Send the texts instead; \
             with LangChain, create OpenAIEmbeddings(..., check_embedding_ctx_length=False), \
             which sends texts rather than OpenAI's tiktoken ids. Ids of BGE-M3's own \
             tokenizer (POST /tokenize) are accepted once the server allows them."
        ),
        code: "token_ids_not_allowed",
    }
}

/// The core's vocabulary check of token ids ([`bge_m3_core::check_token_ids`]), its
/// error reported on `param`, the field that held the ids (`input`, `inputs`, `ids`).
pub(crate) fn check_token_ids(param: &str, lists: &[Vec<u32>], vocab_size: usize) -> Result<()> {
    bge_m3_core::check_token_ids(lists, vocab_size).map_err(|e| match e {
        bge_m3_core::Error::InvalidInput { message, .. } => Error::invalid(param, message),
        other => other.into(),
    })
}

/// text-embeddings-inference's `truncation_direction`: only `Right` is what BGE-M3 does.
pub(crate) fn check_truncation_direction(value: Option<&str>) -> Result<()> {
    match value {
        None => Ok(()),
        Some(direction) if direction.eq_ignore_ascii_case("right") => Ok(()),
        Some(other) => Err(Error::invalid(
            "truncation_direction",
            format!("only `Right` is supported (texts keep their start), got {other:?}"),
        )),
    }
}

/// `dimensions`: 1 to the dense width, or absent (all of them).
pub(crate) fn dimensions(value: Option<usize>, dense_dim: usize) -> Result<Option<usize>> {
    match value {
        Some(d) if !(1..=dense_dim).contains(&d) => Err(Error::invalid(
            "dimensions",
            format!("must be between 1 and {dense_dim}, got {d}"),
        )),
        other => Ok(other),
    }
}

/// A token length (`max_length`, `max_query_length`, ...): `default` when absent, else as
/// the core checks it (1..=`longest`, the model's 8192).
pub(crate) fn length(
    param: &str,
    value: Option<usize>,
    default: usize,
    longest: usize,
) -> Result<usize> {
    match value {
        None => Ok(default),
        Some(n) => Ok(bge_m3_core::check_length(param, n, longest)?),
    }
}

/// `weights`: three numbers `[dense, sparse, colbert]`, `default` when absent. The server
/// checks only the shape; the bounds are the core's one rule ([`ScoreWeights::validate`]),
/// whose error names `weights`.
pub(crate) fn weights(value: Option<Vec<f32>>, default: ScoreWeights) -> Result<ScoreWeights> {
    match value.as_deref() {
        None => Ok(default),
        Some(&[dense, sparse, colbert]) => Ok(ScoreWeights::try_from([dense, sparse, colbert])?),
        Some(other) => Err(Error::invalid(
            "weights",
            format!(
                "must be three numbers [dense, sparse, colbert], got {}",
                other.len()
            ),
        )),
    }
}

/// `batch_size`, default 12 (the core's default, the original service's). Its rule (at least
/// 1) is checked once, by the inference layer, for this and every other job.
pub(crate) fn batch_size(value: Option<usize>) -> usize {
    value.unwrap_or(bge_m3_core::EncodeOptions::default().batch_size)
}

/// Refuses a text of more than `limit` characters, naming it `param[i]` (`param` for a lone
/// string). It is refused rather than truncated: the model truncates to `max_length` tokens
/// anyway, and this limit is there to bound the tokenizer's work on what it would throw away.
pub(crate) fn check_text_lengths(
    param: &'static str,
    texts: &[String],
    lone: bool,
    limit: usize,
) -> Result<()> {
    for (i, text) in texts.iter().enumerate() {
        // A text of at most `limit` bytes has at most `limit` characters: most texts are never
        // counted.
        if text.len() <= limit {
            continue;
        }
        let chars = text.chars().count();
        if chars > limit {
            return Err(Error::TextTooLong {
                param,
                path: if lone {
                    param.to_string()
                } else {
                    format!("{param}[{i}]")
                },
                chars,
                limit,
            });
        }
    }
    Ok(())
}

pub(crate) fn check_count(param: &'static str, count: usize, limit: usize) -> Result<()> {
    if count > limit {
        return Err(Error::TooManyInputs {
            param,
            count,
            limit,
        });
    }
    Ok(())
}
