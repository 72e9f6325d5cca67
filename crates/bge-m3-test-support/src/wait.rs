//! Waiting for an event with a bounded wait: the one polling loop of the tests.

use std::time::{Duration, Instant};

/// How often [`eventually`] looks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Checks `condition` every [`POLL_INTERVAL`] until it holds, at most `within`; how long it
/// took, or `None` if it never held. It is checked at least once. For events that only a
/// metric, a log line, a file or a process's status shows (a request admitted, a queue
/// emptied, a signal taken, a line written).
///
/// ```
/// use std::time::Duration;
/// use bge_m3_test_support::eventually;
///
/// let mut calls = 0;
/// assert!(eventually(Duration::from_secs(5), || { calls += 1; calls == 3 }).is_some());
/// assert_eq!(eventually(Duration::ZERO, || false), None);
/// ```
pub fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if condition() {
            return Some(start.elapsed());
        }
        let left = within.saturating_sub(start.elapsed());
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL.min(left));
    }
}
