//! What `--resume` checks before it continues an output, so that it never mixes rows of two
//! models, two option sets, two shards or two inputs: the options that shape the output and
//! the shard are those of its manifest, and the input, up to where the output stops, is the
//! one it was encoded from (the same fingerprint, and the record at the last written position
//! carries the last written id). The input is read up to there (which also finds the ids
//! repeated in it); the run goes on from the next record, whatever the ids.

use std::path::Path;

use crate::ids::{RepeatedIds, Seen};
use crate::input::Corpus;
use crate::manifest::{Manifest, Options, OutputState, Sides};
use crate::progress::{Repeat, EXAMPLES};
use crate::shard::Shard;

/// Refuses a resume of `output` whose `manifest` was written with other options (or in
/// another format, or for another shard), naming the option.
pub fn check_options(
    output: &Path,
    manifest: &Manifest,
    now: &Options,
    parquet: bool,
    shard: Option<Shard>,
) -> Result<(), String> {
    let was_parquet = matches!(manifest.output.state, OutputState::Parquet { .. });
    let name = |shard: Option<Shard>| shard.map_or("none".to_string(), |s| s.to_string());
    let differs = if shard != manifest.shard {
        Some((
            "--shard",
            format!(
                "{} now, {} when the output was written",
                name(shard),
                name(manifest.shard)
            ),
        ))
    } else if parquet != was_parquet {
        let name = |parquet| if parquet { "parquet" } else { "jsonl" };
        Some((
            "--output-format",
            format!(
                "{} now, {} when the output was written",
                name(parquet),
                name(was_parquet)
            ),
        ))
    } else {
        now.first_difference(&manifest.options, Sides::RESUME)
    };
    match differs {
        None => Ok(()),
        Some((flag, what)) => Err(format!(
            "{}: {flag} differs ({what}): cannot resume it with other options; run with those \
             it was written with, or without --resume to encode it again",
            output.display()
        )),
    }
}

/// The repeated ids among the records already in the output.
#[derive(Debug, Default)]
pub struct Written {
    /// How many records repeat an earlier record's id.
    pub repeated: u64,
    /// The first of them.
    pub repeats: Vec<Repeat>,
}

/// Reads `corpus` up to where the manifest's output stops, checking that it is the input the
/// output was encoded from, and tracking its ids in `ids` (every record's, the other shards'
/// too, as the run that wrote it did). Returns the repeated ids found among the shard's own.
pub fn skip_written(
    corpus: &mut Corpus,
    manifest: &Manifest,
    ids: &mut RepeatedIds,
) -> Result<Written, String> {
    let progress = &manifest.progress;
    let shard = manifest.shard.unwrap_or(Shard::WHOLE);
    let target = progress.input.records;
    let mut written = Written::default();
    let mut mismatch = None;
    while corpus.position().records < target {
        let record = corpus.next_record().map_err(|e| e.to_string())?;
        let Some(record) = record else {
            return Err(format!(
                "the input has {} records, fewer than the {target} the output was encoded from: \
                 it is not that input; cannot resume it",
                corpus.position().records
            ));
        };
        let position = corpus.position().records - 1;
        let last = progress
            .last
            .as_ref()
            .filter(|last| last.record == position);
        match record {
            Ok(record) => {
                if ids.see(&record.id) == Seen::Repeat && shard.owns(position) {
                    written.repeated += 1;
                    if written.repeats.len() < EXAMPLES {
                        written.repeats.push(Repeat {
                            id: record.id.clone(),
                            location: record.location.clone(),
                        });
                    }
                }
                if let Some(last) = last.filter(|last| last.id != record.id) {
                    mismatch = Some(format!(
                        "record {position} of the input ({}) has id {}, but the output's last \
                         row, encoded from it, has id {}",
                        record.location, record.id, last.id
                    ));
                }
            }
            Err(bad) => {
                if last.is_some() {
                    mismatch = Some(format!(
                        "record {position} of the input is a bad record now ({bad}), but the \
                         output's last row was encoded from it"
                    ));
                }
            }
        }
    }
    let now = corpus.position().checkpoint();
    if now.bytes != progress.input.bytes || now.sha256 != progress.input.sha256 {
        return Err(format!(
            "the input changed: its first {target} records are not those the output was encoded \
             from ({} bytes, SHA-256 {} now; {} bytes, SHA-256 {} then); cannot resume it",
            now.bytes, now.sha256, progress.input.bytes, progress.input.sha256
        ));
    }
    if let Some(mismatch) = mismatch {
        return Err(format!("the input changed: {mismatch}; cannot resume it"));
    }
    Ok(written)
}
