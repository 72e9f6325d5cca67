//! Repeated ids: an id seen before is found by keeping a 64-bit hash of each distinct id, at
//! most `--max-tracked-ids` of them. The set's table costs 9 bytes a slot (the hash and a
//! control byte) with between 1.14 and 2.3 slots per id (it doubles when 7/8 full): measured,
//! 144 MiB kept and 216 MiB at peak (while it grows past 7.3 million) for 10 million ids, the
//! default ([`tests::memory_of_ten_million_ids`]). Beyond the limit later ids are not tracked,
//! and the summary says the count is a lower bound.
//!
//! Ids are compared as text ([`id_key`]): `7` and `"7"` are the same id, as they are in the
//! Parquet output and in a store keyed by strings. The hashes are keyed at random per run, so
//! two distinct ids collide by chance only, with a probability of about n²/2⁶⁵ (3e-6 for 10
//! million ids): such a pair would be reported as a repeat.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;

use serde_json::Value;

use crate::input::id_key;

/// The default of `--max-tracked-ids`.
pub const DEFAULT_LIMIT: usize = 10_000_000;

/// What [`RepeatedIds::see`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen before; now tracked.
    New,
    /// The id of an earlier record.
    Repeat,
    /// Not seen among the tracked ids, and not tracked: the limit is reached.
    Untracked,
}

/// The distinct ids seen so far.
pub struct RepeatedIds {
    seen: HashSet<u64>,
    keys: RandomState,
    limit: usize,
}

impl RepeatedIds {
    /// Tracks at most `limit` distinct ids (0: none, nothing is checked).
    pub fn new(limit: usize) -> Self {
        Self {
            seen: HashSet::new(),
            keys: RandomState::new(),
            limit,
        }
    }

    /// The most distinct ids tracked.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether ids went untracked because the limit was reached.
    pub fn is_full(&self) -> bool {
        self.seen.len() >= self.limit
    }

    /// Looks `id` up, and tracks it when it is new and the limit allows.
    pub fn see(&mut self, id: &Value) -> Seen {
        let hash = self.keys.hash_one(id_key(id));
        if self.seen.contains(&hash) {
            Seen::Repeat
        } else if self.is_full() {
            Seen::Untracked
        } else {
            self.seen.insert(hash);
            Seen::New
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_integer_and_its_decimal_string_are_the_same_id() {
        let mut ids = RepeatedIds::new(10);
        assert_eq!(ids.see(&Value::from(7)), Seen::New);
        assert_eq!(ids.see(&Value::from("7")), Seen::Repeat);
        assert_eq!(ids.see(&Value::from("a")), Seen::New);
        assert_eq!(ids.see(&Value::from("a")), Seen::Repeat);
    }

    /// `cargo test -p bge-m3-encode ids::tests::memory -- --ignored --nocapture`:
    /// the memory 10 million distinct ids take (docs/BENCHMARKS.md).
    #[test]
    #[ignore = "a measurement: 10 million ids, a few seconds"]
    fn memory_of_ten_million_ids() {
        let kib = |field: &str| {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with(field)).unwrap();
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        let (rss, peak) = (kib("VmRSS:"), kib("VmHWM:"));
        let mut ids = RepeatedIds::new(DEFAULT_LIMIT);
        for i in 0..DEFAULT_LIMIT {
            assert_eq!(ids.see(&Value::from(format!("doc-{i}"))), Seen::New);
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "{DEFAULT_LIMIT} ids: RSS +{:.0} MiB, peak RSS +{:.0} MiB",
            mib(kib("VmRSS:") - rss),
            mib(kib("VmHWM:") - peak)
        );
        assert_eq!(ids.see(&Value::from("doc-0")), Seen::Repeat);
    }

    #[test]
    fn past_the_limit_new_ids_are_untracked_and_known_ones_still_found() {
        let mut ids = RepeatedIds::new(2);
        assert_eq!(ids.see(&Value::from(1)), Seen::New);
        assert_eq!(ids.see(&Value::from(2)), Seen::New);
        assert!(ids.is_full());
        assert_eq!(ids.see(&Value::from(3)), Seen::Untracked);
        assert_eq!(ids.see(&Value::from(3)), Seen::Untracked);
        assert_eq!(ids.see(&Value::from(1)), Seen::Repeat);
        assert_eq!(RepeatedIds::new(0).see(&Value::from(1)), Seen::Untracked);
    }
}
