//! What the encoder's test files share: the encoder on tiny-pt, corpora, and reading its
//! outputs back.

#![allow(dead_code)] // each test file uses a part

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use arrow_array::{Array, ListArray, MapArray, StringArray, StructArray, UInt32Array};
use bge_m3_test_support::{tiny_pt, Finished, Launch};
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
