//! Graceful stop of the real binary: on SIGTERM or SIGINT every request in flight or queued is
//! answered, then the process exits 0.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::process::{metric_in, Server};

const CLIENTS: usize = 6;

fn graceful_stop_answers_everything_in_flight(signal: Signal) {
    let mut server = Server::start(&[("MAX_BATCH_TOKENS", "2048")]);
    let base = server.base.clone();
    // Long texts, so that several passes are still to run when the signal comes.
    let text = "Dense, sparse and multi-vector retrieval with one model. ".repeat(300);
    let clients: Vec<_> = (0..CLIENTS)
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
    // The signal comes once every request has been admitted (none can be refused as new) and
    // the server's own gauges show some still queued or in flight, texts waiting for passes:
    // otherwise the test would prove nothing.
    let mut in_flight = 0.0;
    let ready = eventually(Duration::from_secs(60), || {
        let metrics = server.metrics();
        let answered = metric_in(
            &metrics,
            r#"bge_m3_requests_total{route="/embeddings",status="200"}"#,
        );
        in_flight = metric_in(&metrics, "bge_m3_queued_requests");
        in_flight + answered >= CLIENTS as f64
            && in_flight > 0.0
            && metric_in(&metrics, "bge_m3_waiting_texts") > 0.0
    });
    assert!(
        ready.is_some(),
        "the requests were never all admitted with some still in flight"
    );
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
    eprintln!(
        "{signal} with {in_flight} requests in flight: {answered_after_the_signal} answered after it"
    );
    // The requests the gauges showed in flight were still running when the signal came.
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
