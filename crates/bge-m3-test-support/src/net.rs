//! A loopback port known to refuse connections.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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
    _socket: OwnedFd,
    addr: SocketAddr,
}

impl ClosedPort {
    /// Binds a TCP socket to 127.0.0.1 on a port that the OS chooses, without `listen(2)`.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain socket calls on a descriptor this function owns (closed by `OwnedFd` on
        // every path), with a zeroed `sockaddr_in` and its size.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let socket = OwnedFd::from_raw_fd(fd);
            if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut address: libc::sockaddr_in = std::mem::zeroed();
            let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            #[cfg(any(
                target_os = "macos",
                target_os = "ios",
                target_os = "freebsd",
                target_os = "openbsd",
                target_os = "netbsd",
                target_os = "dragonfly"
            ))]
            {
                address.sin_len = size as u8;
            }
            address.sin_family = libc::AF_INET as libc::sa_family_t;
            address.sin_port = 0;
            address.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
            let raw = (&address as *const libc::sockaddr_in).cast::<libc::sockaddr>();
            if libc::bind(socket.as_raw_fd(), raw, size) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut bound: libc::sockaddr_in = std::mem::zeroed();
            let mut length = size;
            let raw = (&mut bound as *mut libc::sockaddr_in).cast::<libc::sockaddr>();
            if libc::getsockname(socket.as_raw_fd(), raw, &mut length) != 0 {
                return Err(io::Error::last_os_error());
            }
            let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, u16::from_be(bound.sin_port));
            Ok(Self {
                _socket: socket,
                addr: addr.into(),
            })
        }
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
