//! Download progress: indicatif's bar on a terminal, `tracing` lines elsewhere (a service's
//! log has no use for a bar redrawn a hundred times a second).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use hf_hub::api::Progress;

/// How often a download is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Download progress: indicatif's bar on a terminal, else a log line every [`LOG_EVERY`].
pub(super) enum Reporter {
    Bar(indicatif::ProgressBar),
    Log(LogProgress),
    Off,
}

impl Reporter {
    pub(super) fn new(progress: bool) -> Self {
        if !progress {
            Reporter::Off
        } else if std::io::stderr().is_terminal() {
            Reporter::Bar(indicatif::ProgressBar::new(0))
        } else {
            Reporter::Log(LogProgress::default())
        }
    }
}

impl Progress for Reporter {
    fn init(&mut self, size: usize, filename: &str) {
        match self {
            Reporter::Bar(bar) => Progress::init(bar, size, filename),
            Reporter::Log(log) => log.init(size, filename),
            Reporter::Off => {}
        }
    }

    fn update(&mut self, size: usize) {
        match self {
            Reporter::Bar(bar) => Progress::update(bar, size),
            Reporter::Log(log) => log.update(size),
            Reporter::Off => {}
        }
    }

    fn finish(&mut self) {
        if let Reporter::Bar(bar) = self {
            Progress::finish(bar);
        }
    }
}

/// Progress as `tracing` lines, at most one every [`LOG_EVERY`].
#[derive(Default)]
pub(super) struct LogProgress {
    file: String,
    size: usize,
    done: usize,
    started: Option<Instant>,
    logged: Option<Instant>,
}

impl LogProgress {
    /// hf-hub calls this again when the transfer (re)starts, then reports the bytes already
    /// on disk with `update`.
    fn init(&mut self, size: usize, filename: &str) {
        let now = Instant::now();
        *self = Self {
            file: filename.to_string(),
            size,
            done: 0,
            started: Some(now),
            logged: Some(now),
        };
    }

    fn update(&mut self, bytes: usize) {
        self.done += bytes;
        let now = Instant::now();
        if self.logged.is_some_and(|t| now - t < LOG_EVERY) {
            return;
        }
        self.logged = Some(now);
        let seconds = self.started.map_or(0.0, |t| (now - t).as_secs_f64());
        let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
        tracing::info!(
            file = %self.file,
            "downloaded {:.1} of {:.1} MiB ({:.0}%, {:.1} MiB/s)",
            mib(self.done),
            mib(self.size),
            100.0 * self.done as f64 / self.size.max(1) as f64,
            mib(self.done) / seconds.max(1e-3),
        );
    }
}
