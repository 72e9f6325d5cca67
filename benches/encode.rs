//! Encoding throughput on the tiny fixture model (real code path, tiny shapes): tokenization,
//! batching, the encoder and the three heads. The full-size numbers come from the throughput
//! harness (see the README).

#![forbid(unsafe_code)]

use bge_m3_core::{BgeM3, DeviceSpec, EncodeOptions, LoadOptions, Outputs};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn model() -> BgeM3 {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/models/tiny-pt");
    BgeM3::load(
        dir,
        &LoadOptions::default()
            .with_device(DeviceSpec::Cpu)
            .with_dtype(None),
    )
    .expect("the fixture model loads")
}

fn encode(c: &mut Criterion) {
    let model = model();
    let short: Vec<String> = (0..32)
        .map(|i| format!("What is BGE M3? Query number {i} about retrieval."))
        .collect();
    let passage = "BGE M3 is an embedding model supporting dense retrieval, lexical matching and \
                   multi-vector interaction. "
        .repeat(24);
    let long = vec![passage.repeat(8)];
    let cases = [
        ("short_x32", short),
        ("passage_x4", vec![passage; 4]),
        ("long_x1", long),
    ];

    let mut group = c.benchmark_group("encode_tiny");
    for (name, texts) in &cases {
        let tokens: usize = model
            .tokenize(texts, 8192)
            .unwrap()
            .iter()
            .map(Vec::len)
            .sum();
        group.throughput(Throughput::Elements(tokens as u64));
        for (outputs_name, outputs) in [("dense_sparse", Outputs::default()), ("all", Outputs::ALL)]
        {
            let options = EncodeOptions::default().with_outputs(outputs);
            group.bench_with_input(BenchmarkId::new(*name, outputs_name), texts, |b, texts| {
                b.iter(|| model.encode(texts, &options).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
