//! Stopping: a second signal, and a drain that runs out of time.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{heavy, json_bytes, random_texts, JSON};
use crate::common::*;
use crate::process::{closed_within, Server};

// 5. and 6. Stopping.

/// Long requests in flight: `clients` requests of 1024 texts, each several seconds of passes.
fn long_requests(
    server: &Server,
    clients: usize,
) -> Vec<std::thread::JoinHandle<Result<Reply, String>>> {
    let handles = (0..clients)
        .map(|i| {
            let base = server.base.clone();
            let texts = random_texts(1024, 600, 10 + i as u64);
            let body = json_bytes(&json!({"input": texts, "max_length": 512}));
            std::thread::spawn(move || {
                try_send(&base, "POST", "/embeddings", JSON, Some(body)).map_err(|e| e.to_string())
            })
        })
        .collect();
    let admitted = eventually(Duration::from_secs(60), || {
        server.metric("bge_m3_queued_requests") >= clients as f64
            && server.metric("bge_m3_waiting_texts") > 0.0
    });
    assert!(admitted.is_some(), "the long requests were never admitted");
    handles
}

fn a_second_signal_exits_at_once(first: Signal, second: Signal) {
    let _turn = heavy();
    let mut server = Server::start(&[("MAX_INPUTS", "2048"), ("MAX_BATCH_TOKENS", "1024")]);
    let clients = long_requests(&server, 2);
    server.signal(first);
    // The first signal has been taken (the drain has begun) before the second is sent.
    let draining = eventually(Duration::from_secs(10), || {
        !server
            .logged("stopping: answering the requests in flight")
            .is_empty()
    });
    assert!(draining.is_some(), "the first {first} was not taken");
    server.signal(second);
    let (status, took) = server.wait_exit(Duration::from_secs(30));
    eprintln!(
        "{first} then {second}: exited {status} {:.2} s after the second",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(5), "{first}+{second}: {took:?}");
    assert_eq!(
        status.code(),
        Some(i32::from(bge_m3_server::EXIT_ABANDONED))
    );
    for client in clients {
        let _ = client.join();
    }
}

/// Defect 5: a second signal waited for the whole `--shutdown-timeout` (30 s).
#[test]
fn a_second_sigterm_exits_within_5_s() {
    a_second_signal_exits_at_once(Signal::Term, Signal::Term);
}

#[test]
fn a_second_sigint_or_term_then_int_exits_within_5_s() {
    a_second_signal_exits_at_once(Signal::Int, Signal::Int);
    a_second_signal_exits_at_once(Signal::Term, Signal::Int);
}

/// Defect 6: requests cut off by `--shutdown-timeout` were dropped without an answer and the
/// exit status was 0; during the drain no client saw 503 `shutting_down` or `draining`.
#[test]
fn a_drain_answers_503_and_the_exit_status_says_requests_were_abandoned() {
    let _turn = heavy();
    let mut server = Server::start(&[
        ("MAX_INPUTS", "2048"),
        ("MAX_BATCH_TOKENS", "1024"),
        ("SHUTDOWN_TIMEOUT", "3"),
        // The idle connection must still be open when the signal comes.
        ("KEEP_ALIVE", "300"),
    ]);
    // A keep-alive connection, idle when the signal comes.
    let mut idle = server.connect();
    let small = json_bytes(&json!({"input": "a"}));
    idle.write_all(server.post_head("/embeddings", small.len()).as_bytes())
        .unwrap();
    idle.write_all(&small).unwrap();
    let mut first = vec![0u8; 64 << 10];
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = idle.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"));

    let clients = long_requests(&server, 2);
    let signalled = Instant::now();
    server.signal(Signal::Term);
    wait_for_health(&server.base, 503);
    // During the drain: /health says so, new requests are refused, on new connections and on
    // the idle keep-alive one.
    let health = try_send(&server.base, "GET", "/health", None, None).unwrap();
    assert_eq!(health.status, 503);
    assert_eq!(health.body["status"], "draining");
    let refused = try_send(
        &server.base,
        "POST",
        "/embeddings",
        JSON,
        Some(small.clone()),
    )
    .unwrap();
    assert_error(&refused, 503, "shutting_down", None);
    assert_eq!(refused.header("connection"), Some("close"));
    idle.write_all(server.post_head("/embeddings", small.len()).as_bytes())
        .unwrap();
    idle.write_all(&small).unwrap();
    let (_, answer) = closed_within(&mut idle, Duration::from_secs(10));
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("shutting_down"), "{answer}");

    // The long requests outlive the timeout: each is answered 503, none is dropped.
    for client in clients {
        let reply = client
            .join()
            .unwrap()
            .expect("a request cut off without an answer");
        assert_error(&reply, 503, "shutting_down", None);
    }
    let answered = signalled.elapsed();
    let (status, _) = server.wait_exit(Duration::from_secs(20));
    eprintln!(
        "drain with 2 long requests, --shutdown-timeout 3: answered 503 after {:.1} s, exit {status}",
        answered.as_secs_f64()
    );
    assert!(answered < Duration::from_secs(6), "{answered:?}");
    assert_eq!(
        status.code(),
        Some(i32::from(bge_m3_server::EXIT_ABANDONED))
    );
    assert!(!server.logged("requests were abandoned").is_empty());
}
