//! Hostile and careless clients (issue 16): one test per defect, each failing on the server as
//! it was. Those that measure memory, signals, metrics or exit statuses run the real binary as a
//! child process (`../process.rs`), so that nothing of the test process counts.
//!
//! Figures are printed (`cargo test -- --nocapture`) as well as checked; the section
//! "Reliability" of `docs/BENCHMARKS.md` reports them.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bge_m3_test_support::eventually;

use serde_json::Value;

use crate::process::Server;

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

/// How long after an answer the tests read what the server's RSS still keeps: until it is
/// within their bound, for up to this long. The allocator gives memory back on a thread of its
/// own after a large request (`inference::memory::trim_soon`), which a loaded machine delays:
/// the bound holds once that has run, not at a moment a sleep guessed.
const KEPT_WITHIN: Duration = Duration::from_secs(30);

/// What the server's RSS keeps over `base` (MiB), read until it is at most `bound` for up to
/// [`KEPT_WITHIN`]: the last reading, and when it fell within the bound.
fn kept_mib(server: &Server, base: f64, bound: f64) -> (f64, Option<Duration>) {
    let mut kept = f64::INFINITY;
    let fell = eventually(KEPT_WITHIN, || {
        kept = server.rss_mib() - base;
        kept <= bound
    });
    (kept, fell)
}

/// Resets the kernel's high-water mark of the server's RSS (`VmHWM`).
fn reset_peak(server: &Server) {
    std::fs::write(format!("/proc/{}/clear_refs", server.pid()), "5").unwrap();
}

mod connections;
mod http;
mod isolation;
mod memory;
mod stopping;
mod tokenize;
