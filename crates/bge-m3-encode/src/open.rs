//! Opening a file output: a new one (its manifest written first), or one continued by
//! `--resume` once its manifest, the options and the input are checked ([`crate::resume`]).

use std::path::{Path, PathBuf};

use bge_m3_core::BgeM3;

use crate::guard::Written;
use crate::ids::RepeatedIds;
use crate::manifest::{self, Manifest, OutputState};
use crate::output::{self, OutputFormat};
use crate::pipeline::{Ledger, Start};
use crate::progress::ProgressMode;
use crate::{input, resume, text, Args};

/// Whether `path` is (or will be) a regular file, which gets a manifest: not a device or a
/// pipe (`/dev/stdout`, `/dev/null`).
pub fn is_file(path: &Path) -> bool {
    std::fs::metadata(path).map_or(true, |m| m.is_file())
}

/// The paths a run writing `path` may write (or remove), to check against the inputs.
pub fn written(path: &Path, format: OutputFormat) -> Result<Vec<Written<'static>>, String> {
    let manifest_path = manifest::path_for(path);
    let mut written = vec![
        Written {
            path: path.to_path_buf(),
            what: "--output",
        },
        Written {
            path: manifest::with_suffix(&manifest_path, ".tmp"),
            what: "the output's temporary manifest",
        },
    ];
    if format == OutputFormat::Parquet {
        let generation = match Manifest::load(&manifest_path).ok().flatten() {
            Some(Manifest {
                output:
                    manifest::Output {
                        state: OutputState::Parquet { generation, .. },
                        ..
                    },
                ..
            }) => generation,
            _ => 0,
        };
        // A new run writes generation 0; a resume, the next after the manifest's.
        let mut generations = vec![0, generation, generation + 1];
        generations.dedup();
        for generation in generations {
            let partial = partial_path(path, generation);
            written.push(Written {
                path: groups_path(&partial),
                what: "the output's row-group log",
            });
            written.push(Written {
                path: partial,
                what: "the output's partial file",
            });
        }
    }
    written.push(Written {
        path: manifest_path,
        what: "the output's manifest",
    });
    Ok(written)
}

/// What shapes the output, as its manifest records it.
pub fn shaping_options(
    args: &Args,
    dir: &Path,
    model: &BgeM3,
) -> std::io::Result<manifest::Options> {
    let outputs = args.outputs();
    let names = [
        ("dense", outputs.dense),
        ("sparse", outputs.sparse),
        ("colbert", outputs.colbert),
    ];
    Ok(manifest::Options {
        model: manifest::Model::identify(dir, &args.model)?,
        dtype: model.dtype().as_str().to_string(),
        max_length: args.max_length,
        outputs: names
            .iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| name.to_string())
            .collect(),
        sparse_format: outputs.sparse.then(|| args.sparse_format.to_string()),
        text_field: args.text_field.clone(),
        id_field: args.id_field.clone(),
        input_format: format!("{:?}", args.input_format).to_lowercase(),
    })
}

/// Opens the output file `path`: continues it (`--resume`, once its manifest and the input
/// are checked) or starts it, its manifest written first.
pub fn open_file(
    args: &Args,
    path: &Path,
    format: OutputFormat,
    shape: output::Shape,
    options: manifest::Options,
    corpus: &mut input::Corpus,
    mut ids: RepeatedIds,
) -> Result<Start, String> {
    let manifest_path = manifest::path_for(path);
    let existing = Manifest::load(&manifest_path)?;
    let parquet = format == OutputFormat::Parquet;
    let inputs = args
        .inputs
        .iter()
        .map(|input| manifest::Input {
            path: input.display().to_string(),
            bytes: std::fs::metadata(input)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
        })
        .collect();
    let resume = args.resume && (existing.is_some() || path.exists());
    if !resume {
        let state = if parquet {
            OutputState::Parquet {
                generation: 0,
                partial: Some(partial_path(path, 0).display().to_string()),
                row_groups: 0,
                bytes: 0,
            }
        } else {
            OutputState::Jsonl { bytes: 0 }
        };
        let ledger = Ledger {
            manifest: Manifest {
                manifest_version: manifest::VERSION,
                program: program(),
                output: manifest::Output {
                    path: path.display().to_string(),
                    state,
                },
                inputs,
                options,
                shard: args.shard,
                progress: Default::default(),
                complete: false,
            },
            path: manifest_path,
        };
        // The manifest first: a kill before the output is emptied leaves a manifest that
        // says nothing is written, which a resume then cuts the output to.
        ledger.store()?;
        if let Some(old) = existing {
            remove_partial(&old, 0);
        }
        let sink: Box<dyn output::Sink> = if parquet {
            parquet_create(path, shape)?
        } else {
            Box::new(output::Jsonl::create(path, true).map_err(text)?)
        };
        return Ok(Start {
            sink,
            ledger: Some(ledger),
            ids,
            repeated: 0,
            repeats: Vec::new(),
        });
    }
    let Some(mut manifest) = existing else {
        return Err(format!(
            "{}: there is no manifest beside it ({}; an older bge-m3-encode wrote none):              cannot resume it; run without --resume to encode it again",
            path.display(),
            manifest_path.display()
        ));
    };
    resume::check_options(path, &manifest, &options, parquet, args.shard)?;
    if args.progress != ProgressMode::None && manifest.progress.input.records > 0 {
        eprintln!(
            "resuming {}: reading the {} input records it was encoded from",
            path.display(),
            manifest.progress.input.records
        );
    }
    let written = resume::skip_written(corpus, &manifest, &mut ids)?;
    let last_id = manifest.progress.last.as_ref().map(|last| &last.id);
    let (sink, replaced): (Box<dyn output::Sink>, Vec<PathBuf>) = match &manifest.output.state {
        OutputState::Jsonl { bytes } => {
            let sink = output::Jsonl::resume(path, *bytes, last_id).map_err(text)?;
            (Box::new(sink), Vec::new())
        }
        state => parquet_resume(path, shape, state, manifest.progress.documents, last_id)?,
    };
    manifest.manifest_version = manifest::VERSION;
    manifest.program = program();
    manifest.inputs = inputs;
    manifest.options = options;
    manifest.output.state = sink.state().expect("a file's sink has a state");
    let ledger = Ledger {
        manifest,
        path: manifest_path,
    };
    ledger.store()?;
    // The manifest names the new partial file now: the old one can go.
    for file in replaced {
        let _ = std::fs::remove_file(file);
    }
    Ok(Start {
        sink,
        ledger: Some(ledger),
        ids,
        repeated: written.repeated,
        repeats: written.repeats,
    })
}

fn program() -> String {
    format!("bge-m3-encode {}", env!("CARGO_PKG_VERSION"))
}

/// Removes the partial files a manifest names, but for generation `keep`'s (which is about to
/// be written again).
fn remove_partial(old: &Manifest, keep: u64) {
    if let OutputState::Parquet {
        generation,
        partial: Some(partial),
        ..
    } = &old.output.state
    {
        if *generation != keep {
            let partial = PathBuf::from(partial);
            let _ = std::fs::remove_file(groups_path(&partial));
            let _ = std::fs::remove_file(partial);
        }
    }
}

#[cfg(feature = "parquet")]
use crate::parquet::{groups_path, partial_path};

#[cfg(feature = "parquet")]
fn parquet_create(path: &Path, shape: output::Shape) -> Result<Box<dyn output::Sink>, String> {
    Ok(Box::new(
        crate::parquet::Parquet::create(path, shape, 0).map_err(text)?,
    ))
}

#[cfg(feature = "parquet")]
fn parquet_resume(
    path: &Path,
    shape: output::Shape,
    state: &OutputState,
    documents: u64,
    last_id: Option<&serde_json::Value>,
) -> Result<(Box<dyn output::Sink>, Vec<PathBuf>), String> {
    let (sink, replaced) =
        crate::parquet::Parquet::resume(path, shape, state, documents, last_id).map_err(text)?;
    Ok((Box::new(sink), replaced))
}

#[cfg(not(feature = "parquet"))]
fn partial_path(path: &Path, generation: u64) -> PathBuf {
    manifest::with_suffix(path, &format!(".partial.{generation}"))
}

#[cfg(not(feature = "parquet"))]
fn groups_path(partial: &Path) -> PathBuf {
    manifest::with_suffix(partial, ".groups")
}

#[cfg(not(feature = "parquet"))]
const NO_PARQUET: &str = "this build has no Parquet output: build it with `--features parquet`";

#[cfg(not(feature = "parquet"))]
fn parquet_create(_: &Path, _: output::Shape) -> Result<Box<dyn output::Sink>, String> {
    Err(NO_PARQUET.into())
}

#[cfg(not(feature = "parquet"))]
fn parquet_resume(
    _: &Path,
    _: output::Shape,
    _: &OutputState,
    _: u64,
    _: Option<&serde_json::Value>,
) -> Result<(Box<dyn output::Sink>, Vec<PathBuf>), String> {
    Err(NO_PARQUET.into())
}
