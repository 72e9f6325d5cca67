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

/// One token of a text as [`Tokenizer::text_tokens`] finds it: its id and the bytes of the
/// text it stands for. 16 bytes, so that the tokens of a large text cost little more than its
/// ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextToken {
    /// Its id in the vocabulary.
    pub id: u32,
    /// Byte offsets `start..stop` of its part of the text; `None` for a special token the
    /// tokenizer added (`<s>` and `</s>` around the text). A special token the text spells out
    /// (`<mask>`) has its span.
    pub span: Option<(u32, u32)>,
}

impl TextToken {
    /// Whether it is a special token (it has no span).
    pub fn is_special(&self) -> bool {
        self.span.is_none()
    }
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

    /// The tokens of one whole text, not truncated, each with its byte span, between `<s>` and
    /// `</s>` when `add_special_tokens`: what text-embeddings-inference's `/tokenize` shows.
    ///
    /// The tokenizer's own state for the text (every token's string, offsets, masks: some 100
    /// bytes a token) is freed before this returns; the result is 16 bytes a token. A text of
    /// 4 GiB or more is refused on field `text`, as its offsets would not fit in `u32`.
    ///
    /// ```
    /// # let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/tiny-pt");
    /// # let model = bge_m3_core::BgeM3::load(dir, &Default::default())?;
    /// let text = "What is BGE M3?";
    /// let tokens = model.tokenizer().text_tokens(text, true)?;
    /// assert!(tokens[0].is_special() && tokens.last().unwrap().is_special());
    /// // The other tokens' spans cover the text, in order.
    /// let spans: String = tokens
    ///     .iter()
    ///     .filter_map(|t| t.span)
    ///     .map(|(start, stop)| &text[start as usize..stop as usize])
    ///     .collect();
    /// assert_eq!(spans, text);
    /// # Ok::<(), bge_m3_core::Error>(())
    /// ```
    pub fn text_tokens(&self, text: &str, add_special_tokens: bool) -> Result<Vec<TextToken>> {
        if u32::try_from(text.len()).is_err() {
            return Err(Error::invalid_input(
                "text",
                format!(
                    "a text of {} bytes is too long to tokenize with offsets (at most 4 GiB)",
                    text.len()
                ),
            ));
        }
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(Error::tokenizer)?;
        let tokens = encoding
            .get_ids()
            .iter()
            .zip(encoding.get_offsets())
            .zip(encoding.get_special_tokens_mask())
            .map(|((&id, &(start, stop)), &special)| TextToken {
                id,
                // Offsets are within the text, whose length fits in `u32` (checked above).
                span: (special == 0).then_some((start as u32, stop as u32)),
            })
            .collect();
        Ok(tokens)
    }

    /// The string the vocabulary holds for `id` (`▁What`, `<s>`); `None` outside it.
    pub fn token_string(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The text of an id sequence, as the tokenizer's decoder writes it (without
    /// `clean_up_tokenization_spaces`); `skip_special_tokens` leaves out `<s>`, `</s>`, `<pad>`,
    /// `<unk>` and `<mask>`. Ids outside the vocabulary are left out too: check them first
    /// ([`crate::check_token_ids`]).
    ///
    /// ```
    /// # let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/tiny-pt");
    /// # let model = bge_m3_core::BgeM3::load(dir, &Default::default())?;
    /// let ids = model.tokenize(&["What is BGE M3?"], 8192)?.remove(0);
    /// assert_eq!(model.tokenizer().decode(&ids, true)?, "What is BGE M3?");
    /// assert!(model.tokenizer().decode(&ids, false)?.starts_with("<s>"));
    /// # Ok::<(), bge_m3_core::Error>(())
    /// ```
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(Error::tokenizer)
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
    use super::*;

    fn tiny() -> Tokenizer {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/tiny-pt");
        Tokenizer::from_file(&Path::new(dir).join("tokenizer.json")).unwrap()
    }

    #[test]
    fn text_tokens_carry_their_spans_and_the_ids_of_encode() {
        let tokenizer = tiny();
        let text = "What is BGE M3? <mask> Le chat est assis.";
        let tokens = tokenizer.text_tokens(text, true).unwrap();
        let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
        assert_eq!(ids, tokenizer.encode_batch(&[text], 8192).unwrap()[0]);
        assert_eq!(tokens[0].id, tokenizer.specials().cls);
        assert!(tokens[0].is_special() && tokens.last().unwrap().is_special());
        let mask = tokens
            .iter()
            .find(|t| tokenizer.token_string(t.id).as_deref() == Some("<mask>"))
            .expect("`<mask>` is one token");
        let (start, stop) = mask.span.expect("spelled out in the text");
        assert_eq!(&text[start as usize..stop as usize], " <mask>");
        let mut end = 0;
        for token in tokens.iter().filter(|t| !t.is_special()) {
            let (start, stop) = token.span.unwrap();
            assert!(start >= end && stop > start && stop as usize <= text.len());
            end = stop;
        }
        let without = tokenizer.text_tokens(text, false).unwrap();
        assert_eq!(without[..], tokens[1..tokens.len() - 1]);
        assert_eq!(
            tokenizer.token_string(tokenizer.specials().eos).unwrap(),
            "</s>"
        );
        assert_eq!(tokenizer.token_string(u32::MAX), None);
    }

    #[test]
    fn decoding_gives_the_text_back() {
        let tokenizer = tiny();
        let text = "What is BGE M3?";
        let ids: Vec<u32> = tokenizer
            .text_tokens(text, true)
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(tokenizer.decode(&ids, true).unwrap(), text);
        // As Hugging Face's `tokenizers` decodes them.
        assert_eq!(
            tokenizer.decode(&ids, false).unwrap(),
            format!("<s> {text}</s>")
        );
    }

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
