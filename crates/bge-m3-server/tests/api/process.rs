//! The real server binary as a child process on tiny-pt: its own metrics, memory and exit
//! status, and the signals it gets, apart from the test process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use bge_m3_test_support::{Launch, Process, Signal};

use crate::common::*;

/// The real binary on tiny-pt, killed when dropped.
pub struct Server {
    pub process: Process,
    pub base: String,
    pub addr: SocketAddr,
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
        let launch = match open_files {
            None => Launch::new(binary),
            Some(n) => {
                Launch::new("sh").args(["-c", &format!("ulimit -n {n} && exec \"$0\""), binary])
            }
        };
        let process = launch
            .env("MODEL_PATH", tiny_pt())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("DEVICE", "cpu")
            .env("RUST_LOG", "info")
            .env_remove("API_KEY")
            .envs(env.iter().copied())
            .spawn()
            .unwrap();
        let addr = process
            .wait_for_listening(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        let base = format!("http://{addr}");
        wait_for_health(&base, 200);
        Self {
            process,
            base,
            addr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in MiB.
    pub fn status_mib(&self, field: &str) -> f64 {
        let kib = self
            .process
            .status_kib(field)
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"));
        kib as f64 / 1024.0
    }

    pub fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS")
    }

    /// CPU time used so far (user and system).
    pub fn cpu(&self) -> Duration {
        self.process.cpu_time().expect("/proc/PID/stat")
    }

    /// `/metrics` now, to read several metrics of the same moment with [`metric_in`].
    pub fn metrics(&self) -> String {
        try_send(&self.base, "GET", "/metrics", None, None)
            .unwrap()
            .text
    }

    /// The value of a metric of `/metrics` now (see [`metric_in`]).
    pub fn metric(&self, line_start: &str) -> f64 {
        metric_in(&self.metrics(), line_start)
    }

    pub fn signal(&self, signal: Signal) {
        self.process
            .signal(signal)
            .unwrap_or_else(|e| panic!("{signal}: {e}"));
    }

    /// Waits (bounded) for the exit, and how long it took; kills and panics past `within`.
    pub fn wait_exit(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        match self.process.wait_exit(within) {
            Some(status) => (status, start.elapsed()),
            None => {
                self.process.kill();
                panic!("the server did not stop within {within:?}");
            }
        }
    }

    /// Log lines that contain `text`.
    pub fn logged(&self, text: &str) -> Vec<String> {
        self.process.logged(text)
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

/// The value of a metric in the Prometheus text `metrics`: the first line starting with
/// `line_start`; 0 when there is none (a counter not yet incremented).
pub fn metric_in(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0.0, |value| value.parse().unwrap())
}

/// Closes `stream` with a reset (RST, a zero linger) rather than a FIN: a client that is gone
/// at once, which even a server that ignores half-closed connections notices.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("setsockopt(SO_LINGER)");
    drop(stream);
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

/// The head of an HTTP response read from a raw connection.
pub struct Head {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response read from a raw connection, its body handed to the caller as it comes.
pub struct RawResponse<'a> {
    stream: &'a mut TcpStream,
    /// Bytes read past the head (or the chunk being decoded) and not yet handed over.
    buffered: Vec<u8>,
}

impl<'a> RawResponse<'a> {
    /// Reads the response head (bounded by the stream's read timeout).
    pub fn head(stream: &'a mut TcpStream) -> std::io::Result<(Head, Self)> {
        let mut buffered = Vec::new();
        let mut chunk = [0u8; 8192];
        let end = loop {
            if let Some(end) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buffered.extend_from_slice(&chunk[..n]);
        };
        let text = String::from_utf8_lossy(&buffered[..end]).into_owned();
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        buffered.drain(..end + 4);
        Ok((Head { status, headers }, Self { stream, buffered }))
    }

    /// Reads the body to its end (by `Content-Length`, or chunked), handing each part of it
    /// to `take` as it arrives; the bytes read.
    pub fn body(mut self, head: &Head, mut take: impl FnMut(&[u8])) -> std::io::Result<u64> {
        let mut read = 0u64;
        if let Some(length) = head.header("content-length") {
            let length: u64 = length.parse().expect("a Content-Length");
            while read < length {
                if self.buffered.is_empty() {
                    self.fill()?;
                }
                read += self.buffered.len() as u64;
                take(&self.buffered);
                self.buffered.clear();
            }
            return Ok(read);
        }
        assert_eq!(head.header("transfer-encoding"), Some("chunked"));
        loop {
            let line = self.line()?;
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                .expect("a chunk size");
            if size == 0 {
                self.line()?;
                return Ok(read);
            }
            let mut left = size;
            while left > 0 {
                if self.buffered.is_empty() {
                    self.fill()?;
                }
                let n = left.min(self.buffered.len());
                take(&self.buffered[..n]);
                self.buffered.drain(..n);
                left -= n;
                read += n as u64;
            }
            self.line()?;
        }
    }

    /// Reads what the connection has next into the buffer.
    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 64 << 10];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buffered.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// One CRLF-terminated line of the chunked encoding.
    fn line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(end) = self.buffered.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buffered[..end]).into_owned();
                self.buffered.drain(..end + 2);
                return Ok(line);
            }
            self.fill()?;
        }
    }
}
