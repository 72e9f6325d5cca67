//! GPU parity (issue 5): every fixture case encoded on the first CUDA device, in f16 (the
//! default there), bf16 and f32, against the same model on the CPU in f32.
//!
//! Built only with `--features cuda`, and then it needs a GPU: a `cuda` build is a request to
//! check the GPU, so a missing device fails rather than skips.
//!
//! ```sh
//! source scripts/cuda-env.sh 90
//! cargo test --release -p bge-m3-core --features cuda --test gpu -- --nocapture
//! ```
//!
//! Bounds, for f16 and f32: cosine >= 0.999 for dense vectors and every ColBERT row; sparse
//! weights above 1e-3 on the same keys, within 1e-2 relative. bf16 keeps 8 bits of mantissa
//! (f16 keeps 11), so its bounds are ten times looser: cosine >= 0.99, 1e-1 relative.

#![forbid(unsafe_code)]
#![cfg(feature = "cuda")]

mod common;

use bge_m3_core::{BgeM3, DType, DeviceSpec, EncodeOptions, LoadOptions, Outputs};
use bge_m3_test_support::cosine;
use common::{expected, model, model_dir, MODELS};

struct Bounds {
    cosine: f32,
    relative: f32,
}

fn bounds(dtype: DType) -> Bounds {
    match dtype {
        DType::BF16 => Bounds {
            cosine: 0.99,
            relative: 1e-1,
        },
        _ => Bounds {
            cosine: 0.999,
            relative: 1e-2,
        },
    }
}

fn on_gpu(name: &str, dtype: Option<DType>) -> BgeM3 {
    let options = LoadOptions::default()
        .with_device(DeviceSpec::Cuda(0))
        .with_dtype(dtype);
    BgeM3::load(model_dir(name), &options)
        .unwrap_or_else(|e| panic!("loading {name} on cuda:0 ({dtype:?}): {e}"))
}

#[test]
fn the_gpu_defaults_to_f16() {
    let model = on_gpu("tiny-pt", None);
    assert!(model.device().is_cuda());
    assert_eq!(model.dtype(), DType::F16);
}

#[test]
fn every_fixture_case_matches_the_cpu_in_every_dtype() {
    const WEIGHT_FLOOR: f32 = 1e-3;
    for name in MODELS {
        let cpu = model(name);
        for dtype in [DType::F16, DType::BF16, DType::F32] {
            let gpu = on_gpu(name, Some(dtype));
            let bounds = bounds(dtype);
            let mut worst = 1.0f32;
            for case in &expected(name).encode {
                let options = EncodeOptions::default()
                    .with_outputs(Outputs::ALL)
                    .with_max_length(case.max_length)
                    .with_batch_size(case.batch_size);
                let want = cpu.encode(&case.texts, &options).unwrap();
                let got = gpu.encode(&case.texts, &options).unwrap();
                for (i, (got, want)) in got.iter().zip(&want).enumerate() {
                    let what = format!("{name} {dtype:?} {}[{i}]", case.name);
                    assert_eq!(got.tokens, want.tokens, "{what}: tokens");
                    let dense = cosine(got.dense.as_ref().unwrap(), want.dense.as_ref().unwrap());
                    assert!(dense >= bounds.cosine, "{what}: dense cosine {dense}");
                    worst = worst.min(dense);

                    let (rows, want_rows) = (
                        got.colbert.as_ref().unwrap(),
                        want.colbert.as_ref().unwrap(),
                    );
                    assert_eq!(rows.len(), want_rows.len(), "{what}: ColBERT rows");
                    for (r, (row, want_row)) in rows.iter().zip(want_rows).enumerate() {
                        let c = cosine(row, want_row);
                        assert!(c >= bounds.cosine, "{what}: ColBERT row {r} cosine {c}");
                        worst = worst.min(c);
                    }

                    let sparse = &got.sparse.as_ref().unwrap().weights;
                    let want_sparse = &want.sparse.as_ref().unwrap().weights;
                    let weight = |list: &[(u32, f32)], id: u32| {
                        list.iter().find(|(k, _)| *k == id).map_or(0.0, |(_, w)| *w)
                    };
                    for &(id, w) in want_sparse.iter().filter(|(_, w)| *w > WEIGHT_FLOOR) {
                        let g = weight(sparse, id);
                        assert!(
                            (g - w).abs() <= bounds.relative * w,
                            "{what}: sparse weight of {id}: GPU {g}, CPU {w}"
                        );
                    }
                    for &(id, g) in sparse.iter().filter(|(_, w)| *w > WEIGHT_FLOOR) {
                        let w = weight(want_sparse, id);
                        assert!(
                            (g - w).abs() <= bounds.relative * g,
                            "{what}: sparse key {id} is {g} on the GPU, {w} on the CPU"
                        );
                    }
                }
            }
            println!("{name} {dtype:?}: worst cosine {worst:.6}");
        }
    }
}
