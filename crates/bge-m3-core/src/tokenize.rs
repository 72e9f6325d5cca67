//! Tokenization with the model's own `tokenizer.json` (XLM-RoBERTa SentencePiece Unigram).

use std::path::Path;

use crate::{Error, Result};

/// The model's tokenizer, with the XLM-RoBERTa special tokens resolved.
///
/// Texts become `<s> … </s>`; truncation to `max_length` counts both markers and keeps `</s>`,
/// as Hugging Face's tokenizer does with `truncation=True`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    specials: SpecialTokens,
    vocab_size: usize,
    clean_up_spaces: bool,
}

/// Ids of the special tokens the model treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `<s>` (CLS, BOS).
    pub cls: u32,
    /// `</s>` (SEP, EOS).
    pub eos: u32,
    /// `<pad>`.
    pub pad: u32,
    /// `<unk>`.
    pub unk: u32,
}

impl SpecialTokens {
    /// Whether FlagEmbedding drops this id from the sparse (lexical) weights.
    pub fn is_unused_for_sparse(&self, id: u32) -> bool {
        id == self.cls || id == self.eos || id == self.pad || id == self.unk
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json`; `tokenizer_config.json` beside it, when present, says whether
    /// decoded tokens get Hugging Face's `clean_up_tokenization_spaces` treatment.
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut inner =
            tokenizers::Tokenizer::from_file(path).map_err(|e| Error::invalid_file(path, e))?;
        // The published tokenizer.json may carry its own truncation or padding settings; we
        // truncate and pad ourselves, per request.
        inner
            .with_truncation(None)
            .map_err(|e| Error::invalid_file(path, e))?;
        inner.with_padding(None);

        let lookup = |token: &str| {
            inner.token_to_id(token).ok_or_else(|| Error::InvalidFile {
                path: path.to_path_buf(),
                message: format!("the vocabulary has no {token} token"),
                source: None,
            })
        };
        let specials = SpecialTokens {
            cls: lookup("<s>")?,
            eos: lookup("</s>")?,
            pad: lookup("<pad>")?,
            unk: lookup("<unk>")?,
        };
        let vocab_size = inner.get_vocab_size(true);
        let clean_up_spaces = path
            .parent()
            .map(|dir| read_clean_up_flag(&dir.join("tokenizer_config.json")))
            .transpose()?
            .flatten()
            .unwrap_or(true);
        Ok(Self {
            inner,
            specials,
            vocab_size,
            clean_up_spaces,
        })
    }

    /// The special token ids.
    pub fn specials(&self) -> SpecialTokens {
        self.specials
    }

    /// Number of ids the tokenizer knows, added tokens (`<mask>`) included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Tokenizes texts into `<s> … </s>` id sequences of at most `max_length` ids.
    ///
    /// `max_length` counts the two markers; below 2 the markers are still kept (an input
    /// cannot be shorter than `<s></s>`).
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        max_length: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encodings = self
            .inner
            .encode_batch_fast(inputs, false)
            .map_err(Error::tokenizer)?;
        Ok(encodings
            .iter()
            .map(|encoding| self.wrap(encoding.get_ids(), max_length))
            .collect())
    }

    /// Wraps content ids (no markers) into `<s> … </s>`, truncated to `max_length` in total.
    pub fn wrap(&self, content: &[u32], max_length: usize) -> Vec<u32> {
        let keep = content.len().min(max_length.saturating_sub(2));
        let mut ids = Vec::with_capacity(keep + 2);
        ids.push(self.specials.cls);
        ids.extend_from_slice(&content[..keep]);
        ids.push(self.specials.eos);
        ids
    }

    /// The string FlagEmbedding's `convert_id_to_token` gives for one id: the id decoded on
    /// its own, so the SentencePiece word marker disappears (`▁What` becomes `What`).
    pub fn decode_one(&self, id: u32) -> Result<String> {
        let text = self.inner.decode(&[id], false).map_err(Error::tokenizer)?;
        Ok(if self.clean_up_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }
}

/// Reads `clean_up_tokenization_spaces` from a `tokenizer_config.json`, if the file exists.
fn read_clean_up_flag(path: &Path) -> Result<Option<bool>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::invalid_file(path, e)),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::invalid_file(path, e))?;
    Ok(value
        .get("clean_up_tokenization_spaces")
        .and_then(serde_json::Value::as_bool))
}

/// transformers' `clean_up_tokenization`: removes the space English tokenization puts before
/// punctuation and contractions.
fn clean_up_tokenization(text: &str) -> String {
    const REPLACEMENTS: [(&str, &str); 10] = [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ];
    REPLACEMENTS
        .iter()
        .fold(text.to_string(), |acc, (from, to)| acc.replace(from, to))
}

#[cfg(test)]
mod tests {
    use super::clean_up_tokenization;

    #[test]
    fn clean_up_matches_transformers() {
        assert_eq!(
            clean_up_tokenization("a . b ? c ! d , e ' f"),
            "a. b? c! d, e'f"
        );
        assert_eq!(
            clean_up_tokenization("do n't I 'm it 's we 've you 're"),
            "don't I'm it's we've you're"
        );
        assert_eq!(clean_up_tokenization("What"), "What");
    }
}
