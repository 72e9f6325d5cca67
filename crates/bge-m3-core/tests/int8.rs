//! The int8 precision on the CPU: what it promises beyond agreement with f32 on trained weights
//! (measured by `fixtures/trained/`): the same bits whatever the batch, the outputs close to
//! f32's on the fixture models, and clear errors where it cannot run.

#![forbid(unsafe_code)]

use bge_m3_core::{BgeM3, DType, DeviceSpec, EncodeOptions, Error, LoadOptions, Outputs};
use bge_m3_test_support::{assert_close, check_same_weights, cosine, model_dir, TOLERANCE};

const TEXTS: [&str; 5] = [
    "",
    "Hello world",
    "BGE M3 is an embedding model supporting dense retrieval, lexical matching and multi-vector interaction.",
    "北京是中国的首都。",
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog again and again.",
];

fn load(name: &str, dtype: DType) -> BgeM3 {
    let options = LoadOptions::default()
        .with_device(DeviceSpec::Cpu)
        .with_dtype(dtype);
    BgeM3::load(model_dir(name), &options).unwrap()
}

fn all(batch_size: usize) -> EncodeOptions {
    EncodeOptions::default()
        .with_outputs(Outputs::ALL)
        .with_batch_size(batch_size)
}

/// The encoder's hidden states are the same bits whatever the batch (the dense vector, read
/// off them, shows it); the heads' products run on candle, within the tolerance as in f32.
#[test]
fn a_text_gets_the_same_outputs_alone_and_in_any_batch() {
    for name in ["tiny-pt", "tiny-st"] {
        let model = load(name, DType::Int8);
        assert_eq!(model.dtype(), DType::Int8);
        let together = model.encode(&TEXTS, &all(8)).unwrap();
        for (i, text) in TEXTS.iter().enumerate() {
            let what = format!("{name} text {i}");
            let alone = model.encode(&[text], &all(1)).unwrap().remove(0);
            assert_eq!(alone.dense, together[i].dense, "{what}");
            let (ca, cb) = (alone.colbert.unwrap(), together[i].colbert.clone().unwrap());
            assert_eq!(ca.len(), cb.len(), "{what}");
            for (a, b) in ca.iter().zip(&cb) {
                assert_close(a, b, TOLERANCE, &what);
            }
            let (a, b) = (alone.sparse.unwrap(), together[i].sparse.clone().unwrap());
            check_same_weights(&a.weights, &b.weights, TOLERANCE)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
}

#[test]
fn outputs_stay_close_to_f32() {
    // Random weights amplify every perturbation (no trained structure); these bounds only
    // catch a broken path. Agreement on trained weights is measured in `fixtures/trained/`.
    for name in ["tiny-pt", "tiny-st"] {
        let (f32s, int8) = (load(name, DType::F32), load(name, DType::Int8));
        let a = f32s.encode(&TEXTS, &all(8)).unwrap();
        let b = int8.encode(&TEXTS, &all(8)).unwrap();
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            let dense = cosine(a.dense.as_ref().unwrap(), b.dense.as_ref().unwrap());
            assert!(dense > 0.98, "{name} text {i}: dense cosine {dense}");
            let (ca, cb) = (a.colbert.as_ref().unwrap(), b.colbert.as_ref().unwrap());
            assert_eq!(ca.len(), cb.len());
            for (ra, rb) in ca.iter().zip(cb) {
                let c = cosine(ra, rb);
                assert!(c > 0.95, "{name} text {i}: colbert cosine {c}");
            }
        }
    }
}

fn dtype_error(error: Error) -> String {
    match &error {
        Error::InvalidInput { field, message } if field == "dtype" => message.clone(),
        other => panic!("not an error on `dtype`: {other}"),
    }
}

#[test]
fn int8_on_a_gpu_is_refused_naming_the_dtype() {
    let options = LoadOptions::default()
        .with_device(DeviceSpec::Cuda(0))
        .with_dtype(DType::Int8);
    let error = BgeM3::load(model_dir("tiny-pt"), &options).err().unwrap();
    assert!(dtype_error(error).contains("CPU only"));
}

#[test]
fn a_model_without_the_erf_gelu_is_refused_in_int8() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir("tiny-st")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let config = dir.path().join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["hidden_act"] = "relu".into();
    std::fs::write(&config, json.to_string()).unwrap();
    let options = LoadOptions::default()
        .with_device(DeviceSpec::Cpu)
        .with_dtype(DType::Int8);
    let error = BgeM3::load(dir.path(), &options).err().unwrap();
    assert!(dtype_error(error).contains("erf GELU"));
    // f32 still loads it (through candle's layers).
    BgeM3::load(dir.path(), &options.with_dtype(DType::F32)).unwrap();
}
