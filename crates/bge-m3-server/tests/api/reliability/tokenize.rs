//! `/tokenize` and `/decode` (issue 29, item 2): they bypassed the memory budget, stalled every
//! other request and outlived their client. Now they are reserved, worked in chunks that other
//! requests take turns with, and stopped when their client goes.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{heavy, json_bytes, kept_mib, reset_peak, JSON, KEPT_WITHIN};
use crate::common::*;
use crate::process::{metric_in, reset, RawResponse, Server};

/// A `/tokenize` body of `texts` texts of `"a "` × 500,000: a million bytes and 500,002 tokens
/// each (`<s>` and `</s>` included). 16 of them are the 15 MiB request: 8 million
/// tokens, 509 MB of JSON.
fn huge_tokenize(texts: usize) -> Vec<u8> {
    json_bytes(&json!({"inputs": vec!["a ".repeat(500_000); texts]}))
}

/// Tokens of a `/tokenize` answer, counted as it is read (one JSON object each), and its bytes.
fn count_tokens(stream: &mut TcpStream) -> (crate::process::Head, u64, u64) {
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .unwrap();
    let (head, body) = RawResponse::head(stream).unwrap();
    let mut tokens = 0u64;
    let bytes = body
        .body(&head, |part| {
            tokens += part.iter().filter(|&&b| b == b'{').count() as u64;
        })
        .unwrap();
    (head, tokens, bytes)
}

/// Whether anything of an answer has arrived on `stream` (without taking it).
fn answered(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let peeked = stream.peek(&mut [0u8; 1]);
    stream.set_nonblocking(false).unwrap();
    !matches!(peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The request: one 15 MiB `/tokenize` took 1.7 GB at peak and kept 0.7 GB, and a
/// 2-word `/embeddings` beside it waited 15.6 s. Now it is reserved in the budget, a short
/// request gets its turn after a chunk of it (one text here), its answer is written as it is
/// read, and its memory goes back.
#[test]
fn a_15_mib_tokenize_is_reserved_lets_a_short_request_through_and_gives_its_memory_back() {
    let _turn = heavy();
    let server = Server::start(&[("TOKENIZER_THREADS", "1")]);
    let body = huge_tokenize(16);
    assert!(
        body.len() > 15 << 20 && body.len() <= 16 << 20,
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
    let mut huge = server.send_raw("/tokenize", &body);
    drop(body);
    // Admitted, and reserved: at least its texts and the 16 bytes of each of its 8 million
    // tokens.
    let least = 16e6 + 16.0 * 16.0 * 500_002.0;
    let reserved = eventually(Duration::from_secs(60), || {
        let metrics = server.metrics();
        metric_in(&metrics, "bge_m3_queued_requests") >= 1.0
            && metric_in(&metrics, "bge_m3_memory_reserved_bytes") >= least
    });
    assert!(
        reserved.is_some(),
        "the /tokenize was never admitted with a reservation of {least} bytes"
    );

    let asked = Instant::now();
    let short = try_send(
        &server.base,
        "POST",
        "/embeddings",
        JSON,
        Some(json_bytes(&json!({"input": "two words"}))),
    )
    .unwrap();
    let waited = asked.elapsed();
    assert_eq!(short.status, 200);
    // The short request did not wait for the whole tokenization: the /tokenize is still at it.
    let tasks = server.metric("bge_m3_tokenizer_tasks");
    let early = !answered(&huge);
    assert!(
        tasks >= 1.0 && early,
        "the short request waited for the whole /tokenize"
    );

    let (head, tokens, bytes) = count_tokens(&mut huge);
    let took = start.elapsed();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(tokens, 16 * 500_002);
    let peak = server.status_mib("VmHWM") - base;
    let gone = eventually(Duration::from_secs(10), || {
        let metrics = server.metrics();
        metric_in(&metrics, "bge_m3_memory_reserved_bytes") == 0.0
            && metric_in(&metrics, "bge_m3_tokenizer_tasks") == 0.0
            && metric_in(&metrics, "bge_m3_queued_requests") == 0.0
    });
    assert!(
        gone.is_some(),
        "the answered /tokenize still holds its place"
    );
    let (kept, fell) = kept_mib(&server, base, 150.0);
    let tokenization: f64 = head.header("x-tokenization-time").unwrap().parse().unwrap();
    eprintln!(
        "15 MiB /tokenize ({tokens} tokens, {:.0} MB of JSON): tokenized in {:.1} s, answered in \
         {:.1} s; RSS {base:.0} MiB before, +{peak:.0} MiB at peak, +{kept:.0} MiB {:.1} s after its \
         reservation went back; a 2-word /embeddings beside it: {:.0} ms",
        bytes as f64 / 1e6,
        tokenization / 1e3,
        took.as_secs_f64(),
        fell.unwrap_or(KEPT_WITHIN).as_secs_f64(),
        waited.as_secs_f64() * 1e3
    );
    assert!(peak <= 800.0, "RSS rose by {peak:.0} MiB at peak");
    assert!(
        kept <= 150.0,
        "RSS kept {kept:.0} MiB {KEPT_WITHIN:?} after the answer"
    );
}

/// Three clients that hung up after 1 s left 28 s of tokenizer work running, invisible to the
/// queue's metrics. Now the work stops after the chunk at hand, and the metrics show it.
#[test]
fn a_tokenize_whose_client_hangs_up_stops_after_the_chunk_at_hand() {
    let _turn = heavy();
    let server = Server::start(&[("TOKENIZER_THREADS", "1")]);
    let stream = server.send_raw("/tokenize", &huge_tokenize(8));
    let tokenizing = eventually(Duration::from_secs(60), || {
        server.metric("bge_m3_queued_requests") >= 1.0
    });
    assert!(tokenizing.is_some(), "the /tokenize was never admitted");
    reset(stream);
    let hung_up = Instant::now();
    // One chunk (a text of a million bytes) may finish; nothing after it.
    let left = eventually(Duration::from_secs(20), || {
        let metrics = server.metrics();
        metric_in(&metrics, "bge_m3_queued_requests") == 0.0
            && metric_in(&metrics, "bge_m3_memory_reserved_bytes") == 0.0
            && metric_in(&metrics, "bge_m3_tokenizer_tasks") == 0.0
    });
    assert!(left.is_some(), "the /tokenize outlived its client");
    // Time is the subject from here: no more CPU may go to the request over 2 s.
    let before = server.cpu();
    std::thread::sleep(Duration::from_secs(2));
    let used = server.cpu() - before;
    eprintln!(
        "a /tokenize of 8 x 1 MB whose client hung up: its work gone {:.1} s after, then {:.2} s \
         of CPU in 2 s",
        hung_up.elapsed().as_secs_f64() - 2.0,
        used.as_secs_f64()
    );
    assert!(
        used < Duration::from_millis(500),
        "{used:?} of CPU in the 2 s after the hang-up"
    );
}

/// `/tokenize` is reserved like the embeddings routes: its texts and the most tokens they can
/// have (16 bytes each). More than the whole budget is a 413, more than what is left a 429.
#[test]
fn a_tokenize_is_refused_past_the_memory_budget() {
    let _turn = heavy();
    let server = Server::start(&[("MEMORY_BUDGET_MIB", "8")]);
    let base = server.base.clone();
    let tokenize = |bytes: usize| {
        let body = json_bytes(&json!({"inputs": ["a".repeat(bytes)]}));
        try_send(&base, "POST", "/tokenize", JSON, Some(body)).unwrap()
    };
    // 600 KB of text: up to 600,003 tokens, 9.6 MB.
    let reply = tokenize(600_000);
    assert_error(&reply, 413, "answer_too_large", None);

    // A slow upload holds 6 MiB of the 8; 200 KB of text (3.2 MB) is then refused at once.
    let mut holder = server.connect();
    holder
        .write_all(server.post_head("/embeddings", 3 << 20).as_bytes())
        .unwrap();
    holder.write_all(b"{").unwrap();
    let held = eventually(Duration::from_secs(10), || {
        server.metric("bge_m3_memory_reserved_bytes") >= f64::from(6 << 20)
    });
    assert!(held.is_some(), "the slow upload reserved nothing");
    let reply = tokenize(200_000);
    assert_error(&reply, 429, "memory_full", None);
    assert_eq!(reply.header("retry-after"), Some("1"));
    holder.shutdown(Shutdown::Both).unwrap();
    let passed = eventually(Duration::from_secs(5), || tokenize(200_000).status == 200);
    assert!(passed.is_some(), "the same /tokenize never passed");
    // Its reservation went back with its answer.
    let released = eventually(Duration::from_secs(5), || {
        server.metric("bge_m3_memory_reserved_bytes") == 0.0
    });
    assert!(released.is_some());
}

/// Issue 29, item 7: a graceful stop answered admitted `/tokenize` requests 503 (5 of 8), yet
/// exited 0. Admitted, they are now answered in full, and the exit status is 0 because nothing
/// was cut.
#[test]
fn a_graceful_stop_answers_the_admitted_tokenize_requests() {
    let _turn = heavy();
    let mut server = Server::start(&[("TOKENIZER_THREADS", "1")]);
    let body = json_bytes(&json!({"inputs": ["a ".repeat(250_000)]}));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let mut stream = server.send_raw("/tokenize", &body);
            std::thread::spawn(move || {
                let (head, tokens, _) = count_tokens(&mut stream);
                (head.status, tokens)
            })
        })
        .collect();
    let admitted = eventually(Duration::from_secs(60), || {
        server.metric("bge_m3_queued_requests") >= 4.0
    });
    assert!(admitted.is_some(), "the requests were never admitted");
    server.signal(Signal::Term);
    for client in clients {
        let (status, tokens) = client.join().unwrap();
        assert_eq!((status, tokens), (200, 250_002));
    }
    let (status, took) = server.wait_exit(Duration::from_secs(60));
    eprintln!(
        "a drain with 4 admitted /tokenize requests: all answered, exit {status} {:.1} s after \
         the last",
        took.as_secs_f64()
    );
    assert_eq!(status.code(), Some(0));
    assert!(!server.logged("every request was answered").is_empty());
}
