//! The HTTP layer: HEAD, encoded bodies, what the OpenAPI document promises, `Expect:
//! 100-continue`, and requests the parser refuses.

use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};

use super::{heavy, json_bytes};
use crate::common::*;
use crate::process::{closed_within, Server};

// 8. The smaller issues.

#[test]
fn head_requests_are_answered_like_get_without_a_body() {
    for path in ["/health", "/", "/v1/models", "/openapi.json"] {
        let get = get(path);
        let head = send("HEAD", path, None, None);
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.text.is_empty(), "HEAD {path}: {}", head.text);
        assert_eq!(head.content_type, get.content_type, "HEAD {path}");
    }
}

#[test]
fn a_compressed_body_is_415() {
    let reply = try_send_with_headers(
        base(),
        "POST",
        "/embeddings",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        Some(vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0]),
    )
    .unwrap();
    assert_error(&reply, 415, "unsupported_content_encoding", None);
    // `identity` is no encoding at all.
    let reply = try_send_with_headers(
        base(),
        "POST",
        "/embeddings",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "identity"),
        ],
        Some(json_bytes(&json!({"input": "a"}))),
    )
    .unwrap();
    assert_eq!(reply.status, 200);
}

/// What the OpenAPI document declares is what the server takes (found by schemathesis).
#[test]
fn integral_numbers_and_null_flags_are_accepted_as_documented() {
    let whole = post_ok(
        "/embeddings",
        json!({"input": "a b", "max_length": 512.0, "batch_size": 2.0, "dimensions": 8.0,
               "input_type": {"dense": null, "sparse": true, "colbert": null}}),
    );
    assert_eq!(whole["dense_vecs"][0].as_array().unwrap().len(), 8);
    assert!(whole.get("colbert_vecs").is_none());
    post_ok(
        "/v1/embeddings",
        json!({"input": [5.0, 6.0], "input_type": null}),
    );
    post_ok(
        "/score",
        json!({"sentences_1": "a", "sentences_2": "b", "max_query_length": 64.0}),
    );
    for body in [
        json!({"input": "a", "max_length": 512.5}),
        json!({"input": "a", "max_length": -1}),
        json!({"input": [5.5]}),
    ] {
        let reply = post("/embeddings", body.clone());
        assert_eq!(reply.status, 400, "{body}: {:?}", reply.body);
    }
    let doc: Value = serde_json::from_str(&get("/openapi.json").text).unwrap();
    let text = doc.to_string();
    assert!(
        text.contains(r#""type":["boolean","null"]"#),
        "input_type flags are not nullable"
    );
    assert!(
        text.contains("At least one output"),
        "all-false input_type is undocumented"
    );
}

/// `Expect: 100-continue` is answered `100 Continue` by the HTTP layer (actix-http) before any
/// route runs, which actix-web offers no way to change: documented in the README rather than
/// fixed, so this test passes on the old server too. It pins what is promised there: a body
/// over the limit is then refused with 413 without being read (this client never sends it).
#[test]
fn an_oversize_body_behind_expect_100_continue_is_refused_413_without_being_read() {
    let addr = base().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /embeddings HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY_BYTES + 1
    )
    .unwrap();
    let (_, answer) = closed_within(&mut stream, Duration::from_secs(5));
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 100 Continue\r\n\r\n"),
        "{answer}"
    );
    assert!(answer.contains("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}

/// Requests the HTTP parser refuses (400, 431) or times out (408) were in neither the request
/// log nor `bge_m3_requests_total`, and actix logged them at ERROR.
#[test]
fn parser_rejects_are_logged_and_counted_not_errors() {
    let _turn = heavy();
    let server = Server::start(&[("HEADER_TIMEOUT", "1")]);
    let count = |status: &str| {
        server.metric(&format!(
            r#"bge_m3_requests_total{{route="other",status="{status}"}}"#
        ))
    };
    let mut garbage = server.connect();
    garbage.write_all(b"GARBAGE / HTTP/9.9\r\n\r\n").unwrap();
    let (_, answer) = closed_within(&mut garbage, Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 400"));

    let mut huge = server.connect();
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(256 << 10)
    );
    let _ = huge.write_all(head.as_bytes());
    let (_, answer) = closed_within(&mut huge, Duration::from_secs(5));
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let mut slow = server.connect();
    slow.write_all(b"GET /hea").unwrap();
    let (closed, answer) = closed_within(&mut slow, Duration::from_secs(5));
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        closed && answer.starts_with("HTTP/1.1 408"),
        "{closed} {answer}"
    );

    let counted = eventually(Duration::from_secs(5), || {
        count("400") >= 1.0 && count("431") >= 1.0 && count("408") >= 1.0
    });
    assert!(
        counted.is_some(),
        "400: {}, 431: {}, 408: {}",
        count("400"),
        count("431"),
        count("408")
    );
    // The log line of a connection's reject is written as the connection ends, which may be
    // after the metric counted it: wait for it too.
    for status in ["status=400", "status=431", "status=408"] {
        assert!(
            eventually(Duration::from_secs(5), || !server.logged(status).is_empty()).is_some(),
            "{status} not in the request log"
        );
    }
    assert!(
        server.logged(" ERROR ").is_empty(),
        "{:?}",
        server.logged(" ERROR ")
    );
}
