//! The server under load: a child process listening on the loopback, its resident memory read
//! from `/proc/<pid>/status` once a second, stopped with SIGTERM at the end.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bge_m3_test_support::{proc_status_kib, Launch as Program, Process, Signal};

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
    process: Process,
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
    /// Starts the server on a loopback port that it picks itself (`--port 0`, read back from
    /// its "listening" line), and begins sampling its RSS.
    pub fn start(launch: &Launch, settings: &Settings) -> Result<Self, String> {
        let (program, command) = match launch {
            Launch::SelfExec => {
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                (
                    format!("{} {SERVE}", exe.display()),
                    Program::new(&exe).arg(SERVE),
                )
            }
            Launch::Binary(path) => (path.display().to_string(), Program::new(path)),
        };
        let process = command
            // Nothing from this environment (an API_KEY, a PORT) may change the server's
            // settings.
            .env_clear_except(&["PATH", "HOME", "LD_LIBRARY_PATH", "RUST_BACKTRACE"])
            .env("RUST_LOG", &settings.rust_log)
            .arg("--model-path")
            .arg(&settings.model)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--device", "cpu"])
            .args(["--queue-size", &settings.queue_size.to_string()])
            .args(["--max-inputs", &settings.max_inputs.to_string()])
            .args(["--max-body-bytes", &settings.max_body_bytes.to_string()])
            .args(["--body-timeout", &settings.body_timeout.to_string()])
            .args(["--write-timeout", &settings.write_timeout.to_string()])
            // The valid pool has token-id inputs, which the server refuses by default.
            .arg("--allow-token-ids")
            .log_to(&settings.log)?
            .spawn()?;
        let pid = process.pid();
        let addr = process.wait_for_listening(Duration::from_secs(60))?;

        let samples = Arc::new(Mutex::new(Vec::new()));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = std::thread::Builder::new()
            .name("rss".into())
            .spawn({
                let samples = samples.clone();
                let sampling = sampling.clone();
                move || {
                    while sampling.load(Ordering::Relaxed) {
                        match proc_status_kib(pid, "VmRSS") {
                            Some(kib) => samples.lock().unwrap().push((Instant::now(), kib)),
                            None => break,
                        }
                        // Time is the subject: one sample a second.
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Self {
            process,
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
        let mut healthy = false;
        bge_m3_test_support::eventually(timeout, || {
            healthy = client::send(&agent, &self.base, "GET", "/health", None, None)
                .is_ok_and(|reply| reply.status == 200);
            healthy || self.process.try_exit().is_some()
        });
        if healthy {
            return Ok(start.elapsed());
        }
        match self.exited() {
            Some(status) => Err(format!(
                "the server exited ({status}) before it was healthy"
            )),
            None => Err(format!("the server was not healthy after {timeout:?}")),
        }
    }

    /// The exit status, if the server has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.try_exit()
    }

    /// The RSS samples so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// The RSS now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.process.status_kib("VmRSS")
    }

    /// The kernel's high-water mark of the RSS (`VmHWM`), in KiB.
    pub fn peak_kib(&self) -> Option<u64> {
        self.process.status_kib("VmHWM")
    }

    /// Sends SIGTERM (a graceful stop) and waits for the exit, at most `timeout`; then kills.
    pub fn stop(mut self, timeout: Duration) -> Result<(ExitStatus, Duration), String> {
        self.sampling.store(false, Ordering::Relaxed);
        let start = Instant::now();
        self.process
            .signal(Signal::Term)
            .map_err(|e| format!("kill -TERM {} failed: {e}", self.pid))?;
        let stopped = match self.process.wait_exit(timeout) {
            Some(status) => Ok((status, start.elapsed())),
            None => {
                self.process.kill();
                Err(format!(
                    "the server did not stop within {timeout:?} of SIGTERM; killed"
                ))
            }
        };
        // Its last lines are in the log file before the file is read.
        self.process.wait_for_log_end(Duration::from_secs(10));
        stopped
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.sampling.store(false, Ordering::Relaxed);
        self.process.kill();
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }
}
