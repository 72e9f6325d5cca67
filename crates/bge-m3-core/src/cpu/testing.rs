//! Test support of the CPU path: seeded inputs, the close-enough measure, and what the
//! measurements (`matmul::speed`, `int8::speed`) share: this thread's CPU clock and their shapes.

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

/// The `rows x n x k` products named by the environment variable `SHAPES` (e.g.
/// `SHAPES=22x3072x1024,2048x4096x1024`), or `default`.
pub(crate) fn shapes(default: &[(usize, usize, usize)]) -> Vec<(usize, usize, usize)> {
    std::env::var("SHAPES").ok().map_or_else(
        || default.to_vec(),
        |s| {
            s.split(',')
                .map(|t| {
                    let v: Vec<usize> = t.split('x').map(|x| x.parse().unwrap()).collect();
                    (v[0], v[1], v[2])
                })
                .collect()
        },
    )
}

pub(crate) use clock::cpu_now;

/// This thread's CPU clock, which other load on the machine disturbs less than the wall clock.
#[allow(unsafe_code)] // clock_gettime(2)
mod clock {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        /// POSIX `clock_gettime(2)`, from the C library the standard library links.
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    /// Linux's `CLOCK_THREAD_CPUTIME_ID`.
    const THREAD_CPU_CLOCK: i32 = 3;

    /// This thread's CPU time in seconds.
    pub(crate) fn cpu_now() -> f64 {
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec for the call.
        unsafe { clock_gettime(THREAD_CPU_CLOCK, &mut ts) };
        ts.sec as f64 + ts.nsec as f64 * 1e-9
    }
}
