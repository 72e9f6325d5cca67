//! Connections: stalled bodies, descriptors, hang-ups and requests that time out.

use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{heavy, json_bytes, random_texts, JSON};
use crate::common::*;
use crate::process::{closed_within, metric_in, Server};

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
    // The chunk being tokenized at the 503 may finish: its end is the pool's gauge at 0 (on a
    // loaded machine it can take longer than any fixed grace).
    let finished = eventually(Duration::from_secs(60), || {
        server.metric("bge_m3_tokenizer_tasks") == 0.0
    });
    assert!(finished.is_some(), "the chunk at hand never finished");
    eprintln!(
        "the chunk at hand finished {:.2} s after the 503",
        answered.elapsed().as_secs_f64()
    );
    // Time is the subject from here: no more CPU may go to the request over 2 s.
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

// Issue 29, item 6: answers sent in one piece.

/// A `/v1/rerank` answer of about 12 MB, made in one piece (with `Content-Length`): twelve
/// documents of a million spaces, which the tokenizer reads in a blink (`<s></s>` each) and the
/// answer repeats.
fn big_rerank() -> Vec<u8> {
    json_bytes(&json!({"query": "a", "documents": vec![" ".repeat(999_999); 12]}))
}

/// Defect: the write deadline counted progress only on streamed answers, so a client reading a
/// 17 MB `/v1/rerank` answer at 300 KB/s was reset after 34 s. Now every large answer goes out
/// in pieces, each a sign of progress: a client that keeps reading is never cut, one that stops
/// is.
#[test]
fn a_slow_reader_of_a_large_one_piece_answer_keeps_its_connection() {
    use std::io::Read;

    let _turn = heavy();
    let server = Server::start(&[("WRITE_TIMEOUT", "2")]);
    let body = big_rerank();
    let mut reader = server.connect();
    // A small receive window, so that the kernel's buffers hold little of the answer.
    set_receive_buffer(&reader, 64 << 10);
    reader
        .write_all(server.post_head("/v1/rerank", body.len()).as_bytes())
        .unwrap();
    reader.write_all(&body).unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let (head, response) = crate::process::RawResponse::head(&mut reader).unwrap();
    assert_eq!(head.status, 200);
    let length: u64 = head.header("content-length").unwrap().parse().unwrap();
    assert!(length > 12_000_000, "{length}");
    // About 1 MB/s: 16 KiB every 15 ms, far longer in all than the deadline of 2 s.
    let start = Instant::now();
    let mut answer = Vec::new();
    let read = response.body(&head, |part| {
        answer.extend_from_slice(part);
        std::thread::sleep(Duration::from_millis(15) * (part.len() as u32).div_ceil(16 << 10));
    });
    let took = start.elapsed();
    let read = read.unwrap_or_else(|e| {
        panic!(
            "cut after {:.1} s, {} of {length} bytes read: {e}",
            took.as_secs_f64(),
            answer.len()
        )
    });
    assert_eq!(read, length);
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["results"].as_array().unwrap().len(), 12);
    assert!(
        took > Duration::from_secs(4),
        "read in {took:?}: too fast to tell"
    );
    assert_eq!(server.metric("bge_m3_write_timeouts_total"), 0.0);

    // A client that stops reading the same answer is cut.
    let mut stopper = server.connect();
    set_receive_buffer(&stopper, 64 << 10);
    stopper
        .write_all(server.post_head("/v1/rerank", body.len()).as_bytes())
        .unwrap();
    stopper.write_all(&body).unwrap();
    let mut first = vec![0u8; 64 << 10];
    stopper
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    assert!(stopper.read(&mut first).unwrap() > 0);
    let cut = eventually(Duration::from_secs(60), || {
        server.metric("bge_m3_write_timeouts_total") >= 1.0
    });
    eprintln!(
        "a {:.0} MB one-piece answer read at ~1 MB/s in {:.1} s under --write-timeout 2: whole; \
         one not read: cut after {:.1} s",
        length as f64 / 1e6,
        took.as_secs_f64(),
        cut.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    assert!(cut.is_some(), "a client that stopped reading was never cut");
}

/// Sets `SO_RCVBUF` (the kernel doubles it), which also stops its automatic growth.
fn set_receive_buffer(stream: &std::net::TcpStream, bytes: usize) {
    socket2::SockRef::from(stream)
        .set_recv_buffer_size(bytes)
        .expect("setsockopt(SO_RCVBUF)");
}
