//! A stand-in for the Hugging Face Hub on 127.0.0.1 (port 0), with the endpoints and headers
//! that hf-hub's blocking client (`hf_hub::api::sync`, 0.5) uses:
//!
//! - `GET /api/models/{owner}/{name}/revision/{revision}`: `{"id", "sha", "siblings":
//!   [{"rfilename"}]}`;
//! - `GET /{owner}/{name}/resolve/{revision}/{file}`: small files answered directly with
//!   `ETag` and `X-Repo-Commit`; weights (`.bin`, `.safetensors`, `.pt`, as LFS files on the
//!   Hub) redirected with 302 to `/cdn/{etag}` with `X-Linked-Etag`, `X-Linked-Size` and
//!   `X-Repo-Commit`, as the Hub redirects to its CDN;
//! - `GET /cdn/{etag}`: the bytes, without authentication (the Hub's CDN URLs are signed);
//! - `Range: bytes=A-` and `bytes=A-B` answered with 206 and `Content-Range` (hf-hub reads a
//!   file's size from `bytes=0-0`).
//!
//! Errors as the Hub answers them: 404 with `X-Error-Code: RepoNotFound`, `RevisionNotFound`
//! or `EntryNotFound`; for a private repository 401 without a token and 403 with another one.
//! Every request is recorded.

use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;
use tokio::sync::watch;

/// One repository: its revisions (name, commit) and files.
#[derive(Clone)]
pub struct StandInRepo {
    pub id: String,
    pub revisions: Vec<(String, String)>,
    pub files: Vec<(String, Vec<u8>)>,
    /// The token a private repository requires.
    pub token: Option<String>,
}

impl StandInRepo {
    pub fn new(id: &str, revisions: &[(&str, &str)]) -> Self {
        Self {
            id: id.to_string(),
            revisions: revisions
                .iter()
                .map(|(name, commit)| (name.to_string(), commit.to_string()))
                .collect(),
            files: Vec::new(),
            token: None,
        }
    }

    pub fn file(mut self, name: &str, bytes: Vec<u8>) -> Self {
        self.files.push((name.to_string(), bytes));
        self
    }

    pub fn private(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }
}

/// A request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub path: String,
    pub authorization: Option<String>,
}

struct State {
    base: String,
    repos: Vec<StandInRepo>,
    requests: Mutex<Vec<Logged>>,
    /// While `true`, `/cdn/` requests wait (woken when it changes, not polled).
    hold: watch::Sender<bool>,
}

/// The running stand-in; stopped (its port closed) when dropped.
pub struct StandIn {
    state: Arc<State>,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    pub fn start(repos: Vec<StandInRepo>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let state = Arc::new(State {
            base: format!("http://{}", listener.local_addr().unwrap()),
            repos,
            requests: Mutex::new(Vec::new()),
            hold: watch::Sender::new(false),
        });
        let (handle_tx, handle_rx) = mpsc::channel();
        let thread = {
            let state = web::Data::from(state.clone());
            std::thread::spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(state.clone())
                            .default_service(web::to(answer))
                    })
                    .workers(2)
                    .disable_signals()
                    .listen(listener)
                    .unwrap()
                    .run();
                    handle_tx.send(server.handle()).unwrap();
                    server.await.unwrap();
                })
            })
        };
        Self {
            state,
            handle: handle_rx.recv().unwrap(),
            thread: Some(thread),
        }
    }

    /// The URL to give as `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.state.base.clone()
    }

    /// Makes the weights' downloads wait (or go on).
    pub fn hold_blobs(&self, hold: bool) {
        self.state.hold.send_replace(hold);
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state.requests.lock().unwrap().clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.hold_blobs(false);
        actix_web::rt::System::new().block_on(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn answer(request: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let path = request.path().to_string();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    state.requests.lock().unwrap().push(Logged {
        path: path.clone(),
        authorization: authorization.clone(),
    });

    if let Some(etag) = path.strip_prefix("/cdn/") {
        // Never errs: `state` holds the sender.
        let _ = state.hold.subscribe().wait_for(|held| !held).await;
        let blob = state
            .repos
            .iter()
            .flat_map(|repo| &repo.files)
            .find(|(_, bytes)| etag_of(bytes, true) == etag);
        return match blob {
            Some((_, bytes)) => ranged(&request, bytes, HttpResponse::Ok()),
            None => HttpResponse::NotFound().finish(),
        };
    }
    let (api, rest) = match path.strip_prefix("/api/models/") {
        Some(rest) => (true, rest),
        None => (false, path.trim_start_matches('/')),
    };
    // owner / name / ("revision" | "resolve") / revision [/ file]
    let parts: Vec<&str> = rest.splitn(5, '/').collect();
    let expected = if api { "revision" } else { "resolve" };
    if parts.len() < 4 || parts[2] != expected {
        return error(404, "EntryNotFound", "no such route");
    }
    let id = format!("{}/{}", parts[0], parts[1]);
    let Some(repo) = state.repos.iter().find(|r| r.id == id) else {
        return error(404, "RepoNotFound", "Repository not found");
    };
    if let Some(token) = &repo.token {
        match authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
        {
            None => return error(401, "GatedRepo", "Authentication required"),
            Some(sent) if sent != token => return error(403, "GatedRepo", "Access denied"),
            Some(_) => {}
        }
    }
    let revision = parts[3];
    let Some((_, commit)) = repo
        .revisions
        .iter()
        .find(|(name, commit)| name == revision || commit == revision)
    else {
        return error(404, "RevisionNotFound", "Invalid rev id");
    };
    if api {
        let siblings: Vec<_> = repo
            .files
            .iter()
            .map(|(name, _)| json!({"rfilename": name}))
            .collect();
        return HttpResponse::Ok().json(json!({
            "id": repo.id,
            "modelId": repo.id,
            "sha": commit,
            "private": repo.token.is_some(),
            "siblings": siblings,
        }));
    }
    let Some(file) = parts.get(4) else {
        return error(404, "EntryNotFound", "no file");
    };
    let Some((name, bytes)) = repo.files.iter().find(|(name, _)| name == file) else {
        return error(404, "EntryNotFound", "Entry not found");
    };
    let lfs = [".bin", ".safetensors", ".pt"]
        .iter()
        .any(|ext| name.ends_with(ext));
    if lfs {
        let etag = etag_of(bytes, true);
        return HttpResponse::Found()
            .insert_header((header::LOCATION, format!("{}/cdn/{etag}", state.base)))
            .insert_header(("X-Linked-Etag", format!("\"{etag}\"")))
            .insert_header(("X-Linked-Size", bytes.len().to_string()))
            .insert_header(("X-Repo-Commit", commit.as_str()))
            .insert_header((header::ETAG, format!("\"{}\"", etag_of(bytes, false))))
            .finish();
    }
    let mut response = HttpResponse::Ok();
    response
        .insert_header((header::ETAG, format!("\"{}\"", etag_of(bytes, false))))
        .insert_header(("X-Repo-Commit", commit.as_str()));
    ranged(&request, bytes, response)
}

fn error(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .insert_header(("X-Error-Code", code))
        .insert_header(("X-Error-Message", message))
        .json(json!({"error": message}))
}

/// `bytes`, or the part a `Range: bytes=A-[B]` header asks for, with 206.
fn ranged(
    request: &HttpRequest,
    bytes: &[u8],
    mut response: actix_web::HttpResponseBuilder,
) -> HttpResponse {
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'));
    let Some((start, end)) = range else {
        return response.body(bytes.to_vec());
    };
    let total = bytes.len();
    let start: usize = start.parse().unwrap_or(0);
    let end = end
        .parse::<usize>()
        .map_or(total.saturating_sub(1), |e| e.min(total.saturating_sub(1)));
    if start >= total || start > end {
        return HttpResponse::RangeNotSatisfiable()
            .insert_header((header::CONTENT_RANGE, format!("bytes */{total}")))
            .finish();
    }
    response
        .status(actix_web::http::StatusCode::PARTIAL_CONTENT)
        .insert_header((
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{total}"),
        ))
        .body(bytes[start..=end].to_vec())
}

/// A stable name for `bytes`: 64 hex digits for weights (the Hub's sha256), 40 for other
/// files (the Hub's git blob id). FNV-1a with a few seeds: unique enough for a test.
fn etag_of(bytes: &[u8], lfs: bool) -> String {
    let words = if lfs { 4 } else { 3 };
    let hex: String = (0..words)
        .map(|seed: u64| {
            let mut hash = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for &b in bytes {
                hash ^= u64::from(b);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
            format!("{hash:016x}")
        })
        .collect();
    hex[..if lfs { 64 } else { 40 }].to_string()
}
