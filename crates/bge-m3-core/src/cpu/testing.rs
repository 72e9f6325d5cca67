//! Test support of the CPU path: seeded inputs and the close-enough measure.

use candle_core::{Device, Tensor};

/// `n` values uniform in `[-scale, scale)` from a seeded LCG.
pub(crate) fn random_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A CPU tensor of `shape` filled by [`random_vec`].
pub(crate) fn random(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(random_vec(n, seed, scale), shape, &Device::Cpu).unwrap()
}

/// Largest element-wise difference of two slices of the same length.
pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
