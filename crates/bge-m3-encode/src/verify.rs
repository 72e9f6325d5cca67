//! `bge-m3-encode verify OUT...`: whether a set of outputs, the N shards of one corpus (or one
//! output of a run without `--shard`), is complete and consistent, before a bulk load. It reads
//! each output's manifest and, cheaply, the output itself (a JSONL file's size and last row; a
//! Parquet file's footer and the ids of its last row group), and checks:
//!
//! - every output has a manifest, and all were written with the same model files and the
//!   options that shape a row (the checks of `--resume`), in the same format;
//! - they are shards of one split (the same N), each of the N exactly once;
//! - each is complete, and all were encoded from the same input (the same fingerprint of the
//!   whole input: records, bytes, SHA-256);
//! - each holds, written or skipped as bad, as many records as its share of the input's
//!   positions, so the shards add up to the input;
//! - each file ends where its manifest says, with the row its manifest names last.
//!
//! Every problem is named (which output, what differs from what); the exit status is 0 when
//! there is none, 1 otherwise.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::manifest::{self, Manifest, OutputState, Sides};
use crate::progress::thousands;
use crate::shard::Shard;

/// `bge-m3-encode verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The outputs, or their manifests (OUT.manifest.json): all N shards of one corpus, or the
    /// output of one run without --shard.
    #[arg(required = true, value_name = "OUTPUT")]
    pub outputs: Vec<PathBuf>,
}

/// One output and its manifest.
struct Part {
    output: PathBuf,
    manifest: Manifest,
    shard: Shard,
}

impl Part {
    fn name(&self) -> String {
        self.output.display().to_string()
    }

    fn format(&self) -> &'static str {
        match self.manifest.output.state {
            OutputState::Jsonl { .. } => "jsonl",
            OutputState::Parquet { .. } => "parquet",
        }
    }
}

/// What was found: the outputs read, and every problem.
struct Report {
    parts: Vec<Part>,
    problems: Vec<String>,
}

pub fn run(args: &VerifyArgs) -> ExitCode {
    let report = check(&args.outputs);
    for part in &report.parts {
        let progress = &part.manifest.progress;
        let state = if part.manifest.complete {
            "complete"
        } else {
            "NOT complete"
        };
        println!(
            "shard {}: {}: {} documents, {} tokens, {} bad records skipped, {} repeated ids; \
             {} input records read; {state}",
            part.shard,
            part.name(),
            thousands(progress.documents),
            thousands(progress.tokens),
            thousands(progress.skipped),
            thousands(progress.repeated_ids),
            thousands(progress.input.records),
        );
    }
    if report.problems.is_empty() {
        println!("{}", summary(&report.parts));
        return ExitCode::SUCCESS;
    }
    for problem in &report.problems {
        eprintln!("bge-m3-encode verify: {problem}");
    }
    let problems = report.problems.len();
    eprintln!(
        "bge-m3-encode verify: {problems} problem{}: these outputs are not one complete and \
         consistent encoding of one input; do not load them as such",
        if problems == 1 { "" } else { "s" }
    );
    ExitCode::from(1)
}

/// The last line when every check passed.
fn summary(parts: &[Part]) -> String {
    let first = &parts[0].manifest;
    let sum = |field: fn(&manifest::Progress) -> u64| -> u64 {
        parts.iter().map(|p| field(&p.manifest.progress)).sum()
    };
    let input = &first.progress.input;
    let options = &first.options;
    let what = match parts[0].shard.count() {
        1 => "one output of the whole input".to_string(),
        count => format!("all {count} shards"),
    };
    format!(
        "verified: {what}, complete and consistent: {} documents, {} tokens, {} bad records \
         skipped, {} records repeat an earlier record's id; of one input of {} records ({} \
         bytes, SHA-256 {}); model {} ({}), outputs {}, {}",
        thousands(sum(|p| p.documents)),
        thousands(sum(|p| p.tokens)),
        thousands(sum(|p| p.skipped)),
        thousands(sum(|p| p.repeated_ids)),
        thousands(input.records),
        thousands(input.bytes),
        input.sha256,
        options.model.path,
        options.dtype,
        options.outputs.join(","),
        parts[0].format(),
    )
}

/// The manifest of `path`: an output, or its manifest.
fn load(path: &Path) -> Result<Part, String> {
    let name = path.display().to_string();
    let (output, manifest_path) = match name.strip_suffix(".manifest.json") {
        Some(output) => (PathBuf::from(output), path.to_path_buf()),
        None => (path.to_path_buf(), manifest::path_for(path)),
    };
    match Manifest::load(&manifest_path)? {
        Some(manifest) => Ok(Part {
            shard: manifest.shard.unwrap_or(Shard::WHOLE),
            output,
            manifest,
        }),
        None => Err(format!(
            "{}: there is no manifest beside it ({}): not an output of bge-m3-encode, or of one \
             older than manifests",
            output.display(),
            manifest_path.display()
        )),
    }
}

fn check(paths: &[PathBuf]) -> Report {
    let mut problems = Vec::new();
    let mut parts = Vec::new();
    for path in paths {
        match load(path) {
            Ok(part) => parts.push(part),
            Err(problem) => problems.push(problem),
        }
    }
    parts.sort_by(|a, b| {
        (a.shard.count(), a.shard.index(), &a.output).cmp(&(
            b.shard.count(),
            b.shard.index(),
            &b.output,
        ))
    });
    if let Some(first) = parts.first() {
        same_encoding(first, &parts[1..], &mut problems);
        every_shard_once(&parts, &mut problems);
        complete_and_adding_up(&parts, &mut problems);
    }
    for part in parts.iter().filter(|p| p.manifest.complete) {
        if let Err(problem) = check_file(part) {
            problems.push(problem);
        }
    }
    Report { parts, problems }
}

/// The same model, options and format as `first`.
fn same_encoding(first: &Part, others: &[Part], problems: &mut Vec<String>) {
    for part in others {
        let (this, that) = (
            format!("in {}", part.name()),
            format!("in {}", first.name()),
        );
        let sides = Sides {
            this: &this,
            that: &that,
        };
        let format = (part.format() != first.format()).then(|| {
            (
                "--output-format",
                format!("{} {this}, {} {that}", part.format(), first.format()),
            )
        });
        let differs = format.or_else(|| {
            part.manifest
                .options
                .first_difference(&first.manifest.options, sides)
        });
        if let Some((flag, what)) = differs {
            problems.push(format!(
                "{}: {flag} differs ({what}): not the same encoding",
                part.name()
            ));
        }
    }
}

/// One split, and each of its shards exactly once.
fn every_shard_once(parts: &[Part], problems: &mut Vec<String>) {
    let count = parts[0].shard.count();
    if let Some(other) = parts.iter().find(|p| p.shard.count() != count) {
        problems.push(format!(
            "{} is shard {} but {} is shard {}: outputs of two splits of the corpus (--shard \
             I/N with another N)",
            parts[0].name(),
            parts[0].shard,
            other.name(),
            other.shard
        ));
        return;
    }
    let mut by_index: BTreeMap<u64, Vec<&Part>> = BTreeMap::new();
    for part in parts {
        by_index.entry(part.shard.index()).or_default().push(part);
    }
    for (index, holders) in &by_index {
        if holders.len() > 1 {
            let names: Vec<String> = holders.iter().map(|p| p.name()).collect();
            problems.push(format!(
                "shard {index}/{count} is given {} times: {}",
                holders.len(),
                names.join(", ")
            ));
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|i| !by_index.contains_key(i))
        .map(|i| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        let shown = missing.len().min(10);
        let more = if missing.len() > shown { ", ..." } else { "" };
        problems.push(format!(
            "{} of the {count} shards missing: {}{more} (no output given holds them; a Parquet \
             output has its name only once finished: give the manifests, OUT.manifest.json, to \
             see the shards still running or stopped)",
            missing.len(),
            missing[..shown].join(", "),
        ));
    }
}

/// Each complete, all from the same input, each holding its share of it.
fn complete_and_adding_up(parts: &[Part], problems: &mut Vec<String>) {
    for part in parts.iter().filter(|p| !p.manifest.complete) {
        problems.push(format!(
            "{}: shard {} is not complete: its manifest stops at input record {} (run it again \
             with --resume, or see its log for why it stopped)",
            part.name(),
            part.shard,
            part.manifest.progress.input.records
        ));
    }
    let complete: Vec<&Part> = parts.iter().filter(|p| p.manifest.complete).collect();
    let Some(first) = complete.first() else {
        return;
    };
    let input = &first.manifest.progress.input;
    for part in &complete[1..] {
        let other = &part.manifest.progress.input;
        if other != input {
            problems.push(format!(
                "{}: encoded from another input than {}: {} records, {} bytes, SHA-256 {} \
                 against {} records, {} bytes, SHA-256 {}",
                part.name(),
                first.name(),
                other.records,
                other.bytes,
                other.sha256,
                input.records,
                input.bytes,
                input.sha256
            ));
        }
    }
    for part in complete {
        let progress = &part.manifest.progress;
        let share = part.shard.share(progress.input.records);
        let held = progress.documents + progress.skipped;
        if held != share {
            problems.push(format!(
                "{}: holds {} documents and {} skipped bad records, {held} records, but shard \
                 {} owns {share} of the input's {} records",
                part.name(),
                progress.documents,
                progress.skipped,
                part.shard,
                progress.input.records
            ));
        }
    }
}

/// The output file ends where its manifest says, with the row it names last.
fn check_file(part: &Part) -> Result<(), String> {
    let name = part.name();
    let progress = &part.manifest.progress;
    match &part.manifest.output.state {
        OutputState::Jsonl { bytes } => {
            let mut file =
                File::open(&part.output).map_err(|e| format!("{name}: cannot read it: {e}"))?;
            let length = file
                .metadata()
                .map_err(|e| format!("{name}: cannot read it: {e}"))?
                .len();
            if length != *bytes {
                return Err(format!(
                    "{name}: the file has {length} bytes, its manifest counts {bytes}: it changed \
                     since it was written"
                ));
            }
            if let Some(last) = &progress.last {
                let id = crate::output::last_row_id(&mut file, *bytes)
                    .map_err(|e| format!("{name}: cannot read it: {e}"))?;
                if id.as_ref() != Some(&last.id) {
                    let id = id.map_or("no id".to_string(), |id| format!("id {id}"));
                    return Err(format!(
                        "{name}: its last row has {id}, its manifest says {}: it changed since \
                         it was written",
                        last.id
                    ));
                }
            }
            Ok(())
        }
        OutputState::Parquet {
            partial,
            row_groups,
            ..
        } => {
            if let Some(partial) = partial {
                return Err(format!(
                    "{name}: its manifest names the partial file {partial}: the file was never \
                     finished"
                ));
            }
            let contents = parquet_contents(&part.output)?;
            if contents.rows != progress.documents || contents.row_groups != *row_groups {
                return Err(format!(
                    "{name}: the file holds {} rows in {} row groups, its manifest counts {} in \
                     {row_groups}: it changed since it was written",
                    contents.rows, contents.row_groups, progress.documents
                ));
            }
            let want = progress.last.as_ref().map(|l| crate::input::id_key(&l.id));
            if contents.last_id != want {
                let has =
                    (contents.last_id.as_ref()).map_or("no row".into(), |id| format!("id {id:?}"));
                let says = want.map_or("none".into(), |id| format!("{id:?}"));
                return Err(format!(
                    "{name}: its last row has {has}, its manifest says {says}: it changed since \
                     it was written"
                ));
            }
            Ok(())
        }
    }
}

#[cfg(feature = "parquet")]
fn parquet_contents(path: &Path) -> Result<crate::parquet::Contents, String> {
    crate::parquet::contents(path).map_err(|e| e.to_string())
}

/// Without the feature, a Parquet output cannot be read: that is a problem, not a pass.
#[cfg(not(feature = "parquet"))]
fn parquet_contents(path: &Path) -> Result<Contents, String> {
    Err(format!(
        "{}: a Parquet output, which this build cannot read: build it with `--features parquet`",
        path.display()
    ))
}

#[cfg(not(feature = "parquet"))]
struct Contents {
    rows: u64,
    row_groups: u64,
    last_id: Option<String>,
}
