//! The encoder never loses, mixes or destroys records: kill -9 at any moment then `--resume`
//! gives the records of a clean run whatever the ids; a resume with other options, or on
//! another input, is refused; an output that is an input is refused before anything is
//! written; an oversized line is skipped unread; a full disk is reported naming the file.

#![forbid(unsafe_code)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bge_m3_test_support::{eventually, model_dir, tiny_pt, Launch};
use common::{
    assert_same_records, documents, encode, encoder, kill_when_written, manifest, manifest_path,
    output_rows, repeated_ids_corpus, rows, texts, write_lines, RUN_TIMEOUT, SMALL_WINDOWS,
};
use serde_json::{json, Value};

/// What a kill in the middle of a write leaves: a window written after the manifest's last
/// update, a row cut short, a temporary manifest never renamed.
fn leave_torn_writes(out: &Path) {
    let manifest = manifest(out).unwrap();
    let append = |path: &Path, bytes: &[u8]| {
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(bytes).unwrap();
    };
    match manifest["output"]["format"].as_str().unwrap() {
        "jsonl" => append(
            out,
            b"{\"id\":\"late\",\"tokens\":1,\"dense\":[0.5]}\n{\"id\":\"d3\",\"tok",
        ),
        _ => {
            let partial = PathBuf::from(manifest["output"]["partial"].as_str().unwrap());
            append(&partial, &[0x5a; 3000]);
            let groups = PathBuf::from(format!("{}.groups", partial.display()));
            append(&groups, &[0x10, 0x27, 0, 0, 1, 2, 3]);
        }
    }
    std::fs::write(
        format!("{}.tmp", manifest_path(out).display()),
        b"{\"manifest_ver",
    )
    .unwrap();
}

#[test]
fn kill_9_at_several_moments_then_resume_gives_the_records_of_a_clean_run_whatever_the_ids() {
    let dir = tempfile::tempdir().unwrap();
    let lines = repeated_ids_corpus();
    let corpus = dir.path().join("corpus.jsonl");
    write_lines(&corpus, &lines);
    for extension in ["jsonl", "parquet"] {
        let clean = dir.path().join(format!("clean.{extension}"));
        let mut args = vec![corpus.to_str().unwrap(), "-o", clean.to_str().unwrap()];
        args.extend(SMALL_WINDOWS);
        encode(&args).assert_success();
        let want = output_rows(&clean);
        assert_eq!(want.len(), 38);

        let out = dir.path().join(format!("out.{extension}"));
        // Two windows written, the third waiting for more input: it is lost, nothing else.
        kill_when_written(&out, &lines[..10], &[], 8);
        leave_torn_writes(&out);
        // A resume killed in turn, past the second d0..d11, the blank line and the bad record
        // (22 records after the resume point: 5 windows written, 2 records pending).
        kill_when_written(&out, &lines[..32], &["--resume"], 28);
        leave_torn_writes(&out);
        // Killed while it encodes, at whatever point the run is when the next window counts.
        let mut child = encoder()
            .args(SMALL_WINDOWS)
            .args(["--progress", "none", "--resume", "-o"])
            .arg(&out)
            .arg(&corpus)
            .spawn()
            .unwrap();
        eventually(Duration::from_secs(120), || documents(&out) >= 32);
        child.kill();

        let resumed = encode(&[
            corpus.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--resume",
            "--on-error",
            "skip",
            "--window-texts",
            "4",
        ]);
        resumed.assert_success();
        assert!(resumed.stderr.contains("done: "), "{}", resumed.stderr);
        assert_same_records(&output_rows(&out), &want, extension);
        let manifest = manifest(&out).unwrap();
        assert_eq!(manifest["complete"], true, "{manifest}");
        assert_eq!(manifest["progress"]["documents"], 38);
        assert_eq!(manifest["progress"]["input"]["records"], 39);
        // Nothing is left beside the output but its manifest.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("out.{extension}")))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                format!("out.{extension}"),
                format!("out.{extension}.manifest.json")
            ]
        );
    }
}

#[test]
fn repeated_ids_are_reported_and_unique_ids_refuses_or_skips_them() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    write_lines(&corpus, &repeated_ids_corpus());
    let out = dir.path().join("out.jsonl");
    let (c, o) = (corpus.to_str().unwrap(), out.to_str().unwrap());
    let name = corpus.display();

    let kept = encode(&[c, "-o", o, "--on-error", "skip"]);
    kept.assert_success();
    assert!(
        kept.stderr.contains(&format!(
            "14 records repeat an earlier record's id (\"d0\" at {name}:13, \"d1\" at {name}:14"
        )),
        "{}",
        kept.stderr
    );
    assert_eq!(rows(&out).len(), 38);
    assert_eq!(manifest(&out).unwrap()["progress"]["repeated_ids"], 14);

    let refused = encode(&[c, "-o", o, "--on-error", "fail", "--unique-ids"]);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!(
            "stopped at a bad record: {name}:13: id \"d0\" repeats the id of an earlier record \
             (--unique-ids); 12 documents"
        )),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("done:"), "{}", refused.stderr);
    assert_eq!(rows(&out).len(), 12);

    let skipped = encode(&[c, "-o", o, "--on-error", "skip", "--unique-ids"]);
    skipped.assert_success();
    let ids: Vec<Value> = rows(&out).iter().map(|r| r["id"].clone()).collect();
    let mut want: Vec<Value> = (0..12).map(|i| json!(format!("d{i}"))).collect();
    want.extend([json!(7), json!(27)]);
    want.extend((12..22).map(|i| json!(format!("d{i}"))));
    assert_eq!(ids, want);
    assert!(
        skipped.stderr.contains("15 bad records skipped"),
        "{}",
        skipped.stderr
    );

    // Past --max-tracked-ids the count is a lower bound, and says so; --unique-ids stops.
    let bounded = encode(&[c, "-o", o, "--on-error", "skip", "--max-tracked-ids", "5"]);
    bounded.assert_success();
    assert!(
        bounded.stderr.contains("at least 5 records repeat")
            && bounded
                .stderr
                .contains("ids past the first 5 distinct ones were not checked"),
        "{}",
        bounded.stderr
    );
    // 0 turns the check off: nothing is said about ids.
    let unchecked = encode(&[c, "-o", o, "--on-error", "skip", "--max-tracked-ids", "0"]);
    unchecked.assert_success();
    assert!(!unchecked.stderr.contains("repeat"), "{}", unchecked.stderr);
    let stopped = encode(&[c, "-o", o, "--unique-ids", "--max-tracked-ids", "5"]);
    assert_eq!(stopped.status.code(), Some(2), "{}", stopped.stderr);
    assert!(
        stopped
            .stderr
            .contains("--unique-ids: more than 5 distinct ids"),
        "{}",
        stopped.stderr
    );
    assert_eq!(rows(&out).len(), 5, "the records before it are written");
}

#[test]
fn a_resume_with_another_option_model_or_input_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let texts = texts(12);
    let corpus = dir.path().join("corpus.jsonl");
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i, "text": t}).to_string())
        .collect();
    write_lines(&corpus, &lines[..8]);
    let c = corpus.to_str().unwrap().to_string();
    for extension in ["jsonl", "parquet"] {
        let out = dir.path().join(format!("out.{extension}"));
        let o = out.to_str().unwrap().to_string();
        encode(&[&c, "-o", &o, "--window-texts", "3"]).assert_success();
        let before = (std::fs::read(&out).unwrap(), manifest(&out));
        let cases: [(&[&str], &str); 9] = [
            (&[], "--model"), // tiny-st: the same shapes, other files
            (&["--dtype", "bf16"], "--dtype"),
            (&["--max-length", "64"], "--max-length"),
            (&["--outputs", "dense"], "--outputs"),
            (&["--sparse-format", "id"], "--sparse-format"),
            (&["--text-field", "body"], "--text-field"),
            (&["--id-field", "key"], "--id-field"),
            (&["--input-format", "text"], "--input-format"),
            (
                &[
                    "--output-format",
                    if extension == "jsonl" {
                        "parquet"
                    } else {
                        "jsonl"
                    },
                ],
                "--output-format",
            ),
        ];
        for (options, flag) in cases {
            let model = if flag == "--model" {
                model_dir("tiny-st")
            } else {
                tiny_pt()
            };
            let refused = Launch::new(env!("CARGO_BIN_EXE_bge-m3-encode"))
                .arg("--model")
                .arg(model)
                .args([&c, "-o", &o, "--resume", "--progress", "none"])
                .args(options)
                .run(RUN_TIMEOUT);
            let stderr = &refused.stderr;
            assert_eq!(refused.status.code(), Some(2), "{options:?}: {stderr}");
            assert!(
                stderr.contains(&format!("{o}: {flag} differs ("))
                    && stderr.contains("cannot resume it"),
                "{options:?}: {stderr}"
            );
            let after = (std::fs::read(&out).unwrap(), manifest(&out));
            assert!(
                after == before,
                "{options:?}: the output or its manifest changed"
            );
        }

        // The same model files elsewhere are the same model.
        let copy = dir.path().join("model-copy");
        std::fs::create_dir_all(&copy).unwrap();
        for entry in std::fs::read_dir(tiny_pt()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
        let moved = Launch::new(env!("CARGO_BIN_EXE_bge-m3-encode"))
            .args(["--progress", "none", "--model"])
            .arg(&copy)
            .args([&c, "-o", &o, "--resume"])
            .run(RUN_TIMEOUT);
        moved.assert_success();
        assert!(
            moved.stderr.contains("done: 0 documents"),
            "{}",
            moved.stderr
        );

        // An input whose first records changed, or that ends before them, is not this one.
        let changed = dir.path().join("changed.jsonl");
        let mut edited = lines[..8].to_vec();
        edited[2] = json!({"id": 2, "text": "another text"}).to_string();
        write_lines(&changed, &edited);
        let shorter = dir.path().join("shorter.jsonl");
        write_lines(&shorter, &lines[..5]);
        for (input, message) in [
            (
                &changed,
                "the input changed: its first 8 records are not those",
            ),
            (&shorter, "the input has 5 records, fewer than the 8"),
        ] {
            let refused = encode(&[input.to_str().unwrap(), "-o", &o, "--resume"]);
            assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
            assert!(refused.stderr.contains(message), "{}", refused.stderr);
        }
        // One that grew is: only its new records are encoded.
        let grown = dir.path().join("grown.jsonl");
        write_lines(&grown, &lines);
        let resumed = encode(&[grown.to_str().unwrap(), "-o", &o, "--resume"]);
        resumed.assert_success();
        assert!(
            resumed.stderr.contains("done: 4 documents")
                && resumed.stderr.contains("8 already in the output"),
            "{}",
            resumed.stderr
        );
        let ids: Vec<Value> = output_rows(&out).iter().map(|r| r["id"].clone()).collect();
        let want: Vec<Value> = (0..12)
            .map(|i| match extension {
                "jsonl" => json!(i),
                _ => json!(i.to_string()),
            })
            .collect();
        assert_eq!(ids, want);
    }
}

#[test]
fn an_output_that_is_an_input_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.jsonl");
    write_lines(
        &corpus,
        &[json!({"id": "a", "text": "the corpus"}).to_string()],
    );
    let original = std::fs::read(&corpus).unwrap();
    let symlink = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&corpus, &symlink).unwrap();
    let hard = dir.path().join("hard.jsonl");
    std::fs::hard_link(&corpus, &hard).unwrap();
    let c = corpus.to_str().unwrap();
    for (out, extra) in [
        (&corpus, &[][..]),
        (&symlink, &[][..]),
        (&hard, &[][..]),
        (&corpus, &["--output-format", "parquet"][..]),
        (&corpus, &["--resume"][..]),
    ] {
        let mut args = vec![c, "-o", out.to_str().unwrap()];
        args.extend(extra);
        let refused = encode(&args);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{args:?}: {}",
            refused.stderr
        );
        assert!(
            refused
                .stderr
                .contains(&format!("--output {} is the input {c}", out.display())),
            "{args:?}: {}",
            refused.stderr
        );
        assert_eq!(std::fs::read(&corpus).unwrap(), original, "{args:?}");
        assert!(!manifest_path(out).exists(), "{args:?}");
    }
    // stdin redirected from the output file.
    let refused = Launch::new("sh")
        .args([
            "-c",
            "exec \"$0\" --progress none --model \"$1\" -o \"$2\" < \"$2\"",
        ])
        .arg(env!("CARGO_BIN_EXE_bge-m3-encode"))
        .arg(tiny_pt())
        .arg(&corpus)
        .run(RUN_TIMEOUT);
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("is the input stdin"),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read(&corpus).unwrap(), original);
    // The manifest is an output too.
    let out = dir.path().join("out.jsonl");
    let as_manifest = manifest_path(&out);
    std::fs::copy(&corpus, &as_manifest).unwrap();
    let refused = encode(&[as_manifest.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("the output's manifest"),
        "{}",
        refused.stderr
    );
}

#[test]
fn a_line_far_over_the_limit_is_a_bad_record_skipped_unread() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.jsonl");
    let long = json!({"id": "long", "text": "a".repeat(3 << 20)}).to_string();
    write_lines(
        &corpus,
        &[
            json!({"id": "before", "text": "one"}).to_string(),
            long,
            json!({"id": "after", "text": "two"}).to_string(),
        ],
    );
    let out = dir.path().join("out.jsonl");
    let output = encode(&[
        corpus.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--on-error",
        "skip",
        "--max-text-chars",
        "1000",
    ]);
    output.assert_success();
    assert!(
        output.stderr.contains(&format!(
            "skipped a bad record: {}:2: the line has 3145752 bytes, more than a record with a \
             text of --max-text-chars 1000 takes (1060576): skipped unread",
            corpus.display()
        )),
        "{}",
        output.stderr
    );
    let ids: Vec<Value> = rows(&out).iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!("before"), json!("after")]);
}

#[test]
fn a_full_disk_is_reported_naming_the_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.jsonl");
    write_lines(&corpus, &[json!({"id": "a", "text": "one"}).to_string()]);
    let full = encode(&[corpus.to_str().unwrap(), "-o", "/dev/full"]);
    assert_eq!(full.status.code(), Some(2), "{}", full.stderr);
    assert!(
        full.stderr
            .contains("writing /dev/full: No space left on device"),
        "{}",
        full.stderr
    );
    assert!(!full.stderr.contains("done:"), "{}", full.stderr);
}

#[test]
fn help_lists_each_sparse_format_with_its_meaning() {
    let help = encoder().arg("--help").capture_stdout().run(RUN_TIMEOUT);
    help.assert_success();
    let help = String::from_utf8(help.stdout).unwrap();
    for (name, meaning) in [
        ("token", "keyed by token string"),
        ("id", "keyed by token id"),
        ("indices", "Qdrant's and Milvus's sparse vectors"),
        ("sparsevec", "pgvector's sparsevec literal"),
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("- {name}:")) && l.contains(meaning)),
            "{name}: {help}"
        );
    }
}
