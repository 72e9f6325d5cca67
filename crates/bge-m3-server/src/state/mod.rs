//! What every handler shares: the served model's names, the request limits, and whether the
//! model has loaded (and then its dimensions and the queue in front of it).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bge_m3_core::ScoreWeights;
use tokio::sync::watch;

pub use self::api_key::ApiKey;
use crate::inference::memory::MemoryBudget;
use crate::inference::{Inference, ModelInfo};
use crate::{Error, Result};

mod api_key;

/// Limits on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most texts, token arrays, `/score` pairs or rerank documents in one request. Default:
    /// 8192.
    pub max_inputs: usize,
    /// Largest request body in bytes. Default: 16 MiB.
    pub max_body_bytes: usize,
    /// Most characters (Unicode scalar values) in one text. Default: 1,000,000.
    pub max_text_chars: usize,
    /// Bytes that the requests in flight may hold in all (see [`crate::inference::memory`]). Default:
    /// 1 GiB.
    pub memory_budget_bytes: u64,
    /// Longest time a request body may take to arrive after its head (408 past it); `None`:
    /// no limit. Default: 30 s.
    pub body_timeout: Option<Duration>,
    /// Longest time an answer may go without its client taking any of it (the connection is
    /// cut past it); `None`: no limit. Default: 30 s.
    pub write_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_inputs: 8192,
            max_body_bytes: 16 * 1024 * 1024,
            max_text_chars: 1_000_000,
            memory_budget_bytes: 1 << 30,
            body_timeout: Some(Duration::from_secs(30)),
            write_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// The loaded model, as the handlers reach it.
pub(crate) struct Ready {
    pub info: ModelInfo,
    pub inference: Inference,
}

/// Where the model stands.
pub(crate) enum Status<'a> {
    Loading,
    Ready(&'a ModelInfo),
    /// Loaded, but stopping: no new requests.
    Draining(&'a ModelInfo),
    Failed(&'a str),
}

/// The state shared by every handler of every HTTP worker (behind `web::Data`).
///
/// It starts out loading; [`AppState::set_ready`] or [`AppState::set_failed`] settles it once.
pub struct AppState {
    model_id: String,
    aliases: Vec<String>,
    limits: Limits,
    api_key: Option<ApiKey>,
    cors_allow_origins: Vec<String>,
    accept_any_model: bool,
    allow_token_ids: bool,
    rerank_weights: ScoreWeights,
    status: OnceLock<std::result::Result<Ready, String>>,
    draining: AtomicBool,
    budget: MemoryBudget,
    in_flight: Arc<AtomicUsize>,
    abort: watch::Sender<bool>,
    abandoned: AtomicU64,
    openapi: OnceLock<String>,
}

/// A request in flight, from its head to the last byte of its answer (see
/// [`AppState::enter`]).
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Resolves once [`AppState::abort_in_flight`] is called (never if the state is gone).
pub(crate) async fn aborted(signal: &mut watch::Receiver<bool>) {
    if signal.wait_for(|aborted| *aborted).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl AppState {
    /// A state whose model is still loading.
    pub fn new(model_id: impl Into<String>, aliases: Vec<String>, limits: Limits) -> Self {
        Self {
            model_id: model_id.into(),
            aliases,
            limits,
            api_key: None,
            cors_allow_origins: Vec::new(),
            accept_any_model: false,
            allow_token_ids: false,
            rerank_weights: ScoreWeights::default(),
            status: OnceLock::new(),
            draining: AtomicBool::new(false),
            budget: MemoryBudget::new(limits.memory_budget_bytes),
            in_flight: Arc::new(AtomicUsize::new(0)),
            abort: watch::Sender::new(false),
            abandoned: AtomicU64::new(0),
            openapi: OnceLock::new(),
        }
    }
    /// Answers every `model` name with the served model (`--accept-any-model`); off by
    /// default, when a name that is not the id or an alias is a 404.
    pub fn with_accept_any_model(mut self, accept: bool) -> Self {
        self.accept_any_model = accept;
        self
    }

    /// Accepts token-id arrays in `input` (`--allow-token-ids`); refused by default.
    pub fn with_allow_token_ids(mut self, allow: bool) -> Self {
        self.allow_token_ids = allow;
        self
    }

    /// The rerank routes' weights when a request gives none (`--rerank-weights`).
    pub fn with_rerank_weights(mut self, weights: ScoreWeights) -> Self {
        self.rerank_weights = weights;
        self
    }

    /// Requires `key` on every route but `/health` and the API docs (see `middleware::auth`).
    pub fn with_api_key(mut self, key: Option<ApiKey>) -> Self {
        self.api_key = key;
        self
    }

    /// Lets pages from these origins (`*`: any) call the API from a browser; none by default.
    pub fn with_cors_allow_origins(mut self, origins: Vec<String>) -> Self {
        self.cors_allow_origins = origins;
        self
    }

    /// The model has loaded: requests go to `inference` from now on. Only the first call of
    /// this or [`Self::set_failed`] counts.
    pub fn set_ready(&self, info: ModelInfo, inference: Inference) {
        let _ = self.status.set(Ok(Ready { info, inference }));
    }

    /// The model could not be loaded; `/health` says so until the process exits.
    pub fn set_failed(&self, reason: impl Into<String>) {
        let _ = self.status.set(Err(reason.into()));
    }

    /// The id the model is served under.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The other names accepted for it.
    pub fn aliases(&self) -> &[String] {
        &self.aliases
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The API key requests must bring, if one is configured.
    pub fn api_key(&self) -> Option<&ApiKey> {
        self.api_key.as_ref()
    }

    /// Whether token-id arrays are accepted in `input`.
    pub fn allows_token_ids(&self) -> bool {
        self.allow_token_ids
    }

    /// The rerank routes' default weights.
    pub fn rerank_weights(&self) -> ScoreWeights {
        self.rerank_weights
    }

    /// The origins allowed by CORS; empty when CORS is off.
    pub fn cors_allow_origins(&self) -> &[String] {
        &self.cors_allow_origins
    }

    /// The server is stopping: `/health` answers 503 and new requests are refused with 503
    /// from now on, while those already admitted are answered.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The memory budget of the requests in flight.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn enter(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.in_flight.clone())
    }

    /// Requests in flight: their head has arrived and the last byte of their answer has not
    /// left.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Answers every request still running 503 `shutting_down` at once (the end of a drain
    /// that took too long); their work is cancelled.
    pub fn abort_in_flight(&self) {
        self.abort.send_replace(true);
    }

    pub(crate) fn abort_signal(&self) -> watch::Receiver<bool> {
        self.abort.subscribe()
    }

    pub(crate) fn count_abandoned(&self) {
        self.abandoned.fetch_add(1, Ordering::SeqCst);
        crate::metrics::metrics().abandoned.inc();
    }

    /// The OpenAPI document with the served model's limits, once written.
    pub(crate) fn openapi_cache(&self) -> &OnceLock<String> {
        &self.openapi
    }

    /// Requests answered 503 by [`Self::abort_in_flight`].
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::SeqCst)
    }

    pub(crate) fn status(&self) -> Status<'_> {
        match self.status.get() {
            None => Status::Loading,
            Some(Ok(ready)) if self.is_draining() => Status::Draining(&ready.info),
            Some(Ok(ready)) => Status::Ready(&ready.info),
            Some(Err(reason)) => Status::Failed(reason),
        }
    }

    /// The loaded model, or the 503 that says why there is none.
    pub(crate) fn ready(&self) -> Result<&Ready> {
        match self.status.get() {
            None => Err(Error::ModelLoading),
            Some(Ok(_)) if self.is_draining() => Err(Error::ShuttingDown),
            Some(Ok(ready)) => Ok(ready),
            Some(Err(reason)) => Err(Error::ModelFailed(reason.clone())),
        }
    }

    /// Checks a requested model name: `None` (not sent) and every accepted name stand for the
    /// served model; anything else is a 404, unless any name is accepted.
    pub(crate) fn check_model(&self, requested: Option<&str>) -> Result<()> {
        match requested {
            None => Ok(()),
            Some(name) if self.serves(name) => Ok(()),
            Some(name) => Err(Error::ModelNotFound(name.to_string())),
        }
    }

    fn serves(&self, name: &str) -> bool {
        self.accept_any_model
            || name == self.model_id
            || self.aliases.iter().any(|alias| alias == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        let state = AppState::new("bge-m3", vec!["BAAI/bge-m3".into()], Limits::default());
        assert!(state.check_model(None).is_ok());
        assert!(state.check_model(Some("bge-m3")).is_ok());
        assert!(state.check_model(Some("BAAI/bge-m3")).is_ok());
        assert!(matches!(
            state.check_model(Some("text-embedding-3-small")),
            Err(Error::ModelNotFound(_))
        ));
        assert!(matches!(state.ready(), Err(Error::ModelLoading)));
        let any = AppState::new("bge-m3", vec![], Limits::default()).with_accept_any_model(true);
        assert!(any.check_model(Some("text-embedding-ada-002")).is_ok());
        state.set_failed("no such directory");
        assert!(matches!(state.ready(), Err(Error::ModelFailed(_))));
    }
}
