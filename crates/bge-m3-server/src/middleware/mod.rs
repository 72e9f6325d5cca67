//! The layers every request passes through, outermost first as `app` wraps them: the request
//! id, the metrics, the access log, CORS, the API key and the supervision of connections.
//! They use the state and the error type below them, never a route.

pub(crate) mod access_log;
pub(crate) mod auth;
pub(crate) mod connection;
pub(crate) mod cors;
pub(crate) mod metrics;
pub(crate) mod request_id;

/// Runs a closure when dropped, unless disarmed first: what a dropped future does last.
pub(crate) struct OnDrop<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> OnDrop<F> {
    pub fn new(f: F) -> Self {
        Self(Some(f))
    }

    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}
