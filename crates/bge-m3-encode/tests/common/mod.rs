//! What the encoder's test files share: the encoder on tiny-pt, corpora, and reading its
//! outputs back.

#![allow(dead_code)] // each test file uses a part

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::{Array, ListArray, MapArray, StringArray, StructArray, UInt32Array};
use bge_m3_test_support::{assert_close, eventually, tiny_pt, Finished, Launch, TOLERANCE};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};

/// The longest a run of the encoder may take (the slowest, 60 texts, takes seconds).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The encoder on tiny-pt.
pub fn encoder() -> Launch {
    Launch::new(env!("CARGO_BIN_EXE_bge-m3-encode"))
        .arg("--model")
        .arg(tiny_pt())
}

/// Texts of mixed lengths, 1 to about 400 tokens, with repeated words (so sparse weights pool).
pub fn texts(count: usize) -> Vec<String> {
    let words = [
        "vector",
        "search",
        "hybrid",
        "BM25",
        "lexical",
        "dense",
        "the",
        "of",
        "Qdrant",
        "multilingual",
        "retrieval",
        "passage",
        "query",
        "index",
        "embedding",
    ];
    (0..count)
        .map(|i| {
            let len = 1 + (i * 37) % 180;
            (0..len)
                .map(|j| words[(i * 7 + j * j) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

pub fn write_jsonl(path: &Path, texts: &[String]) {
    let mut file = File::create(path).unwrap();
    for (i, text) in texts.iter().enumerate() {
        writeln!(file, "{}", json!({"id": format!("doc-{i}"), "text": text})).unwrap();
    }
}

/// Runs the encoder on tiny-pt with `args`, to its end.
pub fn encode(args: &[&str]) -> Finished {
    encoder()
        .args(["--progress", "none"])
        .args(args)
        .run(RUN_TIMEOUT)
}

pub fn rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

pub fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// The columns of a Parquet file, read back with arrow-rs.
pub fn read_parquet(path: &Path) -> HashMap<String, Vec<Value>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut columns: HashMap<String, Vec<Value>> = HashMap::new();
    for batch in reader {
        let batch = batch.unwrap();
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            let values = columns.entry(field.name().clone()).or_default();
            for row in 0..column.len() {
                values.push(to_json(column.as_ref(), row));
            }
        }
    }
    columns
}

/// One cell as the JSONL writer would write it.
pub fn to_json(column: &dyn Array, row: usize) -> Value {
    let any = column.as_any();
    if let Some(strings) = any.downcast_ref::<StringArray>() {
        return json!(strings.value(row));
    }
    if let Some(ints) = any.downcast_ref::<UInt32Array>() {
        return json!(ints.value(row));
    }
    if let Some(floats) = any.downcast_ref::<arrow_array::Float32Array>() {
        return json!(floats.value(row));
    }
    if let Some(list) = any.downcast_ref::<ListArray>() {
        let items = list.value(row);
        return Value::Array(
            (0..items.len())
                .map(|i| to_json(items.as_ref(), i))
                .collect(),
        );
    }
    if let Some(map) = any.downcast_ref::<MapArray>() {
        let entries = map.value(row);
        let keys = entries.column(0);
        let values = entries.column(1);
        let mut object = serde_json::Map::new();
        for i in 0..entries.len() {
            let key = to_json(keys.as_ref(), i).as_str().unwrap().to_string();
            object.insert(key, to_json(values.as_ref(), i));
        }
        return Value::Object(object);
    }
    if let Some(fields) = any.downcast_ref::<StructArray>() {
        let mut object = serde_json::Map::new();
        for (name, column) in fields.column_names().iter().zip(fields.columns()) {
            object.insert(name.to_string(), to_json(column.as_ref(), row));
        }
        return Value::Object(object);
    }
    panic!("unexpected column type {:?}", column.data_type());
}

/// A corpus where ids repeat every way they can: each `d0`..`d11` twice, `7` and `"7"`, a
/// record without an id whose position (27) is also another record's explicit id; with a blank
/// line and a bad record, which take no row (and, the bad one, a position). 38 good records.
pub fn repeated_ids_corpus() -> Vec<String> {
    let texts = texts(40);
    let record = |id: Option<Value>, i: usize| match id {
        Some(id) => json!({"id": id, "text": texts[i]}).to_string(),
        None => json!({"text": texts[i]}).to_string(),
    };
    let mut lines = Vec::new();
    for i in 0..24 {
        lines.push(record(Some(json!(format!("d{}", i % 12))), i));
    }
    lines.push(record(Some(json!(7)), 24));
    lines.push(record(Some(json!("7")), 25));
    lines.push(String::new());
    lines.push("{oops".into());
    lines.push(record(None, 26));
    lines.push(record(Some(json!(27)), 27));
    for i in 0..10 {
        lines.push(record(Some(json!(format!("d{}", 12 + i))), 28 + i));
    }
    lines
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// The manifest beside `out`.
pub fn manifest(out: &Path) -> Option<Value> {
    let text = std::fs::read(manifest_path(out)).ok()?;
    serde_json::from_slice(&text).ok()
}

pub fn manifest_path(out: &Path) -> PathBuf {
    PathBuf::from(format!("{}.manifest.json", out.display()))
}

pub fn documents(out: &Path) -> u64 {
    manifest(out).map_or(0, |m| m["progress"]["documents"].as_u64().unwrap())
}

/// The output's rows as JSON objects, whatever its format (a Parquet id is a string).
pub fn output_rows(out: &Path) -> Vec<Value> {
    if out.extension().is_some_and(|e| e == "parquet") {
        let columns = read_parquet(out);
        (0..columns["id"].len())
            .map(|i| {
                json!({
                    "id": columns["id"][i],
                    "tokens": columns["tokens"][i],
                    "dense": columns["dense"][i],
                    "sparse": columns["sparse"][i],
                })
            })
            .collect()
    } else {
        rows(out)
    }
}

/// Record by record: the same ids in the same order, the same token counts and sparse ids,
/// the values within the tolerance.
pub fn assert_same_records(got: &[Value], want: &[Value], what: &str) {
    let ids = |rows: &[Value]| rows.iter().map(|r| r["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(got), ids(want), "{what}: ids");
    for (i, (got, want)) in got.iter().zip(want).enumerate() {
        assert_eq!(got["tokens"], want["tokens"], "{what}: row {i} tokens");
        assert_close(
            &floats(&got["dense"]),
            &floats(&want["dense"]),
            TOLERANCE,
            format!("{what}: row {i} dense"),
        );
        assert_eq!(
            got["sparse"]["indices"], want["sparse"]["indices"],
            "{what}: row {i} sparse ids"
        );
        assert_close(
            &floats(&got["sparse"]["values"]),
            &floats(&want["sparse"]["values"]),
            TOLERANCE,
            format!("{what}: row {i} sparse"),
        );
    }
}

/// Options of every run of the kill test: small windows, the bad record skipped.
pub const SMALL_WINDOWS: [&str; 4] = ["--on-error", "skip", "--window-texts", "4"];

/// Runs the encoder with `args` (and [`SMALL_WINDOWS`]) on stdin fed with `lines` (stdin then
/// stays open, so the run waits for more), waits until its manifest counts `documents`, and
/// kills it (SIGKILL).
pub fn kill_when_written(out: &Path, lines: &[String], args: &[&str], documents: u64) {
    let mut child = encoder()
        .args(SMALL_WINDOWS)
        .args(["--progress", "none"])
        .args(args)
        .arg("-o")
        .arg(out)
        .arg("-")
        .stdin_piped()
        .spawn()
        .unwrap();
    let mut stdin = child.stdin();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    let written = eventually(Duration::from_secs(120), || {
        self::documents(out) >= documents
    });
    assert!(
        written.is_some(),
        "not {documents} documents in the manifest after 120 s:\n{}",
        child.log_text()
    );
    child.kill();
    drop(stdin);
    let manifest = manifest(out).unwrap();
    assert_eq!(manifest["complete"], false);
    assert_eq!(manifest["progress"]["documents"], documents, "{manifest}");
}
