//! What the workspace's tests share, held once (STYLE.md, rules 8, 9 and 15):
//!
//! - the tolerances, [`TOLERANCE`] (fp32, 1e-5 absolute) and [`NORM_TOLERANCE`], and the one
//!   close-enough check, [`check_close`] / [`close`] / [`assert_close`], always `actual`,
//!   `expected`, tolerance; with [`max_abs_diff`], [`cosine`], [`norm`] and
//!   [`check_same_weights`] for sparse weights;
//! - the fixture models ([`tiny_pt`], [`model_dir`]) and FlagEmbedding's outputs recorded for
//!   them ([`expected`]);
//! - the child-process launcher, [`Launch`] and [`Process`]: a binary started with arguments
//!   and environment, its stderr captured line by line, readiness awaited on a line
//!   ([`Process::wait_for_listening`] for the server), signals, a bounded wait for the exit,
//!   and a kill on drop;
//! - waiting for events rather than for time: [`eventually`], and [`ClosedPort`], a port known
//!   to refuse connections.
//!
//! It does not depend on bge-m3-core, so that the core's own tests can use it too.
//!
//! ```
//! use std::time::Duration;
//! use bge_m3_test_support::{assert_close, eventually, Launch, TOLERANCE};
//!
//! assert_close(&[0.25, 0.5], &[0.25, 0.500_004], TOLERANCE, "dense");
//!
//! let mut process = Launch::new("sh")
//!     .args(["-c", "echo ready >&2; exec sleep 30"])
//!     .spawn()
//!     .unwrap();
//! let line = process.wait_for_line(Duration::from_secs(10), |l| l == "ready");
//! assert_eq!(line.as_deref(), Ok("ready"));
//! process.signal(bge_m3_test_support::Signal::Term).unwrap();
//! assert!(eventually(Duration::from_secs(10), || process.try_exit().is_some()).is_some());
//! ```

mod fixtures;
mod net;
mod numeric;
mod process;
mod wait;

pub use fixtures::{
    expected, fixtures_dir, model_dir, tiny_pt, EncodeCase, Expected, ScoreCase, MODELS, TINY_PT,
    TINY_ST,
};
pub use net::ClosedPort;
pub use numeric::{
    assert_close, check_close, check_same_weights, close, cosine, max_abs_diff, norm, Mismatch,
    NORM_TOLERANCE, TOLERANCE,
};
pub use process::{
    listening_addr, proc_status_kib, Finished, Launch, NoLine, Process, Signal, PIPE_GRACE,
};
pub use wait::{eventually, POLL_INTERVAL};
