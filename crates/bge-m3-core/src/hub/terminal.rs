//! [`TerminalProgress`] (cargo feature `terminal-progress`): indicatif's bar per file when
//! stderr is a terminal, else [`LogProgress`]'s `tracing` lines, since a service's log has no
//! use for a bar redrawn many times a second. The library draws nothing unless its caller
//! passes this to [`HubOptions::with_progress`](super::HubOptions::with_progress); the server
//! and the encoder do.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use super::{DownloadProgress, FileProgress, LogProgress};
use indicatif::style::ProgressTracker;
use indicatif::{HumanBytes, ProgressBar, ProgressState, ProgressStyle};

/// A bar per file on a terminal, log lines elsewhere; decided for each file, as stderr may
/// change (it does not in practice).
#[derive(Debug, Clone, Copy, Default)]
pub struct TerminalProgress;

impl DownloadProgress for TerminalProgress {
    fn file(&self, name: &str) -> Box<dyn FileProgress> {
        if std::io::stderr().is_terminal() {
            Box::new(Bar(ProgressBar::new(0)))
        } else {
            LogProgress.file(name)
        }
    }
}

/// One file's bar, drawn as hf-hub 0.5 draws its own (`impl Progress for ProgressBar`), which
/// the applications showed before the bar became an opt-in feature.
struct Bar(ProgressBar);

impl FileProgress for Bar {
    fn init(&mut self, size: usize, filename: &str) {
        self.0.set_length(size as u64);
        self.0.set_style(
            ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} \
                 {bytes_per_sec_smoothed} ({eta})",
            )
            .expect("a valid template")
            .with_key("bytes_per_sec_smoothed", MovingAvgRate::default()),
        );
        let maxlength = 30;
        let message = if filename.len() > maxlength {
            format!("..{}", &filename[filename.len() - maxlength..])
        } else {
            filename.to_string()
        };
        self.0.set_message(message);
    }

    fn update(&mut self, bytes: usize) {
        self.0.inc(bytes as u64);
    }

    fn finish(&mut self) {
        self.0.finish();
    }
}

/// The transfer rate over the last second, as hf-hub's bar shows it.
#[derive(Clone, Default)]
struct MovingAvgRate {
    samples: VecDeque<(Instant, u64)>,
}

impl ProgressTracker for MovingAvgRate {
    fn clone_box(&self) -> Box<dyn ProgressTracker> {
        Box::new(self.clone())
    }

    fn tick(&mut self, state: &ProgressState, now: Instant) {
        // A sample at most every 20 ms.
        if self
            .samples
            .back()
            .is_none_or(|(prev, _)| (now - *prev) > Duration::from_millis(20))
        {
            self.samples.push_back((now, state.pos()));
        }
        while let Some(first) = self.samples.front() {
            if now - first.0 > Duration::from_secs(1) {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    fn reset(&mut self, _state: &ProgressState, _now: Instant) {
        self.samples = Default::default();
    }

    fn write(&self, _state: &ProgressState, w: &mut dyn std::fmt::Write) {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, p0)), Some((t1, p1))) if self.samples.len() > 1 => {
                let elapsed_ms = (*t1 - *t0).as_millis();
                let rate = ((p1 - p0) as f64 * 1000f64 / elapsed_ms as f64) as u64;
                write!(w, "{}/s", HumanBytes(rate)).unwrap()
            }
            _ => write!(w, "-").unwrap(),
        }
    }
}
