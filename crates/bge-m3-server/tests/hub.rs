//! The model from the Hugging Face Hub, end to end: the server binary, started as a process
//! with its own `HF_HOME` and `HF_ENDPOINT`, downloads the tiny fixture models from a stand-in
//! for the Hub on loopback (`hub/standin.rs`), caches them, serves them exactly like the
//! directory-loaded model, and starts again from the cache with the stand-in gone. The
//! failures (offline without a cache, unknown repository, authentication, no network) are
//! checked through the process's exit status and log.

#![forbid(unsafe_code)]

#[path = "hub/process.rs"]
mod process;
#[path = "hub/standin.rs"]
mod standin;

use std::path::Path;
use std::time::Duration;

use bge_m3_core::{BgeM3, DeviceSpec, EncodeOptions, LoadOptions, Outputs};
use bge_m3_test_support::{assert_close, model_dir, ClosedPort, TOLERANCE};
use serde_json::{json, Value};

use process::{agent, failure, get, serving, start, start_with, Home, Server, START_TIMEOUT};
use standin::{StandIn, StandInRepo};

const TEXTS: [&str; 2] = ["What is BGE M3?", "Defination of BM25"];
const MAIN: &str = "1111111111111111111111111111111111111111";
const V1: &str = "2222222222222222222222222222222222222222";
const TOKEN: &str = "hf_test_token";
const MODEL_FILES: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "pytorch_model.bin",
    "colbert_linear.pt",
    "sparse_linear.pt",
];

/// A repository holding every file of a fixture model (tokenizer_config.json and
/// special_tokens_map.json included, which the server must not fetch) plus an ONNX export.
fn repo_of(id: &str, model: &str) -> StandInRepo {
    let mut repo = StandInRepo::new(id, &[("main", MAIN)]);
    for entry in std::fs::read_dir(model_dir(model)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        repo = repo.file(&name, std::fs::read(&path).unwrap());
    }
    repo.file("onnx/model.onnx", b"not needed".to_vec())
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "no {part:?} in:\n{text}");
    }
}

/// All three outputs of [`TEXTS`] from the server's `/embeddings`, sparse weights by id.
fn embeddings(server: &Server) -> Value {
    let body = json!({
        "input": TEXTS,
        "input_type": {"dense": true, "sparse": true, "colbert": true},
        "sparse_format": "id",
    });
    let mut response = agent()
        .post(format!("{}/embeddings", server.base))
        .send_json(&body)
        .unwrap();
    assert_eq!(response.status(), 200);
    response.body_mut().read_json().unwrap()
}

/// Checks the server's answer against bge-m3-core on the fixture directory, within 1e-5.
fn assert_serves(server: &Server, model: &str) {
    let options = LoadOptions::default()
        .with_device(DeviceSpec::Cpu)
        .with_dtype(None);
    let reference = BgeM3::load(model_dir(model), &options).unwrap();
    let expected = reference
        .encode(&TEXTS, &EncodeOptions::default().with_outputs(Outputs::ALL))
        .unwrap();
    let answer = embeddings(server);
    let floats = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    for (i, expected) in expected.iter().enumerate() {
        assert_close(
            &floats(&answer["dense_vecs"][i]),
            expected.dense.as_ref().unwrap(),
            TOLERANCE,
            format!("dense[{i}]"),
        );
        let rows = answer["colbert_vecs"][i].as_array().unwrap();
        let expected_rows = expected.colbert.as_ref().unwrap();
        assert_eq!(rows.len(), expected_rows.len());
        for (r, (row, expected_row)) in rows.iter().zip(expected_rows).enumerate() {
            assert_close(
                &floats(row),
                expected_row,
                TOLERANCE,
                format!("colbert[{i}][{r}]"),
            );
        }
        let sparse = answer["sparse_vecs"][i].as_object().unwrap();
        let expected_sparse = &expected.sparse.as_ref().unwrap().weights;
        assert_eq!(sparse.len(), expected_sparse.len());
        for (id, weight) in expected_sparse {
            let got = sparse[&id.to_string()].as_f64().unwrap() as f32;
            assert_close(&[got], &[*weight], TOLERANCE, format!("sparse[{i}][{id}]"));
        }
    }
}

/// The files under `snapshots/<commit>` of a cached repository, and `refs/<revision>`.
fn assert_cached(repo_dir: &Path, revision: &str, commit: &str, model: &str, files: &[&str]) {
    let reference = std::fs::read_to_string(repo_dir.join("refs").join(revision)).unwrap();
    assert_eq!(reference, commit);
    let snapshot = repo_dir.join("snapshots").join(commit);
    let mut cached: Vec<String> = std::fs::read_dir(&snapshot)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cached.sort();
    let mut expected: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    expected.sort();
    assert_eq!(cached, expected);
    for file in files {
        let link = snapshot.join(file);
        // huggingface_hub's layout: a relative link into ../../blobs.
        #[cfg(unix)]
        assert!(std::fs::read_link(&link)
            .unwrap()
            .starts_with("../../blobs"));
        assert_eq!(
            std::fs::read(&link).unwrap(),
            std::fs::read(model_dir(model).join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn downloads_into_the_cache_serves_and_starts_again_offline() {
    let hub = StandIn::start(vec![repo_of("test-org/tiny-pt", "tiny-pt")]);
    let home = Home::new();
    let endpoint = hub.endpoint();
    let vars = [
        ("MODEL_PATH", "test-org/tiny-pt"),
        ("HF_ENDPOINT", endpoint.as_str()),
    ];
    // The weights wait until /health has answered 503 "loading".
    hub.hold_blobs(true);
    let server = serving(start_with(&home, &vars, &[], |base| {
        let (status, body) = get(base, "/health").unwrap();
        assert_eq!(status, 503);
        assert_eq!(body["status"], "loading");
        hub.hold_blobs(false);
    }));
    assert_serves(&server, "tiny-pt");
    assert_contains(
        &server.log(),
        &[
            "downloading the model from the Hugging Face Hub",
            "downloaded",
        ],
    );

    // One listing, then each needed file and nothing else, all by the revision's name.
    let requests = hub.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths[0], "/api/models/test-org/tiny-pt/revision/main");
    let mut fetched: Vec<&str> = paths
        .iter()
        .filter_map(|p| p.strip_prefix("/test-org/tiny-pt/resolve/main/"))
        .collect();
    fetched.sort();
    fetched.dedup();
    let mut needed = MODEL_FILES.to_vec();
    needed.sort();
    assert_eq!(fetched, needed);
    assert!(requests.iter().all(|r| r.authorization.is_none()));
    let repo_dir = home.repo_dir("test-org/tiny-pt");
    assert_cached(&repo_dir, "main", MAIN, "tiny-pt", &MODEL_FILES);
    drop(server);

    // The Hub is gone: the cache serves, offline or not.
    drop(hub);
    let offline = [vars[0], vars[1], ("HF_HUB_OFFLINE", "1")];
    let server = serving(start(&home, &offline, &[]));
    assert_serves(&server, "tiny-pt");
    assert_contains(
        &server.log(),
        &["using the model in the Hugging Face cache"],
    );
    drop(server);
    let server = serving(start(&home, &vars, &[]));
    assert_serves(&server, "tiny-pt");
}

#[test]
fn safetensors_is_fetched_when_the_repository_has_it() {
    let pickle = std::fs::read(model_dir("tiny-pt").join("pytorch_model.bin")).unwrap();
    let repo = repo_of("test-org/tiny-st", "tiny-st").file("pytorch_model.bin", pickle);
    let hub = StandIn::start(vec![repo]);
    let home = Home::new();
    let endpoint = hub.endpoint();
    let server = serving(start(
        &home,
        &[("HF_ENDPOINT", &endpoint)],
        &["--model-path", "test-org/tiny-st"],
    ));
    assert_serves(&server, "tiny-st");
    let requests = hub.requests();
    assert!(requests
        .iter()
        .any(|r| r.path.ends_with("/resolve/main/model.safetensors")));
    assert!(!requests
        .iter()
        .any(|r| r.path.contains("pytorch_model.bin")));
    let files = MODEL_FILES.map(|f| f.replace("pytorch_model.bin", "model.safetensors"));
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    assert_cached(
        &home.repo_dir("test-org/tiny-st"),
        "main",
        MAIN,
        "tiny-st",
        &files,
    );
}

#[test]
fn the_revision_is_the_one_in_the_urls_and_the_cache() {
    let repo = StandInRepo {
        revisions: vec![("main".into(), MAIN.into()), ("v1.0".into(), V1.into())],
        ..repo_of("test-org/tiny-pt", "tiny-pt")
    };
    let hub = StandIn::start(vec![repo]);
    let home = Home::new();
    let endpoint = hub.endpoint();
    let vars = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("MODEL_PATH", "test-org/tiny-pt"),
    ];
    let server = serving(start(&home, &vars, &["--revision", "v1.0"]));
    drop(server);
    let requests = hub.requests();
    assert_eq!(
        requests[0].path,
        "/api/models/test-org/tiny-pt/revision/v1.0"
    );
    let resolved: Vec<_> = requests
        .iter()
        .filter(|r| r.path.contains("/resolve/"))
        .collect();
    assert!(!resolved.is_empty());
    assert!(
        resolved
            .iter()
            .all(|r| r.path.starts_with("/test-org/tiny-pt/resolve/v1.0/")),
        "{resolved:?}"
    );
    let repo_dir = home.repo_dir("test-org/tiny-pt");
    assert_cached(&repo_dir, "v1.0", V1, "tiny-pt", &MODEL_FILES);
    assert!(!repo_dir.join("refs/main").exists());

    // MODEL_REVISION is the same setting.
    drop(hub);
    let offline = [vars[0], vars[1], ("HF_HUB_OFFLINE", "1")];
    let with_env = [
        offline[0],
        offline[1],
        offline[2],
        ("MODEL_REVISION", "v1.0"),
    ];
    serving(start(&home, &with_env, &[]));
    let log = failure(start(&home, &offline, &[]), START_TIMEOUT);
    assert_contains(&log, &["revision `main`", "every file"]);
}

#[test]
fn offline_with_an_empty_cache_fails_fast_and_says_why() {
    let hub = StandIn::start(vec![repo_of("test-org/tiny-pt", "tiny-pt")]);
    let home = Home::new();
    let endpoint = hub.endpoint();
    let vars = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("MODEL_PATH", "test-org/tiny-pt"),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let log = failure(start(&home, &vars, &[]), Duration::from_secs(30));
    let cache = home.hf_home().join("hub");
    assert_contains(
        &log,
        &[
            "HF_HUB_OFFLINE is set",
            "lacks every file of test-org/tiny-pt at revision `main`",
            &cache.display().to_string(),
        ],
    );
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());
}

#[test]
fn an_unknown_repository_is_not_found() {
    let hub = StandIn::start(vec![repo_of("test-org/tiny-pt", "tiny-pt")]);
    let home = Home::new();
    let endpoint = hub.endpoint();
    let vars = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("MODEL_PATH", "test-org/no-such-model"),
    ];
    let log = failure(start(&home, &vars, &[]), START_TIMEOUT);
    let url = format!("{endpoint}/api/models/test-org/no-such-model/revision/main");
    assert_contains(
        &log,
        &[
            "test-org/no-such-model at revision `main` was not found on the Hugging Face Hub",
            &format!("{url} answered 404"),
            "check the repository id",
        ],
    );
}

#[test]
fn a_private_repository_needs_hf_token() {
    let hub = StandIn::start(vec![repo_of("test-org/private", "tiny-pt").private(TOKEN)]);
    let endpoint = hub.endpoint();
    let vars = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("MODEL_PATH", "test-org/private"),
    ];
    let url = format!("{endpoint}/api/models/test-org/private/revision/main");

    let log = failure(start(&Home::new(), &vars, &[]), START_TIMEOUT);
    assert_contains(
        &log,
        &[
            "test-org/private needs authentication",
            &format!("{url} answered 401"),
            "set HF_TOKEN",
        ],
    );

    let wrong = [vars[0], vars[1], ("HF_TOKEN", "hf_another_token")];
    let log = failure(start(&Home::new(), &wrong, &[]), START_TIMEOUT);
    assert_contains(
        &log,
        &[
            "refused the token access to test-org/private",
            &format!("{url} answered 403"),
            "HF_TOKEN",
        ],
    );
    assert!(
        !log.contains("hf_another_token"),
        "the token is logged:\n{log}"
    );
}

#[test]
fn a_private_repository_downloads_with_hf_token() {
    let hub = StandIn::start(vec![repo_of("test-org/private", "tiny-pt").private(TOKEN)]);
    let endpoint = hub.endpoint();
    let vars = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("MODEL_PATH", "test-org/private"),
        ("HF_TOKEN", TOKEN),
    ];
    let server = serving(start(&Home::new(), &vars, &[]));
    assert_serves(&server, "tiny-pt");
    let bearer = format!("Bearer {TOKEN}");
    let requests = hub.requests();
    let to_the_hub: Vec<_> = requests
        .iter()
        .filter(|r| !r.path.starts_with("/cdn/"))
        .collect();
    assert!(to_the_hub.len() > MODEL_FILES.len());
    assert!(
        to_the_hub
            .iter()
            .all(|r| r.authorization.as_deref() == Some(bearer.as_str())),
        "{to_the_hub:?}"
    );
    assert!(!server.log().contains(TOKEN));
}

#[test]
fn an_unreachable_hub_says_so() {
    // A port held bound and never listened on while the test runs: known to refuse.
    let closed = ClosedPort::new().unwrap();
    let refused = std::net::TcpStream::connect(closed.addr()).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let endpoint = closed.url();
    let vars = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("MODEL_PATH", "test-org/tiny-pt"),
    ];
    let log = failure(start(&Home::new(), &vars, &[]), START_TIMEOUT);
    assert_contains(
        &log,
        &[
            &format!("cannot reach the Hugging Face Hub at {endpoint} to fetch test-org/tiny-pt"),
            "HF_HUB_OFFLINE=1",
        ],
    );
}
