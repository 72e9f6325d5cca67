//! Graceful stop of the real binary: on SIGTERM or SIGINT every request in flight or queued is
//! answered, then the process exits 0.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::process::Server;

fn graceful_stop_answers_everything_in_flight(signal: Signal) {
    let mut server = Server::start(&[("MAX_BATCH_TOKENS", "2048")]);
    let base = server.base.clone();
    // Long texts, so that several passes are still to run when the signal comes.
    let text = "Dense, sparse and multi-vector retrieval with one model. ".repeat(300);
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let base = base.clone();
            let body = json!({"input": [format!("{i} {text}"), "short"], "max_length": 2048});
            std::thread::spawn(move || {
                let body = serde_json::to_vec(&body).unwrap();
                let json = Some("application/json");
                let reply = try_send(&base, "POST", "/embeddings", json, Some(body));
                (reply, Instant::now())
            })
        })
        .collect();
    // Every request admitted (queued, or already answered) before the signal.
    let admitted = eventually(Duration::from_secs(60), || {
        server.metric("bge_m3_queued_requests")
            + server.metric(r#"bge_m3_requests_total{route="/embeddings",status="200"}"#)
            >= 6.0
    });
    assert!(admitted.is_some(), "the requests were never admitted");
    server.signal(signal);
    let signalled = Instant::now();
    let mut answered_after_the_signal = 0;
    for client in clients {
        let (reply, at) = client.join().unwrap();
        let reply = reply.expect("a request in flight was cut off");
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.body["dense_vecs"].as_array().unwrap().len(), 2);
        answered_after_the_signal += usize::from(at > signalled);
    }
    // Otherwise the test proved nothing: the requests must still have been running.
    assert!(answered_after_the_signal > 0);
    let (status, _) = server.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{status}");
    // Stopped: nothing listens any more.
    assert!(try_send(&base, "GET", "/health", None, None).is_err());
}

#[test]
fn sigterm_answers_everything_in_flight_then_exits_0() {
    graceful_stop_answers_everything_in_flight(Signal::Term);
}

#[test]
fn sigint_answers_everything_in_flight_then_exits_0() {
    graceful_stop_answers_everything_in_flight(Signal::Int);
}
