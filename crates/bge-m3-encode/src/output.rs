//! What is written for each record, and the JSONL writer (one object per line).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use bge_m3_core::{BgeM3, Embedding, Outputs, SparseWeights};
use serde::Serialize;
use serde_json::Value;

use crate::input::id_key;

/// How the sparse weights are written: the server's `sparse_format`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SparseFormat {
    /// `{"What": 0.08}`: keyed by token string, FlagEmbedding's `convert_id_to_token`.
    Token,
    /// `{"4865": 0.08}`: keyed by token id, FlagEmbedding's `lexical_weights`.
    Id,
    /// `{"indices": [4865], "values": [0.08]}`, ascending by id: Qdrant's and Milvus's sparse
    /// vectors.
    Indices,
    /// `"{4866:0.08}/250002"`: pgvector's `sparsevec` literal (1-based, ascending).
    Sparsevec,
}

/// The file format of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Parquet for a `.parquet` file, else JSONL.
    Auto,
    /// One JSON object per line.
    Jsonl,
    /// Apache Parquet, one row group per window (needs the `parquet` feature, on by default).
    Parquet,
}

/// What each row holds.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub outputs: Outputs,
    pub sparse: SparseFormat,
    /// The dimension of a `sparsevec`.
    pub vocab_size: usize,
}

impl From<SparseFormat> for bge_m3_core::SparseFormat {
    fn from(format: SparseFormat) -> Self {
        match format {
            SparseFormat::Token => Self::Token,
            SparseFormat::Id => Self::Id,
            SparseFormat::Indices => Self::Indices,
            SparseFormat::Sparsevec => Self::Sparsevec,
        }
    }
}

/// One record's outputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub id: Value,
    /// Tokens after truncation, `<s>` and `</s>` not counted.
    pub tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dense: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparse: Option<SparseWeights>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub colbert: Option<Vec<Vec<f32>>>,
}

impl Row {
    /// `embedding` written as `shape` asks.
    pub fn new(
        id: Value,
        embedding: Embedding,
        shape: &Shape,
        model: &BgeM3,
    ) -> bge_m3_core::Result<Self> {
        let sparse = match embedding.sparse {
            None => None,
            Some(sparse) => {
                let by_token = match shape.sparse {
                    SparseFormat::Token => Some(model.sparse_by_token(&sparse)?),
                    _ => None,
                };
                Some(SparseWeights::new(
                    sparse,
                    shape.sparse.into(),
                    shape.vocab_size,
                    by_token,
                ))
            }
        };
        Ok(Self {
            id,
            tokens: embedding.tokens,
            dense: embedding.dense,
            sparse,
            colbert: embedding.colbert,
        })
    }
}

/// Where rows go, in order.
pub trait Sink {
    /// Writes one window's rows and makes them durable enough to resume from.
    fn write(&mut self, rows: &[Row]) -> io::Result<()>;
    /// Completes the output; returns its size in bytes.
    fn finish(self: Box<Self>) -> io::Result<u64>;
}

/// JSONL: one object per row (`id`, `tokens`, then the outputs asked for).
pub struct Jsonl {
    out: BufWriter<Box<dyn Write + Send>>,
    bytes: u64,
}

impl Jsonl {
    /// Writes to stdout.
    pub fn stdout() -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 20, Box::new(io::stdout())),
            bytes: 0,
        }
    }

    /// Writes to a new (or emptied) file.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = File::create(path).map_err(|e| with_path(e, path))?;
        Ok(Self::over(file, 0))
    }

    /// Continues `path`: returns the ids it already holds, and a writer that appends after its
    /// last complete line (a line cut short by an interruption is removed).
    pub fn resume(path: &Path) -> io::Result<(Self, HashSet<String>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| with_path(e, path))?;
        let mut done = HashSet::new();
        let mut complete = 0u64;
        let mut reader = BufReader::new(&mut file);
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            number += 1;
            if line.last() != Some(&b'\n') {
                break; // cut short: written again below
            }
            let id = serde_json::from_slice::<Value>(&line)
                .ok()
                .and_then(|row| row.get("id").cloned());
            match id {
                Some(id) => {
                    done.insert(id_key(&id));
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}:{number}: not a row of this program (no JSON object with an `id`): \
                             cannot resume it",
                            path.display()
                        ),
                    ))
                }
            }
            complete += n as u64;
        }
        drop(reader);
        file.set_len(complete)?;
        file.seek(SeekFrom::Start(complete))?;
        Ok((Self::over(file, complete), done))
    }

    fn over(file: File, bytes: u64) -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 20, Box::new(file)),
            bytes,
        }
    }
}

impl Sink for Jsonl {
    fn write(&mut self, rows: &[Row]) -> io::Result<()> {
        for row in rows {
            let line = serde_json::to_vec(row)?;
            self.out.write_all(&line)?;
            self.out.write_all(b"\n")?;
            self.bytes += line.len() as u64 + 1;
        }
        self.out.flush()
    }

    fn finish(mut self: Box<Self>) -> io::Result<u64> {
        self.out.flush()?;
        Ok(self.bytes)
    }
}

pub(crate) fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: Value) -> Row {
        Row {
            id,
            tokens: 2,
            dense: Some(vec![0.6, 0.8]),
            sparse: Some(SparseWeights::Indices {
                indices: vec![7, 30],
                values: vec![0.25, 0.5],
            }),
            colbert: None,
        }
    }

    #[test]
    fn a_row_is_one_json_line_with_only_the_outputs_asked_for() {
        let line = serde_json::to_string(&row(Value::from("a"))).unwrap();
        assert_eq!(
            line,
            r#"{"id":"a","tokens":2,"dense":[0.6,0.8],"sparse":{"indices":[7,30],"values":[0.25,0.5]}}"#
        );
    }

    #[test]
    fn resuming_keeps_complete_lines_and_cuts_a_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = Box::new(Jsonl::create(&path).unwrap());
        sink.write(&[row(Value::from("a")), row(Value::from(3))])
            .unwrap();
        sink.finish().unwrap();
        let whole = std::fs::read(&path).unwrap();
        let mut cut = whole.clone();
        cut.extend_from_slice(br#"{"id":"b","tok"#);
        std::fs::write(&path, &cut).unwrap();

        let (sink, done) = Jsonl::resume(&path).unwrap();
        assert_eq!(done, HashSet::from(["a".to_string(), "3".to_string()]));
        let mut sink = Box::new(sink);
        sink.write(&[row(Value::from("b"))]).unwrap();
        assert_eq!(
            sink.finish().unwrap(),
            std::fs::metadata(&path).unwrap().len()
        );
        let lines: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let ids: Vec<&Value> = lines.iter().map(|l| &l["id"]).collect();
        assert_eq!(ids, [&Value::from("a"), &Value::from(3), &Value::from("b")]);
    }

    #[test]
    fn resuming_a_file_that_is_not_ours_is_refused_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"id\": 1}\nhello\n").unwrap();
        let error = Jsonl::resume(&path).err().unwrap();
        assert!(
            error
                .to_string()
                .contains("out.jsonl:2: not a row of this program"),
            "{error}"
        );
    }
}
