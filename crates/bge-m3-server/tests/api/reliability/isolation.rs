//! Isolation: one request's tokenization does not hold up another's inference.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{heavy, json_bytes, random_texts, JSON};
use crate::common::*;
use crate::process::Server;

// 7. Isolation.

/// Defect 7: a 2-token request took 2.9-4.0 s of "inference" while 16 texts of a million
/// characters were tokenized. Tokenization now runs on threads of its own, in chunks that
/// concurrent requests take turns on.
#[test]
fn a_short_request_is_not_held_up_by_a_huge_tokenization() {
    let _turn = heavy();
    let server = Server::start(&[("TOKENIZER_THREADS", "1")]);
    let texts = random_texts(16, 1_000_000, 5);
    let body = json_bytes(&json!({"input": texts, "max_length": 8}));
    drop(texts);
    let huge = {
        let base = server.base.clone();
        std::thread::spawn(move || {
            try_send(&base, "POST", "/embeddings", JSON, Some(body)).unwrap()
        })
    };
    // Admitted: its tokenization is under way.
    let admitted = eventually(Duration::from_secs(30), || {
        server.metric("bge_m3_queued_requests") >= 1.0
    });
    assert!(admitted.is_some(), "the huge request was never admitted");
    let start = Instant::now();
    let short = try_send(
        &server.base,
        "POST",
        "/embeddings",
        JSON,
        Some(json_bytes(&json!({"input": "hi"}))),
    )
    .unwrap();
    let took = start.elapsed();
    let huge = huge.join().unwrap();
    assert_eq!(short.status, 200);
    assert_eq!(huge.status, 200);
    let header = |reply: &Reply, name: &str| reply.header(name).unwrap().parse::<f64>().unwrap();
    eprintln!(
        "a 2-token request during a 16 x 1e6-character tokenization ({:.0} ms): {:.0} ms in all, \
         inference {:.1} ms",
        header(&huge, "x-tokenization-time"),
        took.as_secs_f64() * 1e3,
        header(&short, "x-inference-time")
    );
    assert!(
        header(&huge, "x-tokenization-time") > 2.0 * took.as_secs_f64() * 1e3,
        "the short request waited for the whole tokenization"
    );
    assert!(header(&short, "x-inference-time") < 500.0);
}
