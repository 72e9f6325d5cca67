//! Download progress: handed to the caller's [`DownloadProgress`], by default [`LogProgress`]'s
//! `tracing` lines. A bar is the application's choice: `TerminalProgress` (feature
//! `terminal-progress`, which the server and the corpus encoder enable) draws indicatif's on a
//! terminal, so that without it the library has no terminal code.

use std::time::{Duration, Instant};

/// Where [`download`](super::download) reports the progress of its transfers, one file at a
/// time: set with [`HubOptions::with_progress`](super::HubOptions::with_progress).
///
/// ```
/// use bge_m3_core::hub::{DownloadProgress, FileProgress, HubOptions};
///
/// /// Prints a dot per chunk received.
/// struct Dots;
///
/// impl DownloadProgress for Dots {
///     fn file(&self, _name: &str) -> Box<dyn FileProgress> {
///         Box::new(Dots)
///     }
/// }
///
/// impl FileProgress for Dots {
///     fn init(&mut self, size: usize, filename: &str) {
///         eprint!("{filename} ({size} bytes) ");
///     }
///     fn update(&mut self, _bytes: usize) {
///         eprint!(".");
///     }
///     fn finish(&mut self) {
///         eprintln!();
///     }
/// }
///
/// let options = HubOptions::from_env().with_progress(Dots);
/// ```
pub trait DownloadProgress: Send + Sync {
    /// Called before the file `name` is fetched; what it returns receives that file's
    /// progress, and is dropped once the file is complete or has failed.
    fn file(&self, name: &str) -> Box<dyn FileProgress>;
}

/// The progress of one file's transfer, in the calls hf-hub makes.
pub trait FileProgress {
    /// The transfer starts, or starts again after an interruption: `size` bytes in all.
    /// hf-hub calls it twice at the start; after each call, the bytes already on disk (none
    /// on a fresh start) arrive through [`FileProgress::update`].
    fn init(&mut self, size: usize, filename: &str);
    /// `bytes` more bytes of the file are on disk.
    fn update(&mut self, bytes: usize);
    /// The whole file is on disk.
    fn finish(&mut self);
}

/// How often [`LogProgress`] logs a download.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Progress as `tracing` lines at `info` level, at most one per file every 10 s: the default
/// of [`HubOptions`](super::HubOptions), and what a service's log wants (a bar redrawn many
/// times a second has no use there).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogProgress;

impl DownloadProgress for LogProgress {
    fn file(&self, _name: &str) -> Box<dyn FileProgress> {
        Box::new(LogFile::default())
    }
}

/// One file's [`LogProgress`].
#[derive(Default)]
struct LogFile {
    file: String,
    size: usize,
    done: usize,
    started: Option<Instant>,
    logged: Option<Instant>,
}

impl FileProgress for LogFile {
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

    fn finish(&mut self) {}
}

/// hf-hub's side of a [`FileProgress`] (or of none).
pub(super) struct Reporter(pub(super) Option<Box<dyn FileProgress>>);

impl hf_hub::api::Progress for Reporter {
    fn init(&mut self, size: usize, filename: &str) {
        if let Some(progress) = &mut self.0 {
            progress.init(size, filename);
        }
    }

    fn update(&mut self, size: usize) {
        if let Some(progress) = &mut self.0 {
            progress.update(size);
        }
    }

    fn finish(&mut self) {
        if let Some(progress) = &mut self.0 {
            progress.finish();
        }
    }
}
