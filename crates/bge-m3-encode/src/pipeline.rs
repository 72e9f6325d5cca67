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

use std::collections::HashSet;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use bge_m3_core::queue::oneshot::{self, error::TryRecvError};
use bge_m3_core::queue::{Computed, Queue, QueueError, Request};
use bge_m3_core::BgeM3;
use serde_json::Value;

use crate::input::{id_key, BadRecord, Corpus, Record};
use crate::output::{Row, Shape, Sink};
use crate::progress::{Counts, Progress};
use crate::{Args, OnError};

/// Texts tokenized together: at most this many, or [`CHUNK_CHARS`] bytes of text.
const CHUNK_TEXTS: usize = 256;
const CHUNK_CHARS: usize = 256 << 10;

/// How often the writer looks for an interruption while it waits for a window.
const POLL: Duration = Duration::from_millis(20);

/// A window on the model's queue.
struct Window {
    ids: Vec<Value>,
    answer: oneshot::Receiver<Result<Computed, QueueError>>,
    /// Input bytes read up to the end of this window.
    bytes: u64,
}

/// What the reader hands the writer, in input order.
enum Message {
    Window(Window),
    /// A bad record; when fatal, the last message, after the windows before it.
    Bad {
        bad: BadRecord,
        fatal: bool,
    },
    /// Records skipped because their ids are already in the output.
    Resumed(u64),
    /// The input could not be read (or tokenized).
    Failed(String),
}

/// Encodes `corpus` into `sink`; the exit status is 0, 1 (a bad record with `--on-error
/// fail`) or 130 (interrupted).
pub fn run(
    args: &Args,
    model: BgeM3,
    mut corpus: Corpus,
    sink: Box<dyn Sink>,
    done: HashSet<String>,
    shape: Shape,
) -> Result<ExitCode, String> {
    let model = Arc::new(model);
    let queue = Arc::new(
        Queue::spawn(model.clone(), args.max_batch_tokens, Arc::new(()))
            .map_err(|e| format!("cannot start the model's thread: {e}"))?,
    );
    let mut progress = Progress::new(args.progress, corpus.total_bytes(), args.log_every());
    let (sender, windows) = mpsc::sync_channel(1);
    let reader = {
        let model = model.clone();
        let queue = queue.clone();
        let settings = Settings {
            max_length: args.max_length,
            window_tokens: args.window_tokens,
            window_texts: args.window_texts,
            fail_fast: args.on_error == OnError::Fail,
            shape,
        };
        std::thread::Builder::new()
            .name("bge-m3-reader".into())
            .spawn(move || read(&mut corpus, &model, &queue, &done, &settings, &sender))
            .map_err(|e| format!("cannot start the reader thread: {e}"))?
    };
    let outcome = write(&windows, sink, &model, &shape, &mut progress, &queue);
    // Dropping the windows not written cancels them; the reader stops at its next send.
    drop(windows);
    queue.prune();
    queue.close();
    let (counts, output_bytes, status) = outcome?;
    if status != Status::Interrupted {
        // Interrupted, the reader may be blocked reading stdin: the process exits without it.
        let _ = reader.join();
    }
    let name = args
        .output
        .as_ref()
        .map_or("stdout".to_string(), |p| p.display().to_string());
    progress.finish(&counts, &name, output_bytes, status == Status::Interrupted);
    Ok(match status {
        Status::Done => ExitCode::SUCCESS,
        Status::BadRecord => ExitCode::from(1),
        Status::Interrupted => ExitCode::from(130),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Done,
    BadRecord,
    Interrupted,
}

struct Settings {
    max_length: usize,
    window_tokens: usize,
    window_texts: usize,
    fail_fast: bool,
    shape: Shape,
}

/// The reader thread: windows onto the queue and to the writer, until the corpus ends, a bad
/// record stops it, the writer has gone or an interruption.
fn read(
    corpus: &mut Corpus,
    model: &BgeM3,
    queue: &Queue,
    done: &HashSet<String>,
    settings: &Settings,
    to_writer: &SyncSender<Message>,
) {
    let mut window = Pending::default();
    let send = |message| to_writer.send(message).is_ok();
    loop {
        if interrupt::requested() {
            return;
        }
        let record = match corpus.next_record() {
            Err(error) => {
                send(Message::Failed(error.to_string()));
                return;
            }
            Ok(record) => record,
        };
        let sent = match record {
            None => {
                window.submit(model, queue, corpus.bytes_read(), settings, &send);
                return;
            }
            // Fatal, the records before it are written first.
            Some(Err(bad)) if settings.fail_fast => {
                if window.submit(model, queue, corpus.bytes_read(), settings, &send) {
                    send(Message::Bad { bad, fatal: true });
                }
                false
            }
            Some(Err(bad)) => send(Message::Bad { bad, fatal: false }),
            Some(Ok(record)) if done.contains(&id_key(&record.id)) => {
                window.resumed += 1;
                true
            }
            Some(Ok(record)) => {
                window.chunk_chars += record.text.len();
                window.chunk.push(record);
                if window.chunk_is_full(settings) {
                    window.tokenize(model, settings, &send)
                        && (!window.is_full(settings)
                            || window.submit(model, queue, corpus.bytes_read(), settings, &send))
                } else {
                    true
                }
            }
        };
        if !sent {
            return;
        }
    }
}

/// The window being read: tokenized texts, and the chunk of records not yet tokenized.
#[derive(Default)]
struct Pending {
    ids: Vec<Value>,
    sequences: Vec<Vec<u32>>,
    tokens: usize,
    chunk: Vec<Record>,
    chunk_chars: usize,
    /// Records skipped since the last window because the output has them.
    resumed: u64,
}

impl Pending {
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

    /// Tokenizes what is left, puts the window on the queue and hands it to the writer; false
    /// when that failed or the writer has gone.
    fn submit(
        &mut self,
        model: &BgeM3,
        queue: &Queue,
        bytes: u64,
        settings: &Settings,
        send: &impl Fn(Message) -> bool,
    ) -> bool {
        if !self.tokenize(model, settings, send) {
            return false;
        }
        if self.resumed > 0 && !send(Message::Resumed(std::mem::take(&mut self.resumed))) {
            return false;
        }
        if self.ids.is_empty() {
            return true;
        }
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
            bytes,
        }))
    }
}

/// The writer: each window's rows in order, until the reader ends, a bad record is fatal, or
/// an interruption (then what is complete is written, the rest dropped).
fn write(
    windows: &Receiver<Message>,
    mut sink: Box<dyn Sink>,
    model: &BgeM3,
    shape: &Shape,
    progress: &mut Progress,
    queue: &Queue,
) -> Result<(Counts, u64, Status), String> {
    let mut counts = Counts::default();
    let mut status = Status::Done;
    let io = |e: std::io::Error| format!("writing the output: {e}");
    loop {
        let message = match windows.recv_timeout(POLL) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) if interrupt::requested() => {
                status = Status::Interrupted;
                break;
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                if interrupt::requested() {
                    status = Status::Interrupted;
                }
                break;
            }
        };
        match message {
            Message::Window(mut window) => {
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
                        status = Status::Interrupted;
                        break;
                    }
                    Err(error) => return Err(format!("encoding failed: {error}")),
                };
                let mut rows = Vec::with_capacity(window.ids.len());
                for (id, embedding) in window.ids.into_iter().zip(computed.embeddings) {
                    counts.tokens += embedding.tokens as u64;
                    let row = Row::new(id, embedding, shape, model)
                        .map_err(|e| bge_m3_core::Report(&e).to_string())?;
                    rows.push(row);
                }
                sink.write(&rows).map_err(io)?;
                counts.documents += rows.len() as u64;
                counts.bytes = window.bytes;
                progress.update(&counts);
            }
            Message::Bad { bad, fatal: true } => {
                progress.println(&format!(
                    "bad record: {bad} (skip such records with --on-error skip)"
                ));
                status = Status::BadRecord;
                break;
            }
            Message::Bad { bad, fatal: false } => {
                counts.skipped += 1;
                progress.println(&format!("skipped a bad record: {bad}"));
            }
            Message::Resumed(n) => counts.resumed += n,
            Message::Failed(error) => return Err(error),
        }
    }
    let bytes = sink.finish().map_err(io)?;
    Ok((counts, bytes, status))
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
