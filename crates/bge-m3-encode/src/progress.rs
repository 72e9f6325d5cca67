//! Progress on stderr: a bar on a terminal, a line every few seconds otherwise, and the final
//! summary.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::input::Location;

/// How many repeated ids the summary names.
pub const EXAMPLES: usize = 5;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, else `log`.
    Auto,
    /// A bar with documents, tokens/s and the time left.
    Bar,
    /// A line on stderr every `--log-every` seconds.
    Log,
    /// Only the final summary.
    None,
}

/// Counts so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Documents written.
    pub documents: u64,
    /// Their tokens (after truncation, `<s>` and `</s>` not counted).
    pub tokens: u64,
    /// Bad records skipped.
    pub skipped: u64,
    /// Records already in the output (`--resume`).
    pub resumed: u64,
    /// Input bytes up to the last document written.
    pub bytes: u64,
    /// Records whose id repeats an earlier record's (those already in the output included).
    pub repeated: u64,
}

/// A record whose id repeats an earlier record's.
#[derive(Debug, Clone, PartialEq)]
pub struct Repeat {
    pub id: Value,
    pub location: Location,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every record read.
    Done,
    /// Stopped at this bad record (`--on-error fail`).
    Stopped(String),
    /// By a signal.
    Interrupted,
}

/// What the last line says.
pub struct Summary {
    pub counts: Counts,
    /// The output's name (or `stdout`).
    pub output: String,
    pub output_bytes: u64,
    pub outcome: Outcome,
    /// The first repeated ids, at most [`EXAMPLES`].
    pub repeats: Vec<Repeat>,
    /// Ids went untracked past the limit: the repeated count is a lower bound.
    pub untracked: bool,
    /// `--max-tracked-ids`.
    pub tracked: usize,
}

pub struct Progress {
    bar: Option<ProgressBar>,
    log_every: Option<Duration>,
    start: Instant,
    last_log: Instant,
    total_bytes: Option<u64>,
}

impl Progress {
    pub fn new(mode: ProgressMode, total_bytes: Option<u64>, log_every: Duration) -> Self {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Log,
            mode => mode,
        };
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = match total_bytes {
                Some(total) => ProgressBar::new(total).with_style(
                    ProgressStyle::with_template(
                        "{elapsed_precise} [{wide_bar}] {percent:>3}% {msg} ETA {eta}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{elapsed_precise} {spinner} {msg}")
                        .expect("a valid template"),
                ),
            };
            bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            log_every: (mode == ProgressMode::Log).then_some(log_every),
            start: now,
            last_log: now,
            total_bytes,
        }
    }

    /// After each window written.
    pub fn update(&mut self, counts: &Counts) {
        let rate = self.tokens_per_second(counts);
        let message = format!(
            "{} docs, {} tokens/s",
            thousands(counts.documents),
            thousands(rate as u64)
        );
        if let Some(bar) = &self.bar {
            bar.set_position(counts.bytes);
            bar.set_message(message);
        } else if let Some(every) = self.log_every {
            if self.last_log.elapsed() >= every {
                self.last_log = Instant::now();
                let mut line = format!(
                    "{message}, {} tokens in {:.0} s",
                    thousands(counts.tokens),
                    self.start.elapsed().as_secs_f64()
                );
                if let Some(total) = self.total_bytes.filter(|&t| t > 0) {
                    let done = counts.bytes as f64 / total as f64;
                    line += &format!(", {:.0}% of the input", done * 100.0);
                    if done > 0.0 {
                        let left = self.start.elapsed().as_secs_f64() * (1.0 - done) / done;
                        line += &format!(", {} left", HumanDuration(Duration::from_secs_f64(left)));
                    }
                }
                eprintln!("{line}");
            }
        }
    }

    /// A message between the progress lines (a skipped record).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Clears the bar and prints the summary.
    pub fn finish(&self, summary: &Summary) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{}", self.summary(summary));
    }

    fn summary(&self, summary: &Summary) -> String {
        let Summary { counts, .. } = summary;
        let seconds = self.start.elapsed().as_secs_f64();
        let mut line = match &summary.outcome {
            Outcome::Done => "done: ".to_string(),
            Outcome::Interrupted => "interrupted: ".to_string(),
            Outcome::Stopped(bad) => format!("stopped at a bad record: {bad}; "),
        };
        line += &format!(
            "{} documents, {} tokens in {seconds:.1} s ({} tokens/s, {:.1} documents/s); \
             {} bytes written to {}",
            thousands(counts.documents),
            thousands(counts.tokens),
            thousands(self.tokens_per_second(counts) as u64),
            counts.documents as f64 / seconds.max(1e-9),
            thousands(summary.output_bytes),
            summary.output,
        );
        if counts.skipped > 0 {
            line += &format!("; {} bad records skipped", thousands(counts.skipped));
        }
        if counts.resumed > 0 {
            line += &format!("; {} already in the output", thousands(counts.resumed));
        }
        if counts.repeated > 0 || summary.untracked {
            let at_least = if summary.untracked { "at least " } else { "" };
            let records = if counts.repeated == 1 {
                "record repeats"
            } else {
                "records repeat"
            };
            line += &format!(
                "; {at_least}{} {records} an earlier record's id",
                thousands(counts.repeated)
            );
            if !summary.repeats.is_empty() {
                let first: Vec<String> = summary
                    .repeats
                    .iter()
                    .map(|r| format!("{} at {}", r.id, r.location))
                    .collect();
                line += &format!(" ({}", first.join(", "));
                line += if counts.repeated > summary.repeats.len() as u64 {
                    ", ...)"
                } else {
                    ")"
                };
            }
            if summary.untracked {
                line += &format!(
                    " (ids past the first {} distinct ones were not checked: \
                     --max-tracked-ids)",
                    thousands(summary.tracked as u64)
                );
            }
        }
        match summary.outcome {
            Outcome::Done => {}
            Outcome::Interrupted => line += "; run again with --resume to continue",
            Outcome::Stopped(_) => {
                line += "; run again with --resume once the record is fixed, or with \
                         --on-error skip"
            }
        }
        line
    }

    fn tokens_per_second(&self, counts: &Counts) -> f64 {
        counts.tokens as f64 / self.start.elapsed().as_secs_f64().max(1e-9)
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_how_the_run_ended_and_names_repeated_ids() {
        let progress = Progress::new(ProgressMode::None, None, Duration::from_secs(5));
        let location = |line| Location {
            source: "c.jsonl".into(),
            line: Some(line),
        };
        let mut summary = Summary {
            counts: Counts {
                documents: 3,
                repeated: 2,
                ..Counts::default()
            },
            output: "out.jsonl".into(),
            output_bytes: 10,
            outcome: Outcome::Stopped("c.jsonl:4: invalid JSON".into()),
            repeats: vec![
                Repeat {
                    id: Value::from(7),
                    location: location(2),
                },
                Repeat {
                    id: Value::from("a"),
                    location: location(3),
                },
            ],
            untracked: false,
            tracked: 10,
        };
        let line = progress.summary(&summary);
        assert!(
            line.starts_with("stopped at a bad record: c.jsonl:4: invalid JSON; 3 documents"),
            "{line}"
        );
        assert!(
            line.contains(
                "; 2 records repeat an earlier record's id (7 at c.jsonl:2, \"a\" at c.jsonl:3)"
            ),
            "{line}"
        );
        summary.outcome = Outcome::Done;
        summary.untracked = true;
        let line = progress.summary(&summary);
        assert!(line.starts_with("done: 3 documents"), "{line}");
        assert!(
            line.contains("at least 2 records repeat")
                && line.contains("past the first 10 distinct ones were not checked"),
            "{line}"
        );
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
