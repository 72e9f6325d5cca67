//! The one error type of `bge-m3-core`.

use std::path::PathBuf;

/// Everything that can go wrong while loading the model or encoding.
///
/// Errors caused by the caller's input are [`Error::InvalidInput`] and name the offending
/// field, so that a server can answer them with a client error; the other variants are
/// faults of the model files, the device or the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file the model needs is not in the model directory.
    #[error("{file} not found in model directory {dir}")]
    MissingFile { file: String, dir: PathBuf },

    /// The model directory itself does not exist or is not a directory.
    #[error("model directory {0} does not exist or is not a directory")]
    MissingDirectory(PathBuf),

    /// A model file exists but cannot be read or parsed.
    #[error("cannot load {path}: {message}")]
    InvalidFile {
        path: PathBuf,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The caller passed a value that is out of range or malformed.
    #[error("invalid `{field}`: {message}")]
    InvalidInput { field: String, message: String },

    /// The requested device or dtype is not available in this build or on this machine.
    #[error("device: {0}")]
    Device(String),

    /// The tokenizer failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn invalid_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid_file(
        path: impl Into<PathBuf>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        let source = source.into();
        Error::InvalidFile {
            path: path.into(),
            message: source.to_string(),
            source: Some(source),
        }
    }

    /// Whether the error was caused by the caller's input rather than by the model or runtime.
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Error::InvalidInput { .. })
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
