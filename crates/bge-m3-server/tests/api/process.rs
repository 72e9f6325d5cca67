//! The real server binary as a child process on tiny-pt: its own metrics, memory and exit
//! status, and the signals it gets, apart from the test process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

pub struct Server {
    pub child: Child,
    pub base: String,
    pub addr: SocketAddr,
    /// Every line the server has logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// The binary on tiny-pt with these extra environment variables (the settings), on a port
    /// chosen by the OS, once `/health` answers 200.
    pub fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(env, None)
    }

    /// Like [`Self::start`], under `ulimit -n` when `open_files` is given.
    pub fn start_with(env: &[(&str, &str)], open_files: Option<u32>) -> Self {
        let binary = env!("CARGO_BIN_EXE_bge-m3-server");
        let mut command = match open_files {
            None => Command::new(binary),
            Some(n) => {
                let mut command = Command::new("sh");
                command.args(["-c", &format!("ulimit -n {n} && exec \"$0\""), binary]);
                command
            }
        };
        command
            .env("MODEL_PATH", model_dir())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("DEVICE", "cpu")
            .env("RUST_LOG", "info")
            .env_remove("API_KEY");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines, first) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line.clone());
                    let _ = lines.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            let line = first
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the server logged no listening address");
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        let base = format!("http://{addr}");
        wait_for_health(&base, 200);
        Self {
            child,
            base,
            addr: addr.parse().unwrap(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in MiB.
    pub fn status_mib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"));
        kib / 1024.0
    }

    pub fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS")
    }

    /// CPU time used so far (user and system), from `/proc/PID/stat`.
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The fields after the command name, which is in parentheses.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    /// The value of a metric of `/metrics` (the first line starting with `line_start`).
    pub fn metric(&self, line_start: &str) -> f64 {
        let reply = try_send(&self.base, "GET", "/metrics", None, None).unwrap();
        reply
            .text
            .lines()
            .find(|line| line.starts_with(line_start))
            .and_then(|line| line.rsplit(' ').next())
            .map_or(0.0, |value| value.parse().unwrap())
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the exit; kills and panics past `within`.
    pub fn wait_exit(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            if start.elapsed() > within {
                self.child.kill().unwrap();
                panic!("the server did not stop within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Log lines that contain `text`.
    pub fn logged(&self, text: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(text))
            .cloned()
            .collect()
    }

    /// A raw connection to the server.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// The head of a JSON POST of `length` bytes to `path`.
    pub fn post_head(&self, path: &str, length: usize) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\n\r\n",
            self.addr
        )
    }

    /// Sends a whole JSON POST on a raw connection, reading nothing.
    pub fn send_raw(&self, path: &str, body: &[u8]) -> TcpStream {
        let mut stream = self.connect();
        stream
            .write_all(self.post_head(path, body.len()).as_bytes())
            .unwrap();
        stream.write_all(body).unwrap();
        stream
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Closes `stream` with a reset (RST, a zero linger) rather than a FIN: a client that is gone
/// at once, which even a server that ignores half-closed connections notices.
pub fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: an open socket and a `linger` of the size given.
    let set = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "setsockopt(SO_LINGER)");
    drop(stream);
}

/// Polls `what` every 20 ms until it holds, at most `within`; how long it took. For events that
/// only a metric or the log shows (a request admitted, a queue emptied, a signal taken).
pub fn eventually(within: Duration, mut what: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if what() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Reads until the peer closes the connection (or resets it), at most `within`; whether it did,
/// and what was read.
pub fn closed_within(stream: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
    let deadline = Instant::now() + within;
    let mut read = Vec::new();
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (false, read);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return (true, read),
            Ok(n) => read.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (false, read)
            }
            Err(_) => return (true, read),
        }
    }
}
