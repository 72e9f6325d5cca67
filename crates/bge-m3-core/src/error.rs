//! The one error type of `bge-m3-core`.

use std::fmt;
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

    /// The Hub has no such repository, revision or file (HTTP 404).
    #[error(
        "{repo} at revision `{revision}` was not found on the Hugging Face Hub ({url} answered \
         404): check the repository id and the revision, or give an existing model directory"
    )]
    HubNotFound {
        repo: String,
        revision: String,
        url: String,
    },

    /// The Hub refused access to a repository (HTTP 401 or 403): it is private or gated, or
    /// the token is missing, invalid or not allowed to read it.
    #[error("{}", hub_access_message(repo, url, *status, *token_sent))]
    HubAccess {
        repo: String,
        url: String,
        status: u16,
        /// Whether a token was sent with the request.
        token_sent: bool,
    },

    /// Offline mode (`HF_HUB_OFFLINE`) and the cache lacks files of the model.
    #[error(
        "HF_HUB_OFFLINE is set and the Hugging Face cache {} lacks {missing} of {repo} at \
         revision `{revision}`: start once with network access and the same cache (HF_HOME), \
         or give a model directory",
        cache.display()
    )]
    HubOffline {
        repo: String,
        revision: String,
        /// What is missing: "every file", or the missing files' names.
        missing: String,
        cache: PathBuf,
    },

    /// The Hub cannot be reached: no network, DNS failure, refused connection, proxy or TLS
    /// failure, timeout.
    #[error(
        "cannot reach the Hugging Face Hub at {endpoint} to fetch {repo} (check the network \
         and the proxy settings, or set HF_HUB_OFFLINE=1 to use the cache only)"
    )]
    HubUnreachable {
        repo: String,
        endpoint: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The disk (or the quota) is full while writing a downloaded file.
    #[error(
        "no space left to write {} (free some space, or point HF_HOME at a larger disk)",
        path.display()
    )]
    DiskFull {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Any other failure of a download from the Hub, naming what was fetched.
    #[error("fetching {what} of {repo} from the Hugging Face Hub: {message}")]
    Hub {
        repo: String,
        /// The file or API call concerned.
        what: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

fn hub_access_message(repo: &str, url: &str, status: u16, token_sent: bool) -> String {
    let answer = format!("{url} answered {status}");
    match (status, token_sent) {
        (403, _) => format!(
            "the Hugging Face Hub refused the token access to {repo} ({answer}): for a gated \
             repository accept its conditions on its Hub page, and set HF_TOKEN to a token \
             with read access to it"
        ),
        (_, false) => format!(
            "{repo} needs authentication on the Hugging Face Hub ({answer}): it is private or \
             gated (or does not exist); set HF_TOKEN to a token with read access"
        ),
        (_, true) => format!(
            "the Hugging Face Hub rejected the token for {repo} ({answer}): set HF_TOKEN to a \
             valid token with read access (or check the repository id)"
        ),
    }
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

/// Displays an error with its chain of causes, `outer: cause: root cause`, for logs and
/// messages.
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
