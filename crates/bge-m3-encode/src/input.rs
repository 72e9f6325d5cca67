//! The corpus: JSONL or plain-text streams (files or stdin) and directories of `.txt`/`.md`
//! files, read one record at a time. A line is read no further than the longest record a text
//! of `--max-text-chars` can make ([`line_limit`]), so that an oversized line costs no memory;
//! every byte read goes into the [`Position`]'s fingerprint, which `--resume` checks.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::guard::{FileId, InputFiles};
use crate::lines::{read_line, Fingerprint, Line};

/// How a file or stdin holds its documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// `.jsonl`/`.ndjson`/`.json` files and stdin are JSONL; other files are text; a directory
    /// holds one document per `.txt`/`.md` file.
    Auto,
    /// One JSON object per line, with the text (and optionally the id) in named fields.
    Jsonl,
    /// One document per line.
    Text,
}

/// Where a record was read: a file (or `-` for stdin) and, in a stream, its line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub source: String,
    pub line: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.source),
            None => f.write_str(&self.source),
        }
    }
}

/// One document to encode.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The id field's value (a string or an integer), or the record's position in the
    /// corpus when it has none.
    pub id: Value,
    pub text: String,
    pub location: Location,
    /// The record's position in the corpus: 0-based, counting every record read, bad ones
    /// included (blank lines are not records).
    pub position: u64,
}

/// Where the reading stands after a record: how many records were read (the next one's
/// position) and the fingerprint of the input up to the end of the last of them.
#[derive(Clone, Default)]
pub struct Position {
    pub records: u64,
    fingerprint: Fingerprint,
}

impl Position {
    /// Input bytes up to the end of the last record read.
    pub fn bytes(&self) -> u64 {
        self.fingerprint.bytes()
    }

    /// The position as the manifest records it.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            records: self.records,
            bytes: self.fingerprint.bytes(),
            sha256: self.fingerprint.sha256(),
        }
    }
}

/// A [`Position`] written down: where a resumed run continues, and what the input up to there
/// must hash to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Records read (bad ones included, blank lines not): the position to continue from.
    pub records: u64,
    /// Input bytes up to the end of the last of them.
    pub bytes: u64,
    /// SHA-256 of those bytes (of a directory's files: each file's path relative to the
    /// directory, a NUL, then its contents).
    pub sha256: String,
}

/// A record that cannot be encoded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// What to read, and how.
#[derive(Debug, Clone)]
pub struct InputOptions {
    pub format: InputFormat,
    pub text_field: String,
    pub id_field: String,
    /// A longer text is a bad record.
    pub max_text_chars: usize,
}

/// An id as text: a string id as it is, an integer id in decimal (the Parquet output's `id`
/// column, and the key under which repeated ids are found: `7` and `"7"` are the same id).
pub fn id_key(id: &Value) -> String {
    match id {
        Value::String(id) => id.clone(),
        other => other.to_string(),
    }
}

/// The most bytes a line of `format` is read to: beyond it, no text within `max_text_chars`
/// characters fits, so the line is a bad record, skipped unread. A UTF-8 character takes at
/// most 4 bytes (text lines, plus a `\r\n`); in JSON, at most 12 (`\ud83d\ude00`), and
/// 1 MiB is left for the record's other fields.
pub fn line_limit(format: InputFormat, max_text_chars: usize) -> usize {
    match format {
        InputFormat::Text => max_text_chars.saturating_mul(4).saturating_add(2),
        _ => max_text_chars.saturating_mul(12).saturating_add(1 << 20),
    }
}

enum Source {
    Stream {
        name: String,
        reader: Box<dyn BufRead + Send>,
        format: InputFormat,
        line: u64,
    },
    Directory {
        root: PathBuf,
        files: std::vec::IntoIter<PathBuf>,
    },
}

/// The records of every input, in order.
pub struct Corpus {
    sources: std::vec::IntoIter<Source>,
    current: Option<Source>,
    options: InputOptions,
    /// Every byte read so far.
    fingerprint: Fingerprint,
    /// After the last record read.
    position: Position,
    total_bytes: Option<u64>,
    files: InputFiles,
    buffer: Vec<u8>,
}

impl Corpus {
    /// Opens `inputs` (none or `-`: stdin). A directory is walked now (its files sorted by
    /// path); files are opened as they are reached.
    pub fn open(inputs: &[PathBuf], options: InputOptions) -> io::Result<Self> {
        let stdin = [PathBuf::from("-")];
        let inputs = if inputs.is_empty() {
            &stdin[..]
        } else {
            inputs
        };
        let mut sources = Vec::new();
        let mut total_bytes = Some(0u64);
        let mut files = InputFiles::default();
        for path in inputs {
            if path.as_os_str() == "-" {
                total_bytes = None;
                files.stdin = FileId::of_stdin();
                let format = match options.format {
                    InputFormat::Auto => InputFormat::Jsonl,
                    format => format,
                };
                sources.push(Source::Stream {
                    name: "-".into(),
                    reader: Box::new(BufReader::new(io::stdin())),
                    format,
                    line: 0,
                });
            } else if path.is_dir() {
                let mut found = Vec::new();
                walk(path, &mut found)?;
                found.sort();
                for file in &found {
                    let metadata = std::fs::metadata(file).map_err(|e| with_path(e, file))?;
                    total_bytes = total_bytes.map(|t| t + metadata.len());
                    files.files.push(FileId::new(file, &metadata));
                }
                files
                    .dirs
                    .push(path.canonicalize().map_err(|e| with_path(e, path))?);
                sources.push(Source::Directory {
                    root: path.clone(),
                    files: found.into_iter(),
                });
            } else {
                let file = File::open(path).map_err(|e| with_path(e, path))?;
                let metadata = file.metadata().map_err(|e| with_path(e, path))?;
                total_bytes = total_bytes.map(|t| t + metadata.len());
                files.files.push(FileId::new(path, &metadata));
                let format = match options.format {
                    InputFormat::Auto if is_jsonl(path) => InputFormat::Jsonl,
                    InputFormat::Auto => InputFormat::Text,
                    format => format,
                };
                sources.push(Source::Stream {
                    name: path.display().to_string(),
                    reader: Box::new(BufReader::with_capacity(1 << 16, file)),
                    format,
                    line: 0,
                });
            }
        }
        Ok(Self::over(sources, options, total_bytes, files))
    }

    fn over(
        sources: Vec<Source>,
        options: InputOptions,
        total_bytes: Option<u64>,
        files: InputFiles,
    ) -> Self {
        Self {
            sources: sources.into_iter(),
            current: None,
            options,
            fingerprint: Fingerprint::default(),
            position: Position::default(),
            total_bytes,
            files,
            buffer: Vec::new(),
        }
    }

    /// The files it reads (and the directories it walked), to check that no output is one.
    pub fn files(&self) -> &InputFiles {
        &self.files
    }

    /// Where the reading stands after the last record read.
    pub fn position(&self) -> &Position {
        &self.position
    }

    /// Bytes read so far.
    #[cfg(test)]
    pub fn bytes_read(&self) -> u64 {
        self.fingerprint.bytes()
    }

    /// The size of every input, when all are files (not stdin).
    pub fn total_bytes(&self) -> Option<u64> {
        self.total_bytes
    }

    /// The next record, a bad record, or `None` at the end of the last input. Reading errors
    /// are errors; a record that cannot be encoded is `Ok(Some(Err(..)))`.
    pub fn next_record(&mut self) -> io::Result<Option<Result<Record, BadRecord>>> {
        let max_chars = self.options.max_text_chars;
        loop {
            if self.current.is_none() {
                match self.sources.next() {
                    Some(source) => self.current = Some(source),
                    None => return Ok(None),
                }
            }
            let read = match self.current.as_mut().expect("set above") {
                Source::Stream {
                    name,
                    reader,
                    format,
                    line,
                } => {
                    let limit = line_limit(*format, max_chars);
                    let got = read_line(
                        reader.as_mut(),
                        limit,
                        &mut self.buffer,
                        &mut self.fingerprint,
                    )
                    .map_err(|e| io::Error::new(e.kind(), format!("reading {name}: {e}")))?;
                    match got {
                        None => None,
                        Some(got) => {
                            *line += 1;
                            let location = Location {
                                source: name.clone(),
                                line: Some(*line),
                            };
                            Some(match got {
                                Line::TooLong { bytes } => Err(BadRecord {
                                    location,
                                    message: format!(
                                        "the line has {bytes} bytes, more than a record with a \
                                         text of --max-text-chars {max_chars} takes ({limit}): \
                                         skipped unread"
                                    ),
                                }),
                                Line::Whole => match std::str::from_utf8(&self.buffer) {
                                    Err(_) => Err(BadRecord {
                                        location,
                                        message: "the line is not UTF-8 text".into(),
                                    }),
                                    Ok(text) => {
                                        let text = text.trim_end_matches(['\n', '\r']);
                                        if text.trim().is_empty() {
                                            continue; // blank lines are not records
                                        }
                                        match format {
                                            InputFormat::Jsonl => {
                                                parse_json(text, location, &self.options)
                                            }
                                            _ => Ok((None, text.to_string(), location)),
                                        }
                                    }
                                },
                            })
                        }
                    }
                }
                Source::Directory { root, files } => match files.next() {
                    None => None,
                    Some(path) => {
                        let relative = path.strip_prefix(root.as_path()).unwrap_or(&path);
                        let id = relative.to_string_lossy().into_owned();
                        // The path is the id: it is part of what the fingerprint covers.
                        self.fingerprint.mark(id.as_bytes());
                        self.fingerprint.mark(b"\0");
                        let limit = max_chars.saturating_mul(4);
                        let bytes = read_file(&path, limit, &mut self.fingerprint)?;
                        let location = Location {
                            source: path.display().to_string(),
                            line: None,
                        };
                        Some(match bytes {
                            Err(size) => Err(BadRecord {
                                location,
                                message: format!(
                                    "the file has {size} bytes, more than a text of \
                                     --max-text-chars {max_chars} takes ({limit}): skipped unread"
                                ),
                            }),
                            Ok(bytes) => match String::from_utf8(bytes) {
                                Ok(text) => Ok((Some(Value::String(id)), text, location)),
                                Err(_) => Err(BadRecord {
                                    location,
                                    message: "the file is not UTF-8 text".into(),
                                }),
                            },
                        })
                    }
                },
            };
            let Some(read) = read else {
                self.current = None;
                continue;
            };
            let position = self.position.records;
            self.position = Position {
                records: position + 1,
                fingerprint: self.fingerprint.clone(),
            };
            let record = read.and_then(|(id, text, location)| {
                let chars = text.chars().count();
                if chars > max_chars {
                    return Err(BadRecord {
                        location,
                        message: format!(
                            "the text has {chars} characters, over --max-text-chars {max_chars}"
                        ),
                    });
                }
                Ok(Record {
                    id: id.unwrap_or_else(|| Value::from(position)),
                    text,
                    location,
                    position,
                })
            });
            return Ok(Some(record));
        }
    }
}

/// The contents of the file at `path` when it has at most `limit` bytes, else `Err` with its
/// size (read through, not kept); every byte goes into `fingerprint`.
fn read_file(
    path: &Path,
    limit: usize,
    fingerprint: &mut Fingerprint,
) -> io::Result<Result<Vec<u8>, u64>> {
    let file = File::open(path).map_err(|e| with_path(e, path))?;
    let mut bytes = Vec::new();
    let mut reader = file.take(limit as u64 + 1);
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| with_path(e, path))?;
    fingerprint.update(&bytes);
    if bytes.len() <= limit {
        return Ok(Ok(bytes));
    }
    let mut file = reader.into_inner();
    let mut size = bytes.len() as u64;
    drop(bytes);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(with_path(e, path)),
        };
        fingerprint.update(&chunk[..n]);
        size += n as u64;
    }
    Ok(Err(size))
}

fn parse_json(
    line: &str,
    location: Location,
    options: &InputOptions,
) -> Result<(Option<Value>, String, Location), BadRecord> {
    let bad = |message: String| BadRecord {
        location: location.clone(),
        message,
    };
    let mut object = match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(bad("the line is not a JSON object".into())),
        Err(e) => return Err(bad(format!("invalid JSON: {e}"))),
    };
    let text = match object.remove(&options.text_field) {
        Some(Value::String(text)) => text,
        Some(_) => {
            return Err(bad(format!(
                "field `{}` is not a string",
                options.text_field
            )))
        }
        None => {
            return Err(bad(format!(
                "missing field `{}` (choose the field with --text-field)",
                options.text_field
            )))
        }
    };
    let id = match object.remove(&options.id_field) {
        None | Some(Value::Null) => None,
        Some(id @ Value::String(_)) => Some(id),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(Value::Number(n)),
        Some(_) => {
            return Err(bad(format!(
                "field `{}` is not a string or an integer",
                options.id_field
            )))
        }
    };
    Ok((id, text, location))
}

fn is_jsonl(path: &Path) -> bool {
    matches!(
        extension(path).as_deref(),
        Some("jsonl" | "ndjson" | "json")
    )
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
}

/// Whether a directory's walk reads the file at `path` (a `.txt` or `.md` file).
pub fn is_document(path: &Path) -> bool {
    matches!(extension(path).as_deref(), Some("txt" | "md"))
}

/// The `.txt` and `.md` files under `dir`, at any depth.
fn walk(dir: &Path, into: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| with_path(e, dir))? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(&path, into)?;
        } else if is_document(&path) {
            into.push(path);
        }
    }
    Ok(())
}

fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// Every record of `corpus`.
#[cfg(test)]
fn records(corpus: &mut Corpus) -> Vec<Result<Record, BadRecord>> {
    let mut out = Vec::new();
    while let Some(record) = corpus.next_record().unwrap() {
        out.push(record);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> InputOptions {
        InputOptions {
            format: InputFormat::Auto,
            text_field: "text".into(),
            id_field: "id".into(),
            max_text_chars: 20,
        }
    }

    #[test]
    fn jsonl_records_keep_their_ids_and_get_their_position_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(
            &path,
            "{\"id\": \"a\", \"text\": \"one\"}\n\n{\"text\": \"two\"}\n{\"id\": 7, \"text\": \"three\"}\n",
        )
        .unwrap();
        let mut corpus = Corpus::open(&[path], options()).unwrap();
        let got: Vec<_> = records(&mut corpus)
            .into_iter()
            .map(|r| {
                let r = r.unwrap();
                (r.id, r.text, r.location.line)
            })
            .collect();
        assert_eq!(
            got,
            [
                (Value::from("a"), "one".to_string(), Some(1)),
                (Value::from(1), "two".to_string(), Some(3)),
                (Value::from(7), "three".to_string(), Some(4)),
            ]
        );
    }

    #[test]
    fn bad_records_name_their_line_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        std::fs::write(
            &path,
            "{\"text\": \"fine\"}\nnot json\n{\"body\": \"x\"}\n{\"text\": 3}\n[1]\n{\"text\": \"this text is far too long\"}\n{\"id\": [1], \"text\": \"x\"}\n",
        )
        .unwrap();
        let mut corpus = Corpus::open(std::slice::from_ref(&path), options()).unwrap();
        let messages: Vec<String> = records(&mut corpus)
            .into_iter()
            .skip(1)
            .map(|r| r.unwrap_err().to_string())
            .collect();
        let name = path.display();
        assert!(
            messages[0].starts_with(&format!("{name}:2: invalid JSON")),
            "{messages:?}"
        );
        assert_eq!(
            messages[1],
            format!("{name}:3: missing field `text` (choose the field with --text-field)")
        );
        assert_eq!(
            messages[2],
            format!("{name}:4: field `text` is not a string")
        );
        assert_eq!(
            messages[3],
            format!("{name}:5: the line is not a JSON object")
        );
        assert_eq!(
            messages[4],
            format!("{name}:6: the text has 25 characters, over --max-text-chars 20")
        );
        assert_eq!(
            messages[5],
            format!("{name}:7: field `id` is not a string or an integer")
        );
    }

    #[test]
    fn a_line_that_is_not_utf8_is_a_bad_record_and_reading_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.txt");
        std::fs::write(&path, b"ok\n\xff\xfe\nafter\n").unwrap();
        let mut corpus = Corpus::open(std::slice::from_ref(&path), options()).unwrap();
        let got = records(&mut corpus);
        assert_eq!(got[0].as_ref().unwrap().text, "ok");
        assert_eq!(
            got[1].as_ref().unwrap_err().to_string(),
            format!("{}:2: the line is not UTF-8 text", path.display())
        );
        let after = got[2].as_ref().unwrap();
        assert_eq!((after.text.as_str(), &after.id), ("after", &Value::from(2)));
    }

    #[test]
    fn text_files_hold_a_document_per_line_and_directories_one_per_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lines.txt"), "first\r\nsecond\n\nthird").unwrap();
        let docs = dir.path().join("docs");
        std::fs::create_dir_all(docs.join("sub")).unwrap();
        std::fs::write(docs.join("b.md"), "# B\n\nbody").unwrap();
        std::fs::write(docs.join("sub/a.txt"), "a").unwrap();
        std::fs::write(docs.join("skip.bin"), "x").unwrap();
        let mut corpus =
            Corpus::open(&[dir.path().join("lines.txt"), docs.clone()], options()).unwrap();
        let got: Vec<_> = records(&mut corpus)
            .into_iter()
            .map(|r| {
                let r = r.unwrap();
                (r.id, r.text)
            })
            .collect();
        assert_eq!(
            got,
            [
                (Value::from(0), "first".to_string()),
                (Value::from(1), "second".to_string()),
                (Value::from(2), "third".to_string()),
                (Value::from("b.md"), "# B\n\nbody".to_string()),
                (Value::from("sub/a.txt"), "a".to_string()),
            ]
        );
        assert_eq!(corpus.bytes_read(), corpus.total_bytes().unwrap());
    }

    #[test]
    fn a_missing_input_is_an_error_naming_it() {
        let error = Corpus::open(&[PathBuf::from("/nonexistent/c.jsonl")], options())
            .err()
            .unwrap();
        assert!(
            error.to_string().starts_with("/nonexistent/c.jsonl: "),
            "{error}"
        );
    }
}
