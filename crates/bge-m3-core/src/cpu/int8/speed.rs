//! Measurements rather than tests, ignored by default; run them on a release build:
//!
//! ```text
//! cargo test --release -p bge-m3-core --lib cpu::int8::speed -- --ignored --nocapture
//! SHAPES=22x3072x1024,2048x4096x1024 cargo test ... int8::speed   # rows x n x k
//! ```
//!
//! Single-threaded, on this thread's CPU clock (not the wall clock), so that other load on the
//! machine disturbs them less: the f32 product beside each int8 kernel this CPU has, and the
//! quantization of the rows.

use super::*;
use crate::cpu::matmul::{matmul_here, PackedMatrix};
use crate::cpu::testing::{cpu_now, shapes};

/// The best of three of `work` repeated `iters` times: operations per CPU-second.
fn best(ops: f64, iters: usize, mut work: impl FnMut()) -> f64 {
    let mut best = 0f64;
    for _ in 0..3 {
        let t = cpu_now();
        for _ in 0..iters {
            work();
        }
        best = best.max(ops * iters as f64 / (cpu_now() - t));
    }
    best
}

#[test]
#[ignore]
fn speed() {
    let shapes = shapes(&[
        (1, 3072, 1024),
        (22, 3072, 1024),
        (22, 1024, 4096),
        (96, 3072, 1024),
        (320, 4096, 1024),
        (320, 1024, 4096),
        (2048, 4096, 1024),
    ]);
    // One thread: the products' own pool would otherwise be the machine's.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        for (rows, n, k) in shapes {
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i % 7) as f32 - 3.0) * 0.1)
                .collect();
            let w: Vec<f32> = (0..n * k).map(|i| ((i % 5) as f32 - 2.0) * 0.1).collect();
            let packed = PackedMatrix::pack(&w, n, k);
            let mut q = QuantizedRows::default();
            q.quantize(&x, rows, k, None);
            let mut out = vec![0.0; rows * n];
            let ops = 2.0 * rows as f64 * n as f64 * k as f64;
            let iters = (2e9 / ops).ceil() as usize + 2;
            let f32s = best(ops, iters, || matmul_here(&x, rows, &packed, &mut out)) / 1e9;
            let mut line = format!("{rows}x{n}x{k}: f32 {f32s:.1} GFLOP/cpu-s");
            for kernel in Kernel::available() {
                let quantized = QuantizedMatrix::quantize_stacked(kernel, &[w.as_slice()], k, None);
                q.quantize_for(kernel, &x, rows, k, None);
                let int8 = best(ops, iters, || matmul_with(kernel, &q, &quantized, &mut out)) / 1e9;
                line += &format!(", {} {int8:.1} ({:.2}x)", kernel.name(), int8 / f32s);
            }
            let values = (rows * k) as f64;
            let quantize = best(values, iters, || q.quantize(&x, rows, k, None)) / 1e9;
            line += &format!(", quantize {quantize:.2} G values/cpu-s");
            println!("{line}");
        }
    });
}
