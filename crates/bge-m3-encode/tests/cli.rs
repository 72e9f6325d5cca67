//! `bge-m3-encode` end to end, as a user runs it, on the tiny fixture model.

#![forbid(unsafe_code)]

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use bge_m3_core::{BgeM3, EncodeOptions, LoadOptions, Outputs};
use bge_m3_test_support::{assert_close, eventually, tiny_pt, Launch, Signal, TOLERANCE};
use common::{encode, encoder, floats, read_parquet, rows, texts, write_jsonl, RUN_TIMEOUT};
use serde_json::{json, Value};

fn library(texts: &[String]) -> Vec<bge_m3_core::Embedding> {
    let model = BgeM3::load(tiny_pt(), &LoadOptions::default()).unwrap();
    let options = EncodeOptions::default().with_outputs(Outputs::ALL);
    model.encode(texts, &options).unwrap()
}

#[test]
fn every_output_equals_the_librarys_encode_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let texts = texts(60);
    write_jsonl(&corpus, &texts);
    let out = dir.path().join("out.jsonl");
    // Small windows and passes: many windows in flight, passes that mix them.
    let output = encode(&[
        corpus.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--outputs",
        "dense,sparse,colbert",
        "--sparse-format",
        "id",
        "--window-texts",
        "7",
        "--max-batch-tokens",
        "300",
    ]);
    output.assert_success();
    let rows = rows(&out);
    let want = library(&texts);
    assert_eq!(rows.len(), texts.len());
    for (i, (row, want)) in rows.iter().zip(&want).enumerate() {
        assert_eq!(row["id"], format!("doc-{i}"));
        assert_eq!(row["tokens"], want.tokens);
        assert_close(
            &floats(&row["dense"]),
            want.dense.as_ref().unwrap(),
            TOLERANCE,
            "dense",
        );
        let sparse = row["sparse"].as_object().unwrap();
        let want_sparse = &want.sparse.as_ref().unwrap().weights;
        assert_eq!(sparse.len(), want_sparse.len(), "doc {i}: sparse entries");
        for (id, weight) in want_sparse {
            let got = sparse[&id.to_string()].as_f64().unwrap() as f32;
            assert_close(
                &[got],
                &[*weight],
                TOLERANCE,
                format!("doc {i} sparse {id}"),
            );
        }
        let colbert = row["colbert"].as_array().unwrap();
        let want_colbert = want.colbert.as_ref().unwrap();
        assert_eq!(colbert.len(), want_colbert.len());
        for (got, want) in colbert.iter().zip(want_colbert) {
            assert_close(&floats(got), want, TOLERANCE, "colbert");
        }
    }
    let summary = &output.stderr;
    assert!(summary.contains("done: 60 documents"), "{summary}");
}

#[test]
fn parquet_holds_the_rows_of_the_jsonl_output_in_every_sparse_format() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    write_jsonl(&corpus, &texts(25));
    for format in ["indices", "token", "id", "sparsevec"] {
        let jsonl = dir.path().join(format!("{format}.jsonl"));
        let parquet = dir.path().join(format!("{format}.parquet"));
        for out in [&jsonl, &parquet] {
            encode(&[
                corpus.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--outputs",
                "dense,sparse,colbert",
                "--sparse-format",
                format,
                "--window-texts",
                "10",
            ])
            .assert_success();
        }
        assert!(!dir
            .path()
            .join(format!("{format}.parquet.partial"))
            .exists());
        let columns = read_parquet(&parquet);
        let rows = rows(&jsonl);
        for name in ["id", "tokens", "dense", "sparse", "colbert"] {
            let column = &columns[name];
            assert_eq!(column.len(), rows.len(), "{format}: column {name}");
            for (i, (cell, row)) in column.iter().zip(&rows).enumerate() {
                // Both hold f32s; serde_json writes each in its shortest form.
                let cell = serde_json::to_string(cell).unwrap();
                let row = serde_json::to_string(&row[name]).unwrap();
                let (cell, row) = (reparse(&cell), reparse(&row));
                assert_eq!(cell, row, "{format}: row {i}, column {name}");
            }
        }
    }
}

/// The f64s of `text` cut to f32, so that both writers' numbers compare.
fn reparse(text: &str) -> Value {
    fn walk(value: Value) -> Value {
        match value {
            Value::Number(n) if n.is_f64() => json!(n.as_f64().unwrap() as f32),
            Value::Array(items) => Value::Array(items.into_iter().map(walk).collect()),
            Value::Object(map) => {
                Value::Object(map.into_iter().map(|(k, v)| (k, walk(v))).collect())
            }
            other => other,
        }
    }
    walk(serde_json::from_str(text).unwrap())
}

#[test]
fn text_lines_directories_and_stdin_are_read_with_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let lines = dir.path().join("lines.txt");
    std::fs::write(&lines, "first line\n\nsecond line\n").unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("guide")).unwrap();
    std::fs::write(docs.join("readme.md"), "# Title\n\nBody text.").unwrap();
    std::fs::write(docs.join("guide/intro.txt"), "An introduction.").unwrap();
    let out = dir.path().join("out.jsonl");
    encode(&[
        lines.to_str().unwrap(),
        docs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ])
    .assert_success();
    let ids: Vec<Value> = rows(&out).iter().map(|r| r["id"].clone()).collect();
    assert_eq!(
        ids,
        [
            json!(0),
            json!(1),
            json!("guide/intro.txt"),
            json!("readme.md")
        ]
    );

    // stdin, JSONL by default, with other field names.
    let mut child = encoder()
        .args([
            "--text-field",
            "body",
            "--id-field",
            "key",
            "--outputs",
            "dense",
        ])
        .stdin_piped()
        .capture_stdout()
        .spawn()
        .unwrap();
    child
        .stdin()
        .write_all(b"{\"key\": 5, \"body\": \"from stdin\"}\n{\"body\": \"no key\"}\n")
        .unwrap();
    // The pipe is dropped above: stdin ends, and the run with it.
    let output = child.finish(RUN_TIMEOUT);
    output.assert_success();
    let rows: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        (rows[0]["id"].clone(), rows[1]["id"].clone()),
        (json!(5), json!(1))
    );
    assert!(rows[0].get("sparse").is_none() && rows[0]["dense"].is_array());
    let want = library(&["from stdin".to_string()]);
    assert_close(
        &floats(&rows[0]["dense"]),
        want[0].dense.as_ref().unwrap(),
        TOLERANCE,
        "stdin dense",
    );
}

#[test]
fn a_bad_record_is_fatal_by_default_and_skipped_on_request_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    std::fs::write(
        &corpus,
        "{\"id\": \"a\", \"text\": \"one\"}\n{\"id\": \"b\", \"body\": \"two\"}\n{oops\n{\"id\": \"c\", \"text\": \"three\"}\n",
    )
    .unwrap();
    let out = dir.path().join("out.jsonl");
    let failed = encode(&[corpus.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let stderr = &failed.stderr;
    assert_eq!(failed.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "bad record: {}:2: missing field `text`",
            corpus.display()
        )),
        "{stderr}"
    );
    // What came before it is written.
    let ids: Vec<Value> = rows(&out).iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!("a")]);
    // The summary says why it stopped: not "done".
    assert!(
        stderr.contains(&format!(
            "stopped at a bad record: {}:2: missing field `text`",
            corpus.display()
        )) && !stderr.contains("done:"),
        "{stderr}"
    );

    let skipped = encode(&[
        corpus.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--on-error",
        "skip",
    ]);
    skipped.assert_success();
    let stderr = &skipped.stderr;
    assert!(stderr.contains(":2: missing field `text`"), "{stderr}");
    assert!(stderr.contains(":3: invalid JSON"), "{stderr}");
    assert!(stderr.contains("2 bad records skipped"), "{stderr}");
    let ids: Vec<Value> = rows(&out).iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!("a"), json!("c")]);

    // A text over the limit is a bad record too.
    let limited = encode(&[
        corpus.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--on-error",
        "skip",
        "--max-text-chars",
        "4",
    ]);
    limited.assert_success();
    let stderr = &limited.stderr;
    assert!(
        stderr.contains(":4: the text has 5 characters, over --max-text-chars 4"),
        "{stderr}"
    );
}

#[test]
fn wrong_usage_is_refused_with_a_message() {
    let cases: [(&[&str], &str); 5] = [
        (&["--resume"], "--resume needs --output FILE"),
        (
            &["--unique-ids", "--max-tracked-ids", "0"],
            "--unique-ids needs --max-tracked-ids above 0",
        ),
        (
            &["--output-format", "parquet"],
            "--output-format parquet needs --output FILE",
        ),
        (
            &["/nonexistent/corpus.jsonl"],
            "/nonexistent/corpus.jsonl: ",
        ),
        (
            &["--max-length", "9000", "-"],
            "--max-length must be within 1..=8192",
        ),
    ];
    for (args, message) in cases {
        let output = encode(args);
        let stderr = &output.stderr;
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn int8_on_a_gpu_is_refused_before_the_model_is_fetched() {
    // A Hub id, offline, with an empty cache: were the cache asked first, the error would name
    // the missing files instead of the setting.
    let cache = tempfile::tempdir().unwrap();
    let output = Launch::new(env!("CARGO_BIN_EXE_bge-m3-encode"))
        .args([
            "--model",
            "BAAI/bge-m3",
            "--dtype",
            "int8",
            "--device",
            "cuda",
            "-",
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", cache.path())
        .run(RUN_TIMEOUT);
    let stderr = &output.stderr;
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("invalid `dtype`: int8 runs on the CPU only"),
        "{stderr}"
    );
}

/// `BGE_M3_INT8_KERNEL` names the int8 kernel: each one this CPU has runs and stays close to
/// f32 (AVX2's with its 7-bit weights too); a name that is not a kernel is refused, naming the
/// variable, before the model is read.
#[test]
fn the_int8_kernel_can_be_named_and_a_wrong_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let texts = texts(6);
    write_jsonl(&corpus, &texts);
    let want = library(&texts);
    let mut kernels = vec!["portable"];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        kernels.push("avx2");
    }
    for kernel in kernels {
        let out = dir.path().join(format!("{kernel}.jsonl"));
        let output = encoder()
            .args([
                "--progress",
                "none",
                "--dtype",
                "int8",
                "--outputs",
                "dense",
            ])
            .arg(&corpus)
            .arg("-o")
            .arg(&out)
            .env("BGE_M3_INT8_KERNEL", kernel)
            .run(RUN_TIMEOUT);
        output.assert_success();
        for (i, (row, want)) in rows(&out).iter().zip(&want).enumerate() {
            let (got, want) = (floats(&row["dense"]), want.dense.as_ref().unwrap());
            let cosine: f32 = got.iter().zip(want).map(|(a, b)| a * b).sum();
            assert!(
                cosine > 0.98,
                "{kernel}, text {i}: cosine {cosine} with f32"
            );
        }
    }
    let refused = encoder()
        .args(["--dtype", "int8", "-"])
        .env("BGE_M3_INT8_KERNEL", "avx512")
        .run(RUN_TIMEOUT);
    let stderr = &refused.stderr;
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(r#"invalid `BGE_M3_INT8_KERNEL`: "avx512" is not an int8 kernel: one of amx, avx512-vnni, avx-vnni, avx512bw, avx2, portable"#),
        "{stderr}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let refused = encoder()
            .args(["--dtype", "int8", "-"])
            .env(
                "BGE_M3_INT8_KERNEL",
                std::ffi::OsStr::from_bytes(b"avx\xff"),
            )
            .run(RUN_TIMEOUT);
        let stderr = &refused.stderr;
        assert!(!refused.status.success(), "{stderr}");
        assert!(
            stderr.contains("invalid `BGE_M3_INT8_KERNEL`: is not valid UTF-8"),
            "{stderr}"
        );
    }
}

/// Waits until `path` holds at least `lines` complete lines (bounded: 60 s).
fn wait_for_lines(path: &Path, lines: usize) {
    let written = eventually(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.matches('\n').count() >= lines
    });
    assert!(written.is_some(), "not {lines} lines of output after 60 s");
}

#[test]
fn ctrl_c_writes_what_is_finished_and_resume_completes_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let texts = texts(40);
    let corpus = dir.path().join("corpus.jsonl");
    write_jsonl(&corpus, &texts);
    let out = dir.path().join("out.jsonl");
    // The first 15 records come on stdin, which then stays open: the run waits for more.
    let mut child = encoder()
        .args(["--progress", "none", "--window-texts", "5", "-o"])
        .arg(&out)
        .stdin_piped()
        .spawn()
        .unwrap();
    let mut stdin = child.stdin();
    let first: String = std::fs::read_to_string(&corpus)
        .unwrap()
        .lines()
        .take(15)
        .map(|l| format!("{l}\n"))
        .collect();
    stdin.write_all(first.as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_for_lines(&out, 15);
    child.signal(Signal::Int).unwrap();
    let output = child.finish(RUN_TIMEOUT);
    drop(stdin);
    let stderr = &output.stderr;
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted: 15 documents"), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    assert_eq!(rows(&out).len(), 15);

    // A kill in the middle of a line leaves it cut: resume removes it.
    let mut file = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    file.write_all(b"{\"id\":\"doc-15\",\"tok").unwrap();
    drop(file);
    let resumed = encode(&[
        corpus.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--resume",
    ]);
    resumed.assert_success();
    let stderr = &resumed.stderr;
    assert!(stderr.contains("done: 25 documents"), "{stderr}");
    assert!(stderr.contains("15 already in the output"), "{stderr}");

    let full = dir.path().join("full.jsonl");
    encode(&[corpus.to_str().unwrap(), "-o", full.to_str().unwrap()]).assert_success();
    let (resumed, full) = (rows(&out), rows(&full));
    assert_eq!(resumed.len(), full.len());
    for (a, b) in resumed.iter().zip(&full) {
        assert_eq!(a["id"], b["id"]);
        assert_close(
            &floats(&a["dense"]),
            &floats(&b["dense"]),
            TOLERANCE,
            "dense",
        );
        assert_eq!(a["sparse"]["indices"], b["sparse"]["indices"]);
    }
}

#[test]
fn a_parquet_output_resumes_by_copying_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let texts = texts(30);
    let head = dir.path().join("head.jsonl");
    let corpus = dir.path().join("corpus.jsonl");
    write_jsonl(&head, &texts[..12]);
    write_jsonl(&corpus, &texts);
    let out = dir.path().join("out.parquet");
    encode(&[head.to_str().unwrap(), "-o", out.to_str().unwrap()]).assert_success();
    let resumed = encode(&[
        corpus.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--resume",
    ]);
    resumed.assert_success();
    let stderr = &resumed.stderr;
    assert!(stderr.contains("12 already in the output"), "{stderr}");
    let columns = read_parquet(&out);
    let ids: Vec<String> = columns["id"]
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..30).map(|i| format!("doc-{i}")).collect();
    assert_eq!(ids, want);

    // Resuming with other outputs is refused: the columns would differ.
    let other = encode(&[
        corpus.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--resume",
        "--outputs",
        "dense",
    ]);
    assert_eq!(other.status.code(), Some(2));
    assert!(&other.stderr.contains("cannot resume it"));
}
