//! The HTTP side of the clients: one keep-alive `ureq` agent per client thread, and raw TCP for
//! the clients that hang up in the middle of a request.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An answer: status and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// An agent that hands every status back as a reply and gives up after `timeout`.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build(),
    )
}

/// Sends one request and reads the whole answer.
pub fn send(
    agent: &ureq::Agent,
    base: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&[u8]>,
) -> Result<Reply, ureq::Error> {
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"));
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let mut response = match body {
        Some(body) => agent.run(request.body(body.to_vec())?)?,
        None => agent.run(request.body(ureq::SendBody::none())?)?,
    };
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()?;
    Ok(Reply { status, body })
}

/// POSTs JSON.
pub fn post_json(
    agent: &ureq::Agent,
    base: &str,
    path: &str,
    body: &serde_json::Value,
) -> Result<Reply, ureq::Error> {
    let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
    send(
        agent,
        base,
        "POST",
        path,
        Some("application/json"),
        Some(&bytes),
    )
}

/// A client that sends the head of a POST to `path` announcing `announced` body bytes, then
/// only `body`, and hangs up. With `body` complete, it hangs up before reading the answer.
pub fn hang_up(addr: SocketAddr, path: &str, announced: usize, body: &[u8]) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {announced}\r\n\r\n"
    )?;
    stream.write_all(body)?;
    stream.flush()?;
    // Let the server start on it before the connection goes.
    std::thread::sleep(Duration::from_millis(20));
    stream.shutdown(std::net::Shutdown::Both)
}
