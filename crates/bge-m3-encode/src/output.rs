//! What is written for each record, and the JSONL writer (one object per line).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bge_m3_core::{BgeM3, Embedding, Outputs, SparseFormat, SparseWeights};
use serde::Serialize;
use serde_json::Value;

use crate::manifest::OutputState;

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
                    shape.sparse,
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
    /// Writes one window's rows and makes them durable (synced to the disk), so that the
    /// manifest may then count them as written.
    fn write(&mut self, rows: &[Row]) -> io::Result<()>;
    /// What the output holds so far, for the manifest (`None`: not a file, no manifest).
    fn state(&self) -> Option<OutputState>;
    /// Completes the output; returns its size in bytes and its final state.
    fn finish(self: Box<Self>) -> io::Result<(u64, Option<OutputState>)>;
}

/// JSONL: one object per row (`id`, `tokens`, then the outputs asked for).
pub struct Jsonl {
    out: BufWriter<Box<dyn Write + Send>>,
    /// The file written (none for stdout), to sync it.
    file: Option<File>,
    /// What error messages call it.
    name: PathBuf,
    bytes: u64,
}

impl Jsonl {
    /// Writes to stdout.
    pub fn stdout() -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 20, Box::new(io::stdout())),
            file: None,
            name: PathBuf::from("stdout"),
            bytes: 0,
        }
    }

    /// Writes to a new (or emptied) file; `durable`: synced after each window, for a manifest.
    pub fn create(path: &Path, durable: bool) -> io::Result<Self> {
        let file = File::create(path).map_err(|e| with_path(e, path))?;
        Self::over(file, path, 0, durable)
    }

    /// Continues `path`, whose rows end at byte `bytes` (the manifest's): what follows (a
    /// window written after the manifest's last update, a line cut short by a kill) is cut.
    /// The last row kept must carry `last_id`.
    pub fn resume(path: &Path, bytes: u64, last_id: Option<&Value>) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(bytes == 0)
            .truncate(false)
            .open(path)
            .map_err(|e| with_path(e, path))?;
        let length = file.metadata().map_err(|e| with_path(e, path))?.len();
        if length < bytes {
            return Err(invalid(format!(
                "{} has {length} bytes, fewer than the {bytes} its manifest counts as written:                  it changed since; cannot resume it",
                path.display()
            )));
        }
        if let Some(want) = last_id {
            let got = last_row_id(&mut file, bytes).map_err(|e| with_path(e, path))?;
            if got.as_ref() != Some(want) {
                let got = got.map_or("no id".to_string(), |id| format!("id {id}"));
                return Err(invalid(format!(
                    "{}: the row that ends at byte {bytes} has {got}, its manifest says {want}:                      the output changed since; cannot resume it",
                    path.display()
                )));
            }
        }
        file.set_len(bytes).map_err(|e| with_path(e, path))?;
        file.seek(SeekFrom::Start(bytes))?;
        Self::over(file, path, bytes, true)
    }

    fn over(file: File, path: &Path, bytes: u64, durable: bool) -> io::Result<Self> {
        let synced = if durable {
            Some(file.try_clone().map_err(|e| with_path(e, path))?)
        } else {
            None
        };
        Ok(Self {
            out: BufWriter::with_capacity(1 << 20, Box::new(file)),
            file: synced,
            name: path.to_path_buf(),
            bytes,
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if let Some(file) = &self.file {
            file.sync_data()?;
        }
        Ok(())
    }
}

/// The id of the row that ends at byte `end` of `file` (the line before it).
pub(crate) fn last_row_id(file: &mut File, end: u64) -> io::Result<Option<Value>> {
    // The line's start: after the last `\n` before its own, found reading backwards.
    let mut start = 0;
    let mut chunk = vec![0u8; 1 << 16];
    let mut at = end.saturating_sub(1);
    while at > 0 {
        let from = at.saturating_sub(chunk.len() as u64);
        let piece = &mut chunk[..(at - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(piece)?;
        if let Some(i) = piece.iter().rposition(|&b| b == b'\n') {
            start = from + i as u64 + 1;
            break;
        }
        at = from;
    }
    file.seek(SeekFrom::Start(start))?;
    let mut line = Vec::new();
    BufReader::new(&mut *file)
        .take(end - start)
        .read_until(b'\n', &mut line)?;
    Ok(serde_json::from_slice::<Value>(&line)
        .ok()
        .and_then(|row| row.get("id").cloned()))
}

impl Sink for Jsonl {
    fn write(&mut self, rows: &[Row]) -> io::Result<()> {
        let name = self.name.clone();
        let mut write = || -> io::Result<()> {
            for row in rows {
                let line = serde_json::to_vec(row)?;
                self.out.write_all(&line)?;
                self.out.write_all(b"\n")?;
                self.bytes += line.len() as u64 + 1;
            }
            self.flush()
        };
        write().map_err(|e| with_path(e, &name))
    }

    fn state(&self) -> Option<OutputState> {
        self.file
            .as_ref()
            .map(|_| OutputState::Jsonl { bytes: self.bytes })
    }

    fn finish(mut self: Box<Self>) -> io::Result<(u64, Option<OutputState>)> {
        self.flush().map_err(|e| with_path(e, &self.name))?;
        Ok((self.bytes, self.state()))
    }
}

pub(crate) fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

pub(crate) fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
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
    fn resuming_cuts_what_follows_the_manifests_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = Box::new(Jsonl::create(&path, true).unwrap());
        sink.write(&[row(Value::from("a")), row(Value::from(3))])
            .unwrap();
        let Some(OutputState::Jsonl { bytes }) = sink.state() else {
            panic!("a file's sink has a state")
        };
        // A window written after the manifest's last update, then a line cut by a kill.
        sink.write(&[row(Value::from("late"))]).unwrap();
        sink.finish().unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(br#"{"id":"b","tok"#).unwrap();

        let mut sink = Box::new(Jsonl::resume(&path, bytes, Some(&Value::from(3))).unwrap());
        sink.write(&[row(Value::from("b"))]).unwrap();
        let (size, _) = sink.finish().unwrap();
        assert_eq!(size, std::fs::metadata(&path).unwrap().len());
        let lines: Vec<Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let ids: Vec<&Value> = lines.iter().map(|l| &l["id"]).collect();
        assert_eq!(ids, [&Value::from("a"), &Value::from(3), &Value::from("b")]);
    }

    #[test]
    fn resuming_an_output_that_changed_since_its_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"id\": 1}\n{\"id\": \"1\"}\n").unwrap();
        let error = Jsonl::resume(&path, 100, None).err().unwrap().to_string();
        assert!(error.contains("fewer than the 100"), "{error}");
        // The last row is "1", not 1: another output.
        let error = Jsonl::resume(&path, 22, Some(&Value::from(1)))
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("the row that ends at byte 22 has id \"1\", its manifest says 1"),
            "{error}"
        );
        assert!(Jsonl::resume(&path, 22, Some(&Value::from("1"))).is_ok());
        assert!(Jsonl::resume(&path, 10, Some(&Value::from(1))).is_ok());
    }
}
