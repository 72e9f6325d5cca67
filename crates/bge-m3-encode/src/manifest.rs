//! The manifest beside an output file (`OUT.manifest.json`): what shapes the output (the
//! model's identity and the options), the inputs, and how far the output goes (the input
//! position to continue from, with the fingerprint of the input up to there, the last record
//! written, the counts, the output's own state). It is rewritten after every window the
//! output makes durable, through a temporary file renamed over it, so a kill at any moment
//! leaves a manifest that describes an output `--resume` can continue exactly.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::input::Checkpoint;
use crate::lines::hex;
use crate::shard::Shard;

/// The manifest's format, written by this program. Version 2 added `shard`: a program that
/// knows only version 1 must not resume a shard's output as a whole run's.
pub const VERSION: u32 = 2;
/// The versions it reads: a version 1 manifest is one without a shard.
const READS: [u64; 2] = [1, 2];

/// Everything recorded beside an output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    /// The program and version that wrote it.
    pub program: String,
    pub output: Output,
    /// The inputs as the last run named them, with their sizes then (the input is identified
    /// by `progress.input`'s fingerprint, not by these names).
    pub inputs: Vec<Input>,
    pub options: Options,
    /// The shard the output holds (`--shard`); none: every record.
    #[serde(default)]
    pub shard: Option<Shard>,
    pub progress: Progress,
    /// Every record of the input (of the shard) is in the output.
    pub complete: bool,
}

/// The output file and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub path: String,
    #[serde(flatten)]
    pub state: OutputState,
}

/// What the output holds so far, in its format's terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum OutputState {
    /// The file's complete lines end at `bytes`; anything after is cut on resume.
    Jsonl { bytes: u64 },
    /// `row_groups` complete row groups (one per window), in `partial` while it is written
    /// (with their metadata in `partial` + `.groups`), else in the output file itself.
    Parquet {
        /// Bumped by each resume, which copies the complete row groups into a new partial file.
        generation: u64,
        partial: Option<String>,
        row_groups: u64,
        /// Bytes of `partial` up to the end of its last complete row group.
        bytes: u64,
    },
}

/// An input as named on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    pub path: String,
    /// Its size (of a directory: of the files read in it); none for stdin.
    pub bytes: Option<u64>,
}

/// What shapes the output: a resume with any other value is refused, naming the option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub model: Model,
    pub dtype: String,
    pub max_length: usize,
    pub outputs: Vec<String>,
    /// None when there is no sparse output.
    pub sparse_format: Option<String>,
    pub text_field: String,
    pub id_field: String,
    pub input_format: String,
}

/// The model, identified by its files, not by where they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// `--model` as given (not compared: a copy of the same files elsewhere is the same model).
    pub path: String,
    pub files: Vec<ModelFile>,
}

/// One of the files the model is loaded from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
    /// What `sha256` covers: `whole`, or `sampled` (the size and three MiB: at the start, the
    /// middle and the end) for files over 64 MiB, the weights.
    pub hashed: String,
}

/// How far the output goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Where in the input the output stops: a resume continues from `input.records`, and the
    /// input up to there must hash to `input.sha256`.
    pub input: Checkpoint,
    /// The last record written: the record at that position of the input must carry that id.
    pub last: Option<Last>,
    /// Rows written.
    pub documents: u64,
    /// Their tokens.
    pub tokens: u64,
    /// Bad records skipped (`--on-error skip`).
    pub skipped: u64,
    /// Records whose id repeats an earlier record's, among the tracked ids.
    pub repeated_ids: u64,
}

/// The last record written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Last {
    /// Its position in the input (0-based, bad records counted).
    pub record: u64,
    pub id: Value,
}

/// The files of a model directory that shape what it computes.
const MODEL_FILES: [&str; 8] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model.safetensors",
    "pytorch_model.bin",
    "colbert_linear.pt",
    "sparse_linear.pt",
];

/// Files up to this size are hashed whole.
const HASHED_WHOLE: u64 = 64 << 20;
/// The size of each of the three samples of a larger file.
const SAMPLE: u64 = 1 << 20;

impl Model {
    /// The identity of the model in `dir` (`given`: `--model` as the user wrote it).
    pub fn identify(dir: &Path, given: &Path) -> io::Result<Self> {
        let mut files = Vec::new();
        for name in MODEL_FILES {
            let path = dir.join(name);
            let Ok(metadata) = std::fs::metadata(&path) else {
                continue;
            };
            let bytes = metadata.len();
            let (sha256, hashed) = hash_file(&path, bytes).map_err(|e| with_path(e, &path))?;
            files.push(ModelFile {
                name: name.to_string(),
                bytes,
                sha256,
                hashed: hashed.to_string(),
            });
        }
        Ok(Self {
            path: given.display().to_string(),
            files,
        })
    }
}

fn hash_file(path: &Path, size: u64) -> io::Result<(String, &'static str)> {
    use sha2::{Digest, Sha256};
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    if size <= HASHED_WHOLE {
        io::copy(&mut file, &mut hasher)?;
        return Ok((hex(&hasher.finalize()), "whole"));
    }
    hasher.update(size.to_le_bytes());
    let mut sample = vec![0u8; SAMPLE as usize];
    for start in [0, size / 2 - SAMPLE / 2, size - SAMPLE] {
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut sample)?;
        hasher.update(&sample);
    }
    Ok((hex(&hasher.finalize()), "sampled"))
}

/// What two descriptions of an output are called in a message about their difference:
/// `now` and `then` for a resume ("32 now, 64 when the output was written"), two files' names
/// for `verify`.
#[derive(Debug, Clone, Copy)]
pub struct Sides<'a> {
    pub this: &'a str,
    pub that: &'a str,
}

impl Sides<'static> {
    /// A resume: the options given now against the manifest's.
    pub const RESUME: Sides<'static> = Sides {
        this: "now",
        that: "when the output was written",
    };
}

impl Options {
    /// The first option that differs from `that`, as `--flag` and what differs (`sides` names
    /// the two); `None` when all agree.
    pub fn first_difference(
        &self,
        that: &Options,
        sides: Sides<'_>,
    ) -> Option<(&'static str, String)> {
        let Sides { this: a, that: b } = sides;
        let was = |this: &dyn std::fmt::Debug, that: &dyn std::fmt::Debug| {
            format!("{this:?} {a}, {that:?} {b}")
        };
        if self.model.files != that.model.files {
            return Some(("--model", model_difference(&self.model, &that.model, sides)));
        }
        let checks: [(&'static str, bool, String); 7] = [
            (
                "--dtype",
                self.dtype == that.dtype,
                was(&self.dtype, &that.dtype),
            ),
            (
                "--max-length",
                self.max_length == that.max_length,
                was(&self.max_length, &that.max_length),
            ),
            (
                "--outputs",
                self.outputs == that.outputs,
                was(&self.outputs.join(","), &that.outputs.join(",")),
            ),
            (
                "--sparse-format",
                self.sparse_format == that.sparse_format,
                was(&self.sparse_format, &that.sparse_format),
            ),
            (
                "--text-field",
                self.text_field == that.text_field,
                was(&self.text_field, &that.text_field),
            ),
            (
                "--id-field",
                self.id_field == that.id_field,
                was(&self.id_field, &that.id_field),
            ),
            (
                "--input-format",
                self.input_format == that.input_format,
                was(&self.input_format, &that.input_format),
            ),
        ];
        checks
            .into_iter()
            .find(|(_, same, _)| !same)
            .map(|(flag, _, what)| (flag, what))
    }
}

fn model_difference(this: &Model, that: &Model, sides: Sides<'_>) -> String {
    let Sides { this: a, that: b } = sides;
    for file in &that.files {
        match this.files.iter().find(|f| f.name == file.name) {
            None => return format!("it has no {} {a}", file.name),
            Some(f) if f != file => {
                return format!(
                    "its {} differs ({} bytes {a}, {} {b}, other contents)",
                    file.name, f.bytes, file.bytes
                )
            }
            Some(_) => {}
        }
    }
    match this
        .files
        .iter()
        .find(|f| !that.files.iter().any(|t| t.name == f.name))
    {
        Some(file) => format!("it has a {} {a}, not there {b}", file.name),
        None => "its files differ".into(),
    }
}

/// `OUT.manifest.json`.
pub fn path_for(output: &Path) -> PathBuf {
    with_suffix(output, ".manifest.json")
}

/// `path` with `suffix` added to its file name.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl Manifest {
    /// Reads the manifest at `path`: `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, String> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let version = serde_json::from_slice::<Value>(&text)
            .ok()
            .and_then(|v| v.get("manifest_version").and_then(Value::as_u64));
        if !version.is_some_and(|v| READS.contains(&v)) {
            return Err(format!(
                "{}: not a manifest of this program (manifest_version 1 or {VERSION} expected)",
                path.display()
            ));
        }
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| format!("{}: not a valid manifest: {e}", path.display()))
    }

    /// Writes it to `path` durably: to `path.tmp`, synced, renamed over `path`, and the
    /// directory synced, so that `path` is always a whole manifest, the old or the new.
    pub fn store(&self, path: &Path) -> io::Result<()> {
        let temporary = with_suffix(path, ".tmp");
        let mut json = serde_json::to_vec_pretty(self)?;
        json.push(b'\n');
        let write = || -> io::Result<()> {
            let mut file = File::create(&temporary)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)?;
            sync_directory(path)
        };
        write().map_err(|e| with_path(e, path))
    }
}

/// Syncs the directory holding `path`, so that a rename or a new file in it is durable.
pub fn sync_directory(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            model: Model {
                path: "m".into(),
                files: vec![ModelFile {
                    name: "config.json".into(),
                    bytes: 10,
                    sha256: "ab".into(),
                    hashed: "whole".into(),
                }],
            },
            dtype: "f32".into(),
            max_length: 8192,
            outputs: vec!["dense".into(), "sparse".into()],
            sparse_format: Some("indices".into()),
            text_field: "text".into(),
            id_field: "id".into(),
            input_format: "auto".into(),
        }
    }

    #[test]
    fn each_option_that_differs_is_named() {
        let then = options();
        let differs = |now: &Options| now.first_difference(&then, Sides::RESUME);
        assert_eq!(differs(&options()), None);
        let mut moved = options();
        moved.model.path = "elsewhere".into();
        assert_eq!(differs(&moved), None, "the path is not compared");
        type Change = fn(&mut Options);
        let cases: [(&str, Change); 8] = [
            ("--model", |o| o.model.files[0].sha256 = "cd".into()),
            ("--dtype", |o| o.dtype = "bf16".into()),
            ("--max-length", |o| o.max_length = 512),
            ("--outputs", |o| o.outputs = vec!["dense".into()]),
            ("--sparse-format", |o| o.sparse_format = Some("id".into())),
            ("--text-field", |o| o.text_field = "body".into()),
            ("--id-field", |o| o.id_field = "key".into()),
            ("--input-format", |o| o.input_format = "text".into()),
        ];
        for (flag, change) in cases {
            let mut now = options();
            change(&mut now);
            let (named, what) = differs(&now).unwrap();
            assert_eq!(named, flag, "{what}");
        }
        let mut now = options();
        now.max_length = 512;
        let sides = Sides {
            this: "in b.jsonl",
            that: "in a.jsonl",
        };
        assert_eq!(
            now.first_difference(&then, sides),
            Some(("--max-length", "512 in b.jsonl, 8192 in a.jsonl".into()))
        );
        now.max_length = 8192;
        now.model.files[0].bytes = 11;
        assert_eq!(
            now.first_difference(&then, sides).unwrap().1,
            "its config.json differs (11 bytes in b.jsonl, 10 in a.jsonl, other contents)"
        );
    }

    #[test]
    fn a_manifest_round_trips_and_replaces_the_old_one_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("out.parquet"));
        assert_eq!(Manifest::load(&path).unwrap(), None);
        let mut manifest = Manifest {
            manifest_version: VERSION,
            program: "bge-m3-encode".into(),
            output: Output {
                path: "out.parquet".into(),
                state: OutputState::Parquet {
                    generation: 1,
                    partial: Some("out.parquet.partial.1".into()),
                    row_groups: 2,
                    bytes: 1234,
                },
            },
            inputs: vec![Input {
                path: "c.jsonl".into(),
                bytes: Some(99),
            }],
            options: options(),
            shard: Some(Shard::new(2, 3).unwrap()),
            progress: Progress::default(),
            complete: false,
        };
        manifest.store(&path).unwrap();
        manifest.progress.documents = 8;
        manifest.progress.last = Some(Last {
            record: 9,
            id: Value::from("7"),
        });
        manifest.store(&path).unwrap();
        assert_eq!(Manifest::load(&path).unwrap(), Some(manifest));
        assert!(!with_suffix(&path, ".tmp").exists());
        let json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["output"]["format"], "parquet");
        assert_eq!(json["shard"]["index"], 2);

        // Version 1, written before shards: the same manifest without one.
        let mut old = json.clone();
        old["manifest_version"] = Value::from(1);
        old.as_object_mut().unwrap().remove("shard");
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        let read = Manifest::load(&path).unwrap().unwrap();
        assert_eq!((read.manifest_version, read.shard), (1, None));
        old["manifest_version"] = Value::from(3);
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        let error = Manifest::load(&path).unwrap_err();
        assert!(
            error.contains("manifest_version 1 or 2 expected"),
            "{error}"
        );

        std::fs::write(&path, "{\"hello\": 1}").unwrap();
        let error = Manifest::load(&path).unwrap_err();
        assert!(error.contains("not a manifest of this program"), "{error}");
    }

    #[test]
    fn a_large_file_is_hashed_by_samples_that_see_a_change_in_the_middle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let mut bytes = vec![7u8; (HASHED_WHOLE + 1) as usize];
        std::fs::write(&path, &bytes).unwrap();
        let (first, hashed) = hash_file(&path, bytes.len() as u64).unwrap();
        assert_eq!(hashed, "sampled");
        let middle = bytes.len() / 2;
        bytes[middle] = 8;
        std::fs::write(&path, &bytes).unwrap();
        let (second, _) = hash_file(&path, bytes.len() as u64).unwrap();
        assert_ne!(first, second);
    }
}
