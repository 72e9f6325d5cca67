//! The one error type of `bge-m3-core`, and [`Report`] to show it with its causes.

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
    MissingFile {
        /// The file's name (or the alternatives, `model.safetensors or pytorch_model.bin`).
        file: String,
        /// The model directory searched.
        dir: PathBuf,
    },

    /// The model directory itself does not exist or is not a directory.
    #[error("model directory {0} does not exist or is not a directory")]
    MissingDirectory(PathBuf),

    /// A model file exists but cannot be read or parsed.
    #[error("cannot load {path}: {message}")]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
        /// The parser's or the reader's own error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The caller passed a value that is out of range or malformed.
    #[error("invalid `{field}`: {message}")]
    InvalidInput {
        /// The option or argument at fault (`max_length`, `input`, `weights`...).
        field: String,
        /// What is wrong with its value.
        message: String,
    },

    /// The requested device is not available in this build or on this machine, or the
    /// model's compute threads cannot start.
    #[error("device: {message}")]
    Device {
        /// What failed, ending with the cause's own text where there is a cause.
        message: String,
        /// The device library's or the thread pool's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// The tokenizer failed on an input.
    #[error("tokenizer: {message}")]
    Tokenizer {
        /// The tokenizer's error, as text.
        message: String,
        /// The tokenizer's error itself.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// The fused CPU encoder refused what it was given: buffers whose lengths disagree, a
    /// token id or position outside its tables, more tokens than a `usize` counts, a weight
    /// that is not a contiguous f32 tensor. The callers check inputs against the model first,
    /// so this is a fault of the crate, not of the input.
    #[error("cpu encoder: {message}")]
    CpuEncoder {
        /// What disagreed.
        message: String,
    },

    /// The Hub has no such repository, revision or file (HTTP 404).
    #[error(
        "{repo} at revision `{revision}` was not found on the Hugging Face Hub ({url} answered \
         404): check the repository id and the revision, or give an existing model directory"
    )]
    HubNotFound {
        /// The repository id, `owner/name`.
        repo: String,
        /// The branch, tag or commit asked for.
        revision: String,
        /// The URL that answered 404.
        url: String,
    },

    /// The Hub refused access to a repository (HTTP 401 or 403): it is private or gated, or
    /// the token is missing, invalid or not allowed to read it.
    #[error("{}", hub_access_message(repo, url, *status, *token_sent))]
    HubAccess {
        /// The repository id, `owner/name`.
        repo: String,
        /// The URL that refused.
        url: String,
        /// The HTTP status, 401 or 403.
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
        /// The repository id, `owner/name`.
        repo: String,
        /// The branch, tag or commit asked for.
        revision: String,
        /// What is missing: "every file", or the missing files' names.
        missing: String,
        /// The Hub cache that was searched.
        cache: PathBuf,
    },

    /// The Hub cannot be reached: no network, DNS failure, refused connection, proxy or TLS
    /// failure, timeout.
    #[error(
        "cannot reach the Hugging Face Hub at {endpoint} to fetch {repo} (check the network \
         and the proxy settings, or set HF_HUB_OFFLINE=1 to use the cache only)"
    )]
    HubUnreachable {
        /// The repository id, `owner/name`.
        repo: String,
        /// The Hub's base URL.
        endpoint: String,
        /// The HTTP client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The disk (or the quota) is full while writing a downloaded file.
    #[error(
        "no space left to write {} (free some space, or point HF_HOME at a larger disk)",
        path.display()
    )]
    DiskFull {
        /// Where the write failed.
        path: PathBuf,
        /// The write's error (`StorageFull` or `QuotaExceeded`).
        #[source]
        source: std::io::Error,
    },

    /// Any other failure of a download from the Hub, naming what was fetched.
    #[error("fetching {what} of {repo} from the Hugging Face Hub: {message}")]
    Hub {
        /// The repository id, `owner/name`.
        repo: String,
        /// The file or API call concerned.
        what: String,
        /// What went wrong.
        message: String,
        /// The HTTP client's or the file system's error, when there is one.
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

    /// A device fault; `message` already ends with `source`'s text, if any, so that the
    /// `Display` of the error is whole on its own.
    pub(crate) fn device(
        message: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Device {
            message: message.into(),
            source,
        }
    }

    /// A check of the fused CPU encoder failed (see [`Error::CpuEncoder`]).
    pub(crate) fn cpu_encoder(message: impl Into<String>) -> Self {
        Error::CpuEncoder {
            message: message.into(),
        }
    }

    /// A tokenizer failure, keeping the tokenizer's error as the source.
    pub(crate) fn tokenizer(source: Box<dyn std::error::Error + Send + Sync>) -> Self {
        Error::Tokenizer {
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
/// messages (a plain `Display` shows the outer error only).
///
/// A cause whose text its error's message already ends with is not repeated: some of this
/// crate's errors ([`Error::Device`], [`Error::Tokenizer`], [`Error::InvalidFile`]) quote their
/// source so that their `Display` is whole on its own, and keep it as the `source` too.
///
/// ```
/// use bge_m3_core::Report;
///
/// let io = std::io::Error::other("disk on fire");
/// assert_eq!(Report(&io).to_string(), "disk on fire");
/// ```
pub struct Report<'a>(
    /// The error to show; its causes follow it.
    pub &'a (dyn std::error::Error + 'static),
);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut above = self.0.to_string();
        f.write_str(&above)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !above.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            above = text;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_keeps_the_variants_texts() {
        let tokenizer = Error::tokenizer("boom".into());
        assert_eq!(tokenizer.to_string(), "tokenizer: boom");
        assert!(std::error::Error::source(&tokenizer).is_some());
        let threads = std::io::Error::other("no threads");
        let device = Error::device(
            format!("cannot start 2 compute threads: {threads}"),
            Some(Box::new(threads)),
        );
        assert_eq!(
            device.to_string(),
            "device: cannot start 2 compute threads: no threads"
        );
    }

    #[test]
    fn report_shows_each_cause_once() {
        let tokenizer = Error::tokenizer("boom".into());
        assert_eq!(Report(&tokenizer).to_string(), "tokenizer: boom");
        let file = Error::invalid_file("/m/config.json", std::io::Error::other("bad"));
        assert_eq!(Report(&file).to_string(), "cannot load /m/config.json: bad");
        let hub = Error::Hub {
            repo: "o/n".into(),
            what: "config.json".into(),
            message: "I/O error in the cache /c".into(),
            source: Some(Box::new(std::io::Error::other("read-only"))),
        };
        assert_eq!(
            Report(&hub).to_string(),
            "fetching config.json of o/n from the Hugging Face Hub: I/O error in the cache /c: \
             read-only"
        );
    }
}
