//! Careless clients that take their time, each on raw TCP, in turn on `--slow-clients` threads
//! beside the load:
//!
//! - slow body: sends a request head, then one body byte every half second. The server must
//!   answer 408 and close the connection within its body timeout (plus slack).
//! - stops reading: asks for a large answer (ColBERT vectors of many texts, tens of MB, more
//!   than the kernel's socket buffers) and never reads it. The server must cut the connection
//!   within its write timeout (plus slack) of the answer being ready.
//! - slow read: asks for the same answer and reads it at 2 MiB/s, which the server must serve
//!   to the end (or for 10 s, or until the load ends, when the client leaves).
//! - hang-up: sends a request of many texts and closes its side (FIN) at once. The server must
//!   close its side too within a few seconds (the request is cancelled).
//!
//! Their memory is in the server's RSS, which the load test watches throughout.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::pools::Pools;
use crate::report::Stats;

/// The deadlines the server runs with (its `--body-timeout` and `--write-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub body: Duration,
    pub write: Duration,
}

/// Slack beyond a deadline before a slow client's connection still open is a violation.
const SLACK: Duration = Duration::from_secs(5);

/// Runs slow clients in turn until `deadline`, starting with kind `first`.
pub fn slow_loop(
    addr: SocketAddr,
    pools: &Pools,
    max_inputs: usize,
    deadlines: Deadlines,
    deadline: Instant,
    first: usize,
) -> Stats {
    let mut stats = Stats::default();
    // Large answers: ColBERT vectors of the longest pool texts, as many as allowed.
    let mut longest: Vec<&String> = pools.texts.iter().collect();
    longest.sort_by_key(|t| std::cmp::Reverse(t.len()));
    let texts: Vec<&String> = longest.iter().cycle().take(max_inputs).copied().collect();
    let large = serde_json::to_vec(&json!({
        "input": texts,
        "input_type": {"dense": false, "sparse": false, "colbert": true},
    }))
    .expect("JSON");
    let many = serde_json::to_vec(&json!({ "input": texts })).expect("JSON");
    let mut turn = first;
    while Instant::now() < deadline {
        let outcome = match turn % 4 {
            0 => ("hang-up (FIN)", hang_up(addr, &many)),
            1 => ("slow body", slow_body(addr, deadlines.body, deadline)),
            2 => (
                "stops reading",
                stops_reading(addr, &large, deadlines.write),
            ),
            _ => ("slow read", slow_read(addr, &large, deadline)),
        };
        let (kind, result) = outcome;
        match result {
            Ok(what) => stats.record(kind, false, what, None),
            Err(violation) => {
                stats.record(kind, false, "violation", None);
                stats.violation(format!("slow client, {kind}: {violation}"));
            }
        }
        turn += 1;
    }
    stats
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| format!("connect: {e}"))
}

fn head(addr: SocketAddr, length: usize) -> String {
    format!(
        "POST /embeddings HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

/// Reads until the server closes (or resets) the connection, at most `within`; whether it did,
/// and the first bytes read.
fn until_closed(stream: &mut TcpStream, within: Duration) -> (bool, Vec<u8>) {
    let end = Instant::now() + within;
    let mut first = Vec::new();
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return (false, first);
        }
        match stream.read(&mut buffer) {
            Ok(0) => return (true, first),
            Ok(n) => {
                if first.len() < 64 {
                    first.extend_from_slice(&buffer[..n.min(64)]);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (false, first)
            }
            Err(_) => return (true, first),
        }
    }
}

fn slow_body(
    addr: SocketAddr,
    timeout: Duration,
    deadline: Instant,
) -> Result<&'static str, String> {
    let mut stream = connect(addr)?;
    let start = Instant::now();
    stream
        .write_all(head(addr, 1000).as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    stream.set_nonblocking(false).ok();
    // One byte every half second, until the server gives up on it.
    let mut answered = Vec::new();
    while start.elapsed() < timeout + SLACK {
        if stream.write_all(b" ").is_err() {
            break;
        }
        let (closed, first) = until_closed(&mut stream, Duration::from_millis(500));
        answered.extend(first);
        if closed {
            let took = start.elapsed();
            let text = String::from_utf8_lossy(&answered);
            if took + Duration::from_millis(500) < timeout {
                return Err(format!("closed after {took:?}, before the body timeout"));
            }
            return Ok(if text.starts_with("HTTP/1.1 408") {
                "408, closed"
            } else {
                "closed"
            });
        }
        if Instant::now() > deadline + SLACK + timeout {
            break;
        }
    }
    Err(format!("still open {:?} after its head", start.elapsed()))
}

fn stops_reading(addr: SocketAddr, body: &[u8], timeout: Duration) -> Result<&'static str, String> {
    let mut stream = connect(addr)?;
    stream
        .write_all(head(addr, body.len()).as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("write: {e}"))?;
    let start = Instant::now();
    // The answer takes a while to compute; then nothing is read for the write timeout.
    std::thread::sleep(timeout + SLACK + Duration::from_secs(5));
    // Cut off: what the kernel still holds drains, then the connection ends (or resets).
    let (closed, _) = until_closed(&mut stream, Duration::from_secs(5));
    if closed {
        Ok("cut off")
    } else {
        Err(format!(
            "still served {:?} after the request",
            start.elapsed()
        ))
    }
}

fn slow_read(addr: SocketAddr, body: &[u8], deadline: Instant) -> Result<&'static str, String> {
    let mut stream = connect(addr)?;
    stream
        .write_all(head(addr, body.len()).as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("write: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut buffer = vec![0u8; 100 << 10];
    let mut read = 0usize;
    let start = Instant::now();
    loop {
        if Instant::now() > deadline || start.elapsed() > Duration::from_secs(10) {
            let _ = stream.shutdown(Shutdown::Both);
            return Ok("read slowly, left after 10 s");
        }
        match stream.read(&mut buffer) {
            Ok(0) => return Ok("read slowly, complete"),
            Ok(n) => {
                if read == 0 && !buffer.starts_with(b"HTTP/1.1 200") {
                    let status = String::from_utf8_lossy(&buffer[9..12.min(n)]).into_owned();
                    return Err(format!("answered {status}"));
                }
                read += n;
                // The last chunk of a chunked body.
                if buffer[..n].ends_with(b"0\r\n\r\n") {
                    return Ok("read slowly, complete");
                }
                // About 2 MiB/s.
                std::thread::sleep(Duration::from_millis(50 * n as u64 / (100 << 10)));
            }
            Err(e) => return Err(format!("after {read} bytes: {e}")),
        }
    }
}

fn hang_up(addr: SocketAddr, body: &[u8]) -> Result<&'static str, String> {
    let mut stream = connect(addr)?;
    stream
        .write_all(head(addr, body.len()).as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("write: {e}"))?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let start = Instant::now();
    let (closed, _) = until_closed(&mut stream, SLACK);
    if closed {
        Ok("server closed its side")
    } else {
        Err(format!(
            "the server kept the connection {:?} after the client's FIN",
            start.elapsed()
        ))
    }
}
