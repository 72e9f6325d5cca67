//! `bge_m3._bge_m3`: the extension module of the `bge_m3` Python package, PyO3 bindings over
//! [`bge_m3_core`]. The package's `BGEM3FlagModel` (python/bge_m3/model.py) gives it
//! FlagEmbedding's API; this module does the work:
//!
//! - [`model::Model`]: the model loaded from a directory or the Hub, with the core's queue,
//!   which runs every forward pass on the model's own threads while the calling Python thread
//!   waits without the GIL ([`pipeline`], [`wait`]); outputs become numpy arrays and dicts
//!   ([`convert`]);
//! - [`scores`]: FlagEmbedding's scoring helpers on its output shapes, by the core's scoring
//!   functions;
//! - [`errors`]: the core's errors as `ValueError`, `TypeError`, `FileNotFoundError`,
//!   `OSError` or `RuntimeError`, arguments read with errors that name them, and a Rust panic
//!   turned into a `RuntimeError`.
//!
//! Built with maturin (`crates/bge-m3-python/pyproject.toml`); see docs/PYTHON.md.

#![forbid(unsafe_code)]

mod convert;
mod errors;
mod model;
mod pipeline;
mod scores;
mod wait;

use pyo3::prelude::*;

/// For the package's tests: panics inside the guard every entry point runs in, so that they
/// can check that a Rust panic reaches Python as a `RuntimeError`.
#[pyfunction]
fn _panic_for_tests(message: &str) -> PyResult<()> {
    errors::guard(|| panic!("{message}"))
}

/// The module `bge_m3._bge_m3`.
#[pymodule]
fn _bge_m3(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<model::Model>()?;
    module.add_function(wrap_pyfunction!(scores::lexical_matching_score, module)?)?;
    module.add_function(wrap_pyfunction!(scores::lexical_matching_scores, module)?)?;
    module.add_function(wrap_pyfunction!(scores::colbert_score, module)?)?;
    module.add_function(wrap_pyfunction!(_panic_for_tests, module)?)?;
    Ok(())
}
