//! [`TextTokenizer`]: the model's `tokenizer.json` as text-embeddings-inference's `/tokenize` and
//! `/decode` expose it, with each token's byte span in the text and the decoding of whole id
//! sequences.
//!
//! bge-m3-core's [`bge_m3_core::Tokenizer`] gives ids and the one-id strings of FlagEmbedding's
//! `convert_id_to_token`, but neither offsets nor the decoding of a sequence; until it does,
//! the server reads the same `tokenizer.json` a second time for these two routes. Embedding
//! never goes through this copy.

use std::path::Path;

use super::{Error, Result};

/// One token of a text, as `/tokenize` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: u32,
    /// The text's bytes `start..stop` (lossily decoded); for a special token, its own string.
    pub text: String,
    pub special: bool,
    /// Byte offsets into the text; `None` for the special tokens the tokenizer added.
    pub span: Option<(usize, usize)>,
}

/// The model's tokenizer for `/tokenize` and `/decode`.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
}

impl TextTokenizer {
    /// Reads `tokenizer.json` from a model directory, without its truncation and padding (the
    /// routes tokenize whole texts, like text-embeddings-inference).
    pub fn load(dir: &Path) -> bge_m3_core::Result<Self> {
        let path = dir.join("tokenizer.json");
        let invalid = |message: String| bge_m3_core::Error::InvalidFile {
            path: path.clone(),
            message,
            source: None,
        };
        let mut inner =
            tokenizers::Tokenizer::from_file(&path).map_err(|e| invalid(e.to_string()))?;
        inner
            .with_truncation(None)
            .map_err(|e| invalid(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self { inner })
    }

    /// The tokens of `text`, with `<s>` and `</s>` when `add_special_tokens`.
    pub fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Vec<Token>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::Internal(format!("tokenizing: {e}")))?;
        Ok(encoding
            .get_ids()
            .iter()
            .zip(encoding.get_offsets())
            .zip(encoding.get_special_tokens_mask())
            .zip(encoding.get_tokens())
            .map(|(((&id, &(start, stop)), &special), token)| {
                if special == 1 {
                    Token {
                        id,
                        text: token.clone(),
                        special: true,
                        span: None,
                    }
                } else {
                    let bytes = text.as_bytes().get(start..stop).unwrap_or_default();
                    Token {
                        id,
                        text: String::from_utf8_lossy(bytes).into_owned(),
                        special: false,
                        span: Some((start, stop)),
                    }
                }
            })
            .collect())
    }

    /// The text of an id sequence; `skip_special_tokens` leaves out `<s>`, `</s>`, `<pad>`, ...
    /// Ids must be in the vocabulary (checked by the caller).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Internal(format!("decoding: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> TextTokenizer {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/tiny-pt");
        TextTokenizer::load(Path::new(dir)).unwrap()
    }

    #[test]
    fn tokens_carry_their_spans_and_match_the_cores_ids() {
        let text = "What is BGE M3?";
        let tokens = tiny().tokenize(text, true).unwrap();
        let core = crate::testing::tiny().tokenize(&[text], 8192).unwrap();
        let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
        assert_eq!(ids, core[0]);
        assert!(tokens[0].special && tokens[0].span.is_none());
        assert!(tokens.last().unwrap().special);
        for token in &tokens[1..tokens.len() - 1] {
            let (start, stop) = token.span.unwrap();
            assert_eq!(token.text, text[start..stop]);
        }
        let without = tiny().tokenize(text, false).unwrap();
        assert_eq!(without.len(), tokens.len() - 2);
    }

    #[test]
    fn decoding_gives_the_text_back() {
        let text = "What is BGE M3?";
        let ids: Vec<u32> = tiny()
            .tokenize(text, true)
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(tiny().decode(&ids, true).unwrap(), text);
        assert!(tiny().decode(&ids, false).unwrap().starts_with("<s>"));
    }
}
