//! The server binary as a process of its own, with its own environment, for the Hub tests.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use bge_m3_test_support::{eventually, Launch, NoLine, Process};
use serde_json::Value;

/// Longest wait for a server to start, download and load, or to exit.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A temporary `HF_HOME`, and `HOME` so that nothing reaches the user's own cache.
pub struct Home(tempfile::TempDir);

impl Home {
    pub fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    pub fn hf_home(&self) -> PathBuf {
        self.0.path().join("hf")
    }

    pub fn repo_dir(&self, id: &str) -> PathBuf {
        self.hf_home()
            .join("hub")
            .join(format!("models--{}", id.replace('/', "--")))
    }
}

/// How a server process ended up.
pub enum Started {
    /// `/health` answered 200.
    Serving(Server),
    /// It exited first.
    Exited {
        success: bool,
        log: String,
        elapsed: Duration,
    },
}

pub struct Server {
    pub process: Process,
    pub base: String,
}

impl Server {
    /// What the server has logged so far.
    pub fn log(&self) -> String {
        self.process.log_text()
    }
}

/// Starts the server binary on 127.0.0.1 with an OS-assigned port, the CPU, `HOME` and
/// `HF_HOME` in `home`, `vars` and `args`, and nothing else of this process's environment
/// (no HF_* variable, no proxy) but the library search paths.
pub fn start(home: &Home, vars: &[(&str, &str)], args: &[&str]) -> Started {
    start_with(home, vars, args, |_| {})
}

/// [`start`], calling `while_loading` with the base URL once the server listens.
pub fn start_with(
    home: &Home,
    vars: &[(&str, &str)],
    args: &[&str],
    while_loading: impl FnOnce(&str),
) -> Started {
    let mut process = Launch::new(env!("CARGO_BIN_EXE_bge-m3-server"))
        .env_clear_except(&["PATH", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "SYSTEMROOT"])
        .env("HOME", home.0.path())
        .env("HF_HOME", home.hf_home())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("DEVICE", "cpu")
        .env("RUST_LOG", "info")
        .envs(vars.iter().copied())
        .args(args)
        .spawn()
        .unwrap();
    let listening = process.wait_for_line(START_TIMEOUT, |line| {
        bge_m3_test_support::listening_addr(line).is_some()
    });
    let addr = match listening {
        Ok(line) => bge_m3_test_support::listening_addr(&line).unwrap(),
        Err(NoLine::Closed) => return exited(process),
        Err(NoLine::TimedOut) => timed_out(process),
    };
    let base = format!("http://{addr}");
    while_loading(&base);
    let left = START_TIMEOUT.saturating_sub(process.elapsed());
    let mut serving = false;
    eventually(left, || {
        serving = get(&base, "/health").is_some_and(|(status, _)| status == 200);
        serving || process.try_exit().is_some()
    });
    if serving {
        Started::Serving(Server { process, base })
    } else if process.try_exit().is_some() {
        exited(process)
    } else {
        timed_out(process)
    }
}

/// A server that closed its log: it has exited, or does within the wait.
fn exited(process: Process) -> Started {
    let finished = process.finish(START_TIMEOUT);
    assert!(
        !finished.timed_out,
        "the server closed its log but did not exit:\n{}",
        finished.stderr
    );
    Started::Exited {
        success: finished.status.success(),
        log: finished.stderr,
        elapsed: finished.elapsed,
    }
}

fn timed_out(process: Process) -> ! {
    let log = process.finish(Duration::ZERO).stderr;
    panic!("the server neither served nor exited within {START_TIMEOUT:?}:\n{log}");
}

pub fn serving(started: Started) -> Server {
    match started {
        Started::Serving(server) => server,
        Started::Exited { log, .. } => panic!("the server exited:\n{log}"),
    }
}

/// The log of a server that must fail: it exits non-zero, within `within`.
pub fn failure(started: Started, within: Duration) -> String {
    match started {
        Started::Serving(server) => panic!("the server serves:\n{}", server.log()),
        Started::Exited {
            success,
            log,
            elapsed,
        } => {
            assert!(!success, "exit status 0:\n{log}");
            assert!(elapsed < within, "took {elapsed:?}:\n{log}");
            assert!(log.contains("cannot load the model"), "{log}");
            log
        }
    }
}

pub fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .proxy(None)
                .timeout_global(Some(Duration::from_secs(30)))
                .build(),
        )
    })
}

/// GET, or `None` when the server does not answer.
pub fn get(base: &str, path: &str) -> Option<(u16, Value)> {
    let mut response = agent().get(format!("{base}{path}")).call().ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_json().unwrap_or(Value::Null);
    Some((status, body))
}
