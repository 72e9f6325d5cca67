//! The model from the Hugging Face Hub (cargo feature `hub`).
//!
//! [`download`] fetches the files [`BgeM3::load`](crate::BgeM3::load) reads (`config.json`,
//! `tokenizer.json`, `model.safetensors` when the repository has it, else `pytorch_model.bin`,
//! `colbert_linear.pt`, `sparse_linear.pt`) into the standard Hugging Face cache and returns
//! the snapshot directory. The cache has the layout of Python's `huggingface_hub`
//! (`models--owner--name/{blobs, snapshots/<commit>, refs/<revision>}`), so either finds what
//! the other downloaded. A snapshot that is already complete for the revision is used without
//! any network access; [`HubOptions::offline`] (`HF_HUB_OFFLINE`) never touches the network.
//!
//! [`resolve`] takes what a user typed: an existing directory is used as it is, a repository
//! id (`owner/name`) is downloaded, anything else is [`Error::MissingDirectory`].
//!
//! A download reports its progress to [`HubOptions::progress`]: by default [`LogProgress`]'s
//! `tracing` lines, or the caller's [`DownloadProgress`]: `TerminalProgress` (cargo feature
//! `terminal-progress`) draws a bar on a terminal.
//!
//! ```no_run
//! use bge_m3_core::hub::{self, HubOptions};
//! use bge_m3_core::{BgeM3, LoadOptions};
//!
//! # fn main() -> bge_m3_core::Result<()> {
//! // HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE as in huggingface_hub.
//! let dir = hub::download("BAAI/bge-m3", &HubOptions::from_env())?;
//! let model = BgeM3::load(dir, &LoadOptions::default())?;
//! # Ok(())
//! # }
//! ```

mod fetch;
mod progress;
#[cfg(feature = "terminal-progress")]
mod terminal;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hf_hub::{Repo, RepoType};

use crate::weights::{
    ModelFiles, COLBERT_FILE, CONFIG_FILE, PYTORCH_FILE, SAFETENSORS_FILE, SPARSE_FILE,
    TOKENIZER_FILE,
};
use crate::{Error, Result};
pub use progress::{DownloadProgress, FileProgress, LogProgress};
#[cfg(feature = "terminal-progress")]
pub use terminal::TerminalProgress;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The branch used when no revision is given.
pub const DEFAULT_REVISION: &str = "main";

/// Where the model comes from: what [`ModelSource::parse`] makes of a user's `--model-path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A path that exists: read as it is.
    Dir(PathBuf),
    /// A Hub repository id, `owner/name`.
    Repo(String),
}

impl ModelSource {
    /// An existing path is a [`ModelSource::Dir`] (even a repository id that happens to name
    /// a local directory); a path that does not exist and reads as `owner/name` is a
    /// [`ModelSource::Repo`]; anything else is [`Error::MissingDirectory`], without any
    /// network access.
    pub fn parse(model: &Path) -> Result<Self> {
        if model.exists() {
            return Ok(ModelSource::Dir(model.to_path_buf()));
        }
        match model.to_str() {
            Some(id) if is_repo_id(id) => Ok(ModelSource::Repo(id.to_string())),
            _ => Err(Error::MissingDirectory(model.to_path_buf())),
        }
    }
}

/// Whether `id` is a Hub repository id with an owner, `owner/name`: two parts of ASCII
/// letters, digits, `-`, `_` and `.`, each beginning and ending with a letter, a digit or `_`,
/// without `--` or `..`, 96 characters at most (the rules of `huggingface_hub`'s
/// `validate_repo_id`, owner required). Relative paths like `./a/b` or `../a` are not ids.
pub fn is_repo_id(id: &str) -> bool {
    let Some((owner, name)) = id.split_once('/') else {
        return false;
    };
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let part = |p: &str| {
        p.chars().all(|c| word(c) || c == '-' || c == '.')
            && p.starts_with(word)
            && p.ends_with(word)
            && !p.contains("--")
            && !p.contains("..")
    };
    id.len() <= 96 && part(owner) && part(name)
}

/// How to reach the Hub and where to cache what it sends.
///
/// [`HubOptions::default`] reads no environment; [`HubOptions::from_env`] follows
/// `huggingface_hub`'s variables. Either is changed with the `with_*` methods:
///
/// ```
/// use bge_m3_core::hub::HubOptions;
///
/// let options = HubOptions::from_env().with_revision("v1.0").without_progress();
/// assert_eq!(options.revision, "v1.0");
/// assert!(options.progress.is_none());
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct HubOptions {
    /// Branch, tag or commit hash. Default: `main`.
    pub revision: String,
    /// Base URL of the Hub. Default: `https://huggingface.co`.
    pub endpoint: String,
    /// The Hub cache, where `models--owner--name` directories live. Default:
    /// `~/.cache/huggingface/hub`.
    pub cache_dir: PathBuf,
    /// Access token sent as `Authorization: Bearer`, for private and gated repositories.
    /// Default: none.
    pub token: Option<String>,
    /// Use the cache only: never touch the network, fail if a file is not cached. Default:
    /// false.
    pub offline: bool,
    /// Where download progress goes. Default: [`LogProgress`], a `tracing` line per file
    /// every 10 s; `None` reports none.
    pub progress: Option<Arc<dyn DownloadProgress>>,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            revision: DEFAULT_REVISION.to_string(),
            endpoint: DEFAULT_ENDPOINT.to_string(),
            cache_dir: default_hf_home(None).join("hub"),
            token: None,
            offline: false,
            progress: Some(Arc::new(LogProgress)),
        }
    }
}

impl fmt::Debug for HubOptions {
    /// Everything but the token's value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubOptions")
            .field("revision", &self.revision)
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("progress", &self.progress.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl HubOptions {
    /// The defaults, changed by the environment variables of `huggingface_hub`:
    ///
    /// - `HF_HUB_CACHE` (the cache), else `HF_HOME` (cache in `$HF_HOME/hub`), else
    ///   `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`;
    /// - `HF_ENDPOINT`: the Hub's URL (a mirror, or a test server);
    /// - `HF_TOKEN`, else the file `HF_TOKEN_PATH`, else `$HF_HOME/token` (written by
    ///   `huggingface-cli login`);
    /// - `HF_HUB_OFFLINE`: `1`, `ON`, `YES` or `TRUE` (any case) for cache only.
    ///
    /// The revision stays `main`: it is the caller's setting, not the environment's.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Sets [`HubOptions::revision`].
    #[must_use]
    pub fn with_revision(mut self, revision: impl Into<String>) -> Self {
        self.revision = revision.into();
        self
    }

    /// Sets [`HubOptions::endpoint`].
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }

    /// Sets [`HubOptions::cache_dir`].
    #[must_use]
    pub fn with_cache_dir(mut self, cache_dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = cache_dir.into();
        self
    }

    /// Sets [`HubOptions::token`] (`None`: send no token).
    #[must_use]
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Sets [`HubOptions::offline`].
    #[must_use]
    pub fn with_offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Reports download progress to `progress` instead of the default [`LogProgress`].
    #[must_use]
    pub fn with_progress(mut self, progress: impl DownloadProgress + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// Reports no download progress.
    #[must_use]
    pub fn without_progress(mut self) -> Self {
        self.progress = None;
        self
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let hf_home = var("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| default_hf_home(var("XDG_CACHE_HOME").map(PathBuf::from)));
        let cache_dir = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token_path = var("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = var("HF_TOKEN")
            .or_else(|| std::fs::read_to_string(token_path).ok())
            .map(|token| token.trim().to_string())
            .filter(|token| !token.is_empty());
        let endpoint = var("HF_ENDPOINT")
            .map(|endpoint| endpoint.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|value| {
            ["1", "ON", "YES", "TRUE"].contains(&value.trim().to_ascii_uppercase().as_str())
        });
        Self {
            endpoint,
            cache_dir,
            token,
            offline,
            ..Self::default()
        }
    }
}

/// `~/.cache/huggingface`, or `$XDG_CACHE_HOME/huggingface`.
fn default_hf_home(xdg_cache_home: Option<PathBuf>) -> PathBuf {
    xdg_cache_home
        .unwrap_or_else(|| std::env::home_dir().unwrap_or_default().join(".cache"))
        .join("huggingface")
}

/// The model directory for `model`: an existing path as it is, a Hub repository id
/// downloaded with [`download`], anything else [`Error::MissingDirectory`] (see
/// [`ModelSource::parse`]).
pub fn resolve(model: impl AsRef<Path>, options: &HubOptions) -> Result<PathBuf> {
    match ModelSource::parse(model.as_ref())? {
        ModelSource::Dir(dir) => Ok(dir),
        ModelSource::Repo(repo) => download(&repo, options),
    }
}

/// Fetches the model files of the Hub repository `repo_id` at `options.revision` into the
/// cache, unless the cache already has them all, and returns the snapshot directory for
/// [`BgeM3::load`](crate::BgeM3::load).
///
/// The encoder is `model.safetensors` when the repository has one, else `pytorch_model.bin`;
/// other files of the repository (ONNX exports and the like) are not fetched. Errors say what
/// was tried and what to do: [`Error::HubNotFound`], [`Error::HubAccess`],
/// [`Error::HubOffline`], [`Error::HubUnreachable`], [`Error::DiskFull`], [`Error::Hub`].
pub fn download(repo_id: &str, options: &HubOptions) -> Result<PathBuf> {
    let revision = options.revision.as_str();
    if revision.is_empty()
        || revision.starts_with('/')
        || revision
            .split('/')
            .any(|part| part.is_empty() || part == "..")
    {
        return Err(Error::invalid_input(
            "revision",
            format!("`{revision}` is not a branch, tag or commit hash"),
        ));
    }
    let repo = Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string());
    let repo_dir = options.cache_dir.join(repo.folder_name());
    let cached = cached_snapshot(&repo_dir, revision);
    if let Some(snapshot) = &cached {
        if ModelFiles::locate(snapshot).is_ok() {
            tracing::info!(
                repo = repo_id,
                revision,
                snapshot = %snapshot.display(),
                "using the model in the Hugging Face cache"
            );
            return Ok(snapshot.clone());
        }
    }
    if options.offline {
        let missing = match &cached {
            Some(snapshot) => missing_files(snapshot).join(", "),
            None => "every file".to_string(),
        };
        return Err(Error::HubOffline {
            repo: repo_id.to_string(),
            revision: revision.to_string(),
            missing,
            cache: options.cache_dir.clone(),
        });
    }
    fetch::Fetch::new(repo_id, repo, repo_dir, options)?.run()
}

/// The snapshot the cache holds for `revision`: `snapshots/<revision>` for a commit hash,
/// else the commit named by `refs/<revision>`.
fn cached_snapshot(repo_dir: &Path, revision: &str) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    if is_commit_hash(revision) && snapshots.join(revision).is_dir() {
        return Some(snapshots.join(revision));
    }
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?;
    let commit = commit.trim();
    let snapshot = snapshots.join(commit);
    (is_commit_hash(commit) && snapshot.is_dir()).then_some(snapshot)
}

fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The model files missing from `dir`, by name.
fn missing_files(dir: &Path) -> Vec<String> {
    let has = |file: &str| dir.join(file).is_file();
    let mut missing: Vec<String> = [CONFIG_FILE, TOKENIZER_FILE]
        .into_iter()
        .filter(|file| !has(file))
        .map(str::to_string)
        .collect();
    if !has(SAFETENSORS_FILE) && !has(PYTORCH_FILE) {
        missing.push(format!("{SAFETENSORS_FILE} or {PYTORCH_FILE}"));
    }
    missing.extend(
        [COLBERT_FILE, SPARSE_FILE]
            .into_iter()
            .filter(|file| !has(file))
            .map(str::to_string),
    );
    missing
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/models")
            .join(name)
    }

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    /// A loopback endpoint nothing listens on: a port the OS just gave us and that we closed
    /// (rather than a port assumed to be closed, such as 9, which a machine may serve).
    fn closed_endpoint() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    /// Options that fail at once if they touch the network.
    fn no_network(cache_dir: &Path) -> HubOptions {
        HubOptions {
            endpoint: closed_endpoint(),
            cache_dir: cache_dir.to_path_buf(),
            progress: None,
            ..HubOptions::default()
        }
    }

    /// A cache holding `files` of tiny-pt for `o/n` at COMMIT, with `refs/main` naming it.
    fn cache_with(files: &[&str]) -> tempfile::TempDir {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--o--n");
        let snapshot = repo.join("snapshots").join(COMMIT);
        std::fs::create_dir_all(&snapshot).unwrap();
        for file in files {
            std::fs::copy(fixture("tiny-pt").join(file), snapshot.join(file)).unwrap();
        }
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
        cache
    }

    const ALL: [&str; 5] = [
        CONFIG_FILE,
        TOKENIZER_FILE,
        PYTORCH_FILE,
        COLBERT_FILE,
        SPARSE_FILE,
    ];

    #[test]
    fn repo_ids_and_paths() {
        for id in ["BAAI/bge-m3", "a/b", "org_1/model.v2-large", "_a/b_"] {
            assert!(is_repo_id(id), "{id}");
        }
        for not_id in [
            "bge-m3",
            "/models/bge-m3",
            "./a/b",
            "../a",
            "a/b/c",
            "a/",
            "/a",
            "a//b",
            "a/-b",
            "a./b",
            "a--b/c",
            "a/b..c",
            "a b/c",
            "C:\\models\\m",
            "",
        ] {
            assert!(!is_repo_id(not_id), "{not_id:?}");
        }
        assert!(!is_repo_id(&format!("a/{}", "b".repeat(95))));
    }

    #[test]
    fn existing_paths_win_and_other_paths_are_missing_directories() {
        let dir = fixture("tiny-pt");
        assert_eq!(ModelSource::parse(&dir).unwrap(), ModelSource::Dir(dir));
        assert_eq!(
            ModelSource::parse(Path::new("BAAI/bge-m3")).unwrap(),
            ModelSource::Repo("BAAI/bge-m3".into())
        );
        for missing in ["/no/such/model", "no-such-model", "./no/such"] {
            match ModelSource::parse(Path::new(missing)) {
                Err(Error::MissingDirectory(path)) => assert_eq!(path, Path::new(missing)),
                other => panic!("{missing}: {other:?}"),
            }
            // resolve() gives the same error without any network access.
            let cache = tempfile::tempdir().unwrap();
            let error = resolve(missing, &no_network(cache.path())).unwrap_err();
            assert!(matches!(error, Error::MissingDirectory(_)), "{error}");
        }
    }

    #[test]
    fn options_follow_huggingface_hubs_environment() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("token"), "hf_from_file\n").unwrap();
        let from = |vars: &[(&str, &str)]| {
            let vars: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            HubOptions::from_vars(|name| vars.get(name).cloned())
        };
        let hf_home = home.path().to_str().unwrap();

        let options = from(&[("HF_HOME", hf_home)]);
        assert_eq!(options.cache_dir, home.path().join("hub"));
        assert_eq!(options.token.as_deref(), Some("hf_from_file"));
        assert_eq!(options.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(options.revision, DEFAULT_REVISION);
        assert!(!options.offline);

        let options = from(&[
            ("HF_HOME", hf_home),
            ("HF_HUB_CACHE", "/elsewhere"),
            ("HF_TOKEN", "hf_env"),
            ("HF_ENDPOINT", "http://127.0.0.1:1234/"),
            ("HF_HUB_OFFLINE", "1"),
        ]);
        assert_eq!(options.cache_dir, Path::new("/elsewhere"));
        assert_eq!(options.token.as_deref(), Some("hf_env"));
        assert_eq!(options.endpoint, "http://127.0.0.1:1234");
        assert!(options.offline);

        let options = from(&[("XDG_CACHE_HOME", "/xdg"), ("HF_HUB_OFFLINE", "0")]);
        assert_eq!(options.cache_dir, Path::new("/xdg/huggingface/hub"));
        assert!(!options.offline);
        for (value, offline) in [
            ("true", true),
            ("Yes", true),
            ("on", true),
            ("false", false),
            ("", false),
        ] {
            assert_eq!(
                from(&[("HF_HUB_OFFLINE", value)]).offline,
                offline,
                "{value}"
            );
        }
        let debug = format!("{:?}", from(&[("HF_TOKEN", "hf_secret")]));
        assert!(!debug.contains("hf_secret"), "{debug}");
    }

    #[test]
    fn a_complete_cache_is_used_without_the_network() {
        let cache = cache_with(&ALL);
        let snapshot = cache.path().join("models--o--n/snapshots").join(COMMIT);
        assert_eq!(
            download("o/n", &no_network(cache.path())).unwrap(),
            snapshot
        );
        // By commit hash, without a ref.
        std::fs::remove_file(cache.path().join("models--o--n/refs/main")).unwrap();
        let options = HubOptions {
            revision: COMMIT.into(),
            ..no_network(cache.path())
        };
        assert_eq!(download("o/n", &options).unwrap(), snapshot);
    }

    #[test]
    fn offline_names_what_the_cache_lacks() {
        let empty = tempfile::tempdir().unwrap();
        let offline = |cache: &Path| HubOptions {
            offline: true,
            ..no_network(cache)
        };
        let error = download("o/n", &offline(empty.path())).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, Error::HubOffline { .. }), "{message}");
        for part in ["HF_HUB_OFFLINE", "every file", "o/n", "`main`"] {
            assert!(message.contains(part), "{part}: {message}");
        }
        assert!(message.contains(&empty.path().display().to_string()));

        let partial = cache_with(&[CONFIG_FILE, TOKENIZER_FILE, COLBERT_FILE]);
        let message = download("o/n", &offline(partial.path()))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("lacks model.safetensors or pytorch_model.bin, sparse_linear.pt"),
            "{message}"
        );
    }

    #[test]
    fn an_unreachable_hub_is_named_with_the_way_out() {
        let cache = tempfile::tempdir().unwrap();
        let options = no_network(cache.path());
        let error = download("o/n", &options).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, Error::HubUnreachable { .. }), "{message}");
        for part in [options.endpoint.as_str(), "o/n", "HF_HUB_OFFLINE=1"] {
            assert!(message.contains(part), "{part}: {message}");
        }
    }

    #[test]
    fn revisions_cannot_leave_the_cache() {
        let cache = tempfile::tempdir().unwrap();
        for revision in ["", "../x", "a/../../b", "/etc"] {
            let options = HubOptions {
                revision: revision.into(),
                ..no_network(cache.path())
            };
            let error = download("o/n", &options).unwrap_err();
            assert!(error.is_invalid_input(), "{revision}: {error}");
        }
    }

    #[test]
    fn access_messages_say_what_to_do() {
        let message = |status, token_sent| {
            Error::HubAccess {
                repo: "o/n".into(),
                url: "http://h/api/models/o/n/revision/main".into(),
                status,
                token_sent,
            }
            .to_string()
        };
        for (status, token_sent) in [(401, false), (401, true), (403, true), (403, false)] {
            let text = message(status, token_sent);
            assert!(text.contains("HF_TOKEN"), "{text}");
            assert!(text.contains(&format!("answered {status}")), "{text}");
            assert!(text.contains("o/n"), "{text}");
        }
        assert!(message(403, true).contains("gated"));
    }
}
