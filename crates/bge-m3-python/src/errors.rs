//! The core's errors as the Python exceptions a caller expects, arguments read with errors
//! that name them, and the guard that keeps a Rust panic from crossing into Python.

use std::panic::{catch_unwind, AssertUnwindSafe};

use bge_m3_core::queue::panic_message;
use bge_m3_core::{Error, Report};
use pyo3::exceptions::{
    PyFileNotFoundError, PyOSError, PyOverflowError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;

/// The core names its options as Rust does; these are the Python arguments they come from.
const ARGUMENT_NAMES: [(&str, &str); 2] = [
    ("weights", "weights_for_different_modes"),
    ("device", "devices"),
];

/// A core error as a Python exception: the caller's bad value is a `ValueError` naming the
/// argument, a missing model file a `FileNotFoundError`, an unreadable file or a failed
/// download an `OSError`, anything else (device, tokenizer, tensor faults) a `RuntimeError`.
/// The message is the error with its causes.
pub(crate) fn to_py(error: Error) -> PyErr {
    match &error {
        Error::InvalidInput { field, message } => {
            let name = ARGUMENT_NAMES
                .iter()
                .find(|(core, _)| core == field)
                .map_or(field.as_str(), |(_, python)| python);
            PyValueError::new_err(format!("invalid `{name}`: {message}"))
        }
        Error::MissingFile { .. } | Error::MissingDirectory(_) => {
            PyFileNotFoundError::new_err(Report(&error).to_string())
        }
        Error::InvalidFile { .. }
        | Error::HubNotFound { .. }
        | Error::HubAccess { .. }
        | Error::HubOffline { .. }
        | Error::HubUnreachable { .. }
        | Error::DiskFull { .. }
        | Error::Hub { .. } => PyOSError::new_err(Report(&error).to_string()),
        _ => PyRuntimeError::new_err(Report(&error).to_string()),
    }
}

/// Runs `body`, turning a Rust panic into a `RuntimeError` (PyO3's own `PanicException`
/// derives from `BaseException`, which `except Exception` does not catch).
pub(crate) fn guard<T>(body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        Err(PyRuntimeError::new_err(format!(
            "internal error in bge_m3 (a Rust panic, please report it): {}",
            panic_message(panic.as_ref())
        )))
    })
}

/// A count or a length given as a Python int (or anything with `__index__`, such as numpy's
/// integers): a `TypeError` for another type and a `ValueError` for a negative or huge value,
/// both naming `argument`. Its range (at least 1, at most the model's length...) is the core's
/// rule, checked there.
pub(crate) fn count(argument: &str, value: &Bound<'_, PyAny>) -> PyResult<usize> {
    let number: i64 = value.extract().map_err(|e: PyErr| {
        if e.is_instance_of::<PyOverflowError>(value.py()) {
            PyValueError::new_err(format!("invalid `{argument}`: {value} is out of range"))
        } else {
            PyTypeError::new_err(format!(
                "`{argument}` must be an int, got {}",
                type_name(value)
            ))
        }
    })?;
    usize::try_from(number)
        .map_err(|_| PyValueError::new_err(format!("invalid `{argument}`: {number} is negative")))
}

/// [`count`] for an optional argument: `None` stays `None`.
pub(crate) fn optional_count(
    argument: &str,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<usize>> {
    value
        .filter(|v| !v.is_none())
        .map(|v| count(argument, v))
        .transpose()
}

/// A flag given as a bool (numpy's included), or a `TypeError` naming `argument`.
pub(crate) fn flag(argument: &str, value: &Bound<'_, PyAny>) -> PyResult<bool> {
    value.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "`{argument}` must be a bool, got {}",
            type_name(value)
        ))
    })
}

/// A sequence of numbers as f32, or a `TypeError` naming `argument`.
pub(crate) fn numbers(argument: &str, value: &Bound<'_, PyAny>) -> PyResult<Vec<f32>> {
    value.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "`{argument}` must be a list of numbers, got {}",
            type_name(value)
        ))
    })
}

/// The name of a value's type, for messages.
pub(crate) fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |name| name.to_string())
}
