//! Every way a model directory can be wrong gives an error naming the file and the directory,
//! never a panic.

#![forbid(unsafe_code)]

mod common;

use std::path::Path;

use bge_m3_core::{BgeM3, DeviceSpec, Error, LoadOptions};
use common::model_dir;

fn cpu() -> LoadOptions {
    LoadOptions::default()
        .with_device(DeviceSpec::Cpu)
        .with_dtype(None)
}

/// A writable copy of a fixture model.
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> Error {
    match BgeM3::load(dir, &cpu()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_directory() {
    let err = load_err(Path::new("/nonexistent/bge-m3"));
    assert!(matches!(err, Error::MissingDirectory(_)), "{err}");
    assert!(err.to_string().contains("/nonexistent/bge-m3"), "{err}");
}

#[test]
fn each_missing_file_is_named() {
    for file in [
        "config.json",
        "tokenizer.json",
        "colbert_linear.pt",
        "sparse_linear.pt",
    ] {
        let dir = copy_of("tiny-pt");
        std::fs::remove_file(dir.path().join(file)).unwrap();
        let err = load_err(dir.path());
        let message = err.to_string();
        assert!(matches!(err, Error::MissingFile { .. }), "{file}: {err}");
        assert!(message.contains(file), "{file}: {message}");
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
    }
    let dir = copy_of("tiny-pt");
    std::fs::remove_file(dir.path().join("pytorch_model.bin")).unwrap();
    let message = load_err(dir.path()).to_string();
    assert!(
        message.contains("model.safetensors or pytorch_model.bin"),
        "{message}"
    );
}

/// Overwrites `file` in a copy of `model` and checks that loading names it.
fn assert_malformed(model: &str, file: &str, contents: &[u8]) {
    let dir = copy_of(model);
    std::fs::write(dir.path().join(file), contents).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, Error::InvalidFile { .. }), "{file}: {err}");
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().join(file).display().to_string()),
        "{file}: {message}"
    );
}

#[test]
fn malformed_files_are_named() {
    assert_malformed("tiny-pt", "config.json", b"{not json");
    assert_malformed("tiny-pt", "config.json", b"{\"hidden_size\": 32}");
    assert_malformed("tiny-pt", "tokenizer.json", b"{\"model\": 3}");
    assert_malformed("tiny-pt", "pytorch_model.bin", b"PK\x03\x04 truncated zip");
    assert_malformed("tiny-pt", "pytorch_model.bin", b"");
    assert_malformed(
        "tiny-st",
        "model.safetensors",
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}",
    );
    assert_malformed("tiny-st", "model.safetensors", b"garbage");
    assert_malformed("tiny-pt", "colbert_linear.pt", b"not a zip");
    assert_malformed("tiny-pt", "sparse_linear.pt", b"not a zip");
}

/// A copy of tiny-pt whose `config.json` has `key` set to `value`.
fn with_config(key: &str, value: serde_json::Value) -> tempfile::TempDir {
    let dir = copy_of("tiny-pt");
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config[key] = value;
    std::fs::write(&path, config.to_string()).unwrap();
    dir
}

#[test]
fn config_that_disagrees_with_the_weights_names_the_weights() {
    let dir = with_config("num_hidden_layers", 7.into());
    let message = load_err(dir.path()).to_string();
    assert!(message.contains("pytorch_model.bin"), "{message}");
}

#[test]
fn config_with_impossible_values_is_rejected() {
    let dir = with_config("num_attention_heads", 5.into());
    let message = load_err(dir.path()).to_string();
    assert!(message.contains("config.json"), "{message}");
    assert!(message.contains("num_attention_heads"), "{message}");
}

#[test]
fn heads_of_the_wrong_shape_are_named() {
    // tiny-st's heads are Linear(48, ..); tiny-pt's encoder is 32 wide.
    let dir = copy_of("tiny-pt");
    std::fs::copy(
        model_dir("tiny-st").join("colbert_linear.pt"),
        dir.path().join("colbert_linear.pt"),
    )
    .unwrap();
    let message = load_err(dir.path()).to_string();
    assert!(message.contains("colbert_linear.pt"), "{message}");
}

#[test]
fn safetensors_is_preferred_over_the_pickle() {
    let dir = copy_of("tiny-st");
    std::fs::write(dir.path().join("pytorch_model.bin"), b"not read").unwrap();
    let model = BgeM3::load(dir.path(), &cpu()).unwrap();
    let reference = common::model("tiny-st");
    let options = bge_m3_core::EncodeOptions::default();
    let a = model.encode(&["same weights"], &options).unwrap();
    let b = reference.encode(&["same weights"], &options).unwrap();
    assert_eq!(a, b);
}

#[test]
fn keys_with_a_roberta_prefix_load_too() {
    // XLMRobertaFor* checkpoints prefix every encoder key with `roberta.`.
    let dir = copy_of("tiny-st");
    let path = dir.path().join("model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let prefixed: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(k, v)| (format!("roberta.{k}"), v))
        .collect();
    candle_core::safetensors::save(&prefixed, &path).unwrap();
    let model = BgeM3::load(dir.path(), &cpu()).unwrap();
    let options = bge_m3_core::EncodeOptions::default();
    assert_eq!(
        model.encode(&["prefixed"], &options).unwrap(),
        common::model("tiny-st")
            .encode(&["prefixed"], &options)
            .unwrap()
    );
}
