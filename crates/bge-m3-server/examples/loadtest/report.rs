//! What the clients saw, per kind of request, the violations, and the server's memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::server::Sample;

/// Most violations kept in full; the rest are only counted.
const KEPT: usize = 20;

/// One kind of request.
#[derive(Default)]
pub struct Tally {
    pub valid: bool,
    /// Answers by status (`200`, `400`, ...) or by what happened instead (`transport error`,
    /// `hung up`).
    pub outcomes: BTreeMap<String, usize>,
    /// Latencies of the answered requests (429s left out).
    pub latencies: Vec<Duration>,
    /// Inputs (texts, id lists, pairs) of the requests answered 200.
    pub inputs: usize,
}

impl Tally {
    pub fn requests(&self) -> usize {
        self.outcomes.values().sum()
    }
}

#[derive(Default)]
pub struct Stats {
    pub kinds: BTreeMap<&'static str, Tally>,
    pub violations: Vec<String>,
    pub violation_count: usize,
}

impl Stats {
    /// Counts a request of `kind` that ended in `outcome`.
    pub fn record(
        &mut self,
        kind: &'static str,
        valid: bool,
        outcome: impl Into<String>,
        latency: Option<Duration>,
    ) {
        let tally = self.kinds.entry(kind).or_default();
        tally.valid = valid;
        *tally.outcomes.entry(outcome.into()).or_default() += 1;
        tally.latencies.extend(latency);
    }

    pub fn add_inputs(&mut self, kind: &'static str, inputs: usize) {
        self.kinds.entry(kind).or_default().inputs += inputs;
    }

    pub fn violation(&mut self, message: String) {
        self.violation_count += 1;
        if self.violations.len() < KEPT {
            self.violations.push(message);
        }
    }

    pub fn merge(&mut self, other: Stats) {
        for (kind, tally) in other.kinds {
            let mine = self.kinds.entry(kind).or_default();
            mine.valid = tally.valid;
            for (outcome, n) in tally.outcomes {
                *mine.outcomes.entry(outcome).or_default() += n;
            }
            mine.latencies.extend(tally.latencies);
            mine.inputs += tally.inputs;
        }
        self.violation_count += other.violation_count;
        for violation in other.violations {
            if self.violations.len() < KEPT {
                self.violations.push(violation);
            }
        }
    }

    /// Requests of valid or hostile kinds that got `outcome`.
    pub fn count(&self, valid: bool, outcome: &str) -> usize {
        self.kinds
            .values()
            .filter(|t| t.valid == valid)
            .filter_map(|t| t.outcomes.get(outcome))
            .sum()
    }

    /// The table: requests, outcomes, p50 / p99 / max latency per kind, valid kinds first.
    pub fn print_table(&self) {
        println!(
            "{:<32} {:>8}  {:<34} {:>8} {:>8} {:>8}",
            "kind", "requests", "outcomes", "p50 ms", "p99 ms", "max ms"
        );
        for valid in [true, false] {
            for (kind, tally) in self.kinds.iter().filter(|(_, t)| t.valid == valid) {
                let outcomes = tally
                    .outcomes
                    .iter()
                    .map(|(o, n)| format!("{o}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut latencies = tally.latencies.clone();
                latencies.sort();
                let ms = |q: f64| {
                    percentile(&latencies, q)
                        .map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
                };
                println!(
                    "{:<32} {:>8}  {:<34} {:>8} {:>8} {:>8}",
                    format!("{}{kind}", if valid { "" } else { "hostile: " }),
                    tally.requests(),
                    outcomes,
                    ms(0.5),
                    ms(0.99),
                    ms(1.0)
                );
            }
        }
    }

    /// Latency percentile `q` over every answered valid request.
    pub fn valid_latency(&self, q: f64) -> Option<Duration> {
        let mut all: Vec<Duration> = self
            .kinds
            .values()
            .filter(|t| t.valid)
            .flat_map(|t| t.latencies.iter().copied())
            .collect();
        all.sort();
        percentile(&all, q)
    }
}

/// The `q` quantile (nearest rank) of sorted durations.
pub fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// The RSS once the model is loaded, after the warm-up (the median of the load's middle third), at its
/// peak and at the end (the median of the last third); a violation if the end is more than
/// `growth_mib` above the value after the warm-up. Medians, because the RSS swings with the
/// forward passes of the moment (their buffers are large and go back to the system); a leak
/// lifts the whole curve.
pub fn rss(
    stats: &mut Stats,
    samples: &[Sample],
    (loaded_kib, peak_kib): (Option<u64>, Option<u64>),
    (start, end): (Instant, Instant),
    growth_mib: u64,
) {
    let Some(loaded_kib) = loaded_kib else {
        println!("server RSS: not available (no /proc?)");
        return;
    };
    let third = (end - start) / 3;
    let median = |from: Instant, to: Instant| {
        let mut kib: Vec<u64> = samples
            .iter()
            .filter(|(t, _)| (from..=to).contains(t))
            .map(|(_, k)| *k)
            .collect();
        kib.sort_unstable();
        kib.get(kib.len() / 2).copied()
    };
    let (Some(after_warm_up), Some(last)) = (
        median(start + third, start + 2 * third),
        median(start + 2 * third, end),
    ) else {
        println!("server RSS: too few samples");
        return;
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let sampled_peak = samples.iter().map(|(_, k)| *k).max().unwrap_or(0);
    let growth = mib(last) - mib(after_warm_up);
    println!(
        "server RSS (MiB, sampled every second): loaded {:.1}, after warm-up {:.1}, peak {:.1} \
         (kernel high-water mark {}), end {:.1}: {growth:+.1} (limit +{growth_mib})",
        mib(loaded_kib),
        mib(after_warm_up),
        mib(sampled_peak),
        peak_kib.map_or("n/a".to_string(), |k| format!("{:.1}", mib(k))),
        mib(last),
    );
    let timeline: Vec<String> = samples
        .iter()
        .map(|(_, k)| format!("{:.0}", mib(*k)))
        .collect();
    println!("server RSS timeline (MiB): {}", timeline.join(" "));
    if growth > growth_mib as f64 {
        stats.violation(format!(
            "server RSS grew {growth:.1} MiB from after the warm-up to the end (limit {growth_mib})"
        ));
    }
}
