//! Memory: what one large request, the byte budget and answers that are not read may cost.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{heavy, json_bytes, kept_mib, random_texts, reset_peak, JSON, KEPT_WITHIN};
use crate::common::*;
use crate::process::{closed_within, reset, Server};

// 1. Memory amplification.

/// Defect 1: one 16 MiB request (2048 texts of 8187 characters) took 1.1 GB and kept 954 MB.
/// `max_length` is 512 so that the model's part stays short in a debug build; the tokenizer
/// still reads every character (its state was the bulk of the growth).
#[test]
fn a_16_mib_request_raises_rss_by_at_most_400_mb_and_keeps_at_most_150_mb() {
    let _turn = heavy();
    let server = Server::start(&[("MAX_INPUTS", "2048")]);
    let texts = random_texts(2048, 8187, 1);
    let body = json_bytes(&json!({"input": texts, "max_length": 512}));
    drop(texts);
    assert!(
        body.len() > 16_000_000 && body.len() <= 16 << 20,
        "{}",
        body.len()
    );
    let warm = try_send(
        &server.base,
        "POST",
        "/embeddings",
        JSON,
        Some(json_bytes(&json!({"input": "warm up"}))),
    )
    .unwrap();
    assert_eq!(warm.status, 200);

    let base = server.rss_mib();
    reset_peak(&server);
    let start = Instant::now();
    let reply = try_send(&server.base, "POST", "/embeddings", JSON, Some(body)).unwrap();
    let took = start.elapsed();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.body["dense_vecs"].as_array().unwrap().len(), 2048);
    let peak = server.status_mib("VmHWM") - base;
    let (kept, fell) = kept_mib(&server, base, 150.0);
    eprintln!(
        "16 MiB request: answered in {:.1} s; RSS {base:.0} MiB before, +{peak:.0} MiB at peak, \
         +{kept:.0} MiB {:.1} s after the answer",
        took.as_secs_f64(),
        fell.unwrap_or(KEPT_WITHIN).as_secs_f64()
    );
    assert!(peak <= 400.0, "RSS rose by {peak:.0} MiB at peak");
    assert!(
        kept <= 150.0,
        "RSS kept {kept:.0} MiB {KEPT_WITHIN:?} after the answer"
    );
}

/// Defect 1 as the issue measured it: the same request at the default `max_length` (8192), whose
/// truncated ids alone are 67 MB. Its forward passes would take hours in a debug build, so the
/// test follows it until every text is tokenized and queued for the model (the peak of
/// tokenization, ids and body), then resets its connection: what it held must go back.
#[test]
fn a_16_mib_request_at_8192_tokens_holds_its_ids_not_the_tokenizer_state() {
    let _turn = heavy();
    let server = Server::start(&[("MAX_INPUTS", "2048")]);
    let texts = random_texts(2048, 8187, 1);
    let body = json_bytes(&json!({"input": texts}));
    drop(texts);
    let warm = try_send(
        &server.base,
        "POST",
        "/embeddings",
        JSON,
        Some(json_bytes(&json!({"input": "warm up"}))),
    )
    .unwrap();
    assert_eq!(warm.status, 200);

    let base = server.rss_mib();
    reset_peak(&server);
    let stream = server.send_raw("/embeddings", &body);
    drop(body);
    let queued = eventually(Duration::from_secs(300), || {
        server.metric("bge_m3_waiting_texts") >= 2000.0
    });
    assert!(
        queued.is_some(),
        "the texts never reached the model's queue"
    );
    let peak = server.status_mib("VmHWM") - base;
    // A reset, which the server noticed before issue 16 too: this test is about memory alone.
    reset(stream);
    let gone = eventually(Duration::from_secs(30), || {
        server.metric("bge_m3_queued_requests") == 0.0
            && server.metric("bge_m3_memory_reserved_bytes") == 0.0
    });
    assert!(gone.is_some(), "the request outlived its client");
    let (kept, fell) = kept_mib(&server, base, 150.0);
    eprintln!(
        "16 MiB request at max_length 8192: tokenized and queued after {:.1} s; RSS {base:.0} MiB \
         before, +{peak:.0} MiB at peak, +{kept:.0} MiB {:.1} s after its reservation went back",
        queued.unwrap().as_secs_f64(),
        fell.unwrap_or(KEPT_WITHIN).as_secs_f64()
    );
    assert!(peak <= 400.0, "RSS rose by {peak:.0} MiB at peak");
    assert!(
        kept <= 150.0,
        "RSS kept {kept:.0} MiB {KEPT_WITHIN:?} after the client left"
    );
}

/// The budget counts bytes, not only requests: what does not fit now is a 429 at once, what
/// could never fit a 413 that says how to split it.
#[test]
fn the_memory_budget_refuses_what_does_not_fit() {
    let _turn = heavy();
    let server = Server::start(&[
        ("MEMORY_BUDGET_MIB", "8"),
        ("MAX_BODY_BYTES", "16777216"),
        ("MAX_INPUTS", "4096"),
    ]);
    let base = server.base.clone();
    let head = |length: usize| server.post_head("/embeddings", length);

    // A body of 5 MiB needs 10 MiB to be read and parsed: never, so 413 without reading it.
    let mut stream = server.connect();
    stream.write_all(head(5 << 20).as_bytes()).unwrap();
    let (_, answer) = closed_within(&mut stream, Duration::from_secs(10));
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("answer_too_large"), "{answer}");

    // A slow upload holds 6 MiB of the 8; a 1.5 MiB body (3 MiB) is then refused at once.
    let mut holder = server.connect();
    holder.write_all(head(3 << 20).as_bytes()).unwrap();
    holder.write_all(b"{").unwrap();
    let held = eventually(Duration::from_secs(10), || {
        server.metric("bge_m3_memory_reserved_bytes") >= f64::from(6 << 20)
    });
    assert!(held.is_some(), "the slow upload reserved nothing");
    let texts = vec!["x ".repeat(1 << 18); 3];
    let body = json_bytes(&json!({"input": texts, "max_length": 8}));
    let reply = try_send(&base, "POST", "/embeddings", JSON, Some(body.clone())).unwrap();
    assert_error(&reply, 429, "memory_full", None);
    assert_eq!(reply.header("retry-after"), Some("1"));
    // The slow client leaves: its reservation goes back, and the same request passes.
    holder.shutdown(Shutdown::Both).unwrap();
    let passed = eventually(Duration::from_secs(5), || {
        try_send(&base, "POST", "/embeddings", JSON, Some(body.clone()))
            .unwrap()
            .status
            == 200
    });
    assert!(
        passed.is_some(),
        "the reservation of a gone client was not given back"
    );

    // ColBERT vectors for 256 texts of 511 tokens: about 23 MiB, more than the whole budget.
    let texts = random_texts(256, 600, 2);
    let body = json!({"input": texts, "max_length": 512, "input_type": {"colbert": true}});
    let reply = try_send(&base, "POST", "/embeddings", JSON, Some(json_bytes(&body))).unwrap();
    assert_error(&reply, 413, "answer_too_large", None);
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("split it into at least"), "{message}");
}
// 3. Answers that are not read.

/// About 100 MB of JSON: ColBERT vectors of 540 texts of 511 tokens.
fn colbert_body(seed: u64) -> Vec<u8> {
    let texts = random_texts(540, 600, seed);
    json_bytes(
        &json!({"input": texts, "max_length": 512, "input_type": {"colbert": true, "sparse": false}}),
    )
}

/// Defect 3: four clients that asked for ~100 MB answers and never read them held 810 MB, with
/// no time limit. Now an answer is written as it is read (its memory shrinks as it goes) and a
/// client that takes nothing for `--write-timeout` is cut off.
#[test]
fn four_clients_that_do_not_read_100_mb_answers_cost_at_most_600_mb_and_are_cut_off() {
    let _turn = heavy();
    let server = Server::start(&[("MAX_INPUTS", "2048"), ("WRITE_TIMEOUT", "3")]);
    // One client that reads: the answer is whole, streamed, and about 100 MB.
    let reply = try_send(
        &server.base,
        "POST",
        "/embeddings",
        JSON,
        Some(colbert_body(9)),
    )
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    let size = reply.text.len();
    let rows: usize = reply.body["colbert_vecs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rows| rows.as_array().unwrap().len())
        .sum();
    assert_eq!(rows, 540 * 511);
    drop(reply);
    assert!(size > 95_000_000, "{size} bytes");

    let base = server.rss_mib();
    reset_peak(&server);
    let start = Instant::now();
    let mut readers: Vec<_> = (0..4)
        .map(|i| server.send_raw("/embeddings", &colbert_body(i)))
        .collect();
    let cut = eventually(Duration::from_secs(240), || {
        server.metric("bge_m3_write_timeouts_total") >= 4.0
    });
    let peak = server.status_mib("VmHWM") - base;
    for (i, stream) in readers.iter_mut().enumerate() {
        // The connection is gone: reading drains what the kernel had, then fails or ends.
        let mut sink = vec![0u8; 1 << 20];
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let ended = loop {
            match stream.read(&mut sink) {
                Ok(0) | Err(_) => break true,
                Ok(_) => {}
            }
        };
        assert!(ended, "client {i}");
    }
    // Cut off, their answers give back their memory reservations.
    let released = eventually(Duration::from_secs(10), || {
        server.metric("bge_m3_memory_reserved_bytes") == 0.0
    });
    assert!(
        released.is_some(),
        "the cut-off answers kept their memory reservations"
    );
    // Then time is the subject: the RSS 3 s later (the allocator's trim, which reports
    // nothing, has run by then), the figure docs/BENCHMARKS.md reports.
    std::thread::sleep(Duration::from_secs(3));
    let after = server.rss_mib() - base;
    eprintln!(
        "4 clients not reading {:.0} MB answers: +{peak:.0} MiB at peak, cut off after {:.1} s, \
         +{after:.0} MiB after",
        size as f64 / 1e6,
        cut.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    assert!(cut.is_some(), "the clients were never cut off");
    assert!(peak <= 600.0, "+{peak:.0} MiB for four unread answers");
    assert!(start.elapsed() < Duration::from_secs(240));
}

/// Issue 29, item 12: `413 answer_too_large` on `/embed_all` and the rerank routes came only
/// once the whole request was tokenized (24-33 s of work). Now it comes after the chunk that
/// shows the answer cannot fit: here a tenth of the texts' tokenization, where the same texts
/// take the whole of it when their answer fits.
#[test]
fn an_answer_that_can_never_fit_is_refused_before_its_texts_are_all_tokenized() {
    let _turn = heavy();
    let server = Server::start(&[
        ("MEMORY_BUDGET_MIB", "64"),
        ("MAX_INPUTS", "2048"),
        ("TOKENIZER_THREADS", "1"),
    ]);
    // 1000 texts of 8000 characters: ColBERT vectors of some 1 GB at 8192 tokens.
    let texts = random_texts(1000, 8000, 12);
    let cpu_of = |path: &str, body: serde_json::Value| {
        let before = server.cpu();
        let reply = try_send(&server.base, "POST", path, JSON, Some(json_bytes(&body))).unwrap();
        (reply, server.cpu() - before)
    };
    // Tokenized to the end: the same texts, with an answer that fits (dense, 8 tokens each).
    let (fits, all_cpu) = cpu_of(
        "/embeddings",
        json!({"input": texts, "max_length": 8, "input_type": {"dense": true, "sparse": false}}),
    );
    assert_eq!(fits.status, 200, "{:?}", fits.body);
    let (refused, early) = cpu_of("/embed_all", json!({"inputs": texts}));
    assert_error(&refused, 413, "answer_too_large", None);
    let documents = json!({"query": "a", "documents": texts});
    let (reranked, rerank_cpu) = cpu_of("/v1/rerank", documents);
    assert_error(&reranked, 413, "answer_too_large", None);
    eprintln!(
        "1000 texts of 8000 characters: tokenized to the end in {:.2} s of CPU; /embed_all 413 \
         after {:.2} s, /v1/rerank 413 after {:.2} s",
        all_cpu.as_secs_f64(),
        early.as_secs_f64(),
        rerank_cpu.as_secs_f64()
    );
    assert!(
        early * 3 < all_cpu,
        "{early:?} of CPU for the 413, {all_cpu:?} for all"
    );
    assert!(
        rerank_cpu * 3 < all_cpu,
        "{rerank_cpu:?} of CPU for the 413"
    );
}
