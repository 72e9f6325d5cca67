//! One download from the Hub with hf-hub's blocking client, and its errors in terms of what
//! the user can do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::api::RepoInfo;
use hf_hub::{Cache, Repo};

use super::progress::Reporter;
use super::HubOptions;
use crate::weights::{
    ModelFiles, COLBERT_FILE, CONFIG_FILE, PYTORCH_FILE, SAFETENSORS_FILE, SPARSE_FILE,
    TOKENIZER_FILE,
};
use crate::{Error, Result};

/// Longest wait for the repository's metadata. (hf-hub sets no timeout on file downloads,
/// which may rightly take long.)
const API_TIMEOUT: Duration = Duration::from_secs(60);

/// One download of a repository at a revision.
pub(super) struct Fetch<'a> {
    repo_id: &'a str,
    repo: Repo,
    repo_dir: PathBuf,
    options: &'a HubOptions,
    api: ApiRepo,
}

impl<'a> Fetch<'a> {
    pub(super) fn new(
        repo_id: &'a str,
        repo: Repo,
        repo_dir: PathBuf,
        options: &'a HubOptions,
    ) -> Result<Self> {
        let api = ApiBuilder::from_cache(Cache::new(options.cache_dir.clone()))
            .with_endpoint(options.endpoint.clone())
            .with_token(options.token.clone())
            .with_progress(false)
            .with_user_agent("bge-m3-core", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| Error::Hub {
                repo: repo_id.to_string(),
                what: "the HTTP client".to_string(),
                message: "cannot set it up".to_string(),
                source: Some(Box::new(e)),
            })?
            .repo(repo.clone());
        Ok(Self {
            repo_id,
            repo,
            repo_dir,
            options,
            api,
        })
    }

    pub(super) fn run(self) -> Result<PathBuf> {
        let info = self.info()?;
        let files = self.choose_files(&info)?;
        let snapshot = self.repo_dir.join("snapshots").join(&info.sha);
        let missing: Vec<&str> = files
            .into_iter()
            .filter(|file| !snapshot.join(file).is_file())
            .collect();
        tracing::info!(
            repo = self.repo_id,
            revision = self.repo.revision(),
            commit = %info.sha,
            files = ?missing,
            endpoint = %self.options.endpoint,
            cache = %self.options.cache_dir.display(),
            "downloading the model from the Hugging Face Hub"
        );
        for file in missing {
            self.download(file, &snapshot)?;
        }
        if self.repo.revision() != info.sha {
            // hf-hub writes the ref after each file; write it also when nothing was missing.
            let path = self.repo_dir.join("refs").join(self.repo.revision());
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, &info.sha));
            written.map_err(|e| self.io_error(e, &path, "the revision's ref"))?;
        }
        ModelFiles::locate(&snapshot)?;
        Ok(snapshot)
    }

    /// `GET /api/models/{repo}/revision/{revision}`: the commit and the file list.
    fn info(&self) -> Result<RepoInfo> {
        let url = format!("{}/api/{}", self.options.endpoint, self.repo.api_url());
        let what = "the repository's file list";
        let mut response = self
            .api
            .info_request()
            .config()
            .http_status_as_error(false)
            .timeout_global(Some(API_TIMEOUT))
            .build()
            .call()
            .map_err(|e| self.request_error(e, what, &url))?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return Err(self.request_error(ureq::Error::StatusCode(status), what, &url));
        }
        response
            .body_mut()
            .read_json::<RepoInfo>()
            .map_err(|e| Error::Hub {
                repo: self.repo_id.to_string(),
                what: what.to_string(),
                message: format!("unexpected answer from {url}"),
                source: Some(Box::new(e)),
            })
    }

    /// The files to fetch: safetensors over the pickle, as [`ModelFiles::locate`] prefers.
    fn choose_files(&self, info: &RepoInfo) -> Result<Vec<&'static str>> {
        let has = |file: &str| info.siblings.iter().any(|s| s.rfilename == file);
        let not_in_repo = |what: &str| Error::Hub {
            repo: self.repo_id.to_string(),
            what: what.to_string(),
            message: format!(
                "the repository has no such file at commit {} (the model needs the layout of \
                 BAAI/bge-m3)",
                info.sha
            ),
            source: None,
        };
        let encoder = if has(SAFETENSORS_FILE) {
            SAFETENSORS_FILE
        } else if has(PYTORCH_FILE) {
            PYTORCH_FILE
        } else {
            return Err(not_in_repo(&format!(
                "{SAFETENSORS_FILE} or {PYTORCH_FILE}"
            )));
        };
        let files = vec![
            CONFIG_FILE,
            TOKENIZER_FILE,
            encoder,
            COLBERT_FILE,
            SPARSE_FILE,
        ];
        match files.iter().find(|file| !has(file)) {
            Some(file) => Err(not_in_repo(file)),
            None => Ok(files),
        }
    }

    /// Downloads `file` into the blobs and links it from `snapshot`.
    fn download(&self, file: &str, snapshot: &Path) -> Result<()> {
        let url = self.api.url(file);
        let start = Instant::now();
        tracing::info!(file, %url, "downloading");
        let progress = self.options.progress.as_ref().map(|p| p.file(file));
        let path = self
            .api
            .download_with_progress(file, Reporter(progress))
            .map_err(|e| self.download_error(e, file, &url))?;
        if path.parent() != Some(snapshot) {
            return Err(Error::Hub {
                repo: self.repo_id.to_string(),
                what: file.to_string(),
                message: format!(
                    "the revision `{}` moved to another commit during the download ({} instead \
                     of {}); start again",
                    self.repo.revision(),
                    path.parent()
                        .and_then(Path::file_name)
                        .unwrap_or_default()
                        .to_string_lossy(),
                    snapshot.file_name().unwrap_or_default().to_string_lossy(),
                ),
                source: None,
            });
        }
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        tracing::info!(
            file,
            bytes,
            seconds = start.elapsed().as_secs_f32(),
            "downloaded"
        );
        Ok(())
    }

    fn download_error(&self, error: ApiError, file: &str, url: &str) -> Error {
        match error {
            ApiError::RequestError(e) => self.request_error(*e, file, url),
            ApiError::TooManyRetries(e) => self.download_error(*e, file, url),
            ApiError::IoError(e) => self.io_error(e, &self.repo_dir, file),
            ApiError::LockAcquisition(lock) => Error::Hub {
                repo: self.repo_id.to_string(),
                what: file.to_string(),
                message: format!(
                    "another process is downloading it (it holds {}); wait for it, or delete \
                     the lock file if no download is running",
                    lock.display()
                ),
                source: None,
            },
            other => Error::Hub {
                repo: self.repo_id.to_string(),
                what: file.to_string(),
                message: format!("GET {url} failed"),
                source: Some(Box::new(other)),
            },
        }
    }

    /// An I/O error while writing into the cache (or reading the body into it).
    fn io_error(&self, error: std::io::Error, path: &Path, what: &str) -> Error {
        use std::io::ErrorKind;
        if matches!(
            error.kind(),
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded
        ) {
            return Error::DiskFull {
                path: path.to_path_buf(),
                source: error,
            };
        }
        Error::Hub {
            repo: self.repo_id.to_string(),
            what: what.to_string(),
            message: format!(
                "I/O error in the cache {}",
                self.options.cache_dir.display()
            ),
            source: Some(Box::new(error)),
        }
    }

    fn request_error(&self, error: ureq::Error, what: &str, url: &str) -> Error {
        let repo = self.repo_id.to_string();
        match error {
            ureq::Error::StatusCode(404) => Error::HubNotFound {
                repo,
                revision: self.repo.revision().to_string(),
                url: url.to_string(),
            },
            ureq::Error::StatusCode(status @ (401 | 403)) => Error::HubAccess {
                repo,
                url: url.to_string(),
                status,
                token_sent: self.options.token.is_some(),
            },
            ureq::Error::StatusCode(status) => Error::Hub {
                repo,
                what: what.to_string(),
                message: format!("{url} answered {status}"),
                source: None,
            },
            e @ (ureq::Error::Io(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectProxyFailed(_)
            | ureq::Error::Tls(_)) => Error::HubUnreachable {
                repo,
                endpoint: self.options.endpoint.clone(),
                source: Box::new(e),
            },
            e => Error::Hub {
                repo,
                what: what.to_string(),
                message: format!("GET {url} failed"),
                source: Some(Box::new(e)),
            },
        }
    }
}
