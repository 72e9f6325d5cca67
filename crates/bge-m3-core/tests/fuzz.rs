//! Property tests of tokenization and encoding on the tiny-pt fixture model: arbitrary Unicode
//! (control characters, combining marks, emoji, right-to-left scripts, NUL, whitespace only,
//! long runs of one character) at any `max_length`, and token-id inputs in and out of the
//! vocabulary.
//!
//! - `encode` never fails or panics on any text with `max_length` in 1..=8192; a text keeps at
//!   most `max_length - 2` tokens (`<s>` and `</s>` are always there), the truncated ids are a
//!   prefix of the full ones, every value is finite, dense and ColBERT vectors have unit length
//!   (or are zero), sparse weights are > 0 on ids of the vocabulary other than `<s>`, `</s>`,
//!   `<pad>`, `<unk>`, there is one ColBERT row per token plus `</s>`, and each text's outputs
//!   are the same alone as in its batch (within 1e-5).
//! - `encode_ids` accepts exactly the id lists inside the vocabulary, with the same guarantees;
//!   any other is an [`Error::InvalidInput`] on `input` naming the first id outside it.
//! - A `max_length` outside 1..=8192 is an [`Error::InvalidInput`] on `max_length`.
//!
//! Cases per property: `PROPTEST_CASES`, default [`DEFAULT_CASES`].

#![forbid(unsafe_code)]

mod common;

use bge_m3_core::{BgeM3, Embedding, EncodeOptions, Error, Outputs};
use bge_m3_test_support::{check_same_weights, NORM_TOLERANCE, TOLERANCE};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const DEFAULT_CASES: u32 = 96;

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(DEFAULT_CASES),
        // The failing case is printed, shrunk; nothing is written next to the sources.
        failure_persistence: None,
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

fn model() -> &'static BgeM3 {
    common::model("tiny-pt")
}

// ---------------------------------------------------------------------------------------------
// Generators.

/// A character, often one that tokenizers find awkward.
fn awkward_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        3 => proptest::char::range(' ', '~'),
        4 => select(vec![
            // Controls and NUL, the whitespace zoo, zero-width and direction marks.
            '\0', '\t', '\n', '\r', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{a0}', '\u{1680}',
            '\u{2003}', '\u{200b}', '\u{200c}', '\u{200d}', '\u{200e}', '\u{202e}', '\u{2028}',
            '\u{2029}', '\u{3000}', '\u{feff}',
            // Combining marks, alone or after a base.
            '\u{301}', '\u{308}', '\u{36f}', '\u{20dd}', 'e',
            // Scripts: Hebrew, Arabic, Thai, CJK, Hangul, Devanagari.
            '\u{5d0}', '\u{627}', '\u{e01}', '中', '\u{ac00}', '\u{915}', '\u{94d}',
            // Emoji, skin tones, flags, private use, the last scalar value, replacement.
            '😀', '👩', '\u{1f3fd}', '\u{1f1fa}', '\u{1f1f8}', '\u{e000}', '\u{10ffff}',
            '\u{fffd}',
            // SentencePiece's own word marker, and the special-token punctuation.
            '▁', '<', '>', '/',
        ]),
    ]
}

/// A text: short and mixed, whitespace only, or a long run of one character.
fn text() -> impl Strategy<Value = String> {
    let whitespace = select(vec![
        ' ', '\t', '\n', '\r', '\u{a0}', '\u{3000}', '\u{2028}',
    ]);
    prop_oneof![
        6 => vec(awkward_char(), 0..48).prop_map(|chars| chars.into_iter().collect()),
        1 => vec(whitespace, 0..16).prop_map(|chars| chars.into_iter().collect()),
        1 => select(vec!["", "<s>", "</s>", "<pad>", "<unk>", "<mask>", "<s></s><pad>"])
            .prop_map(String::from),
        2 => (awkward_char(), 1..3000usize)
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// `max_length` in 1..=8192, often small (where truncation happens).
fn max_length() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 1usize..=16,
        2 => 1usize..=512,
        1 => 1usize..=8192,
        1 => select(vec![1usize, 2, 3, 8191, 8192]),
    ]
}

// ---------------------------------------------------------------------------------------------
// Checks of one embedding.

fn norm(values: &[f32]) -> f32 {
    values.iter().map(|v| v * v).sum::<f32>().sqrt()
}

/// A vector of `width` finite values with unit length, or zero.
fn check_unit(what: &str, values: &[f32], width: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(values.len(), width, "{} width", what);
    prop_assert!(
        values.iter().all(|v| v.is_finite()),
        "{what}: a value is not finite"
    );
    let n = norm(values);
    prop_assert!(
        (n - 1.0).abs() <= NORM_TOLERANCE || n == 0.0,
        "{what}: norm {n}"
    );
    Ok(())
}

/// The guarantees of one embedding of the `<s> … </s>` sequence `ids`, at `max_length`.
fn check_embedding(
    model: &BgeM3,
    embedding: &Embedding,
    ids: &[u32],
    max_length: usize,
) -> Result<(), TestCaseError> {
    let specials = model.tokenizer().specials();
    prop_assert!(
        embedding.tokens <= max_length.saturating_sub(2),
        "{} tokens at max_length {}",
        embedding.tokens,
        max_length
    );
    prop_assert_eq!(embedding.tokens, ids.len() - 2);

    let dense = embedding.dense.as_ref().expect("dense was asked for");
    check_unit("dense", dense, model.dense_dim())?;

    let sparse = embedding.sparse.as_ref().expect("sparse was asked for");
    let mut seen = std::collections::HashSet::new();
    for &(id, weight) in &sparse.weights {
        prop_assert!(
            weight.is_finite() && weight > 0.0,
            "weight {weight} of id {id}"
        );
        prop_assert!((id as usize) < model.vocab_size(), "id {id}");
        prop_assert!(
            !specials.is_unused_for_sparse(id),
            "special id {id} has a weight"
        );
        prop_assert!(ids.contains(&id), "id {id} is not in the input");
        prop_assert!(seen.insert(id), "id {id} twice");
    }
    let by_token = model
        .sparse_by_token(sparse)
        .map_err(|e| TestCaseError::fail(format!("sparse_by_token: {e}")))?;
    prop_assert!(by_token.len() <= sparse.weights.len());
    prop_assert!(by_token.iter().all(|(_, w)| w.is_finite() && *w > 0.0));

    let colbert = embedding.colbert.as_ref().expect("colbert was asked for");
    prop_assert_eq!(
        colbert.len(),
        embedding.tokens + 1,
        "one row per token and </s>"
    );
    for (i, row) in colbert.iter().enumerate() {
        check_unit(&format!("colbert row {i}"), row, model.colbert_dim())?;
    }
    Ok(())
}

fn check_close(what: &str, a: &[f32], b: &[f32]) -> Result<(), TestCaseError> {
    bge_m3_test_support::check_close(a, b, TOLERANCE)
        .map_err(|mismatch| TestCaseError::fail(mismatch.of(what)))
}

/// The same outputs within [`TOLERANCE`]; a sparse id that only one side has must be within
/// the tolerance of zero there (a relu at its edge may drop it).
fn check_same(what: &str, a: &Embedding, b: &Embedding) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.tokens, b.tokens);
    check_close(what, a.dense.as_ref().unwrap(), b.dense.as_ref().unwrap())?;
    check_same_weights(
        &a.sparse.as_ref().unwrap().weights,
        &b.sparse.as_ref().unwrap().weights,
        TOLERANCE,
    )
    .map_err(|difference| TestCaseError::fail(format!("{what}: sparse {difference}")))?;
    let (ca, cb) = (a.colbert.as_ref().unwrap(), b.colbert.as_ref().unwrap());
    prop_assert_eq!(ca.len(), cb.len());
    for (ra, rb) in ca.iter().zip(cb) {
        check_close(what, ra, rb)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_at_any_max_length_encodes_to_well_formed_outputs(
        texts in vec(text(), 1..5),
        max_length in max_length(),
        batch_size in 1usize..4,
    ) {
        let model = model();
        let options = EncodeOptions::default()
            .with_outputs(Outputs::ALL)
            .with_max_length(max_length)
            .with_batch_size(batch_size);
        let out = model.encode(&texts, &options)
            .map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
        prop_assert_eq!(out.len(), texts.len());
        let ids = model.tokenize(&texts, max_length).unwrap();
        let full = model.tokenize(&texts, model.max_length()).unwrap();
        let specials = model.tokenizer().specials();
        for (i, text) in texts.iter().enumerate() {
            let seq = &ids[i];
            prop_assert!(seq.len() >= 2 && seq.len() <= max_length.max(2));
            prop_assert_eq!(seq[0], specials.cls);
            prop_assert_eq!(seq[seq.len() - 1], specials.eos);
            prop_assert!(seq.iter().all(|&id| (id as usize) < model.vocab_size()));
            // Truncation keeps the first tokens of the full tokenization.
            let content = &seq[1..seq.len() - 1];
            prop_assert_eq!(content, &full[i][1..1 + content.len()]);
            check_embedding(model, &out[i], seq, max_length)?;
            // Alone, the text gets the same outputs as in its batch.
            let alone = model.encode(&[text], &options).unwrap().remove(0);
            check_same(&format!("text {i} alone"), &alone, &out[i])?;
        }
    }

    #[test]
    fn token_ids_inside_the_vocabulary_encode_and_others_are_named(
        inputs in vec(vec(prop_oneof![
            12 => 0u32..1202,
            1 => select(vec![0u32, 1, 2, 3, 1201]),
            // 1202: the size of tiny-pt's vocabulary.
            1 => 1202u32..=u32::MAX,
        ], 0..24), 1..4),
        max_length in max_length(),
    ) {
        let model = model();
        let options = EncodeOptions::default()
            .with_outputs(Outputs::ALL)
            .with_max_length(max_length)
            .with_batch_size(2);
        let vocab = model.vocab_size();
        let outside = inputs.iter().enumerate().find_map(|(i, ids)| {
            ids.iter().position(|&id| id as usize >= vocab).map(|j| (i, j, ids[j]))
        });
        match (model.encode_ids(&inputs, &options), outside) {
            (Ok(out), None) => {
                prop_assert_eq!(out.len(), inputs.len());
                let sequences = model.wrap_ids(&inputs, max_length).unwrap();
                for (i, seq) in sequences.iter().enumerate() {
                    let keep = inputs[i].len().min(max_length.saturating_sub(2));
                    prop_assert_eq!(&seq[1..seq.len() - 1], &inputs[i][..keep]);
                    check_embedding(model, &out[i], seq, max_length)?;
                }
            }
            (Err(Error::InvalidInput { field, message }), Some((i, j, id))) => {
                prop_assert_eq!(field, "input");
                let position = format!("token id {id} at input[{i}][{j}]");
                prop_assert!(message.contains(&position), "{message:?} does not name {position}");
            }
            (result, outside) => {
                return Err(TestCaseError::fail(format!(
                    "first id outside the vocabulary {outside:?}, but encode_ids gave {:?}",
                    result.map(|out| out.len())
                )));
            }
        }
    }

    #[test]
    fn a_max_length_outside_1_to_8192_is_named(
        max_length in prop_oneof![Just(0usize), 8193usize..=100_000, Just(usize::MAX)],
        text in text(),
    ) {
        let model = model();
        let options = EncodeOptions::default().with_max_length(max_length);
        for result in [model.encode(&[&text], &options), model.encode_ids(&[[5u32]], &options)] {
            match result {
                Err(Error::InvalidInput { field, .. }) => prop_assert_eq!(field, "max_length"),
                other => {
                    return Err(TestCaseError::fail(format!(
                        "max_length {max_length}: {:?}",
                        other.map(|out| out.len())
                    )));
                }
            }
        }
    }
}
