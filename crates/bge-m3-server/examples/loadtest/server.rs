//! The server under load: a child process listening on the loopback, its resident memory read
//! from `/proc/<pid>/status` once a second, stopped with SIGTERM at the end.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client;

/// Which program serves.
pub enum Launch {
    /// This program again, in server mode: `bge_m3_server::run` exactly as `main.rs` calls it,
    /// built from the same sources in the same profile.
    SelfExec,
    /// A server binary, such as `target/release/bge-m3-server`.
    Binary(PathBuf),
}

/// The server's settings that the load test chooses.
pub struct Settings {
    pub model: PathBuf,
    pub queue_size: usize,
    pub max_inputs: usize,
    pub max_body_bytes: usize,
    pub log: PathBuf,
    pub rust_log: String,
    /// The server's `--body-timeout` and `--write-timeout`, in seconds.
    pub body_timeout: u64,
    pub write_timeout: u64,
}

/// One RSS sample: when, and how many KiB.
pub type Sample = (Instant, u64);

pub struct Server {
    child: Child,
    pub pid: u32,
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub program: String,
    samples: Arc<Mutex<Vec<Sample>>>,
    sampling: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

/// The first argument that puts this program in server mode.
pub const SERVE: &str = "--serve";

impl Server {
    /// Starts the server on a free loopback port and begins sampling its RSS.
    pub fn start(launch: &Launch, settings: &Settings) -> Result<Self, String> {
        // The port is picked here and handed over: the race with another process taking it in
        // between is negligible on a test machine, and the server then fails to start, loudly.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let (program, mut command) = match launch {
            Launch::SelfExec => {
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                let mut command = Command::new(&exe);
                command.arg(SERVE);
                (format!("{} {SERVE}", exe.display()), command)
            }
            Launch::Binary(path) => (path.display().to_string(), Command::new(path)),
        };
        command
            .arg("--model-path")
            .arg(&settings.model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--device", "cpu"])
            .args(["--queue-size", &settings.queue_size.to_string()])
            .args(["--max-inputs", &settings.max_inputs.to_string()])
            .args(["--max-body-bytes", &settings.max_body_bytes.to_string()])
            .args(["--body-timeout", &settings.body_timeout.to_string()])
            .args(["--write-timeout", &settings.write_timeout.to_string()])
            // The valid pool has token-id inputs, which the server refuses by default.
            .arg("--allow-token-ids");
        // Nothing from this environment (an API_KEY, a PORT) may change the server's settings.
        command.env_clear();
        for name in ["PATH", "HOME", "LD_LIBRARY_PATH", "RUST_BACKTRACE"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command.env("RUST_LOG", &settings.rust_log);
        let log = File::create(&settings.log)
            .map_err(|e| format!("cannot create {}: {e}", settings.log.display()))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let pid = child.id();

        let samples = Arc::new(Mutex::new(Vec::new()));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = std::thread::Builder::new()
            .name("rss".into())
            .spawn({
                let samples = samples.clone();
                let sampling = sampling.clone();
                move || {
                    while sampling.load(Ordering::Relaxed) {
                        match status_kib(pid, "VmRSS") {
                            Some(kib) => samples.lock().unwrap().push((Instant::now(), kib)),
                            None => break,
                        }
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        Ok(Self {
            child,
            pid,
            base: format!("http://{addr}"),
            addr,
            program,
            samples,
            sampling,
            sampler: Some(sampler),
        })
    }

    /// Waits until `/health` answers 200.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        let agent = client::agent(Duration::from_secs(5));
        loop {
            if let Ok(reply) = client::send(&agent, &self.base, "GET", "/health", None, None) {
                if reply.status == 200 {
                    return Ok(start.elapsed());
                }
            }
            if let Some(status) = self.exited() {
                return Err(format!(
                    "the server exited ({status}) before it was healthy"
                ));
            }
            if start.elapsed() > timeout {
                return Err(format!("the server was not healthy after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, if the server has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The RSS samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// The RSS now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        status_kib(self.pid, "VmRSS")
    }

    /// The kernel's high-water mark of the RSS (`VmHWM`), in KiB.
    pub fn peak_kib(&self) -> Option<u64> {
        status_kib(self.pid, "VmHWM")
    }

    /// Sends SIGTERM (a graceful stop) and waits for the exit, at most `timeout`; then kills.
    pub fn stop(mut self, timeout: Duration) -> Result<(ExitStatus, Duration), String> {
        self.sampling.store(false, Ordering::Relaxed);
        let start = Instant::now();
        let signalled = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .map_err(|e| format!("cannot run kill: {e}"))?;
        if !signalled.success() {
            return Err(format!("kill -TERM {} failed", self.pid));
        }
        loop {
            if let Some(status) = self.exited() {
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "the server did not stop within {timeout:?} of SIGTERM; killed"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.sampling.store(false, Ordering::Relaxed);
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }
}

/// A `kB` line of `/proc/<pid>/status`, such as `VmRSS`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}
