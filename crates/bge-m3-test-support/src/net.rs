//! A loopback port known to refuse connections.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, Socket, Type};

/// A TCP port on 127.0.0.1 that is bound but never listened on, for as long as this value
/// lives: every connection to it is refused (RST), and no other socket can take it meanwhile
/// (this one does not set `SO_REUSEADDR`). Unlike a port that "was free a moment ago", nothing
/// can start listening there during the test.
///
/// ```
/// let closed = bge_m3_test_support::ClosedPort::new().unwrap();
/// let refused = std::net::TcpStream::connect(closed.addr()).unwrap_err();
/// assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
/// ```
#[derive(Debug)]
pub struct ClosedPort {
    _socket: Socket,
    addr: SocketAddr,
}

impl ClosedPort {
    /// Binds a TCP socket to 127.0.0.1 on a port that the OS chooses, without `listen(2)`.
    /// (The socket is closed on `exec`: child processes do not inherit it.)
    pub fn new() -> io::Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("a TCP socket bound to an address that is not IP"))?;
        Ok(Self {
            _socket: socket,
            addr,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, an endpoint that cannot be reached.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
