//! Reading, encoding and writing, overlapped.
//!
//! A reader thread reads the corpus in windows (at most `--window-texts` texts and
//! `--window-tokens` tokens), tokenizes each and puts it on the model's queue as one request
//! ([`bge_m3_core::queue`], the server's scheduler): the queue sorts a request's texts longest
//! first and fills each forward pass under `--max-batch-tokens`, taking texts of the next
//! window when the current one leaves room. The main thread writes the windows' rows in input
//! order as they complete. At most three windows are on the queue or being written (the one
//! the writer awaits, the one in the channel, the one the reader is handing over) and one more
//! is being read, so memory stays bounded whatever the corpus size, and the model always has
//! the next window queued while a window is written.
//!
//! Each window carries the input [`Position`] after its last record; once the sink has made
//! the window durable, the writer records that position in the manifest, so that a run
//! killed at any moment resumes exactly after the last window the manifest counts. The
//! reader also finds repeated ids ([`RepeatedIds`]) and reports them with the window.
//!
//! With `--shard I/N` the reader reads every record, tracks every id (so that repeated ids and
//! `--unique-ids` judge a record as a single run would), and passes on only the shard's own
//! records and bad records ([`Shard::owns`]); the positions, and so the manifest and
//! `--resume`, stay those of the whole input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use bge_m3_core::queue::oneshot::{self, error::TryRecvError};
use bge_m3_core::queue::{Computed, Queue, QueueError, Request};
use bge_m3_core::BgeM3;
use serde_json::Value;

use crate::ids::{RepeatedIds, Seen};
use crate::input::{BadRecord, Corpus, Position, Record};
use crate::manifest::{Last, Manifest};
use crate::output::{Row, Shape, Sink};
use crate::progress::{Counts, Outcome, Progress, Repeat, Summary, EXAMPLES};
use crate::shard::Shard;
use crate::{Args, OnError};

/// Texts tokenized together: at most this many, or [`CHUNK_CHARS`] bytes of text.
const CHUNK_TEXTS: usize = 256;
const CHUNK_CHARS: usize = 256 << 10;

/// How often the writer looks for an interruption while it waits for a window.
const POLL: Duration = Duration::from_millis(20);

/// The manifest kept beside a file output, and where it is.
pub struct Ledger {
    pub manifest: Manifest,
    pub path: PathBuf,
}

impl Ledger {
    pub fn store(&self) -> Result<(), String> {
        self.manifest
            .store(&self.path)
            .map_err(|e| format!("writing the manifest {e}"))
    }
}

/// What a run starts from.
pub struct Start {
    pub sink: Box<dyn Sink>,
    /// `None` when the output is not a file (stdout).
    pub ledger: Option<Ledger>,
    /// The ids seen so far (those of the records already in the output, on resume).
    pub ids: RepeatedIds,
    /// How many of the records already in the output repeat an earlier id (on resume).
    pub repeated: u64,
    /// The first of them.
    pub repeats: Vec<Repeat>,
}

/// A window on the model's queue.
struct Window {
    ids: Vec<Value>,
    answer: oneshot::Receiver<Result<Computed, QueueError>>,
    /// Where the input stands after this window (and the bad records before it).
    position: Position,
    last: Last,
    /// Its records whose id repeats an earlier one, and the first few of them.
    repeated: u64,
    repeats: Vec<Repeat>,
    /// Some of its ids were not tracked: the limit was reached.
    untracked: bool,
}

/// What the reader hands the writer, in input order.
enum Message {
    Window(Window),
    /// A bad record; when fatal, the last message, after the windows before it.
    Bad {
        bad: BadRecord,
        fatal: bool,
        /// Its id repeats an earlier one (`--unique-ids`).
        repeat: bool,
    },
    /// The end of the input, after its last record.
    End(Position),
    /// The input could not be read (or tokenized), or the run cannot go on.
    Failed(String),
}

/// Encodes `corpus` into `start.sink`; the exit status is 0, 1 (a bad record with `--on-error
/// fail`) or 130 (interrupted).
pub fn run(
    args: &Args,
    model: BgeM3,
    mut corpus: Corpus,
    start: Start,
    shape: Shape,
) -> Result<ExitCode, String> {
    let model = Arc::new(model);
    let queue = Arc::new(
        Queue::spawn(model.clone(), args.max_batch_tokens, Arc::new(()))
            .map_err(|e| format!("cannot start the model's thread: {e}"))?,
    );
    let mut progress = Progress::new(args.progress, corpus.total_bytes(), args.log_every());
    let (sender, windows) = mpsc::sync_channel(1);
    let Start {
        sink,
        ledger,
        mut ids,
        repeated,
        repeats,
    } = start;
    let tracked = ids.limit();
    let examples = repeats.len();
    let mut writer = Writer {
        sink: Some(sink),
        base: ledger
            .as_ref()
            .map(|l| l.manifest.progress.clone())
            .unwrap_or_default(),
        ledger,
        counts: Counts {
            repeated,
            ..Counts::default()
        },
        repeats,
        end: None,
        untracked: ids.limit() > 0 && ids.is_full(),
    };
    writer.counts.resumed = writer.base.documents;
    let reader = {
        let model = model.clone();
        let queue = queue.clone();
        let settings = Settings {
            max_length: args.max_length,
            window_tokens: args.window_tokens,
            window_texts: args.window_texts,
            fail_fast: args.on_error == OnError::Fail,
            unique_ids: args.unique_ids,
            examples,
            shape,
            shard: args.shard.unwrap_or(Shard::WHOLE),
        };
        std::thread::Builder::new()
            .name("bge-m3-reader".into())
            .spawn(move || read(&mut corpus, &model, &queue, &mut ids, &settings, &sender))
            .map_err(|e| format!("cannot start the reader thread: {e}"))?
    };
    let outcome = writer.run(&windows, &model, &shape, &mut progress, &queue);
    // Dropping the windows not written cancels them; the reader stops at its next send.
    drop(windows);
    queue.prune();
    queue.close();
    let (output_bytes, outcome) = outcome?;
    if !matches!(outcome, Outcome::Interrupted) {
        // Interrupted, the reader may be blocked reading stdin: the process exits without it.
        let _ = reader.join();
    }
    let mut output = args
        .output
        .as_ref()
        .map_or("stdout".to_string(), |p| p.display().to_string());
    if let Some(shard) = args.shard {
        output += &format!(" (shard {shard})");
    }
    let status = match outcome {
        Outcome::Done => ExitCode::SUCCESS,
        Outcome::Stopped(_) => ExitCode::from(1),
        Outcome::Interrupted => ExitCode::from(130),
    };
    progress.finish(&Summary {
        counts: writer.counts,
        output,
        output_bytes,
        outcome,
        repeats: writer.repeats,
        untracked: writer.untracked,
        tracked,
    });
    Ok(status)
}

struct Settings {
    max_length: usize,
    window_tokens: usize,
    window_texts: usize,
    fail_fast: bool,
    unique_ids: bool,
    /// Repeated ids already given as examples (on resume).
    examples: usize,
    shape: Shape,
    /// The records to encode: the others are read, their ids tracked, and dropped.
    shard: Shard,
}

/// The reader thread: windows onto the queue and to the writer, until the corpus ends, a bad
/// record of the shard stops it, the writer has gone or an interruption.
fn read(
    corpus: &mut Corpus,
    model: &BgeM3,
    queue: &Queue,
    ids: &mut RepeatedIds,
    settings: &Settings,
    to_writer: &SyncSender<Message>,
) {
    let mut window = Pending::default();
    let mut examples = settings.examples;
    let send = |message| to_writer.send(message).is_ok();
    loop {
        if interrupt::requested() {
            return;
        }
        // Where the input stands before this record: a fatal bad record is not in the output.
        let before = corpus.position().clone();
        let record = match corpus.next_record() {
            Err(error) => {
                send(Message::Failed(error.to_string()));
                return;
            }
            Ok(record) => record,
        };
        // Another shard's record: its id is tracked, as a single run would, and nothing more.
        let ours = settings.shard.owns(before.records);
        let record = match record {
            Some(Ok(record)) if !ours => {
                if ids.see(&record.id) == Seen::Untracked && settings.unique_ids && ids.limit() > 0
                {
                    // A single run stops here: so does every shard.
                    if window.submit(model, queue, &before, settings, &send) {
                        send(Message::Failed(untracked(ids.limit())));
                    }
                    return;
                }
                continue;
            }
            Some(Err(_)) if !ours => continue,
            Some(Ok(record)) => match ids.see(&record.id) {
                Seen::Repeat if settings.unique_ids => Some(Err((
                    BadRecord {
                        location: record.location.clone(),
                        message: format!(
                            "id {} repeats the id of an earlier record (--unique-ids)",
                            record.id
                        ),
                    },
                    true,
                ))),
                Seen::Repeat => {
                    window.repeated += 1;
                    if examples < EXAMPLES {
                        examples += 1;
                        window.repeats.push(Repeat {
                            id: record.id.clone(),
                            location: record.location.clone(),
                        });
                    }
                    Some(Ok(record))
                }
                Seen::Untracked if settings.unique_ids && ids.limit() > 0 => {
                    if window.submit(model, queue, &before, settings, &send) {
                        send(Message::Failed(untracked(ids.limit())));
                    }
                    return;
                }
                Seen::Untracked => {
                    window.untracked = ids.limit() > 0;
                    Some(Ok(record))
                }
                Seen::New => Some(Ok(record)),
            },
            Some(Err(bad)) => Some(Err((bad, false))),
            None => None,
        };
        let sent = match record {
            None => {
                if window.submit(model, queue, corpus.position(), settings, &send) {
                    send(Message::End(corpus.position().clone()));
                }
                return;
            }
            // Fatal, the records before it are written first.
            Some(Err((bad, repeat))) if settings.fail_fast => {
                if window.submit(model, queue, &before, settings, &send) {
                    send(Message::Bad {
                        bad,
                        fatal: true,
                        repeat,
                    });
                }
                false
            }
            Some(Err((bad, repeat))) => send(Message::Bad {
                bad,
                fatal: false,
                repeat,
            }),
            Some(Ok(record)) => window.push(record, model, queue, corpus, settings, &send),
        };
        if !sent {
            return;
        }
    }
}

/// Why `--unique-ids` stops at an id past `--max-tracked-ids`.
fn untracked(limit: usize) -> String {
    format!(
        "--unique-ids: more than {limit} distinct ids, the most --max-tracked-ids tracks: raise \
         it (about 15 bytes an id) and run again with --resume"
    )
}

/// The window being read: tokenized texts, and the chunk of records not yet tokenized.
#[derive(Default)]
struct Pending {
    ids: Vec<Value>,
    sequences: Vec<Vec<u32>>,
    tokens: usize,
    chunk: Vec<Record>,
    chunk_chars: usize,
    last: Option<Last>,
    repeated: u64,
    repeats: Vec<Repeat>,
    /// The limit of tracked ids was reached in this window.
    untracked: bool,
}

impl Pending {
    /// Adds `record`, and hands the window over when it is full; false when that failed or
    /// the writer has gone.
    fn push(
        &mut self,
        record: Record,
        model: &BgeM3,
        queue: &Queue,
        corpus: &Corpus,
        settings: &Settings,
        send: &impl Fn(Message) -> bool,
    ) -> bool {
        self.chunk_chars += record.text.len();
        self.last = Some(Last {
            record: record.position,
            id: record.id.clone(),
        });
        self.chunk.push(record);
        if !self.chunk_is_full(settings) {
            return true;
        }
        self.tokenize(model, settings, send)
            && (!self.is_full(settings)
                || self.submit(model, queue, corpus.position(), settings, send))
    }

    /// Tokenizes the chunk into the window; false when it failed (and the writer was told).
    fn tokenize(
        &mut self,
        model: &BgeM3,
        settings: &Settings,
        send: &impl Fn(Message) -> bool,
    ) -> bool {
        if self.chunk.is_empty() {
            return true;
        }
        let texts: Vec<&str> = self.chunk.iter().map(|r| r.text.as_str()).collect();
        match model.tokenize(&texts, settings.max_length) {
            Ok(tokenized) => {
                self.tokens += tokenized.iter().map(Vec::len).sum::<usize>();
                self.sequences.extend(tokenized);
                self.ids.extend(self.chunk.drain(..).map(|r| r.id));
                self.chunk_chars = 0;
                true
            }
            Err(error) => {
                send(Message::Failed(bge_m3_core::Report(&error).to_string()));
                false
            }
        }
    }

    /// Whether the chunk is ready to tokenize: [`CHUNK_TEXTS`] texts, [`CHUNK_CHARS`] bytes, or
    /// enough texts to fill the window.
    fn chunk_is_full(&self, settings: &Settings) -> bool {
        let texts = self.chunk.len();
        texts >= CHUNK_TEXTS
            || self.chunk_chars >= CHUNK_CHARS
            || self.ids.len() + texts >= settings.window_texts
    }

    fn is_full(&self, settings: &Settings) -> bool {
        self.tokens >= settings.window_tokens || self.ids.len() >= settings.window_texts
    }

    /// Tokenizes what is left, puts the window on the queue and hands it to the writer with
    /// `position` (where the input stands after it); false when that failed or the writer has
    /// gone.
    fn submit(
        &mut self,
        model: &BgeM3,
        queue: &Queue,
        position: &Position,
        settings: &Settings,
        send: &impl Fn(Message) -> bool,
    ) -> bool {
        if !self.tokenize(model, settings, send) {
            return false;
        }
        let Some(last) = self.last.take() else {
            return true; // no record since the last window
        };
        let (reply, answer) = oneshot::channel();
        queue.push(Request {
            sequences: std::mem::take(&mut self.sequences),
            outputs: settings.shape.outputs,
            // The window is one request: only the token budget bounds its passes.
            batch_size: std::num::NonZeroUsize::MAX,
            reply,
        });
        self.tokens = 0;
        send(Message::Window(Window {
            ids: std::mem::take(&mut self.ids),
            answer,
            position: position.clone(),
            last,
            repeated: std::mem::take(&mut self.repeated),
            repeats: std::mem::take(&mut self.repeats),
            untracked: std::mem::take(&mut self.untracked),
        }))
    }
}

/// The main thread's side: each window's rows in order, until the reader ends, a bad record is
/// fatal, or an interruption (then what is complete is written, the rest dropped).
struct Writer {
    /// Until it is finished.
    sink: Option<Box<dyn Sink>>,
    ledger: Option<Ledger>,
    /// The manifest's counts when the run started (those of the records already written).
    base: crate::manifest::Progress,
    /// This run's.
    counts: Counts,
    repeats: Vec<Repeat>,
    /// The end of the input, once the reader reached it.
    end: Option<Position>,
    /// Ids went untracked (the limit was reached): the repeated count is a lower bound.
    untracked: bool,
}

impl Writer {
    fn run(
        &mut self,
        windows: &Receiver<Message>,
        model: &BgeM3,
        shape: &Shape,
        progress: &mut Progress,
        queue: &Queue,
    ) -> Result<(u64, Outcome), String> {
        let outcome = loop {
            let message = match windows.recv_timeout(POLL) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) if interrupt::requested() => {
                    break Outcome::Interrupted;
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) if interrupt::requested() => {
                    break Outcome::Interrupted;
                }
                Err(RecvTimeoutError::Disconnected) if self.end.is_some() => break Outcome::Done,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("the reader thread stopped before the end of the input".into());
                }
            };
            match message {
                Message::Window(window) => {
                    if !self.window(window, model, shape, queue)? {
                        break Outcome::Interrupted;
                    }
                    progress.update(&self.counts);
                }
                Message::Bad {
                    bad,
                    fatal: true,
                    repeat,
                } => {
                    self.counts.repeated += u64::from(repeat);
                    let hint = if repeat {
                        "leave out --unique-ids to keep such records, or skip them with \
                         --on-error skip"
                    } else {
                        "skip such records with --on-error skip"
                    };
                    progress.println(&format!("bad record: {bad} ({hint})"));
                    break Outcome::Stopped(bad.to_string());
                }
                Message::Bad {
                    bad,
                    fatal: false,
                    repeat,
                } => {
                    self.counts.skipped += 1;
                    self.counts.repeated += u64::from(repeat);
                    progress.println(&format!("skipped a bad record: {bad}"));
                }
                Message::End(position) => self.end = Some(position),
                Message::Failed(error) => return Err(error),
            }
        };
        let sink = self.sink.take().expect("finished once");
        let (bytes, state) = sink.finish().map_err(|e| format!("writing {e}"))?;
        let done = matches!(outcome, Outcome::Done);
        let end = self.end.take();
        if let Some(mut ledger) = self.ledger.take() {
            if let Some(end) = end.filter(|_| done) {
                // Every record read, bad ones at the end included.
                let last = ledger.manifest.progress.last.clone();
                ledger.manifest.progress = self.progress(&end, last);
            }
            // Interrupted or stopped, the manifest stays at the last window written.
            ledger.manifest.complete = done;
            if let Some(state) = state {
                ledger.manifest.output.state = state;
            }
            ledger.store()?;
        }
        Ok((bytes, outcome))
    }

    /// Writes `window` once it is encoded; false when interrupted first.
    fn window(
        &mut self,
        mut window: Window,
        model: &BgeM3,
        shape: &Shape,
        queue: &Queue,
    ) -> Result<bool, String> {
        let computed = loop {
            match window.answer.try_recv() {
                Ok(computed) => break computed,
                Err(TryRecvError::Empty) if interrupt::requested() => {
                    break Err(QueueError::Closed)
                }
                Err(TryRecvError::Empty) => std::thread::sleep(POLL),
                Err(TryRecvError::Closed) => {
                    return Err("the model's thread dropped a window".into())
                }
            }
        };
        let computed = match computed {
            Ok(computed) => computed,
            Err(_) if interrupt::requested() => {
                drop(window);
                queue.prune();
                return Ok(false);
            }
            Err(error) => return Err(format!("encoding failed: {error}")),
        };
        let mut rows = Vec::with_capacity(window.ids.len());
        for (id, embedding) in window.ids.into_iter().zip(computed.embeddings) {
            self.counts.tokens += embedding.tokens as u64;
            let row = Row::new(id, embedding, shape, model)
                .map_err(|e| bge_m3_core::Report(&e).to_string())?;
            rows.push(row);
        }
        let sink = self.sink.as_mut().expect("not finished");
        sink.write(&rows).map_err(|e| format!("writing {e}"))?;
        self.counts.documents += rows.len() as u64;
        self.counts.bytes = window.position.bytes();
        self.counts.repeated += window.repeated;
        self.repeats.extend(window.repeats);
        self.untracked |= window.untracked;
        if let Some(state) = sink.state() {
            let progress = self.progress(&window.position, Some(window.last));
            if let Some(ledger) = &mut self.ledger {
                ledger.manifest.progress = progress;
                ledger.manifest.output.state = state;
                ledger.store()?;
            }
        }
        Ok(true)
    }

    /// The manifest's progress at `position`, the last record written being `last`.
    fn progress(&self, position: &Position, last: Option<Last>) -> crate::manifest::Progress {
        crate::manifest::Progress {
            input: position.checkpoint(),
            last,
            documents: self.base.documents + self.counts.documents,
            tokens: self.base.tokens + self.counts.tokens,
            skipped: self.base.skipped + self.counts.skipped,
            repeated_ids: self.counts.repeated,
        }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM: the first asks the run to stop after writing what is complete;
/// a second exits at once.
#[allow(unsafe_code)] // signal(2), _exit(2)
pub mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};

    static REQUESTED: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            // SAFETY: `_exit` is async-signal-safe (unlike `exit`, it runs no handlers and
            // flushes nothing), so a signal handler may call it.
            unsafe { libc::_exit(130) };
        }
    }

    pub fn install() {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only touches an atomic and calls `_exit`, both async-signal-safe.
        unsafe { libc::signal(libc::SIGINT, handler) };
        // SAFETY: as above.
        unsafe { libc::signal(libc::SIGTERM, handler) };
    }

    pub fn requested() -> bool {
        REQUESTED.load(Ordering::SeqCst)
    }
}
