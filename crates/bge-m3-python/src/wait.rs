//! Waiting for the model's queue without the GIL, yet answering Ctrl-C.
//!
//! The reply is a tokio oneshot channel, whose blocking receive cannot time out. Polled as the
//! future it is, with a waker that unparks the waiting thread, it can: the thread sleeps until
//! the reply comes or a period passes, then takes the GIL back for a moment to let Python run
//! its signal handlers (a `KeyboardInterrupt` raised there ends the wait, and dropping the
//! receiver cancels what was left of the request). The handlers run after a reply too, not only
//! after a quiet period: when the model is ahead of the caller (its answers ready before they
//! are awaited, as on a loaded machine where the calling thread waits for a core), no wait lasts
//! a period, and a call looking only then would run to its end through Ctrl-C.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use bge_m3_core::queue::oneshot::{self, error::RecvError};
use bge_m3_core::queue::{Computed, QueueError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// How often a waiting call looks for signals.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// What the queue answers.
pub(crate) type Reply = Result<Computed, QueueError>;

/// Waits for `receiver`'s reply with the GIL released: the texts' embeddings, a
/// `RuntimeError` when their pass failed (a panic in a pass included), or the exception of a
/// signal handler, which is looked for every [`SIGNAL_CHECK`] and once the reply has come.
pub(crate) fn wait(py: Python<'_>, receiver: &mut oneshot::Receiver<Reply>) -> PyResult<Computed> {
    loop {
        let reply = py.detach(|| poll_for(receiver, SIGNAL_CHECK));
        py.check_signals()?;
        match reply {
            Some(Ok(Ok(computed))) => return Ok(computed),
            Some(Ok(Err(error))) => {
                return Err(PyRuntimeError::new_err(
                    bge_m3_core::Report(&error).to_string(),
                ))
            }
            Some(Err(_closed)) => {
                return Err(PyRuntimeError::new_err(
                    "the model's queue stopped without answering",
                ))
            }
            None => {}
        }
    }
}

/// Wakes the thread that waits in [`poll_for`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The reply, or `None` once `period` has passed without one.
fn poll_for(
    receiver: &mut oneshot::Receiver<Reply>,
    period: Duration,
) -> Option<Result<Reply, RecvError>> {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut context = Context::from_waker(&waker);
    let deadline = Instant::now() + period;
    loop {
        if let Poll::Ready(reply) = Pin::new(&mut *receiver).poll(&mut context) {
            return Some(reply);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        // A wake between the poll and the park is not lost: it leaves the thread's token set,
        // and this park returns at once.
        thread::park_timeout(left);
    }
}
