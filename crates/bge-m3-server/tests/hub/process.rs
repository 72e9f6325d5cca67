//! The server binary as a process of its own, with its own environment, for the Hub tests.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    child: Child,
    pub base: String,
    pub log: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let began = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_bge-m3-server"));
    command.env_clear();
    for kept in ["PATH", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "SYSTEMROOT"] {
        if let Some(value) = std::env::var_os(kept) {
            command.env(kept, value);
        }
    }
    command
        .env("HOME", home.0.path())
        .env("HF_HOME", home.hf_home())
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("DEVICE", "cpu")
        .env("RUST_LOG", "info")
        .envs(vars.iter().copied())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();

    // The log, and the address from the "listening" line.
    let log = Arc::new(Mutex::new(String::new()));
    let (addr_tx, addr_rx) = mpsc::channel();
    let reader: JoinHandle<()> = {
        let stderr = child.stderr.take().unwrap();
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening") {
                    if let Some(addr) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                    {
                        let _ = addr_tx.send(addr.trim_matches('"').to_string());
                    }
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let exited = |mut child: Child, reader: JoinHandle<()>, log: &Mutex<String>| {
        let success = child.wait().unwrap().success();
        reader.join().unwrap();
        Started::Exited {
            success,
            log: log.lock().unwrap().clone(),
            elapsed: began.elapsed(),
        }
    };

    let deadline = began + START_TIMEOUT;
    let mut base = None;
    let mut while_loading = Some(while_loading);
    loop {
        if child.try_wait().unwrap().is_some() {
            return exited(child, reader, &log);
        }
        if base.is_none() {
            if let Ok(addr) = addr_rx.try_recv() {
                let url = format!("http://{addr}");
                (while_loading.take().unwrap())(&url);
                base = Some(url);
            }
        }
        if let Some(base) = &base {
            if get(base, "/health").is_some_and(|(status, _)| status == 200) {
                return Started::Serving(Server {
                    child,
                    base: base.clone(),
                    log,
                });
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let Started::Exited { log, .. } = exited(child, reader, &log) else {
                unreachable!()
            };
            panic!("the server neither served nor exited within {START_TIMEOUT:?}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
        Started::Serving(server) => {
            panic!("the server serves:\n{}", server.log.lock().unwrap())
        }
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
