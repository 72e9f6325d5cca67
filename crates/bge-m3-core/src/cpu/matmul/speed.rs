//! Measurements rather than tests, ignored by default; run them on a release build:
//!
//! ```text
//! cargo test --release -p bge-m3-core --lib cpu::matmul::speed -- --ignored --nocapture
//! SHAPES=22x3072x1024,2048x4096x1024 cargo test ... speed::speed   # rows x n x k
//! ROWS=22 cargo test ... speed::stream
//! ```
//!
//! Both time this thread's CPU clock, not the wall clock, so that other load on the machine
//! disturbs them less.

use super::*;
use crate::cpu::testing::{cpu_now, shapes};

fn gemm_crate(x: &[f32], rows: usize, w: &[f32], n: usize, k: usize, out: &mut [f32]) {
    assert!(x.len() >= rows * k && w.len() >= n * k && out.len() >= rows * n);
    // SAFETY: `x` `(rows, k)`, `w` `(n, k)` read as its transpose, and `out` `(rows, n)`, all
    // row-major with the strides given, lie in the slices (asserted); `out` is borrowed mutably.
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Single-threaded GFLOP per CPU-second of ours and of the `gemm` crate (which packs its
/// right-hand side on every call) on the encoder's shapes.
#[test]
#[ignore]
fn speed() {
    let shapes = shapes(&[
        (22, 3072, 1024),
        (22, 1024, 4096),
        (96, 3072, 1024),
        (320, 4096, 1024),
        (320, 1024, 4096),
        (2048, 4096, 1024),
    ]);
    for (rows, n, k) in shapes {
        let x: Vec<f32> = (0..rows * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let packed = PackedMatrix::pack(&w, n, k);
        let mut out = vec![0.0; rows * n];
        let flops = 2.0 * rows as f64 * n as f64 * k as f64;
        let iters = (1e10 / flops).ceil() as usize + 2;
        let mut best = (0f64, 0f64);
        for _ in 0..3 {
            let t = cpu_now();
            for _ in 0..iters {
                matmul_here(&x, rows, &packed, &mut out);
            }
            best.0 = best.0.max(flops * iters as f64 / (cpu_now() - t) / 1e9);
            let t = cpu_now();
            for _ in 0..iters {
                gemm_crate(&x, rows, &w, n, k, &mut out);
            }
            best.1 = best.1.max(flops * iters as f64 / (cpu_now() - t) / 1e9);
        }
        println!(
            "{rows}x{n}x{k}: ours {:.1} GFLOP/cpu-s, gemm {:.1}",
            best.0, best.1
        );
    }
}

/// Weights far larger than L3, as a short pass streams them: the read bandwidth of the
/// packed bytes beside the matrix products' GFLOP/s over the same 24 matrices.
#[test]
#[ignore]
fn stream() {
    let rows: usize = std::env::var("ROWS")
        .ok()
        .map(|s| s.parse().unwrap())
        .unwrap_or(22);
    let (n, k) = (1024, 4096);
    let mats: Vec<PackedMatrix> = (0..24)
        .map(|m| {
            PackedMatrix::pack(
                &(0..n * k)
                    .map(|i| ((i + m) % 5) as f32 * 0.1)
                    .collect::<Vec<f32>>(),
                n,
                k,
            )
        })
        .collect();
    let x: Vec<f32> = (0..rows * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let mut out = vec![0.0; rows * n];
    // Plain read bandwidth of the same bytes.
    for _ in 0..8 {
        let t = cpu_now();
        let mut acc = 0f32;
        for m in &mats {
            for line in &m.lines {
                acc += line.0[0] + line.0[7];
            }
        }
        let dt = cpu_now() - t;
        let bytes: usize = mats.iter().map(|m| m.bytes()).sum();
        print!("read {:.1} GB/s ({acc});", bytes as f64 / dt / 1e9);
        let t = cpu_now();
        for m in &mats {
            matmul_here(&x, rows, m, &mut out);
        }
        let dt = cpu_now() - t;
        print!(
            " matmul {:.1} GFLOP/s",
            2.0 * (rows * n * k * 24) as f64 / dt / 1e9
        );
        println!();
    }
}
