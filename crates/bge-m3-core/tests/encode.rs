//! Behaviour of `encode` beyond the reference values: batching, token-id input, input errors
//! and half precision.

#![forbid(unsafe_code)]

mod common;

use bge_m3_core::{
    BgeM3, DType, DeviceSpec, EncodeOptions, Error, LoadOptions, Outputs, ScoreOptions,
    ScoreWeights,
};
use bge_m3_test_support::assert_close;
use common::{model, model_dir, TOLERANCE};

const TEXTS: [&str; 6] = [
    "",
    "Hello world",
    "BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.",
    "北京是中国的首都。",
    "short",
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog again and again.",
];

fn all_outputs(batch_size: usize) -> EncodeOptions {
    EncodeOptions::default()
        .with_outputs(Outputs::ALL)
        .with_batch_size(batch_size)
}

#[test]
fn results_do_not_depend_on_batching() {
    for name in common::MODELS {
        let model = model(name);
        let together = model.encode(&TEXTS, &all_outputs(12)).unwrap();
        for batch_size in [1, 2, 4] {
            let batched = model.encode(&TEXTS, &all_outputs(batch_size)).unwrap();
            for (i, (a, b)) in batched.iter().zip(&together).enumerate() {
                let what = format!("{name} batch_size={batch_size} text {i}");
                assert_close(
                    a.dense.as_ref().unwrap(),
                    b.dense.as_ref().unwrap(),
                    TOLERANCE,
                    &what,
                );
                let (sa, sb) = (a.sparse.as_ref().unwrap(), b.sparse.as_ref().unwrap());
                common::assert_same_weights(&what, &sa.weights, &sb.weights);
                let (ca, cb) = (a.colbert.as_ref().unwrap(), b.colbert.as_ref().unwrap());
                assert_eq!(ca.len(), cb.len(), "{what}");
                for (ra, rb) in ca.iter().zip(cb) {
                    assert_close(ra, rb, TOLERANCE, &what);
                }
            }
        }
        // Each text alone.
        for (i, text) in TEXTS.iter().enumerate() {
            let alone = model.encode(&[text], &all_outputs(1)).unwrap().remove(0);
            assert_close(
                alone.dense.as_ref().unwrap(),
                together[i].dense.as_ref().unwrap(),
                TOLERANCE,
                format!("{name} text {i} alone"),
            );
        }
    }
}

/// The bits of every output of an embedding, to compare two for identity.
fn bits(embedding: &bge_m3_core::Embedding) -> Vec<u32> {
    let dense = embedding.dense.iter().flatten().map(|v| v.to_bits());
    let sparse = embedding.sparse.iter().flat_map(|s| {
        s.weights
            .iter()
            .flat_map(|&(id, weight)| [id, weight.to_bits()])
    });
    let colbert = embedding
        .colbert
        .iter()
        .flatten()
        .flatten()
        .map(|v| v.to_bits());
    dense.chain(sparse).chain(colbert).collect()
}

/// Issue 29, item 9: identical rerank documents scored about 7e-8 apart and swapped places,
/// because the sparse and ColBERT heads ran one matrix product over every row of a pass, whose
/// blocking depends on the number of rows. On the f32 CPU path a text's outputs are now the
/// same bits alone and in any pass, wherever it lies and whatever the other texts.
#[test]
fn a_texts_outputs_are_the_same_bits_alone_and_in_any_pass() {
    for name in common::MODELS {
        let model = model(name);
        let sequences = model.tokenize(&TEXTS, 8192).unwrap();
        let text = &sequences[2];
        let alone = model.forward(&[text], Outputs::ALL).unwrap().remove(0);
        let others: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
        let mut passes: Vec<Vec<&[u32]>> = vec![
            vec![&others[1], text],
            vec![text, &others[5], &others[3], text],
        ];
        // Many rows in one pass: ten copies, then the text among every other text.
        passes.push(vec![text; 10]);
        passes.push(
            others
                .iter()
                .copied()
                .chain(others.iter().copied())
                .collect(),
        );
        for pass in &passes {
            let computed = model.forward(pass, Outputs::ALL).unwrap();
            for (position, embedding) in computed.iter().enumerate() {
                if pass[position] == text.as_slice() {
                    assert!(
                        bits(embedding) == bits(&alone),
                        "{name}: text at {position} of a pass of {}",
                        pass.len()
                    );
                }
            }
        }
    }
}

#[test]
fn only_the_requested_outputs_are_computed() {
    let model = model("tiny-pt");
    let options = EncodeOptions::default().with_outputs(Outputs {
        dense: false,
        sparse: true,
        colbert: false,
    });
    let out = model.encode(&["Hello world"], &options).unwrap().remove(0);
    assert!(out.dense.is_none() && out.colbert.is_none());
    assert!(out.sparse.is_some());
    assert_eq!(
        out.tokens,
        model.tokenize(&["Hello world"], 8192).unwrap()[0].len() - 2
    );
}

#[test]
fn token_ids_give_the_same_result_as_the_text() {
    let model = model("tiny-pt");
    let ids = model.tokenize(&TEXTS, 8192).unwrap();
    let content: Vec<Vec<u32>> = ids.iter().map(|s| s[1..s.len() - 1].to_vec()).collect();
    let from_ids = model.encode_ids(&content, &all_outputs(12)).unwrap();
    let from_text = model.encode(&TEXTS, &all_outputs(12)).unwrap();
    assert_eq!(from_ids, from_text);

    // Truncation applies to token input too, keeping `</s>`.
    let options = all_outputs(12).with_max_length(4);
    let truncated = model.encode_ids(&[content[2].clone()], &options).unwrap();
    assert_eq!(truncated[0].tokens, 2);
    assert_eq!(truncated[0].colbert.as_ref().unwrap().len(), 3);
}

#[test]
fn token_ids_outside_the_vocabulary_are_rejected() {
    let model = model("tiny-pt");
    let vocab = model.vocab_size() as u32;
    let err = model
        .encode_ids(&[vec![5, 6], vec![7, vocab]], &EncodeOptions::default())
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    let message = err.to_string();
    assert!(message.contains("`input`"), "{message}");
    assert!(
        message.contains(&format!("token id {vocab} at input[1][1]")),
        "{message}"
    );
}

#[test]
fn out_of_range_options_name_the_field() {
    let model = model("tiny-pt");
    for max_length in [0, 8193, usize::MAX] {
        let options = EncodeOptions::default().with_max_length(max_length);
        let err = model.encode(&["x"], &options).unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { ref field, .. } if field == "max_length"),
            "{err}"
        );
        let err = model.encode_ids(&[vec![5]], &options).unwrap_err();
        assert!(err.to_string().contains("`max_length`"), "{err}");
    }
    let options = EncodeOptions::default().with_batch_size(0);
    let err = model.encode(&["x"], &options).unwrap_err();
    assert!(err.to_string().contains("`batch_size`"), "{err}");

    let pairs = [("q", "p")];
    for (field, options) in [
        (
            "max_query_length",
            ScoreOptions::default().with_max_query_length(0),
        ),
        (
            "max_passage_length",
            ScoreOptions::default().with_max_passage_length(9000),
        ),
        (
            "weights",
            ScoreOptions::default().with_weights(ScoreWeights {
                dense: -1.0,
                sparse: 1.0,
                colbert: 1.0,
            }),
        ),
    ] {
        let err = model.compute_score(&pairs, &options).unwrap_err();
        assert!(
            err.to_string().contains(&format!("`{field}`")),
            "{field}: {err}"
        );
    }
}

#[test]
fn empty_input_gives_empty_output() {
    let model = model("tiny-pt");
    let none: [&str; 0] = [];
    assert!(model
        .encode(&none, &EncodeOptions::default())
        .unwrap()
        .is_empty());
    assert!(model
        .compute_score::<&str, &str>(&[], &ScoreOptions::default())
        .unwrap()
        .is_empty());
}

#[test]
fn tiny_max_lengths_keep_both_markers() {
    let model = model("tiny-pt");
    for max_length in [1, 2] {
        let ids = model.tokenize(&["Hello world"], max_length).unwrap();
        assert_eq!(ids[0], vec![0, 2], "max_length {max_length}");
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// The 8192-token case in f16 and bf16 stays close to f32: with float position ids the end of
/// the sequence would look up the wrong position rows and drift far apart.
#[test]
fn half_precision_holds_at_8192_tokens() {
    let reference = model("tiny-pt");
    let long = common::expected("tiny-pt")
        .encode
        .iter()
        .flat_map(|case| case.texts.iter().zip(&case.input_ids))
        .find(|(_, ids)| ids.len() == 8192)
        .map(|(text, _)| text.clone())
        .expect("a fixture case truncated at 8192 tokens");
    let f32_out = reference
        .encode(&[&long], &all_outputs(1))
        .unwrap()
        .remove(0);
    for dtype in [DType::F16, DType::BF16] {
        let model = BgeM3::load(
            model_dir("tiny-pt"),
            &LoadOptions::default()
                .with_device(DeviceSpec::Cpu)
                .with_dtype(Some(dtype)),
        )
        .unwrap();
        assert_eq!(model.dtype(), dtype);
        let out = model.encode(&[&long], &all_outputs(1)).unwrap().remove(0);
        assert_eq!(out.tokens, 8190);
        let dense = cosine(out.dense.as_ref().unwrap(), f32_out.dense.as_ref().unwrap());
        assert!(dense > 0.99, "{dtype:?}: dense cosine {dense}");
        let rows = out.colbert.as_ref().unwrap();
        let reference_rows = f32_out.colbert.as_ref().unwrap();
        assert_eq!(rows.len(), 8191);
        // The last rows sit at the highest positions: the ones a float cumsum gets wrong.
        for r in [0, 4095, 8189, 8190] {
            let c = cosine(&rows[r], &reference_rows[r]);
            assert!(c > 0.99, "{dtype:?}: colbert row {r} cosine {c}");
        }
    }
}

/// What a server budgets for a text before computing it (issue 24: the cost model lives with
/// the heads): each output's values and vectors, sparse weights by distinct weighted id, one
/// ColBERT row per token after `<s>`.
#[test]
fn output_bytes_count_each_output_of_a_texts_shape() {
    use bge_m3_core::TextShape;
    let model = model("tiny-pt");
    let (dense_dim, colbert_dim) = (model.dense_dim() as u64, model.colbert_dim() as u64);
    // `<s> a b a <unk> </s>`: 6 ids, 2 distinct ids that can be weighted, 5 ColBERT rows.
    let unk = model.tokenizer().specials().unk;
    let sequence = model.wrap_ids(&[[7, 8, 7, unk]], 8192).unwrap().remove(0);
    let shape = model.text_shape(&sequence);
    assert_eq!(shape, TextShape { ids: 6, lexical: 2 });
    let only = |dense, sparse, colbert| Outputs {
        dense,
        sparse,
        colbert,
    };
    const VECTOR: u64 = 48;
    let bytes = |outputs, tokens| model.output_bytes(shape, outputs, tokens);
    assert_eq!(bytes(only(false, false, false), true), 0);
    assert_eq!(
        bytes(only(true, false, false), false),
        VECTOR + 4 * dense_dim
    );
    assert_eq!(bytes(only(false, true, false), false), VECTOR + 2 * 8);
    assert_eq!(bytes(only(false, true, false), true), VECTOR + 2 * (8 + 48));
    assert_eq!(
        bytes(only(false, false, true), false),
        VECTOR + 5 * (VECTOR + 4 * colbert_dim)
    );
    assert_eq!(
        bytes(Outputs::ALL, false),
        bytes(only(true, false, false), false)
            + bytes(only(false, true, false), false)
            + bytes(only(false, false, true), false)
    );
    // A bound before tokenization holds what the text turns out to be.
    assert!(
        model.output_bytes(TextShape::at_most(6), Outputs::ALL, true) >= bytes(Outputs::ALL, true)
    );
    assert!(
        model.output_bytes(TextShape::SMALLEST, Outputs::ALL, true) <= bytes(Outputs::ALL, true)
    );
}
