//! Hostile and careless clients (issue 16): one test per defect, each failing on the server as
//! it was. Those that measure memory, signals, metrics or exit statuses run the real binary as a
//! child process (`process.rs`), so that nothing of the test process counts.
//!
//! Figures are printed (`cargo test -- --nocapture`) as well as checked; the README's
//! "Reliability" section reports them.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::process::{closed_within, metric_in, reset, Server};

/// `n` texts of `chars` letters and digits (about one token each for tiny-pt), reproducible.
fn random_texts(n: usize, chars: usize, seed: u64) -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..n)
        .map(|_| {
            (0..chars)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    ALPHABET[(state >> 33) as usize % ALPHABET.len()] as char
                })
                .collect()
        })
        .collect()
}

fn json_bytes(body: &Value) -> Vec<u8> {
    serde_json::to_vec(body).unwrap()
}

const JSON: Option<&str> = Some("application/json");

/// The tests that load the machine (large requests, many connections, CPU or memory measured)
/// take turns: on two cores, two of them at once would blur each other's figures and deadlines.
fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Resets the kernel's high-water mark of the server's RSS (`VmHWM`).
fn reset_peak(server: &Server) {
    std::fs::write(format!("/proc/{}/clear_refs", server.pid()), "5").unwrap();
}

// ---------------------------------------------------------------------------------------------
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
    // Time is the subject here: what the process still holds 10 s after the answer (the
    // figure docs/BENCHMARKS.md reports), not the moment some event happens.
    std::thread::sleep(Duration::from_secs(10));
    let kept = server.rss_mib() - base;
    eprintln!(
        "16 MiB request: answered in {:.1} s; RSS {base:.0} MiB before, +{peak:.0} MiB at peak, \
         +{kept:.0} MiB 10 s after the answer",
        took.as_secs_f64()
    );
    assert!(peak <= 400.0, "RSS rose by {peak:.0} MiB at peak");
    assert!(
        kept <= 150.0,
        "RSS kept {kept:.0} MiB 10 s after the answer"
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
    // Time is the subject: what is still held 10 s after the client left (docs/BENCHMARKS.md).
    std::thread::sleep(Duration::from_secs(10));
    let kept = server.rss_mib() - base;
    eprintln!(
        "16 MiB request at max_length 8192: tokenized and queued after {:.1} s; RSS {base:.0} MiB \
         before, +{peak:.0} MiB at peak, +{kept:.0} MiB 10 s after its client left",
        queued.unwrap().as_secs_f64()
    );
    assert!(peak <= 400.0, "RSS rose by {peak:.0} MiB at peak");
    assert!(
        kept <= 150.0,
        "RSS kept {kept:.0} MiB 10 s after the client left"
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

// ---------------------------------------------------------------------------------------------
// 2. Body deadline, connections and descriptors.

/// Defect 2: a body that stalls after its head was held for more than 170 s. Both kinds of
/// body, sized and chunked (which the HTTP layer would drain forever).
#[test]
fn a_stalled_body_gets_408_and_its_connection_is_closed() {
    let _turn = heavy();
    let server = Server::start(&[("BODY_TIMEOUT", "2")]);
    let addr = server.addr;
    for (kind, head) in [
        (
            "sized",
            format!(
                "POST /embeddings HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: 1000\r\n\r\n{{"
            ),
        ),
        (
            "chunked",
            format!(
                "POST /embeddings HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\n\r\n5\r\n{{\"in"
            ),
        ),
    ] {
        let mut stream = server.connect();
        let start = Instant::now();
        stream.write_all(head.as_bytes()).unwrap();
        let (closed, answer) = closed_within(&mut stream, Duration::from_secs(10));
        let took = start.elapsed();
        let answer = String::from_utf8_lossy(&answer);
        eprintln!(
            "stalled {kind} body: closed after {:.1} s",
            took.as_secs_f64()
        );
        assert!(closed, "{kind}: still open after {took:?}");
        assert!(answer.starts_with("HTTP/1.1 408"), "{kind}: {answer}");
        assert!(answer.contains("body_timeout"), "{kind}: {answer}");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(5),
            "{kind}: {took:?}"
        );
    }
}

/// Defect 2 at its worst: with 256 descriptors, 300 stalled uploads made `/health`
/// unreachable (`accept` failing with EMFILE, logged every 0.5 s). With the default settings,
/// connections are capped below the limit (the rest wait in the listen backlog), every stalled
/// one is closed within the body timeout of being accepted, and `accept` never fails.
#[test]
fn three_hundred_stalled_uploads_under_256_descriptors_are_closed_and_health_recovers() {
    let _turn = heavy();
    let server = Server::start_with(&[], Some(256));
    let start = Instant::now();
    let mut stalled: Vec<_> = (0..300)
        .map(|_| {
            let mut stream = server.connect();
            let _ = stream.write_all(server.post_head("/embeddings", 1000).as_bytes());
            let _ = stream.write_all(b"{");
            stream
        })
        .collect();
    // On a connection of its own, behind the stalled ones.
    let mut health = server.connect();
    write!(
        health,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (_, answer) = closed_within(&mut health, Duration::from_secs(75));
    let healthy = start.elapsed();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let mut closed_at = Vec::new();
    for stream in &mut stalled {
        let left = Duration::from_secs(80).saturating_sub(start.elapsed());
        if closed_within(stream, left.max(Duration::from_millis(10))).0 {
            closed_at.push(start.elapsed());
        }
    }
    closed_at.sort();
    let first_wave = closed_at.get(199).copied();
    eprintln!(
        "300 stalled uploads, 256 descriptors, default settings: /health answered after {:.1} s; \
         200 closed after {:.1} s, {} of 300 after {:.1} s",
        healthy.as_secs_f64(),
        first_wave.map_or(f64::NAN, |d| d.as_secs_f64()),
        closed_at.len(),
        closed_at.last().map_or(f64::NAN, |d| d.as_secs_f64()),
    );
    assert!(
        healthy < Duration::from_secs(45),
        "/health answered after {healthy:?}"
    );
    assert!(
        first_wave.is_some_and(|d| d < Duration::from_secs(45)),
        "{first_wave:?}"
    );
    assert_eq!(closed_at.len(), 300, "stalled connections still open");
    let accept_errors = server.logged("Error accepting connection");
    assert!(accept_errors.len() <= 1, "{accept_errors:?}");
    assert!(
        server.logged(" ERROR ").is_empty(),
        "{:?}",
        server.logged(" ERROR ")
    );
}

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------
// 4. Hang-ups and timeouts.

/// Defect 4: a client that closed its connection normally (FIN) kept its texts in the queue
/// until the request timeout.
#[test]
fn a_fin_hang_up_empties_its_texts_from_the_queue_within_5_s() {
    let _turn = heavy();
    let server = Server::start(&[("MAX_INPUTS", "2048"), ("MAX_BATCH_TOKENS", "1024")]);
    let texts = random_texts(2048, 600, 3);
    let mut stream = server.send_raw(
        "/embeddings",
        &json_bytes(&json!({"input": texts, "max_length": 512})),
    );
    let queued = eventually(Duration::from_secs(60), || {
        server.metric("bge_m3_waiting_texts") > 100.0
    });
    assert!(queued.is_some(), "the texts never reached the queue");
    let waiting = server.metric("bge_m3_waiting_texts");
    stream.shutdown(Shutdown::Write).unwrap();
    let emptied = eventually(Duration::from_secs(5), || {
        server.metric("bge_m3_waiting_texts") == 0.0
            && server.metric("bge_m3_queued_requests") == 0.0
    });
    eprintln!("FIN with {waiting} texts waiting: queue empty after {emptied:?}");
    assert!(
        emptied.is_some(),
        "texts still queued 5 s after the client left"
    );
    // The server closed its side too (no CLOSE-WAIT), and logged the request as 499.
    assert!(closed_within(&mut stream, Duration::from_secs(5)).0);
    assert!(eventually(Duration::from_secs(5), || !server
        .logged("status=499")
        .is_empty())
    .is_some());
}

/// Defect 4, second half: a request that timed out kept being tokenized for seconds after its
/// 503.
#[test]
fn a_timed_out_request_stops_being_tokenized() {
    let _turn = heavy();
    let server = Server::start(&[("REQUEST_TIMEOUT", "1"), ("TOKENIZER_THREADS", "1")]);
    let texts = random_texts(64, 250_000, 4);
    let body = json_bytes(&json!({"input": texts, "max_length": 8}));
    drop(texts);
    let reply = try_send(&server.base, "POST", "/embeddings", JSON, Some(body)).unwrap();
    assert_error(&reply, 503, "timeout", None);
    let answered = Instant::now();
    // The request has left the queue: no place taken, no text waiting, nothing reserved.
    let left = eventually(Duration::from_secs(5), || {
        let metrics = server.metrics();
        metric_in(&metrics, "bge_m3_queued_requests") == 0.0
            && metric_in(&metrics, "bge_m3_waiting_texts") == 0.0
            && metric_in(&metrics, "bge_m3_memory_reserved_bytes") == 0.0
    });
    assert!(left.is_some(), "the timed-out request is still queued");
    // Time is the subject from here: the chunk being tokenized at the 503 may finish (0.7 s of
    // grace from the answer), then no more CPU may go to the request over 2 s.
    std::thread::sleep(Duration::from_millis(700).saturating_sub(answered.elapsed()));
    let before = server.cpu();
    std::thread::sleep(Duration::from_secs(2));
    let used = server.cpu() - before;
    eprintln!(
        "after a timed-out tokenization: {:.2} s of CPU in 2 s",
        used.as_secs_f64()
    );
    assert!(
        used < Duration::from_millis(500),
        "{used:?} of CPU in the 2 s after the 503"
    );
}

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------
// 8. The smaller issues.

#[test]
fn head_requests_are_answered_like_get_without_a_body() {
    for path in ["/health", "/", "/v1/models", "/openapi.json"] {
        let get = get(path);
        let head = send("HEAD", path, None, None);
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.text.is_empty(), "HEAD {path}: {}", head.text);
        assert_eq!(head.content_type, get.content_type, "HEAD {path}");
    }
}

#[test]
fn a_compressed_body_is_415() {
    let reply = try_send_with_headers(
        base(),
        "POST",
        "/embeddings",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        Some(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0]),
    )
    .unwrap();
    assert_error(&reply, 415, "unsupported_content_encoding", None);
    // `identity` is no encoding at all.
    let reply = try_send_with_headers(
        base(),
        "POST",
        "/embeddings",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "identity"),
        ],
        Some(json_bytes(&json!({"input": "a"}))),
    )
    .unwrap();
    assert_eq!(reply.status, 200);
}

/// What the OpenAPI document declares is what the server takes (found by schemathesis).
#[test]
fn integral_numbers_and_null_flags_are_accepted_as_documented() {
    let whole = post_ok(
        "/embeddings",
        json!({"input": "a b", "max_length": 512.0, "batch_size": 2.0, "dimensions": 8.0,
               "input_type": {"dense": null, "sparse": true, "colbert": null}}),
    );
    assert_eq!(whole["dense_vecs"][0].as_array().unwrap().len(), 8);
    assert!(whole.get("colbert_vecs").is_none());
    post_ok(
        "/v1/embeddings",
        json!({"input": [5.0, 6.0], "input_type": null}),
    );
    post_ok(
        "/score",
        json!({"sentences_1": "a", "sentences_2": "b", "max_query_length": 64.0}),
    );
    for body in [
        json!({"input": "a", "max_length": 512.5}),
        json!({"input": "a", "max_length": -1}),
        json!({"input": [5.5]}),
    ] {
        let reply = post("/embeddings", body.clone());
        assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
    }
    let doc: Value = serde_json::from_str(&get("/openapi.json").text).unwrap();
    let text = doc.to_string();
    assert!(
        text.contains(r#""type":["boolean","null"]"#),
        "input_type flags are not nullable"
    );
    assert!(
        text.contains("At least one output"),
        "all-false input_type is undocumented"
    );
}

/// `Expect: 100-continue` is answered `100 Continue` by the HTTP layer (actix-http) before any
/// route runs, which actix-web offers no way to change: documented in the README rather than
/// fixed, so this test passes on the old server too. It pins what is promised there: a body
/// over the limit is then refused with 413 without being read (this client never sends it).
#[test]
fn an_oversize_body_behind_expect_100_continue_is_refused_413_without_being_read() {
    let addr = base().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /embeddings HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY_BYTES + 1
    )
    .unwrap();
    let (_, answer) = closed_within(&mut stream, Duration::from_secs(5));
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 100 Continue\r\n\r\n"),
        "{answer}"
    );
    assert!(answer.contains("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}

/// Requests the HTTP parser refuses (400, 431) or times out (408) were in neither the request
/// log nor `bge_m3_requests_total`, and actix logged them at ERROR.
#[test]
fn parser_rejects_are_logged_and_counted_not_errors() {
    let _turn = heavy();
    let server = Server::start(&[("HEADER_TIMEOUT", "1")]);
    let count = |status: &str| {
        server.metric(&format!(
            r#"bge_m3_requests_total{{route="other",status="{status}"}}"#
        ))
    };
    let mut garbage = server.connect();
    garbage.write_all(b"GARBAGE / HTTP/9.9\r\n\r\n").unwrap();
    let (_, answer) = closed_within(&mut garbage, Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"));

    let mut huge = server.connect();
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(256 << 10)
    );
    let _ = huge.write_all(head.as_bytes());
    let (_, answer) = closed_within(&mut huge, Duration::from_secs(5));
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let mut slow = server.connect();
    slow.write_all(b"GET /hea").unwrap();
    let (closed, answer) = closed_within(&mut slow, Duration::from_secs(5));
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        closed && answer.starts_with("HTTP/1.1 408"),
        "{closed} {answer}"
    );

    let counted = eventually(Duration::from_secs(5), || {
        count("400") >= 1.0 && count("431") >= 1.0 && count("408") >= 1.0
    });
    assert!(
        counted.is_some(),
        "400: {}, 431: {}, 408: {}",
        count("400"),
        count("431"),
        count("408")
    );
    // The log line of a connection's reject is written as the connection ends, which may be
    // after the metric counted it: wait for it too.
    for status in ["status=400", "status=431", "status=408"] {
        assert!(
            eventually(Duration::from_secs(5), || !server.logged(status).is_empty()).is_some(),
            "{status} not in the request log"
        );
    }
    assert!(
        server.logged(" ERROR ").is_empty(),
        "{:?}",
        server.logged(" ERROR ")
    );
}
