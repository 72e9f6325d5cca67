//! The HTTP layer's hardening: the API key, CORS, request ids, the limit on characters per
//! text, the OpenAPI document and its docs page, and the log format. The shared server runs
//! with none of these set; a second server here has an API key, one CORS origin and a small
//! character limit.

use std::sync::OnceLock;
use std::time::Duration;

use bge_m3_test_support::Launch;

use serde_json::{json, Value};

use crate::common::*;

const KEY: &str = "sk-test-3f9a1c0e7b";
const ORIGIN: &str = "https://app.example.com";
const MAX_TEXT_CHARS: usize = 64;

/// The server with an API key, CORS for [`ORIGIN`] and at most [`MAX_TEXT_CHARS`] per text.
fn secured() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut config = config(tiny_pt());
        config.api_key = Some(KEY.parse().unwrap());
        config.cors_allow_origins = vec![ORIGIN.into()];
        config.max_text_chars = MAX_TEXT_CHARS;
        start(config)
    })
}

fn call(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    let body = body.map(|b| serde_json::to_vec(b).unwrap());
    let mut headers = headers.to_vec();
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    try_send_with_headers(base, method, path, &headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A request of every kind of route that needs the key, and what it answers with the key.
fn protected_routes() -> Vec<(&'static str, &'static str, Option<Value>, u16)> {
    vec![
        ("GET", "/", None, 200),
        ("POST", "/v1/embeddings", Some(json!({"input": "a"})), 200),
        (
            "POST",
            "/embeddings",
            Some(json!({"input": ["a", "b"]})),
            200,
        ),
        (
            "POST",
            "/score",
            Some(json!({"sentences_1": ["a"], "sentences_2": ["b"]})),
            200,
        ),
        ("GET", "/models", None, 200),
        ("GET", "/models/BAAI/bge-m3", None, 200),
        ("GET", "/v1/models", None, 200),
        ("GET", "/v1/models/bge-m3", None, 200),
        ("GET", "/metrics", None, 200),
        ("POST", "/", Some(json!({"inputs": "a"})), 200),
        (
            "POST",
            "/v1/rerank",
            Some(json!({"query": "q", "documents": ["a"]})),
            200,
        ),
        // Unknown routes too: without the key nothing tells which paths exist.
        ("GET", "/no-such-route", None, 404),
    ]
}

fn assert_401(reply: &Reply, message: &str, challenge: &str, what: &str) {
    assert_eq!(reply.status, 401, "{what}: {:?}", reply.body);
    assert_eq!(
        reply.body["error"]["type"], "invalid_request_error",
        "{what}"
    );
    assert_eq!(reply.body["error"]["code"], "invalid_api_key", "{what}");
    assert!(reply.body["error"]["param"].is_null(), "{what}");
    let text = reply.body["error"]["message"].as_str().unwrap();
    assert!(text.contains(message), "{what}: {text}");
    assert!(!text.contains(KEY), "{what}: {text}");
    assert_eq!(
        reply.body["detail"], text,
        "{what}: Jina's clients read `detail`"
    );
    assert_eq!(reply.header("www-authenticate"), Some(challenge), "{what}");
}

#[test]
fn every_route_but_health_and_the_docs_needs_the_key() {
    let base = secured();
    let bearer = format!("Bearer {KEY}");
    for (method, path, body, status) in protected_routes() {
        let what = format!("{method} {path}");
        let body = body.as_ref();
        let reply = call(base, method, path, &[], body);
        assert_401(&reply, "no API key was sent", "Bearer", &what);
        let reply = call(
            base,
            method,
            path,
            &[("authorization", "Bearer sk-wrong")],
            body,
        );
        assert_401(
            &reply,
            "not this server's API key",
            r#"Bearer error="invalid_token""#,
            &what,
        );
        // A key one character short or long is as wrong.
        let short = format!("Bearer {}", &KEY[..KEY.len() - 1]);
        let reply = call(base, method, path, &[("authorization", &short)], body);
        assert_eq!(reply.status, 401, "{what}");
        let reply = call(
            base,
            method,
            path,
            &[("authorization", "Basic c2stdGVzdA==")],
            body,
        );
        assert_401(&reply, "not `Bearer YOUR_KEY`", "Bearer", &what);

        let reply = call(base, method, path, &[("authorization", &bearer)], body);
        assert_eq!(reply.status, status, "{what}: {:?}", reply.body);
        // The scheme is case-insensitive.
        let lower = format!("bearer {KEY}");
        let reply = call(base, method, path, &[("authorization", &lower)], body);
        assert_eq!(reply.status, status, "{what}: {:?}", reply.body);
    }
    for path in ["/health", "/openapi.json", "/docs", "/docs/swagger-ui.css"] {
        let reply = call(base, "GET", path, &[], None);
        assert_eq!(reply.status, 200, "GET {path} without a key");
        let reply = call(
            base,
            "GET",
            path,
            &[("authorization", "Bearer sk-wrong")],
            None,
        );
        assert_eq!(reply.status, 200, "GET {path} with a wrong key");
    }
    // The shared server has no key: nothing asks for one.
    assert_eq!(get("/v1/models").status, 200);
}

#[test]
fn cors_is_off_by_default() {
    for (method, headers) in [
        ("GET", vec![("origin", ORIGIN)]),
        (
            "OPTIONS",
            vec![
                ("origin", ORIGIN),
                ("access-control-request-method", "POST"),
            ],
        ),
    ] {
        let reply = call(base(), method, "/v1/models", &headers, None);
        let cors: Vec<_> = reply
            .headers
            .iter()
            .filter(|(name, _)| name.starts_with("access-control-"))
            .collect();
        assert!(cors.is_empty(), "{method}: {cors:?}");
    }
}

#[test]
fn cors_allows_the_configured_origin_only() {
    let base = secured();
    let preflight = |origin: &str| {
        call(
            base,
            "OPTIONS",
            "/v1/embeddings",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization, content-type, x-stainless-os",
                ),
            ],
            None,
        )
    };
    // A preflight carries no Authorization: it is answered without the key.
    let reply = preflight(ORIGIN);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("access-control-allow-origin"), Some(ORIGIN));
    let methods = reply.header("access-control-allow-methods").unwrap();
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let allowed = reply.header("access-control-allow-headers").unwrap();
    assert!(allowed.contains("authorization"), "{allowed}");
    assert!(allowed.contains("content-type"), "{allowed}");
    assert!(reply.header("x-request-id").is_some());

    let reply = preflight("https://evil.example.com");
    assert_error(&reply, 400, "cors_refused", None);
    assert!(reply.header("access-control-allow-origin").is_none());
    assert!(reply.header("x-request-id").is_some());

    // The actual request: the page may read the answer and its request id.
    let bearer = format!("Bearer {KEY}");
    let body = json!({"input": "a"});
    let reply = call(
        base,
        "POST",
        "/v1/embeddings",
        &[("origin", ORIGIN), ("authorization", &bearer)],
        Some(&body),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("access-control-allow-origin"), Some(ORIGIN));
    let exposed = reply.header("access-control-expose-headers").unwrap();
    for header in ["x-request-id", "x-total-time", "retry-after"] {
        assert!(exposed.contains(header), "{header} not in {exposed}");
    }
    // ... and a 401, so that it can tell the user why.
    let reply = call(base, "GET", "/v1/models", &[("origin", ORIGIN)], None);
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("access-control-allow-origin"), Some(ORIGIN));
    // Another origin's page gets no CORS headers, so its browser withholds the answer.
    let reply = call(
        base,
        "GET",
        "/v1/models",
        &[
            ("origin", "https://evil.example.com"),
            ("authorization", &bearer),
        ],
        None,
    );
    assert_eq!(reply.status, 200);
    assert!(reply.header("access-control-allow-origin").is_none());
}

fn is_uuid(id: &str) -> bool {
    id.len() == 36
        && id.chars().enumerate().all(|(i, c)| {
            matches!(i, 8 | 13 | 18 | 23) == (c == '-') && (c == '-' || c.is_ascii_hexdigit())
        })
}

#[test]
fn request_ids_are_echoed_or_generated_on_every_response() {
    let id = |headers: &[(&str, &str)], method: &str, path: &str, body: Option<&Value>| {
        let reply = call(base(), method, path, headers, body);
        reply
            .header("x-request-id")
            .unwrap_or_else(|| panic!("{method} {path}: no x-request-id ({})", reply.status))
            .to_string()
    };
    assert_eq!(
        id(&[("x-request-id", "trace-7.abc")], "GET", "/health", None),
        "trace-7.abc"
    );
    let max = "r".repeat(128);
    assert_eq!(id(&[("x-request-id", &max)], "GET", "/health", None), max);

    let (a, b) = (
        id(&[], "GET", "/health", None),
        id(&[], "GET", "/health", None),
    );
    assert!(is_uuid(&a) && is_uuid(&b) && a != b, "{a} {b}");
    let too_long = "r".repeat(129);
    for insane in ["has space", too_long.as_str()] {
        let got = id(&[("x-request-id", insane)], "GET", "/health", None);
        assert!(is_uuid(&got), "{insane:?} -> {got}");
    }

    // Errors too: 400, 404, 405, 413.
    let long = json!({"input": vec!["a"; MAX_INPUTS + 1]});
    for (method, path, body) in [
        ("POST", "/v1/embeddings", Some(json!({"input": 5}))),
        ("GET", "/no-such-route", None),
        ("GET", "/v1/embeddings", None),
        ("POST", "/embeddings", Some(long)),
    ] {
        let given = format!("err-{}", path.len());
        let got = id(&[("x-request-id", &given)], method, path, body.as_ref());
        assert_eq!(got, given, "{method} {path}");
        assert!(
            is_uuid(&id(&[], method, path, body.as_ref())),
            "{method} {path}"
        );
    }
    // And a 401.
    let reply = call(
        secured(),
        "GET",
        "/",
        &[("x-request-id", "who-knocks")],
        None,
    );
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("x-request-id"), Some("who-knocks"));
}

#[test]
fn a_text_over_max_text_chars_is_413_naming_it() {
    let base = secured();
    let bearer = format!("Bearer {KEY}");
    let auth = [("authorization", bearer.as_str())];
    let longest = "é".repeat(MAX_TEXT_CHARS);
    let over = "x".repeat(MAX_TEXT_CHARS + 1);
    for path in ["/v1/embeddings", "/embeddings"] {
        let body = json!({"input": ["a", longest]});
        let reply = call(base, "POST", path, &auth, Some(&body));
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);

        let body = json!({"input": ["a", over]});
        let reply = call(base, "POST", path, &auth, Some(&body));
        assert_error(&reply, 413, "text_too_long", Some("input"));
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("`input[1]`"), "{message}");
        assert!(message.contains(&MAX_TEXT_CHARS.to_string()), "{message}");

        let body = json!({"input": over});
        let reply = call(base, "POST", path, &auth, Some(&body));
        assert_error(&reply, 413, "text_too_long", Some("input"));
        assert!(reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("`input` has"));
    }
    let body = json!({"sentences_1": ["a", "b"], "sentences_2": [over, "b"]});
    let reply = call(base, "POST", "/score", &auth, Some(&body));
    assert_error(&reply, 413, "text_too_long", Some("sentences_2"));
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`sentences_2[0]`"), "{message}");
    assert!(message.contains(&MAX_TEXT_CHARS.to_string()), "{message}");
}

#[test]
fn openapi_describes_every_route_and_the_request_bodies() {
    let reply = get("/openapi.json");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/json");
    let doc = &reply.body;
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3."), "{version}");
    for route in get("/").body["routes"].as_array().unwrap() {
        let (method, path) = route.as_str().unwrap().split_once(' ').unwrap();
        let operation = &doc["paths"][path][method.to_ascii_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not described");
    }
    let schemas = &doc["components"]["schemas"];
    for name in ["EmbeddingsRequest", "ScoreRequest", "Input", "Error"] {
        assert!(schemas[name].is_object(), "no schema {name}");
    }
    let request = &doc["paths"]["/v1/embeddings"]["post"]["requestBody"];
    assert_eq!(
        request["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/EmbeddingsRequest"
    );
    let properties = &schemas["EmbeddingsRequest"]["properties"];
    for field in [
        "input",
        "model",
        "input_type",
        "encoding_format",
        "dimensions",
        "sparse_format",
        "max_length",
        "batch_size",
    ] {
        assert!(properties[field].is_object(), "EmbeddingsRequest.{field}");
    }
    assert_eq!(schemas["EmbeddingsRequest"]["required"], json!(["input"]));
    let errors = &doc["paths"]["/score"]["post"]["responses"];
    for status in ["400", "401", "413", "429", "503"] {
        assert_eq!(
            errors[status]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error",
            "/score {status}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
}

#[test]
fn the_docs_page_and_its_assets_are_served_from_the_binary() {
    let page = get("/docs");
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(page.text.contains("SwaggerUIBundle"), "{}", page.text);
    assert!(
        !page.text.contains("//"),
        "the page links outside itself:\n{}",
        page.text
    );
    // Every script, style and icon it loads is here.
    let links: Vec<&str> = ["src=\"", "href=\""]
        .iter()
        .flat_map(|attr| page.text.split(attr).skip(1))
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert!(links.len() >= 3, "{links:?}");
    for link in links {
        assert!(link.starts_with("docs/"), "{link}");
        let reply = get(&format!("/{link}"));
        assert_eq!(reply.status, 200, "{link}");
        assert!(!reply.text.is_empty(), "{link}");
    }
    let script = get("/docs/swagger-ui-bundle.js");
    assert!(
        script.content_type.contains("javascript"),
        "{}",
        script.content_type
    );
    let style = get("/docs/swagger-ui.css");
    assert_eq!(style.content_type, "text/css");
    // `/docs/` leads to the page; unknown files and other methods answer as everywhere.
    let reply = get("/docs/");
    assert_eq!(reply.status, 200);
    assert!(reply.text.contains("SwaggerUIBundle"));
    assert_error(&get("/docs/no-such-file.js"), 404, "not_found", None);
    assert_error(
        &send("POST", "/docs", None, None),
        405,
        "method_not_allowed",
        None,
    );
    assert_error(
        &send("POST", "/openapi.json", None, None),
        405,
        "method_not_allowed",
        None,
    );
}

/// The binary with `--log-format json` and an API key: every line is JSON, the lines of a
/// request carry its id, and neither the key nor a wrong one appears anywhere.
#[test]
fn json_logs_carry_request_ids_and_never_the_key() {
    let wrong = "sk-wrong-5d1e";
    let server = Launch::new(env!("CARGO_BIN_EXE_bge-m3-server"))
        .arg("--model-path")
        .arg(tiny_pt())
        .args(["--host", "127.0.0.1", "--port", "0", "--device", "cpu"])
        .args(["--log-format", "json"])
        .env("API_KEY", KEY)
        .env("RUST_LOG", "trace")
        .spawn()
        .unwrap();
    let addr = server
        .wait_for_listening(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{addr}");
    wait_for_health(&base, 200);

    let bearer = format!("Bearer {KEY}");
    let body = json!({"input": "Hello world"});
    let reply = call(
        &base,
        "POST",
        "/v1/embeddings",
        &[("authorization", &bearer), ("x-request-id", "log-test-1")],
        Some(&body),
    );
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let wrong_bearer = format!("Bearer {wrong}");
    let reply = call(
        &base,
        "GET",
        "/v1/models",
        &[
            ("authorization", &wrong_bearer),
            ("x-request-id", "log-test-2"),
        ],
        None,
    );
    assert_eq!(reply.status, 401);

    // The request lines are written once the answers are sent: wait for both.
    for id in ["log-test-1", "log-test-2"] {
        let logged = server.wait_for_line(Duration::from_secs(10), |l| {
            l.contains(id) && l.contains("latency_ms")
        });
        assert!(
            logged.is_ok(),
            "no request line for {id} ({logged:?}):\n{}",
            server.log_text()
        );
    }
    // Killed, its whole log read.
    let log = server.finish(Duration::ZERO).stderr;
    let lines: Vec<&str> = log.lines().collect();

    for line in &lines {
        let json: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(
            json["level"].is_string() && json["timestamp"].is_string(),
            "{line}"
        );
        assert!(!line.contains(KEY), "the key is in the log: {line}");
        assert!(
            !line.contains(wrong),
            "a presented key is in the log: {line}"
        );
    }
    for (id, path, status) in [
        ("log-test-1", "/v1/embeddings", 200),
        ("log-test-2", "/v1/models", 401),
    ] {
        let request_line = lines
            .iter()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .find(|json| {
                json["target"] == "bge_m3_server::request" && json["span"]["request_id"] == id
            })
            .unwrap_or_else(|| panic!("no request line for {id}:\n{}", lines.join("\n")));
        assert_eq!(request_line["path"], path);
        assert_eq!(request_line["status"], status);
    }
}
