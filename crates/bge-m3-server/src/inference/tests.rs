//! The inference layer's tests.

use std::time::Duration;

use bge_m3_core::{Outputs, ScoreOptions};

use super::memory::{MemoryBudget, Need, Refused};
use super::*;
use crate::testing::{gated, job, tiny, Gate};

fn texts(texts: &[&str]) -> Inputs {
    Inputs::Texts(texts.iter().map(|t| t.to_string()).collect())
}

fn tokenize_job(texts: &[&str]) -> TokenizeJob {
    TokenizeJob {
        texts: texts.iter().map(|t| t.to_string()).collect(),
        add_special_tokens: true,
    }
}

fn decode_job(ids: Vec<Vec<u32>>) -> DecodeJob {
    DecodeJob {
        ids,
        skip_special_tokens: true,
    }
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5)
}

#[actix_web::test]
async fn merged_requests_get_the_answers_of_their_texts_alone() {
    let options = InferenceOptions {
        max_batch_tokens: 64,
        ..InferenceOptions::default()
    };
    let (inference, gate) = gated(options);
    let model = tiny();
    let corpus = [
        "What is BGE M3?",
        "",
        "BM25 is a bag-of-words retrieval function that ranks a set of documents",
        "Definition of BM25",
        "Le chat est assis sur le tapis, et il regarde par la fenêtre.",
        "密集检索、稀疏检索和多向量检索",
    ];
    let mut jobs = Vec::new();
    for (n, max_length) in [(1, 8192), (3, 8), (6, 512), (2, 4)] {
        let outputs = if n % 2 == 0 {
            Outputs::ALL
        } else {
            Outputs::default()
        };
        let chosen: Vec<&str> = corpus.iter().cycle().skip(n).take(n).copied().collect();
        jobs.push((chosen, outputs, max_length));
    }
    // A first request holds the model at the closed gate, so that every other request waits
    // on the queue and they share the following passes.
    let blocker = {
        let inference = inference.clone();
        let job = job(texts(&["first"]), Outputs::default(), 8192);
        actix_web::rt::spawn(async move { inference.encode(job).await })
    };
    gate.until_arrived(1).await;
    let mut pending = Vec::new();
    for (chosen, outputs, max_length) in &jobs {
        let inference = inference.clone();
        let job = job(texts(chosen), *outputs, *max_length);
        pending.push(actix_web::rt::spawn(
            async move { inference.encode(job).await },
        ));
    }
    let total: usize = jobs.iter().map(|(chosen, _, _)| chosen.len()).sum();
    gate.until_queued(1 + total).await;
    gate.open();
    assert!(blocker.await.unwrap().is_ok());
    for ((chosen, outputs, max_length), pending) in jobs.iter().zip(pending) {
        let encoded = pending.await.unwrap().unwrap();
        assert_eq!(encoded.embeddings.len(), chosen.len());
        for (i, text) in chosen.iter().enumerate() {
            let options = EncodeOptions::default()
                .with_outputs(*outputs)
                .with_max_length(*max_length)
                .with_batch_size(1);
            let alone = model.encode(&[text], &options).unwrap().remove(0);
            let got = &encoded.embeddings[i];
            assert_eq!(got.tokens, alone.tokens, "{text:?}");
            assert_eq!(got.dense.is_some(), outputs.dense);
            assert!(close(
                got.dense.as_ref().unwrap(),
                alone.dense.as_ref().unwrap()
            ));
            let (g, a) = (got.sparse.as_ref().unwrap(), alone.sparse.as_ref().unwrap());
            assert_eq!(g.len(), a.len(), "{text:?}");
            for ((gi, gw), (ai, aw)) in g.weights.iter().zip(&a.weights) {
                assert_eq!(gi, ai);
                assert!((gw - aw).abs() <= 1e-5);
            }
            assert_eq!(
                got.colbert.is_some(),
                outputs.colbert,
                "only what was asked for"
            );
            if let (Some(g), Some(a)) = (&got.colbert, &alone.colbert) {
                assert_eq!(g.len(), a.len());
                assert!(g.iter().zip(a).all(|(g, a)| close(g, a)));
            }
        }
        let by_token = encoded.sparse_tokens.unwrap();
        assert_eq!(by_token.len(), chosen.len());
    }
    // Were no pass to mix requests, each would take one pass at least: fewer passes than
    // requests means that texts of different requests were computed together.
    let passes = gate.passes.lock().unwrap().clone();
    assert_eq!(passes[0], 1, "the blocker's pass: {passes:?}");
    assert_eq!(passes[1..].iter().sum::<usize>(), total, "{passes:?}");
    assert!(
        passes.len() - 1 < jobs.len(),
        "no pass was shared: {passes:?}"
    );
    assert!(encoded_timings_are_set(&inference).await);
}

async fn encoded_timings_are_set(inference: &Inference) -> bool {
    let encoded = inference
        .encode(job(texts(&["timed"]), Outputs::default(), 8192))
        .await
        .unwrap();
    encoded.timings.inference > Duration::ZERO && encoded.timings.tokenization > Duration::ZERO
}

#[actix_web::test]
async fn a_full_queue_refuses_at_once() {
    let options = InferenceOptions {
        queue_size: 1,
        ..InferenceOptions::default()
    };
    let (inference, gate) = gated(options);
    let waiting = inference.clone();
    let first = actix_web::rt::spawn(async move {
        waiting
            .encode(job(texts(&["a"]), Outputs::default(), 8192))
            .await
    });
    // The first request holds its place while its pass waits at the gate.
    gate.until_arrived(1).await;
    let second = inference
        .encode(job(texts(&["b"]), Outputs::default(), 8192))
        .await;
    assert!(
        matches!(second, Err(Error::Overloaded { capacity: 1 })),
        "{second:?}"
    );
    // Tokenizer work (`/tokenize`, `/decode`) takes a place too.
    let tokenizing = inference.text_tokens(tokenize_job(&["a"]), None).await;
    assert!(
        matches!(tokenizing, Err(Error::Overloaded { capacity: 1 })),
        "{tokenizing:?}"
    );
    let decoding = inference.decode(decode_job(vec![vec![7]]), None).await;
    assert!(
        matches!(decoding, Err(Error::Overloaded { capacity: 1 })),
        "{decoding:?}"
    );
    gate.open();
    assert!(first.await.unwrap().is_ok());
    // The place is given back.
    let third = inference
        .encode(job(texts(&["c"]), Outputs::default(), 8192))
        .await;
    assert!(third.is_ok(), "{third:?}");
}

/// `batch_size` is checked once, for every job, before it is admitted: a bad one is the
/// caller's fault naming the field even while the queue is full (not a 429 for a request that
/// could never run).
#[actix_web::test]
async fn a_batch_size_of_0_is_refused_before_admission() {
    let options = InferenceOptions {
        queue_size: 1,
        ..InferenceOptions::default()
    };
    let (inference, gate) = gated(options);
    let waiting = inference.clone();
    let first = actix_web::rt::spawn(async move {
        waiting
            .encode(job(texts(&["a"]), Outputs::default(), 8192))
            .await
    });
    gate.until_arrived(1).await;
    let mut encode = job(texts(&["b"]), Outputs::default(), 8192);
    encode.options.batch_size = 0;
    let score = ScoreJob::pairs(
        vec![("q".into(), "p".into())],
        ScoreOptions::default().with_batch_size(0),
    );
    for refused in [
        inference.encode(encode).await.map(drop),
        inference.score(score).await.map(drop),
    ] {
        assert!(
            matches!(
                &refused,
                Err(Error::Model(bge_m3_core::Error::InvalidInput { field, .. }))
                    if field == "batch_size"
            ),
            "{refused:?}"
        );
    }
    gate.open();
    assert!(first.await.unwrap().is_ok());
}

#[actix_web::test]
async fn a_timed_out_request_answers_503_and_leaves_the_queue() {
    let options = InferenceOptions {
        queue_size: 1,
        request_timeout: Some(Duration::from_millis(100)),
        ..InferenceOptions::default()
    };
    let (inference, gate) = gated(options);
    let late = inference
        .encode(job(texts(&["slow"]), Outputs::default(), 8192))
        .await;
    assert!(matches!(late, Err(Error::Timeout { .. })), "{late:?}");
    // Tokenizer work too: eight texts of a million characters, a chunk each, take far more
    // than 100 ms.
    let long = "a ".repeat(500_000);
    let long_job = TokenizeJob {
        texts: vec![long; 8],
        add_special_tokens: true,
    };
    let slow_tokenizing = inference.text_tokens(long_job, None).await;
    assert!(
        matches!(slow_tokenizing, Err(Error::Timeout { .. })),
        "{slow_tokenizing:?}"
    );
    // The chunk at hand when it timed out finishes on the pool; nothing of it after.
    inference.on_tokenizers(|| ()).await.unwrap();
    gate.open();
    let next = inference
        .encode(job(texts(&["next"]), Outputs::default(), 8192))
        .await;
    assert!(next.is_ok(), "{next:?}");
}

#[actix_web::test]
async fn a_faulty_pass_fails_its_requests_and_the_rest_are_served() {
    let options = InferenceOptions {
        // One text per pass, so that the poisoned text has a pass of its own.
        max_batch_tokens: 1,
        ..InferenceOptions::default()
    };
    let (inference, gate) = gated(options);
    let poisoned = {
        let inference = inference.clone();
        let ids = Inputs::TokenIds(vec![vec![Gate::POISON]]);
        actix_web::rt::spawn(
            async move { inference.encode(job(ids, Outputs::default(), 8192)).await },
        )
    };
    let healthy = {
        let inference = inference.clone();
        actix_web::rt::spawn(async move {
            inference
                .encode(job(texts(&["fine", "also fine"]), Outputs::default(), 8192))
                .await
        })
    };
    gate.until_queued(3).await;
    gate.open();
    let failed = poisoned.await.unwrap();
    assert!(
        matches!(&failed, Err(Error::Queue(QueueError::PassFailed(m))) if m.to_string().contains("poisoned pass")),
        "{failed:?}"
    );
    assert_eq!(healthy.await.unwrap().unwrap().embeddings.len(), 2);
    let after = inference
        .encode(job(texts(&["after"]), Outputs::default(), 8192))
        .await;
    assert!(after.is_ok(), "{after:?}");
}

#[actix_web::test]
async fn scores_are_those_of_each_pair_alone() {
    let (inference, gate) = gated(InferenceOptions::default());
    gate.open();
    let pairs = vec![
        (
            "What is BGE M3?".to_string(),
            "BGE M3 is an embedding model".to_string(),
        ),
        ("Definition of BM25".to_string(), "".to_string()),
    ];
    let options = ScoreOptions::default();
    let scored = inference
        .score(ScoreJob::pairs(pairs.clone(), options))
        .await
        .unwrap();
    let alone = tiny().compute_score(&pairs, &options).unwrap();
    assert_eq!(scored.scores.len(), 2);
    for (got, want) in scored.scores.iter().zip(&alone) {
        assert!((got.dense - want.dense).abs() <= 1e-5);
        assert!((got.sparse - want.sparse).abs() <= 1e-5);
        assert!((got.colbert - want.colbert).abs() <= 1e-5);
    }
}

#[actix_web::test]
async fn a_rerank_shares_its_pass_with_other_requests_and_scores_each_pair_alone() {
    let (inference, gate) = gated(InferenceOptions::default());
    // Texts of one length, so that the scheduler's "no longer than the seed" rule puts
    // them all in one pass whichever request seeds it (the scores of texts of every kind
    // are tested in tests/api/rerank.rs).
    let query = "What is BGE M3?".to_string();
    let documents: Vec<String> = ["What is BGE M3?", "What is BGE M4?", "What is BGE M5?"]
        .iter()
        .map(|d| d.to_string())
        .collect();
    let options = ScoreOptions::default();
    // A first request holds the model at the closed gate, so that the next two wait
    // together for the following pass.
    let blocker = {
        let inference = inference.clone();
        let job = job(texts(&["first"]), Outputs::default(), 8192);
        actix_web::rt::spawn(async move { inference.encode(job).await })
    };
    gate.until_arrived(1).await;
    let reranking = {
        let inference = inference.clone();
        let job = ScoreJob::rerank(query.clone(), documents.clone(), options);
        actix_web::rt::spawn(async move { inference.score(job).await })
    };
    let encoding = {
        let inference = inference.clone();
        let job = job(
            texts(&["What is BGE M6?", "What is BGE M7?"]),
            Outputs::default(),
            8192,
        );
        actix_web::rt::spawn(async move { inference.encode(job).await })
    };
    // The blocker's text at the gate; the query, three documents and two texts queued.
    gate.until_queued(1 + 4 + 2).await;
    gate.open();
    assert!(blocker.await.unwrap().is_ok());
    let reranked = reranking.await.unwrap().unwrap();
    assert_eq!(encoding.await.unwrap().unwrap().embeddings.len(), 2);
    // After the first request's pass, the query once, three documents and the other
    // request's two texts: one pass.
    assert_eq!(*gate.passes.lock().unwrap(), [1, 6]);
    let pairs: Vec<(&str, &str)> = documents
        .iter()
        .map(|d| (query.as_str(), d.as_str()))
        .collect();
    let alone = tiny().compute_score(&pairs, &options).unwrap();
    assert_eq!(reranked.scores.len(), 3);
    for (got, want) in reranked.scores.iter().zip(&alone) {
        assert!((got.colbert_sparse_dense - want.colbert_sparse_dense).abs() <= 1e-5);
    }
    let query_tokens = tiny().tokenize(&[&query], 512).unwrap()[0].len() - 2;
    let document_tokens: usize = tiny()
        .tokenize(&documents, 8192)
        .unwrap()
        .iter()
        .map(|s| s.len() - 2)
        .sum();
    assert_eq!(
        reranked.tokens,
        query_tokens + document_tokens,
        "the query counted once"
    );
}

/// Issue 29, item 2: `/tokenize` held its tokens outside the budget (1.7 GB for 15 MiB).
/// Now its reservation holds its texts and tokens until its answer is written, and a request
/// that cannot fit is refused.
#[actix_web::test]
async fn tokenize_reserves_its_texts_and_tokens_and_is_refused_past_the_budget() {
    let (inference, _gate) = gated(InferenceOptions::default());
    let budget = MemoryBudget::new(1 << 20);
    let texts = ["What is BGE M3?", "", "Le chat est assis sur le tapis."];
    let reservation = budget.empty();
    let tokens = inference
        .text_tokens(tokenize_job(&texts), Some(reservation))
        .await
        .unwrap();
    let tokenizer = tiny();
    for (text, got) in texts.iter().zip(&tokens.tokens) {
        assert_eq!(*got, tokenizer.tokenizer().text_tokens(text, true).unwrap());
    }
    let expected = memory::Cost::ANSWER_BUFFER
        + memory::Cost::texts(&tokens.texts)
        + tokens
            .tokens
            .iter()
            .map(|t| memory::Cost::text_tokens(t.len()))
            .sum::<u64>();
    // Rounded up to the budget's unit of 1 KiB.
    let reserved = tokens.reservation.as_ref().unwrap().bytes();
    assert!(
        reserved >= expected && reserved < expected + 1024,
        "{reserved} for {expected}"
    );
    assert_eq!(budget.in_use(), reserved);
    drop(tokens);
    assert_eq!(budget.in_use(), 0);

    // At most one token per byte: 100 KiB of text may need 1.6 MB, more than the whole budget.
    let long = "a".repeat(100 << 10);
    let refused = inference
        .text_tokens(tokenize_job(&[&long]), Some(budget.empty()))
        .await;
    assert!(
        matches!(refused, Err(Error::Memory(Refused::TooLarge { .. }))),
        "{refused:?}"
    );
    // 40 KiB of text fits alone, not beside a request that holds half the budget.
    let half = budget.reserve(512 << 10, Need::Body).unwrap();
    let long = "a".repeat(40 << 10);
    let refused = inference
        .text_tokens(tokenize_job(&[&long]), Some(budget.empty()))
        .await;
    assert!(
        matches!(refused, Err(Error::Memory(Refused::Full { .. }))),
        "{refused:?}"
    );
    drop(half);
    let tokens = inference
        .text_tokens(tokenize_job(&[&long]), Some(budget.empty()))
        .await
        .unwrap();
    assert_eq!(
        budget.in_use(),
        tokens.reservation.as_ref().unwrap().bytes()
    );
}

#[actix_web::test]
async fn decode_reserves_its_texts_and_gives_them_back() {
    let (inference, _gate) = gated(InferenceOptions::default());
    let budget = MemoryBudget::new(1 << 20);
    let model = tiny();
    let texts = ["What is BGE M3?", "Le chat est assis sur le tapis."];
    let ids: Vec<Vec<u32>> = model.tokenize(&texts, 8192).unwrap();
    let decoded = inference
        .decode(decode_job(ids), Some(budget.empty()))
        .await
        .unwrap();
    assert_eq!(decoded.texts, texts);
    let expected =
        memory::Cost::ANSWER_BUFFER + texts.iter().map(|t| memory::Cost::decoded(t)).sum::<u64>();
    let reserved = decoded.reservation.as_ref().unwrap().bytes();
    assert!(
        reserved >= expected && reserved < expected + 1024,
        "{reserved} for {expected}"
    );
    drop(decoded);
    assert_eq!(budget.in_use(), 0);
}

/// Issue 29, item 12: a request whose answer could never fit was refused only once every text
/// was tokenized. Now the reservation follows the answer as its texts are tokenized, and the
/// 413 comes after the chunk that shows it: here the first of ten.
#[actix_web::test]
async fn an_answer_that_can_never_fit_is_refused_after_the_chunk_that_shows_it() {
    let options = InferenceOptions {
        tokenizer_threads: 1,
        ..InferenceOptions::default()
    };
    let (inference, _gate) = gated(options);
    let model = tiny();
    let colbert = Outputs {
        dense: false,
        sparse: false,
        colbert: true,
    };
    // Ten chunks of 32 texts of 8 KiB; the ColBERT vectors of one chunk are more than the
    // budget of 16 MiB, the ids of all of them less.
    let text = "a ".repeat(4 << 10);
    let sequence = model.tokenize(&[&text], 8192).unwrap().remove(0);
    let one = memory::Cost::sequence(sequence.len())
        + model.output_bytes(model.text_shape(&sequence), colbert, false);
    assert!(32 * one > 16 << 20, "{one}");
    let job = EncodeJob {
        inputs: Inputs::Texts(vec![text; 10 * 32]),
        options: EncodeOptions::default()
            .with_outputs(colbert)
            .with_max_length(8192),
        sparse_keys: SparseKeys::Ids,
    };
    let budget = MemoryBudget::new(16 << 20);
    let refused = inference.encode_within(job, Some(budget.empty())).await;
    let Err(Error::Memory(Refused::TooLarge { needed, .. })) = refused else {
        panic!("{refused:?}");
    };
    // What the first chunk showed: its 32 texts, not those of a second chunk.
    assert!(needed >= 32 * one, "{needed}");
    assert!(
        needed < 64 * one,
        "refused after more than one chunk: {needed}"
    );
    assert_eq!(budget.in_use(), 0);
}
