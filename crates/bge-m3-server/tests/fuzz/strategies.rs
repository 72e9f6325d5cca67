//! The generators: mostly the fields of docs/API.md with values around their limits, sometimes
//! anything.

use actix_web::http::Method;
use proptest::collection::vec;
use proptest::option::weighted as maybe;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

use crate::{MAX_BODY_BYTES, MAX_INPUTS};

/// The request fields of docs/API.md, which these generators pick most of the time.
const FIELDS: [&str; 16] = [
    "input",
    "model",
    "input_type",
    "encoding_format",
    "dimensions",
    "sparse_format",
    "max_length",
    "batch_size",
    "user",
    "sentences_1",
    "sentences_2",
    "weights",
    "max_query_length",
    "max_passage_length",
    "dense",
    "colbert",
];

/// A character, often one that tokenizers and JSON find awkward.
fn awkward_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        4 => proptest::char::range(' ', '~'),
        3 => select(vec![
            '\0', '\t', '\n', '\r', '\u{7}', '\u{1b}', '\u{7f}', '\u{85}', '\u{a0}', '\u{200b}',
            '\u{200d}', '\u{2028}', '\u{feff}', '\u{301}', '\u{36f}', '\u{202e}', '\u{5d0}',
            '\u{627}', '\u{e01}', '中', '\u{ac00}', '😀', '👩', '\u{1f3fd}', '\u{fffd}',
            '\u{e000}', '\u{10ffff}', '▁', '"', '\\', '/',
        ]),
    ]
}

/// A text: short and varied, sometimes empty, sometimes a long run of one character.
pub(crate) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => vec(awkward_char(), 0..32).prop_map(|chars| chars.into_iter().collect()),
        2 => select(vec![
            "",
            " ",
            "What is BGE M3?",
            "北京是中国的首都。",
            "مرحبا بالعالم",
            "NaN",
            "Infinity",
            "null",
            "<s></s>",
            "<pad><unk><mask>",
        ])
        .prop_map(String::from),
        1 => (awkward_char(), 1..1500usize)
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// A JSON number: small, at the edges of the integer types, or a float far out of range.
pub(crate) fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (-3i64..=20).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        2 => select(vec![
            0.5, -0.0, 1.0, 1e-45, 1e-320, 3.4e38, 3.5e38, 1e308, -1e308, 8192.0, 8193.0,
            4294967296.0, 1e20,
        ])
        .prop_map(Value::from),
    ]
}

/// A string a client might send where a number or name is expected.
pub(crate) fn odd_string() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => select(vec![
            "", "NaN", "nan", "Infinity", "-inf", "1e999", "0x10", "８", "12", "-1", "true",
            "null", "float", "base64", "token", "id", "indices", "bge-m3", "query",
        ])
        .prop_map(Value::from),
        1 => text().prop_map(Value::from),
    ]
}

/// Anything, nested a few levels, with keys that are often our field names.
pub(crate) fn junk() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        odd_string(),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            vec((key(), inner), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(FIELDS.to_vec()).prop_map(String::from),
        1 => vec(awkward_char(), 0..8).prop_map(|c| c.into_iter().collect()),
    ]
}

/// A value nested `depth` arrays and objects deep, beyond serde_json's recursion limit.
pub(crate) fn deep() -> impl Strategy<Value = Value> {
    (1usize..400, any::<bool>()).prop_map(|(depth, objects)| {
        (0..depth).fold(json!("x"), |inner, level| {
            if objects && level % 2 == 0 {
                json!({ "input": inner })
            } else {
                json!([inner])
            }
        })
    })
}

/// A token id of the tiny model (vocabulary 1202), or one just outside it, or not an id.
pub(crate) fn token_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => (0u32..1202).prop_map(Value::from),
        2 => select(vec![0u64, 1, 2, 3, 1201, 1202, 1203, 250_002, u32::MAX as u64, 1 << 32])
            .prop_map(Value::from),
        1 => number(),
        1 => odd_string(),
    ]
}

pub(crate) fn texts(
    count: impl Into<proptest::collection::SizeRange>,
) -> impl Strategy<Value = Value> {
    vec(text(), count).prop_map(|t| json!(t))
}

/// `input`: every shape OpenAI allows, and the ones it does not.
pub(crate) fn input() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => text().prop_map(Value::from),
        5 => texts(1..6),
        2 => vec(token_id(), 0..12).prop_map(Value::Array),
        2 => vec(vec(token_id(), 0..10).prop_map(Value::Array), 1..5).prop_map(Value::Array),
        1 => Just(json!([])),
        1 => Just(json!([[]])),
        1 => texts(MAX_INPUTS + 1..MAX_INPUTS + 4),
        1 => vec(prop_oneof![text().prop_map(Value::from), token_id()], 1..5)
            .prop_map(Value::Array),
        2 => junk(),
        1 => deep(),
    ]
}

pub(crate) fn flag() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
        1 => junk(),
    ]
}

fn input_type() -> impl Strategy<Value = Value> {
    let object = (
        proptest::option::of(flag()),
        proptest::option::of(flag()),
        proptest::option::of(flag()),
    )
        .prop_map(|(dense, sparse, colbert)| {
            let mut flags = Map::new();
            for (name, value) in [("dense", dense), ("sparse", sparse), ("colbert", colbert)] {
                if let Some(value) = value {
                    flags.insert(name.into(), value);
                }
            }
            Value::Object(flags)
        });
    prop_oneof![
        5 => object,
        1 => select(vec!["query", "passage", "document", ""]).prop_map(Value::from),
        1 => junk(),
    ]
}

/// A token length: within 1..=8192 mostly, or at and beyond its edges.
pub(crate) fn length() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (1u64..=64).prop_map(Value::from),
        2 => (1u64..=8192).prop_map(Value::from),
        2 => select(vec![0u64, 1, 2, 3, 8192, 8193, u64::MAX]).prop_map(Value::from),
        1 => number(),
        1 => odd_string(),
    ]
}

fn batch_size() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (1u64..=16).prop_map(Value::from),
        2 => select(vec![0u64, 1, u32::MAX as u64, u64::MAX]).prop_map(Value::from),
        1 => number(),
        1 => odd_string(),
    ]
}

pub(crate) fn dimensions() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (1u64..=32).prop_map(Value::from),
        2 => select(vec![0u64, 31, 32, 33, 1024, u64::MAX]).prop_map(Value::from),
        1 => number(),
        1 => odd_string(),
    ]
}

pub(crate) fn model() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => select(vec!["bge-m3", "BAAI/bge-m3"]).prop_map(Value::from),
        1 => select(vec!["", "BGE-M3", "text-embedding-3-small", "bge-m3 "]).prop_map(Value::from),
        1 => junk(),
    ]
}

pub(crate) fn choice(names: &[&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        5 => select(names.to_vec()).prop_map(Value::from),
        1 => odd_string(),
        1 => junk(),
    ]
}

/// Unknown fields (OpenAI's `user` and anything else), which the routes ignore.
pub(crate) fn extra_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
    vec((key(), junk()), 0..2)
}

/// A body for the embeddings routes: usually an object of our fields, each present or not.
pub(crate) fn embeddings_body() -> impl Strategy<Value = Value> {
    let object = (
        (
            maybe(0.95, input()),
            maybe(0.3, model()),
            maybe(0.4, input_type()),
            maybe(0.3, choice(&["float", "base64", "Float", "int8"])),
            maybe(0.25, dimensions()),
        ),
        (
            maybe(0.3, choice(&["token", "id", "indices", "sparsevec", "ids"])),
            maybe(0.4, length()),
            maybe(0.3, batch_size()),
            extra_fields(),
        ),
    )
        .prop_map(
            |(
                (input, model, input_type, encoding_format, dimensions),
                (sparse_format, max_length, batch_size, extra),
            )| {
                body(
                    extra,
                    [
                        ("input", input),
                        ("model", model),
                        ("input_type", input_type),
                        ("encoding_format", encoding_format),
                        ("dimensions", dimensions),
                        ("sparse_format", sparse_format),
                        ("max_length", max_length),
                        ("batch_size", batch_size),
                    ],
                )
            },
        );
    prop_oneof![
        12 => object,
        1 => junk(),
        1 => deep(),
        1 => Just(json!({})),
    ]
}

/// A weight: usually a plain one, sometimes at the edges of f32.
fn weight() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => select(vec![0.0, 0.2, 0.4, 1.0, 2.5]).prop_map(Value::from),
        2 => (0.0f64..10.0).prop_map(Value::from),
        1 => number(),
        1 => odd_string(),
    ]
}

pub(crate) fn weights() -> impl Strategy<Value = Value> {
    prop_oneof![
        5 => vec(weight(), 3).prop_map(Value::Array),
        1 => vec(weight(), 0..6).prop_map(Value::Array),
        1 => junk(),
    ]
}

/// `sentences_1` and `sentences_2`: usually as many of each, sometimes not.
fn sentences() -> impl Strategy<Value = (Option<Value>, Option<Value>)> {
    let pairs = vec((text(), text()), 1..5).prop_map(|pairs| {
        let (queries, passages): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
        (Some(json!(queries)), Some(json!(passages)))
    });
    let either = prop_oneof![
        3 => texts(0..4),
        2 => text().prop_map(Value::from),
        1 => texts(MAX_INPUTS + 1..MAX_INPUTS + 3),
        1 => junk(),
    ]
    .boxed();
    prop_oneof![
        6 => pairs,
        1 => (text(), text()).prop_map(|(q, p)| (Some(json!(q)), Some(json!(p)))),
        2 => (
            maybe(0.8, either.clone()),
            maybe(0.8, either)
        ),
    ]
}

/// A body for `/score`.
pub(crate) fn score_body() -> impl Strategy<Value = Value> {
    let object = (
        sentences(),
        maybe(0.5, weights()),
        maybe(0.25, length()),
        maybe(0.25, length()),
        maybe(0.25, length()),
        maybe(0.2, batch_size()),
        maybe(0.2, model()),
        extra_fields(),
    )
        .prop_map(
            |(
                (queries, passages),
                weights,
                max_length,
                max_query_length,
                max_passage_length,
                batch_size,
                model,
                extra,
            )| {
                body(
                    extra,
                    [
                        ("sentences_1", queries),
                        ("sentences_2", passages),
                        ("weights", weights),
                        ("max_length", max_length),
                        ("max_query_length", max_query_length),
                        ("max_passage_length", max_passage_length),
                        ("batch_size", batch_size),
                        ("model", model),
                    ],
                )
            },
        );
    prop_oneof![
        12 => object,
        1 => junk(),
        1 => deep(),
    ]
}

/// Bytes: random, or a valid body cut short or with a few bytes changed, or deep brackets.
pub(crate) fn raw_body() -> impl Strategy<Value = Vec<u8>> {
    let valid = prop_oneof![embeddings_body(), score_body()]
        .prop_map(|body| serde_json::to_vec(&body).unwrap())
        .boxed();
    prop_oneof![
        2 => vec(any::<u8>(), 0..256),
        3 => (valid.clone(), vec((any::<proptest::sample::Index>(), any::<u8>(), 0u8..3), 1..6))
            .prop_map(|(mut body, edits)| {
                for (at, byte, how) in edits {
                    let i = at.index(body.len() + 1);
                    match how {
                        0 => body.insert(i, byte),
                        1 if i < body.len() => body[i] = byte,
                        _ if i < body.len() => {
                            body.remove(i);
                        }
                        _ => body.push(byte),
                    }
                }
                body
            }),
        2 => (valid, any::<proptest::sample::Index>()).prop_map(|(body, at)| {
            let cut = at.index(body.len().max(1));
            body[..cut].to_vec()
        }),
        1 => (1usize..5000, select(vec![b'[', b'{'])).prop_map(|(depth, open)| {
            let mut body = b"{\"input\": ".to_vec();
            body.extend(std::iter::repeat_n(open, depth));
            body
        }),
        1 => Just(vec![b' '; MAX_BODY_BYTES + 1]),
        1 => Just(b"\xef\xbb\xbf{\"input\": \"a\"}".to_vec()),
    ]
}

pub(crate) fn content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("application/json".to_string()),
        3 => select(vec![
            "application/json; charset=utf-8",
            "application/vnd.api+json",
            "APPLICATION/JSON",
            "text/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=\"",
            "application/",
            "json",
            "*/*",
            "",
        ])
        .prop_map(String::from),
        1 => vec(proptest::char::range(' ', '~'), 0..24).prop_map(|c| c.into_iter().collect()),
    ]
}

pub(crate) fn method() -> impl Strategy<Value = Method> {
    select(vec![
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "PROPFIND",
        "get", "X-FUZZ",
    ])
    .prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap())
}

/// A path (and sometimes a query): a real route, a real route with more segments, or
/// segments of URL characters and percent escapes, some of them invalid.
pub(crate) fn path() -> impl Strategy<Value = String> {
    let routes = vec![
        "/",
        "/health",
        "/v1/embeddings",
        "/embeddings",
        "/score",
        "/models",
        "/models/bge-m3",
        "/models/BAAI/bge-m3",
        "/v1/models",
        "/v1/models/bge-m3",
        "/v1/models/BAAI/bge-m3",
        "/v1",
        "/v1/",
        "//",
        "/embeddings/",
        "/models/",
        "/models/%FF",
        "/models/%",
        "/models/%2",
        "/v1/models/%C3%A9",
        "/v1/models/%00",
        "/metrics",
        "/docs",
        "/rerank",
        "/v1/rerank",
        "/v2/rerank",
        "/embed",
        "/embed_sparse",
        "/embed_all",
        "/tokenize",
        "/decode",
        "/info",
    ];
    let segment = prop_oneof![
        4 => vec(
            select(
                "abcxyzABZ0189-._~!$&'()*+,;=:@"
                    .chars()
                    .collect::<Vec<_>>()
            ),
            0..10
        )
        .prop_map(|c| c.into_iter().collect::<String>()),
        1 => (select("0123456789abcdefABCDEFgz%".chars().collect::<Vec<_>>()), any::<u8>())
            .prop_map(|(c, b)| format!("%{c}{:X}", b & 0xF)),
        1 => select(vec!["..", ".", "bge-m3", "BAAI", "models", "v1"]).prop_map(String::from),
    ];
    let query = maybe(
        0.2,
        select(vec!["", "a=1", "model=bge-m3&x", "%zz", "a=%FF"]),
    );
    (select(routes), vec(segment, 0..4), query, any::<bool>())
        .prop_map(|(route, segments, query, extend)| {
            let mut path = route.to_string();
            if extend || route == "/" {
                for segment in segments {
                    if !path.ends_with('/') {
                        path.push('/');
                    }
                    path.push_str(&segment);
                }
            }
            if let Some(query) = query {
                path.push('?');
                path.push_str(query);
            }
            path
        })
        .prop_filter("a URI actix can carry", |path| {
            path.parse::<actix_web::http::Uri>().is_ok()
        })
}

/// A request body: the unknown `extra` fields, then each known field that is present (so that
/// a known field wins over an extra one of the same name).
pub(crate) fn body<const N: usize>(
    extra: impl IntoIterator<Item = (String, Value)>,
    fields: [(&str, Option<Value>); N],
) -> Value {
    let mut body: Map<String, Value> = extra.into_iter().collect();
    for (name, value) in fields {
        if let Some(value) = value {
            body.insert(name.into(), value);
        }
    }
    Value::Object(body)
}
