//! Graceful stop of the real binary: on SIGTERM or SIGINT every request in flight or queued is
//! answered, then the process exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

/// The server binary on tiny-pt, port chosen by the OS, and its address read off its log.
fn start_server() -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bge-m3-server"))
        .env("MODEL_PATH", model_dir())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("DEVICE", "cpu")
        .env("RUST_LOG", "info")
        .env("MAX_BATCH_TOKENS", "2048")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, log) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server logged no listening address");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let base = format!("http://{addr}");
    wait_for_health(&base, 200);
    (child, base)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (bounded) for the process to exit and returns whether it exited with 0.
fn exits_cleanly(child: &mut Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the server did not stop within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn graceful_stop_answers_everything_in_flight(signal_name: &str) {
    let (mut child, base) = start_server();
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
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, signal_name);
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
    assert!(exits_cleanly(&mut child, Duration::from_secs(60)));
    // Stopped: nothing listens any more.
    assert!(try_send(&base, "GET", "/health", None, None).is_err());
}

#[test]
fn sigterm_answers_everything_in_flight_then_exits_0() {
    graceful_stop_answers_everything_in_flight("TERM");
}

#[test]
fn sigint_answers_everything_in_flight_then_exits_0() {
    graceful_stop_answers_everything_in_flight("INT");
}
