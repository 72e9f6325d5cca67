//! Connections and the requests on them, against careless and hostile clients:
//!
//! - [`on_connect`] notes each connection's socket, so that the server can cut a connection
//!   whose client stopped reading (`shutdown(2)` with a zero linger, which resets it and frees
//!   what the kernel holds for it), and counts the connections (`bge_m3_open_connections`) and
//!   those closed by the head timeout without a request (a 408 that never reaches a handler).
//! - [`supervise`], a middleware around every route, counts the requests in flight (from their
//!   head to the last byte of their answer) for the graceful stop, answers 503
//!   `shutting_down` to those still running when `--shutdown-timeout` is up (see
//!   [`AppState::abort_in_flight`]), closes connections after each answer while the server
//!   drains, and enforces the write deadline: a client that takes nothing of its answer for
//!   `--write-timeout` seconds has its connection cut, and the answer's memory goes back. A
//!   large answer goes to the HTTP layer in pieces of [`PIECE`] bytes, whatever its making, so
//!   that a client that keeps reading keeps its connection.
//!
//! A client that closes its side of the connection (FIN) is noticed by the HTTP layer itself
//! (`h1_allow_half_closed(false)`, see [`crate::serve`]): the request's future is dropped, which
//! cancels its tokenization and takes its texts off the model's queue.

use std::any::Any;
use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{self, Bytes};

use crate::metrics::metrics;
use crate::state::{AppState, InFlight};
use crate::Error;

/// Answers at most this long are written to the socket's buffer at once: no write deadline is
/// needed for them.
const SMALL_ANSWER: u64 = 256 << 10;

/// A larger answer is handed to the HTTP layer at most this many bytes at a time, so that each
/// piece the client takes counts as progress, however the answer was made (streamed, or in one
/// piece: the rerank routes, `/score`).
const PIECE: usize = 64 << 10;

/// After a 408 for a body that stalled, the connection is cut if it is still open this much
/// later (the HTTP layer closes it itself unless the body is chunked, which it would drain).
const BODY_TIMEOUT_GRACE: Duration = Duration::from_secs(1);

/// The socket of one connection, in the connection's data.
///
/// The descriptor is only used on the connection's own worker thread and only while `open`,
/// which the connection's end clears in the same synchronous drop that closes the descriptor:
/// it cannot be another socket's by then. As a second guard, [`Peer::cut`] checks that the
/// descriptor still has this peer.
#[derive(Clone)]
pub(crate) struct Peer {
    fd: RawFd,
    addr: Option<SocketAddr>,
    open: Rc<Cell<bool>>,
    /// Requests that reached the routes on this connection.
    requests: Rc<Cell<u64>>,
}

impl Peer {
    /// Whether the connection is still there.
    fn is_open(&self) -> bool {
        self.open.get()
    }

    /// Resets the connection now: the client gets an RST, the server's side of the connection
    /// wakes up, fails its next write and drops the request and its answer. Whether it was cut.
    #[allow(unsafe_code)] // The socket, borrowed from the HTTP layer.
    pub(crate) fn cut(&self) -> bool {
        if !self.is_open() {
            return false;
        }
        // SAFETY: the descriptor is open (see the type's comment) until the connection's end,
        // which cannot come while this synchronous call runs on the connection's thread; the
        // borrow ends with the call, and closes nothing.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let socket = socket2::SockRef::from(&fd);
        if socket.peer_addr().ok().and_then(|addr| addr.as_socket()) != self.addr {
            return false;
        }
        // A zero linger: the shutdown resets the connection.
        let _ = socket.set_linger(Some(Duration::ZERO));
        socket.shutdown(std::net::Shutdown::Both).is_ok()
    }
}

/// Lives in the connection's data: its drop is the connection's end.
struct Opened {
    open: Rc<Cell<bool>>,
    requests: Rc<Cell<u64>>,
    since: Instant,
    head_timeout: Duration,
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.open.set(false);
        let metrics = metrics();
        metrics.open_connections.dec();
        // A request the HTTP layer could not parse: it answered 400 (431 for a head too
        // large) and closed the connection, without a handler ever seeing it.
        if let Some(status) = crate::logging::take_refused() {
            metrics
                .requests
                .with_label_values(&["other", &status.to_string()])
                .inc();
            tracing::info!(
                target: "bge_m3_server::request",
                status,
                "request refused by the HTTP parser (malformed, or its head too large); \
                 connection closed"
            );
        } else if self.requests.get() == 0
            && !self.head_timeout.is_zero()
            // The HTTP layer's clock ticks every half second.
            && self.since.elapsed() + Duration::from_millis(550) >= self.head_timeout
        {
            // The HTTP layer answers 408 and closes a connection whose first request head did
            // not arrive in time.
            metrics
                .requests
                .with_label_values(&["other", StatusCode::REQUEST_TIMEOUT.as_str()])
                .inc();
            tracing::info!(
                target: "bge_m3_server::request",
                status = 408,
                "request head not received within the header timeout; connection closed"
            );
        }
    }
}

/// `HttpServer::on_connect`: notes the socket of a new connection (see [`Peer`]).
pub(crate) fn on_connect(head_timeout: Duration) -> impl Fn(&dyn Any, &mut Extensions) {
    move |connection, data| {
        let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        let open = Rc::new(Cell::new(true));
        let requests = Rc::new(Cell::new(0));
        metrics().open_connections.inc();
        metrics().connections.inc();
        data.insert(Opened {
            open: open.clone(),
            requests: requests.clone(),
            since: Instant::now(),
            head_timeout,
        });
        data.insert(Peer {
            fd: stream.as_raw_fd(),
            addr: stream.peer_addr().ok(),
            open,
            requests,
        });
    }
}

/// Middleware, inside the request log and the metrics: see the module's documentation.
pub(crate) async fn supervise(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<Watched>, actix_web::Error> {
    let peer = req.conn_data::<Peer>().cloned();
    if let Some(peer) = &peer {
        peer.requests.set(peer.requests.get() + 1);
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        let response = next.call(req).await?;
        return Ok(response.map_body(|_, body| Watched::new(body, None, None, None)));
    };
    let in_flight = state.enter();
    let mut abort = state.abort_signal();
    let response = tokio::select! {
        response = next.call(req) => response?,
        () = crate::state::aborted(&mut abort) => {
            state.count_abandoned();
            return Err(Error::ShuttingDown.into());
        }
    };
    let limits = state.limits();
    if response.status() == StatusCode::REQUEST_TIMEOUT {
        if let Some(peer) = peer.clone() {
            actix_web::rt::spawn(async move {
                actix_web::rt::time::sleep(BODY_TIMEOUT_GRACE).await;
                peer.cut();
            });
        }
    }
    let draining = state.is_draining();
    Ok(response.map_body(move |head, body| {
        if draining {
            head.set_connection_type(ConnectionType::Close);
        }
        Watched::new(body, Some(in_flight), peer, limits.write_timeout)
    }))
}

/// An answer's body on its way out: counted in flight until its last byte, and cut off if its
/// client stops taking it (see [`supervise`]).
pub(crate) struct Watched {
    body: BoxBody,
    /// What is left of a piece of the body longer than [`PIECE`].
    rest: Bytes,
    in_flight: Option<InFlight>,
    progress: Option<Rc<Progress>>,
    deadline: Option<actix_web::rt::task::JoinHandle<()>>,
}

/// When an answer last moved, and whether it is done.
struct Progress {
    last: Cell<Instant>,
    done: Cell<bool>,
}

impl Watched {
    fn new(
        body: BoxBody,
        in_flight: Option<InFlight>,
        peer: Option<Peer>,
        write_timeout: Option<Duration>,
    ) -> Self {
        let large = match body.size() {
            BodySize::None => false,
            BodySize::Sized(n) => n > SMALL_ANSWER,
            BodySize::Stream => true,
        };
        let (progress, deadline) = match (peer, write_timeout) {
            (Some(peer), Some(timeout)) if large => {
                let progress = Rc::new(Progress {
                    last: Cell::new(Instant::now()),
                    done: Cell::new(false),
                });
                let deadline = actix_web::rt::spawn(enforce(progress.clone(), peer, timeout));
                (Some(progress), Some(deadline))
            }
            _ => (None, None),
        };
        Self {
            body,
            rest: Bytes::new(),
            in_flight,
            progress,
            deadline,
        }
    }

    fn finish(&mut self) {
        if let Some(progress) = self.progress.take() {
            progress.done.set(true);
        }
        if let Some(deadline) = self.deadline.take() {
            deadline.abort();
        }
        self.in_flight = None;
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Cuts the connection when the answer has not moved for `timeout`.
async fn enforce(progress: Rc<Progress>, peer: Peer, timeout: Duration) {
    loop {
        let due = progress.last.get() + timeout;
        actix_web::rt::time::sleep_until(due.into()).await;
        if progress.done.get() {
            return;
        }
        if Instant::now() >= progress.last.get() + timeout {
            if peer.cut() {
                metrics().write_timeouts.inc();
                tracing::warn!(
                    target: "bge_m3_server::request",
                    peer = ?peer.addr,
                    timeout_s = timeout.as_secs_f64(),
                    "the client took nothing of its answer within the write timeout; \
                     connection cut"
                );
            }
            return;
        }
    }
}

impl MessageBody for Watched {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        // The HTTP layer asks for more once it has written what it had: with pieces of at most
        // `PIECE` bytes, each time the client takes some of a large answer.
        let polled = if this.rest.is_empty() {
            Pin::new(&mut this.body).poll_next(cx)
        } else {
            Poll::Ready(Some(Ok(std::mem::take(&mut this.rest))))
        };
        match polled {
            Poll::Ready(Some(Ok(mut piece))) => {
                if piece.len() > PIECE && this.progress.is_some() {
                    this.rest = piece.split_off(PIECE);
                }
                if let Some(progress) = &this.progress {
                    progress.last.set(Instant::now());
                }
                Poll::Ready(Some(Ok(piece)))
            }
            Poll::Ready(other) => {
                this.finish();
                Poll::Ready(other)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
