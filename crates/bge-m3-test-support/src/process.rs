//! The one child-process launcher: the server or the encoder binary started with arguments and
//! environment, its stderr read line by line as it comes (kept, and copied to a file on
//! request), readiness awaited on a line, signals, a bounded wait for the exit, and a kill when
//! the handle is dropped (a failing test leaves no process behind).

use std::ffi::OsStr;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::wait::eventually;

/// How long [`Process::finish`] waits, after the exit, for the pipes to close.
pub const PIPE_GRACE: Duration = Duration::from_secs(5);

/// How to start a program: a [`Command`] with stdin and stdout at `/dev/null` and stderr read
/// by [`Process`], unless told otherwise.
///
/// ```
/// use std::time::Duration;
/// use bge_m3_test_support::Launch;
///
/// let finished = Launch::new("sh")
///     .args(["-c", "echo \"$GREETING\" >&2; echo out; exit 3"])
///     .env("GREETING", "hello")
///     .capture_stdout()
///     .run(Duration::from_secs(10));
/// assert_eq!(finished.status.code(), Some(3));
/// assert_eq!(finished.stderr, "hello\n");
/// assert_eq!(finished.stdout, b"out\n");
/// ```
#[derive(Debug)]
pub struct Launch {
    command: Command,
    program: String,
    stdin: bool,
    stdout: bool,
    log_file: Option<File>,
}

impl Launch {
    /// `program`, with this process's environment until told otherwise.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        Self {
            command: Command::new(program),
            program: program.to_string_lossy().into_owned(),
            stdin: false,
            stdout: false,
            log_file: None,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Self {
        self.command.args(args);
        self
    }

    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(name, value);
        self
    }

    pub fn envs(
        mut self,
        vars: impl IntoIterator<Item = (impl AsRef<OsStr>, impl AsRef<OsStr>)>,
    ) -> Self {
        self.command.envs(vars);
        self
    }

    pub fn env_remove(mut self, name: impl AsRef<OsStr>) -> Self {
        self.command.env_remove(name);
        self
    }

    /// Nothing of this process's environment but the variables named in `kept` (those that
    /// are set): so that no `API_KEY`, `PORT` or `HF_*` of the machine changes what runs.
    /// Variables set before this call are dropped too; set them after it.
    pub fn env_clear_except(mut self, kept: &[&str]) -> Self {
        self.command.env_clear();
        for name in kept {
            if let Some(value) = std::env::var_os(name) {
                self.command.env(name, value);
            }
        }
        self
    }

    /// A pipe to the program's stdin, which [`Process::stdin`] hands out.
    pub fn stdin_piped(mut self) -> Self {
        self.stdin = true;
        self
    }

    /// The program's stdout kept, for [`Process::finish`] to return.
    pub fn capture_stdout(mut self) -> Self {
        self.stdout = true;
        self
    }

    /// Every line of stderr also appended to the file at `path` (created or emptied now), and
    /// stdout written there (unless captured), for a person to read after the run.
    pub fn log_to(mut self, path: &Path) -> Result<Self, String> {
        File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        self.log_file = Some(file);
        Ok(self)
    }

    /// Starts the program.
    pub fn spawn(mut self) -> Result<Process, String> {
        let program = self.program;
        let stdout = match (&self.log_file, self.stdout) {
            (_, true) => Stdio::piped(),
            (Some(file), false) => Stdio::from(
                file.try_clone()
                    .map_err(|e| format!("cannot share the log file: {e}"))?,
            ),
            (None, false) => Stdio::null(),
        };
        let stdin = if self.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let mut child = self
            .command
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let started = Instant::now();
        let log = Arc::new(Log::default());
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_reader = {
            let log = log.clone();
            let mut file = self.log_file;
            std::thread::Builder::new()
                .name("stderr".into())
                .spawn(move || read_lines(stderr, &log, file.as_mut()))
                .map_err(|e| format!("cannot start a thread: {e}"))?
        };
        let stdout_reader = match child.stdout.take() {
            Some(mut stdout) => Some(
                std::thread::Builder::new()
                    .name("stdout".into())
                    .spawn(move || {
                        let mut bytes = Vec::new();
                        let _ = stdout.read_to_end(&mut bytes);
                        bytes
                    })
                    .map_err(|e| format!("cannot start a thread: {e}"))?,
            ),
            None => None,
        };
        Ok(Process {
            child,
            program,
            started,
            log,
            stderr_reader: Some(stderr_reader),
            stdout_reader,
            status: None,
        })
    }

    /// Runs the program to its end, at most `within` (then it is killed, and `timed_out` set);
    /// panics if it cannot start.
    pub fn run(self, within: Duration) -> Finished {
        self.spawn()
            .unwrap_or_else(|e| panic!("{e}"))
            .finish(within)
    }
}

/// The lines of stderr so far, and whether it has closed.
#[derive(Default)]
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    closed: bool,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads `stderr` to its end line by line (invalid UTF-8 replaced, so that nothing stops the
/// reading and the program never blocks on a full pipe).
fn read_lines(stderr: impl Read, log: &Log, mut file: Option<&mut File>) {
    let mut reader = BufReader::new(stderr);
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Some(file) = file.as_deref_mut() {
            let _ = file.write_all(&bytes);
        }
        let line = String::from_utf8_lossy(&bytes);
        let line = line.trim_end_matches(['\n', '\r']).to_string();
        log.lock().lines.push(line);
        log.changed.notify_all();
    }
    log.lock().closed = true;
    log.changed.notify_all();
}

/// Why [`Process::wait_for_line`] found no line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoLine {
    /// Stderr closed first: the program exited (or closed it).
    Closed,
    /// The wait ran out.
    TimedOut,
}

/// A signal for [`Process::signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Int,
    Kill,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Self::Term => libc::SIGTERM,
            Self::Int => libc::SIGINT,
            Self::Kill => libc::SIGKILL,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Term => "SIGTERM",
            Self::Int => "SIGINT",
            Self::Kill => "SIGKILL",
        })
    }
}

/// How a program ended, with all it wrote.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Empty unless [`Launch::capture_stdout`].
    pub stdout: Vec<u8>,
    /// Every line of stderr, each ended by `\n`.
    pub stderr: String,
    /// From the start to the exit.
    pub elapsed: Duration,
    /// It did not end within the wait and was killed.
    pub timed_out: bool,
}

impl Finished {
    /// Panics unless the program exited 0 in time, showing its status and stderr.
    #[track_caller]
    pub fn assert_success(&self) {
        assert!(
            self.status.success() && !self.timed_out,
            "status {:?}{}\n{}",
            self.status,
            if self.timed_out { " (killed)" } else { "" },
            self.stderr
        );
    }
}

/// A running program, started by [`Launch::spawn`]; killed when dropped.
pub struct Process {
    child: std::process::Child,
    program: String,
    started: Instant,
    log: Arc<Log>,
    stderr_reader: Option<JoinHandle<()>>,
    stdout_reader: Option<JoinHandle<Vec<u8>>>,
    status: Option<ExitStatus>,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("program", &self.program)
            .field("pid", &self.child.id())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pipe to its stdin (see [`Launch::stdin_piped`]); dropping it closes stdin.
    pub fn stdin(&mut self) -> ChildStdin {
        self.child
            .stdin
            .take()
            .expect("stdin is piped (Launch::stdin_piped) and not taken yet")
    }

    /// The first line of stderr, from its start, for which `wanted` holds: at once if it has
    /// been written, else as soon as it is, at most `within`.
    pub fn wait_for_line(
        &self,
        within: Duration,
        mut wanted: impl FnMut(&str) -> bool,
    ) -> Result<String, NoLine> {
        let deadline = Instant::now() + within;
        let mut state = self.log.lock();
        let mut seen = 0;
        loop {
            if let Some(line) = state.lines[seen..].iter().find(|line| wanted(line)) {
                return Ok(line.clone());
            }
            seen = state.lines.len();
            if state.closed {
                return Err(NoLine::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NoLine::TimedOut);
            }
            state = self
                .log
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The address in the server's "listening" line (see [`listening_addr`]), at most
    /// `within`; the error says why not, with what the server logged.
    pub fn wait_for_listening(&self, within: Duration) -> Result<SocketAddr, String> {
        match self.wait_for_line(within, |line| listening_addr(line).is_some()) {
            Ok(line) => Ok(listening_addr(&line).expect("the line was chosen for its address")),
            Err(why) => Err(format!(
                "{} logged no listening address ({}):\n{}",
                self.program,
                match why {
                    NoLine::Closed => "it closed stderr, exiting".to_string(),
                    NoLine::TimedOut => format!("within {within:?}"),
                },
                self.log_text()
            )),
        }
    }

    /// Waits, at most `within`, until stderr has closed and every line of it has been read
    /// (and copied to the file of [`Launch::log_to`]); whether it has. Stderr closes when the
    /// program exits.
    pub fn wait_for_log_end(&self, within: Duration) -> bool {
        self.wait_for_line(within, |_| false) == Err(NoLine::Closed)
    }

    /// Every line of stderr so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().lines.clone()
    }

    /// Stderr so far, each line ended by `\n`.
    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .lines
            .iter()
            .fold(String::new(), |mut text, line| {
                text.push_str(line);
                text.push('\n');
                text
            })
    }

    /// The lines of stderr so far that contain `text`.
    pub fn logged(&self, text: &str) -> Vec<String> {
        self.log
            .lock()
            .lines
            .iter()
            .filter(|line| line.contains(text))
            .cloned()
            .collect()
    }

    /// Sends `signal` (an error once the program has been reaped).
    #[allow(unsafe_code)] // kill(2)
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        if self.status.is_some() {
            return Err(io::Error::other(format!("{} has exited", self.program)));
        }
        let pid = libc::pid_t::try_from(self.pid()).map_err(io::Error::other)?;
        // SAFETY: kill(2) on the pid of a child that has not been reaped, so still ours.
        if unsafe { libc::kill(pid, signal.number()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits at most `within` for the exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        eventually(within, || self.try_exit().is_some());
        self.status
    }

    /// Kills it (SIGKILL) unless it has exited, and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().expect("waiting for a killed child"));
        }
        self.status.expect("set above")
    }

    /// Waits at most `within` for the exit, kills it past that, and returns all it wrote.
    /// A process it started that still holds stdout or stderr open is not waited for beyond
    /// [`PIPE_GRACE`]: what it writes after is not returned.
    pub fn finish(mut self, within: Duration) -> Finished {
        let timed_out = self.wait_exit(within).is_none();
        let status = self.kill();
        let elapsed = self.started.elapsed();
        if let Some(reader) = self.stderr_reader.take() {
            if ended(&reader) {
                let _ = reader.join();
            }
        }
        let stdout = self
            .stdout_reader
            .take()
            .filter(ended)
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        Finished {
            status,
            stdout,
            stderr: self.log_text(),
            elapsed,
            timed_out,
        }
    }

    /// Time since it started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB; `None` once it is gone
    /// (or off Linux).
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        proc_status_kib(self.pid(), field)
    }

    /// CPU time used so far, user and system, from `/proc/PID/stat`; `None` once it is gone
    /// (or off Linux).
    #[allow(unsafe_code)] // sysconf(3)
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // The fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf only reads a configuration value.
        let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
            .ok()
            .filter(|&hz| hz > 0)?;
        Some(Duration::from_micros(ticks * 1_000_000 / per_second))
    }
}

/// Whether a pipe's reader ends within [`PIPE_GRACE`] (the pipe closed).
fn ended<T>(reader: &JoinHandle<T>) -> bool {
    eventually(PIPE_GRACE, || reader.is_finished()).is_some()
}

impl Drop for Process {
    fn drop(&mut self) {
        // The readers end with the pipes; they are not joined, so that a grandchild holding a
        // pipe cannot hang the drop.
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address that bge-m3-server's "listening" line gives (`addr=127.0.0.1:PORT` in the text
/// log format, an `addr` field in the JSON one), once it has bound its port (it binds before
/// loading the model, which is why a port of 0 is safe to pass it).
///
/// ```
/// use bge_m3_test_support::listening_addr;
///
/// let text = "2025-01-01T00:00:00Z  INFO bge_m3_server: listening; loading the model addr=127.0.0.1:4321";
/// assert_eq!(listening_addr(text), Some("127.0.0.1:4321".parse().unwrap()));
/// let json = r#"{"level":"INFO","message":"listening; loading the model","addr":"127.0.0.1:4321"}"#;
/// assert_eq!(listening_addr(json), Some("127.0.0.1:4321".parse().unwrap()));
/// assert_eq!(listening_addr("loading the model"), None);
/// ```
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        let addr = json
            .get("addr")
            .or_else(|| json.get("fields")?.get("addr"))?;
        return addr.as_str()?.parse().ok();
    }
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("addr="))?
        .trim_matches('"')
        .parse()
        .ok()
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`) of any process, in KiB; `None` when
/// it is gone (or off Linux). For a thread that samples a [`Process`] it does not own.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Launch {
        Launch::new("sh").args(["-c", script])
    }

    #[test]
    fn a_line_written_before_the_wait_is_found_and_one_never_written_is_not() {
        let process = sh("echo first >&2; echo second >&2; exec sleep 30")
            .spawn()
            .unwrap();
        let second = process.wait_for_line(Duration::from_secs(10), |l| l.starts_with("sec"));
        assert_eq!(second.as_deref(), Ok("second"));
        // Already written, found again from the start.
        let first = process.wait_for_line(Duration::from_secs(10), |l| l == "first");
        assert_eq!(first.as_deref(), Ok("first"));
        let never = process.wait_for_line(Duration::from_millis(200), |l| l == "third");
        assert_eq!(never, Err(NoLine::TimedOut));
    }

    #[test]
    fn an_exit_without_the_line_ends_the_wait_at_once() {
        let mut process = sh("echo bye >&2; exit 4").spawn().unwrap();
        let start = Instant::now();
        let line = process.wait_for_line(Duration::from_secs(60), |l| l == "ready");
        assert_eq!(line, Err(NoLine::Closed));
        assert!(start.elapsed() < Duration::from_secs(30));
        assert_eq!(
            process.wait_exit(Duration::from_secs(10)).unwrap().code(),
            Some(4)
        );
        assert!(process.wait_for_log_end(Duration::ZERO));
    }

    #[test]
    fn a_program_past_its_wait_is_killed_and_says_so() {
        let finished = sh("echo started >&2; exec sleep 30").run(Duration::from_millis(300));
        assert!(finished.timed_out);
        assert!(!finished.status.success());
        assert_eq!(finished.stderr, "started\n");
    }

    #[test]
    fn a_dropped_process_is_killed() {
        let process = Launch::new("sleep").arg("30").spawn().unwrap();
        let pid = process.pid();
        drop(process);
        // Killed and reaped by the drop: no such process any more.
        assert_eq!(proc_status_kib(pid, "VmRSS"), None);
    }

    #[test]
    fn signals_reach_the_program() {
        let mut process = sh("trap 'echo got TERM >&2; exit 7' TERM; echo ready >&2; \
                              while :; do sleep 0.05; done")
        .spawn()
        .unwrap();
        process
            .wait_for_line(Duration::from_secs(10), |l| l == "ready")
            .unwrap();
        process.signal(Signal::Term).unwrap();
        let status = process.wait_exit(Duration::from_secs(10)).expect("exited");
        assert_eq!(status.code(), Some(7));
        assert!(process.wait_for_log_end(Duration::from_secs(10)));
        assert_eq!(process.logged("got"), ["got TERM"]);
        assert!(process.signal(Signal::Term).is_err(), "reaped");
    }

    #[test]
    fn stderr_is_copied_to_the_log_file_and_bad_utf8_does_not_stop_the_reading() {
        let dir = std::env::temp_dir().join(format!("bge-m3-test-support-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.txt");
        let finished = sh("printf 'a\\377b\\n' >&2; echo out; echo last >&2")
            .log_to(&path)
            .unwrap()
            .run(Duration::from_secs(10));
        finished.assert_success();
        assert_eq!(finished.stderr, "a\u{fffd}b\nlast\n");
        let file = std::fs::read(&path).unwrap();
        // stdout goes to the file too; the order of the two streams is not fixed.
        let text = String::from_utf8_lossy(&file);
        for line in ["a\u{fffd}b", "out", "last"] {
            assert!(text.lines().any(|l| l == line), "{text:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stdin_can_be_written_and_closed() {
        let mut process = Launch::new("cat")
            .stdin_piped()
            .capture_stdout()
            .spawn()
            .unwrap();
        process.stdin().write_all(b"through cat\n").unwrap();
        let finished = process.finish(Duration::from_secs(10));
        finished.assert_success();
        assert_eq!(finished.stdout, b"through cat\n");
    }

    #[test]
    fn cpu_time_and_memory_of_a_running_program() {
        let process = Launch::new("sleep").arg("30").spawn().unwrap();
        assert!(process.status_kib("VmRSS").is_some_and(|kib| kib > 0));
        assert!(process.cpu_time().is_some());
    }
}
