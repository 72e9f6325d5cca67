//! `--shard I/N` and `verify`, for real: N shard processes at once against one plain run on a
//! corpus whose ids repeat and are missing (every record exactly once, by the rule position mod
//! N, with the plain run's values within 1e-5, in JSONL and Parquet); `verify` passing on them
//! and naming each way a set can be wrong (a shard missing, killed with kill -9, given twice,
//! of another split, other options, another input, an output that changed); `--resume` of a
//! killed shard completing it; a bad record stopping only its shard; each wrong `--shard`.

#![forbid(unsafe_code)]

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use bge_m3_test_support::{Finished, Launch};
use common::{
    assert_same_records, encode, encoder, kill_when_written, manifest, manifest_path, output_rows,
    repeated_ids_corpus, write_lines, RUN_TIMEOUT, SMALL_WINDOWS,
};
use serde_json::Value;

/// The shards of every test.
const N: u64 = 3;

/// The positions of the records a plain run writes: blank lines are not records, a line that
/// is not JSON is a bad record that takes a position, and with `--unique-ids` a repeated id
/// (compared as text; a record without one has its position as id) is a bad record too.
fn written_positions(lines: &[String], unique_ids: bool) -> Vec<u64> {
    let mut seen = HashSet::new();
    let mut written = Vec::new();
    let mut position = 0;
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let this = position;
        position += 1;
        let Ok(record) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let id = match &record["id"] {
            Value::Null => this.to_string(),
            Value::String(id) => id.clone(),
            other => other.to_string(),
        };
        if seen.insert(id) || !unique_ids {
            written.push(this);
        }
    }
    written
}

/// The shards' rows put back in input order: the record at position p is the next row of
/// shard p mod N. Panics if a shard runs out of rows or has rows left over.
fn merge(shards: &[Vec<Value>], positions: &[u64]) -> Vec<Value> {
    let mut next = vec![0; shards.len()];
    let merged = positions
        .iter()
        .map(|position| {
            let shard = (position % N) as usize;
            let row = shards[shard].get(next[shard]).unwrap_or_else(|| {
                panic!("shard {shard}/{N} has no row for the record at position {position}")
            });
            next[shard] += 1;
            row.clone()
        })
        .collect();
    for (shard, rows) in shards.iter().enumerate() {
        assert_eq!(
            next[shard],
            rows.len(),
            "shard {shard}/{N} has rows beyond its records"
        );
    }
    merged
}

fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn shard_path(dir: &Path, prefix: &str, index: u64, extension: &str) -> PathBuf {
    dir.join(format!("{prefix}-{index}.{extension}"))
}

/// Runs the N shards of `corpus` at once, as N processes, into `dir/PREFIX-I.EXTENSION`;
/// returns what each ended with, and their outputs.
fn run_shards(
    corpus: &Path,
    dir: &Path,
    prefix: &str,
    extension: &str,
    args: &[&str],
) -> (Vec<Finished>, Vec<PathBuf>) {
    let outputs: Vec<PathBuf> = (0..N)
        .map(|i| shard_path(dir, prefix, i, extension))
        .collect();
    let children: Vec<_> = outputs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            encoder()
                .args(["--progress", "none", "--shard", &format!("{i}/{N}")])
                .arg(corpus)
                .arg("-o")
                .arg(out)
                .args(args)
                .spawn()
                .unwrap()
        })
        .collect();
    let finished = children
        .into_iter()
        .map(|child| child.finish(RUN_TIMEOUT))
        .collect();
    (finished, outputs)
}

fn bare() -> Launch {
    Launch::new(env!("CARGO_BIN_EXE_bge-m3-encode"))
}

/// `bge-m3-encode verify` on `outputs`.
fn verify(outputs: &[PathBuf]) -> (Option<i32>, String, String) {
    let finished = bare()
        .arg("verify")
        .args(outputs)
        .capture_stdout()
        .run(RUN_TIMEOUT);
    let stdout = String::from_utf8(finished.stdout).unwrap();
    (finished.status.code(), stdout, finished.stderr)
}

#[track_caller]
fn assert_verified(outputs: &[PathBuf], documents: usize) {
    let (code, stdout, stderr) = verify(outputs);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "verified: all {N} shards, complete and consistent: {documents} documents"
        )),
        "{stdout}"
    );
}

#[track_caller]
fn assert_refused(outputs: &[PathBuf], problem: &str) {
    let (code, stdout, stderr) = verify(outputs);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("bge-m3-encode verify: {problem}")),
        "{problem}:\n{stderr}"
    );
    assert!(stderr.contains("do not load them"), "{stderr}");
    assert!(!stdout.contains("verified:"), "{stdout}");
}

fn progress(out: &Path, field: &str) -> u64 {
    manifest(out).unwrap()["progress"][field].as_u64().unwrap()
}

#[test]
fn n_shard_processes_write_every_record_once_with_the_values_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let lines = repeated_ids_corpus();
    let corpus = path(dir.path(), "corpus.jsonl");
    write_lines(&corpus, &lines);
    let cases: [(&str, &[&str]); 3] = [
        ("jsonl", &[]),
        ("parquet", &[]),
        // Repeated ids judged across the shards, as one run judges them.
        ("jsonl", &["--unique-ids"]),
    ];
    for (case, (extension, extra)) in cases.into_iter().enumerate() {
        let what = format!("{extension} {extra:?}");
        let plain = path(dir.path(), &format!("plain-{case}.{extension}"));
        let mut args = vec![corpus.to_str().unwrap(), "-o", plain.to_str().unwrap()];
        args.extend(SMALL_WINDOWS);
        args.extend(extra);
        encode(&args).assert_success();
        let want = output_rows(&plain);
        let positions = written_positions(&lines, !extra.is_empty());
        assert_eq!(want.len(), positions.len(), "{what}");

        let mut args = SMALL_WINDOWS.to_vec();
        args.extend(extra);
        let prefix = format!("shard{case}");
        let (finished, shards) = run_shards(&corpus, dir.path(), &prefix, extension, &args);
        for (i, finished) in finished.iter().enumerate() {
            finished.assert_success();
            assert!(
                finished.stderr.contains(&format!("(shard {i}/{N})")),
                "{}",
                finished.stderr
            );
        }
        let rows: Vec<Vec<Value>> = shards.iter().map(|s| output_rows(s)).collect();
        assert_same_records(&merge(&rows, &positions), &want, &what);

        // The shards' counts add up to the plain run's.
        for field in ["documents", "tokens", "skipped", "repeated_ids"] {
            let sum: u64 = shards.iter().map(|s| progress(s, field)).sum();
            assert_eq!(sum, progress(&plain, field), "{what}: {field}");
        }
        let whole = manifest(&plain).unwrap();
        for (i, shard) in shards.iter().enumerate() {
            let manifest = manifest(shard).unwrap();
            assert_eq!(manifest["shard"]["index"], i as u64, "{what}");
            assert_eq!(manifest["shard"]["count"], N, "{what}");
            assert_eq!(manifest["complete"], true, "{what}");
            assert_eq!(
                manifest["progress"]["input"], whole["progress"]["input"],
                "{what}: every shard read the whole input"
            );
        }
        assert_verified(&shards, want.len());
        // The manifests name the same outputs.
        let manifests: Vec<PathBuf> = shards.iter().map(|s| manifest_path(s)).collect();
        assert_verified(&manifests, want.len());
        let (code, stdout, stderr) = verify(std::slice::from_ref(&plain));
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(
            stdout.contains("verified: one output of the whole input"),
            "{stdout}"
        );
    }
}

#[test]
fn verify_names_each_way_a_set_of_shards_is_wrong_and_resume_completes_a_killed_shard() {
    let dir = tempfile::tempdir().unwrap();
    let lines = repeated_ids_corpus();
    let corpus = path(dir.path(), "corpus.jsonl");
    write_lines(&corpus, &lines);
    let c = corpus.to_str().unwrap();
    let plain = path(dir.path(), "plain.jsonl");
    let mut args = vec![c, "-o", plain.to_str().unwrap()];
    args.extend(SMALL_WINDOWS);
    encode(&args).assert_success();
    let want = output_rows(&plain);
    let positions = written_positions(&lines, false);

    let (finished, shards) = run_shards(&corpus, dir.path(), "s", "jsonl", &SMALL_WINDOWS);
    finished.iter().for_each(Finished::assert_success);
    assert_verified(&shards, want.len());

    // One shard's output gone.
    let aside = path(dir.path(), "aside");
    std::fs::create_dir(&aside).unwrap();
    let (out1, manifest1) = (shards[1].clone(), manifest_path(&shards[1]));
    std::fs::rename(&out1, aside.join("out")).unwrap();
    std::fs::rename(&manifest1, aside.join("manifest")).unwrap();
    let others = [shards[0].clone(), shards[2].clone()];
    assert_refused(&others, "1 of the 3 shards missing: 1/3");
    // Given without its manifest: named too.
    std::fs::rename(aside.join("out"), &out1).unwrap();
    assert_refused(
        &shards,
        &format!("{}: there is no manifest", out1.display()),
    );

    // Killed (kill -9) with two windows written, past the first repeated ids: 31 records
    // read, shard 1 owns 10 of them, the last two waiting for more input.
    let shard1 = ["--shard", "1/3"];
    kill_when_written(&out1, &lines[..32], &shard1, 8);
    assert_refused(
        &shards,
        &format!(
            "{}: shard 1/3 is not complete: its manifest stops at input record 23",
            out1.display()
        ),
    );
    // A resume of it as another shard, or as a whole run, is refused naming --shard.
    for (other, named) in [(&["--shard", "2/3"][..], "2/3"), (&[][..], "none")] {
        let mut args = vec![c, "-o", out1.to_str().unwrap(), "--resume"];
        args.extend(other);
        let refused = encode(&args);
        assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
        assert!(
            refused.stderr.contains(&format!(
                "--shard differs ({named} now, 1/3 when the output was written)"
            )),
            "{}",
            refused.stderr
        );
    }
    // --resume completes it, from the file this time.
    let mut args = vec![c, "-o", out1.to_str().unwrap(), "--resume"];
    args.extend(shard1);
    args.extend(SMALL_WINDOWS);
    let resumed = encode(&args);
    resumed.assert_success();
    assert!(
        resumed.stderr.contains("8 already in the output"),
        "{}",
        resumed.stderr
    );
    assert_verified(&shards, want.len());
    let rows: Vec<Vec<Value>> = shards.iter().map(|s| output_rows(s)).collect();
    assert_same_records(&merge(&rows, &positions), &want, "after the resume");
    // The resume re-read every id before its position, and counted only its own repeats.
    let repeated: u64 = shards.iter().map(|s| progress(s, "repeated_ids")).sum();
    assert_eq!(repeated, progress(&plain, "repeated_ids"));

    // A shard given twice.
    let copy = path(dir.path(), "copy-0.jsonl");
    std::fs::copy(&shards[0], &copy).unwrap();
    std::fs::copy(manifest_path(&shards[0]), manifest_path(&copy)).unwrap();
    let mut twice = shards.clone();
    twice.push(copy.clone());
    assert_refused(
        &twice,
        &format!(
            "shard 0/3 is given 2 times: {}, {}",
            copy.display(),
            shards[0].display()
        ),
    );

    // A shard of another split.
    let split = path(dir.path(), "split.jsonl");
    encode(&[
        c,
        "-o",
        split.to_str().unwrap(),
        "--shard",
        "1/2",
        "--on-error",
        "skip",
    ])
    .assert_success();
    let mut mixed = shards.clone();
    mixed.push(split.clone());
    assert_refused(
        &mixed,
        &format!(
            "{} is shard 1/2 but {} is shard 0/3: outputs of two splits",
            split.display(),
            shards[0].display()
        ),
    );

    // Shard 2 encoded with other options, from another input, into another format.
    let changed = path(dir.path(), "changed.jsonl");
    let mut edited = lines.clone();
    edited[5] = serde_json::json!({"id": "d5", "text": "another text"}).to_string();
    write_lines(&changed, &edited);
    let cases: [(&str, &str, &[&str], String); 3] = [
        (
            "jsonl",
            c,
            &["--max-length", "64"],
            "--max-length differs (64 in ".into(),
        ),
        (
            "jsonl",
            changed.to_str().unwrap(),
            &[],
            format!(
                "encoded from another input than {}: 39 records",
                shards[0].display()
            ),
        ),
        (
            "parquet",
            c,
            &[],
            "--output-format differs (parquet in ".into(),
        ),
    ];
    for (extension, input, options, problem) in cases {
        let other = path(dir.path(), &format!("other-2.{extension}"));
        let mut args = vec![input, "-o", other.to_str().unwrap(), "--shard", "2/3"];
        args.extend(SMALL_WINDOWS);
        args.extend(options);
        encode(&args).assert_success();
        let set = [shards[0].clone(), shards[1].clone(), other.clone()];
        assert_refused(&set, &format!("{}: {problem}", other.display()));
    }

    // An output that changed after its manifest was written: a row added, a row lost.
    let original = std::fs::read(&shards[0]).unwrap();
    let mut longer = original.clone();
    longer.extend_from_slice(b"{\"id\":\"late\",\"tokens\":1}\n");
    std::fs::write(&shards[0], &longer).unwrap();
    assert_refused(
        &shards,
        &format!(
            "{}: the file has {} bytes, its manifest counts {}: it changed since it was written",
            shards[0].display(),
            longer.len(),
            original.len()
        ),
    );
    // The same length, another last row.
    let text = String::from_utf8(original.clone()).unwrap();
    let at = text.rfind("\"id\":\"d19\"").unwrap();
    let other = format!("{}\"id\":\"d18\"{}", &text[..at], &text[at + 10..]);
    std::fs::write(&shards[0], other).unwrap();
    assert_refused(
        &shards,
        &format!(
            "{}: its last row has id \"d18\", its manifest says \"d19\": it changed since it \
             was written",
            shards[0].display()
        ),
    );
    std::fs::write(&shards[0], &original).unwrap();
    // Its manifest edited: the counts no longer add up to the shard's share of the input.
    let manifest0 = manifest_path(&shards[0]);
    let saved = std::fs::read(&manifest0).unwrap();
    let mut edited = manifest(&shards[0]).unwrap();
    edited["progress"]["documents"] = Value::from(2);
    std::fs::write(&manifest0, serde_json::to_vec(&edited).unwrap()).unwrap();
    assert_refused(
        &shards,
        &format!(
            "{}: holds 2 documents and 0 skipped bad records, 2 records, but shard 0/3 owns 13 \
             of the input's 39 records",
            shards[0].display()
        ),
    );
    std::fs::write(&manifest0, saved).unwrap();
    assert_verified(&shards, want.len());
}

#[test]
fn a_parquet_shard_whose_file_is_not_the_one_its_manifest_describes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = path(dir.path(), "corpus.jsonl");
    write_lines(&corpus, &repeated_ids_corpus());
    let (finished, shards) = run_shards(&corpus, dir.path(), "p", "parquet", &SMALL_WINDOWS);
    finished.iter().for_each(Finished::assert_success);
    assert_verified(&shards, 38);
    // Another shard's file copied over shard 0's: a whole Parquet file, not the rows counted.
    let original = std::fs::read(&shards[0]).unwrap();
    std::fs::copy(&shards[2], &shards[0]).unwrap();
    assert_refused(
        &shards,
        &format!(
            "{}: the file holds 12 rows in 3 row groups, its manifest counts 13 in 4: it changed \
             since it was written",
            shards[0].display()
        ),
    );
    // The same number of rows and row groups, other records.
    std::fs::copy(&shards[1], &shards[0]).unwrap();
    assert_refused(
        &shards,
        &format!(
            "{}: its last row has id \"d20\", its manifest says \"d19\"",
            shards[0].display()
        ),
    );
    std::fs::write(&shards[0], original).unwrap();
    assert_verified(&shards, 38);
}

#[test]
fn a_bad_record_stops_only_the_shard_that_owns_it() {
    let dir = tempfile::tempdir().unwrap();
    let lines = repeated_ids_corpus();
    let corpus = path(dir.path(), "corpus.jsonl");
    write_lines(&corpus, &lines);
    // `{oops` is the record at position 26: shard 2's. The others do not stop for it.
    let (finished, shards) =
        run_shards(&corpus, dir.path(), "f", "jsonl", &["--window-texts", "4"]);
    finished[0].assert_success();
    finished[1].assert_success();
    assert_eq!(finished[2].status.code(), Some(1), "{}", finished[2].stderr);
    assert!(
        finished[2].stderr.contains(&format!(
            "stopped at a bad record: {}:28: invalid JSON",
            corpus.display()
        )),
        "{}",
        finished[2].stderr
    );
    assert_refused(
        &shards,
        &format!(
            "{}: shard 2/3 is not complete: its manifest stops at input record 24",
            shards[2].display()
        ),
    );
    // Resumed past it with --on-error skip, the set is the plain run with --on-error skip.
    let c = corpus.to_str().unwrap();
    let resumed = encode(&[
        c,
        "-o",
        shards[2].to_str().unwrap(),
        "--shard",
        "2/3",
        "--resume",
        "--on-error",
        "skip",
        "--window-texts",
        "4",
    ]);
    resumed.assert_success();
    assert_verified(&shards, 38);
    let plain = path(dir.path(), "plain.jsonl");
    let mut args = vec![c, "-o", plain.to_str().unwrap()];
    args.extend(SMALL_WINDOWS);
    encode(&args).assert_success();
    let rows: Vec<Vec<Value>> = shards.iter().map(|s| output_rows(s)).collect();
    let merged = merge(&rows, &written_positions(&lines, false));
    assert_same_records(&merged, &output_rows(&plain), "--on-error fail, then skip");
}

#[test]
fn a_wrong_shard_is_refused_naming_the_flag() {
    let cases = [
        ("3/3", "the shard index 3 is not below the count 3 (0 to 2)"),
        ("0/0", "the shard count N must be at least 1"),
        ("5/0", "the shard count N must be at least 1"),
        ("x", "`x` is not I/N, two whole numbers such as 0/4"),
        ("1", "`1` is not I/N"),
        ("-1/3", "`-1/3` is not I/N"),
        ("1/3/4", "`1/3/4` is not I/N"),
        ("", "`` is not I/N"),
    ];
    for (value, reason) in cases {
        let refused = encode(&["--shard", value, "-"]);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{value}: {}",
            refused.stderr
        );
        assert!(
            refused.stderr.contains(&format!(
                "invalid value '{value}' for '--shard <I/N>': {reason}"
            )),
            "{value}: {}",
            refused.stderr
        );
    }
    // verify needs outputs.
    let refused = bare().arg("verify").run(RUN_TIMEOUT);
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("<OUTPUT>..."), "{}", refused.stderr);
}
