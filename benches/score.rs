//! The scoring functions at BGE-M3's real sizes: 1024-dim dense vectors, a 32-token query
//! against a 512-token passage for ColBERT, and sparse weights of those lengths.

#![forbid(unsafe_code)]

use bge_m3_core::score::{colbert_score, dense_score, sparse_score};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

/// Deterministic pseudo-random unit vectors (no RNG crate needed for a benchmark).
fn vectors(count: usize, dim: usize, seed: u32) -> Vec<Vec<f32>> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..count)
        .map(|_| {
            let v: Vec<f32> = (0..dim)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    (state as f32 / u32::MAX as f32) - 0.5
                })
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn sparse(count: usize, stride: u32) -> Vec<(u32, f32)> {
    (0..count as u32)
        .map(|i| (i * stride, 0.01 * (i % 50) as f32))
        .collect()
}

fn scores(c: &mut Criterion) {
    let q = vectors(1, 1024, 1).remove(0);
    let p = vectors(1, 1024, 2).remove(0);
    c.bench_function("dense_score_1024", |b| {
        b.iter(|| dense_score(black_box(&q), black_box(&p)))
    });

    let q_sparse = sparse(32, 7);
    let p_sparse = sparse(400, 3);
    c.bench_function("sparse_score_32x400", |b| {
        b.iter(|| sparse_score(black_box(&q_sparse), black_box(&p_sparse)))
    });

    let q_rows = vectors(32, 1024, 3);
    let p_rows = vectors(512, 1024, 4);
    c.bench_function("colbert_score_32x512x1024", |b| {
        b.iter(|| colbert_score(black_box(&q_rows), black_box(&p_rows)))
    });
}

criterion_group!(benches, scores);
criterion_main!(benches);
