use super::*;
use crate::cpu::testing::random_vec;

/// A seeded LCG for integers.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_add(0x9E37_79B9_7F4A_7C15))
    }

    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }

    /// `n` values uniform in `[-1, 1)`.
    fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        random_vec(n, u64::from(self.next_u32()), 1.0)
    }
}

/// `(rows, out)` sums `Σ_k (u[r, k] - z_r) · q[c, k]` in 64-bit integers, then the results as
/// the kernels compute them.
fn reference(
    values: &[u8],
    (rows, inner, stride): (usize, usize, usize),
    scales: &[f32],
    zeros: &[i32],
    channels: &[Channel],
) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * channels.len());
    for r in 0..rows {
        for channel in channels {
            let sum: i64 = (0..inner)
                .map(|k| i64::from(values[r * stride + k]) * i64::from(channel.values[k]))
                .sum();
            let q_sum: i64 = channel.values.iter().map(|&q| i64::from(q)).sum();
            let sum = sum - i64::from(zeros[r]) * q_sum;
            out.push(sum as i32 as f32 * (scales[r] * channel.scale));
        }
    }
    out
}

/// Channels of weights in `-limit..=limit` (`limit` at most 128; 127 above), the edges and
/// zeros frequent, in runs that put an edge beside an edge of either sign.
fn random_channels(rng: &mut Rng, out: usize, inner: usize, limit: i32) -> Vec<Channel> {
    let (lo, hi) = (-limit, limit.min(127));
    (0..out)
        .map(|c| Channel {
            scale: 0.5 + c as f32 / 16.0,
            values: (0..inner)
                .map(|k| match (c + k) % 11 {
                    0 | 1 => lo,
                    2 | 3 | 5 => hi,
                    4 => 0,
                    _ => lo + (rng.next_u32() % (hi - lo + 1) as u32) as i32,
                })
                .map(|q| i8::try_from(q).unwrap())
                .collect(),
        })
        .collect()
}

/// The kernel of this CPU with the lowest [`Kernel::weight_limit`]: weights quantized for it
/// every kernel can run.
fn most_limited() -> Kernel {
    Kernel::available()
        .into_iter()
        .min_by_key(|k| k.weight_limit())
        .unwrap()
}

fn random_rows(rng: &mut Rng, rows: usize, inner: usize) -> QuantizedRows {
    let stride = inner.next_multiple_of(GROUP);
    let mut values = vec![0u8; rows * stride];
    for r in 0..rows {
        for k in 0..stride {
            values[r * stride + k] = match (r * 7 + k) % 13 {
                0 => 255,
                1 => 0,
                _ => (rng.next_u32() % 256) as u8,
            };
        }
    }
    let scales = (0..rows).map(|r| 0.25 + r as f32 / 8.0).collect();
    let zeros = (0..rows).map(|r| [0, 255, 128, 7][r % 4]).collect();
    QuantizedRows::from_parts(values, stride, scales, zeros)
}

#[test]
fn every_kernel_gives_the_reference_bits_on_every_remainder_path() {
    let mut rng = Rng::new(3);
    // Rows past each kernel's tile and MC; channels past a panel; inputs not a multiple of
    // four, and past one block of KC.
    for &(rows, out, inner) in &[
        (1, 1, 1),
        (1, 16, 4),
        (2, 17, 5),
        (3, 33, 7),
        (4, 16, 8),
        (6, 17, 68),
        (7, 15, 64),
        (9, 48, 513),
        (13, 20, 1031),
        (MC + 3, 40, 130),
        // AMX's tiles (inputs a multiple of 64, at least 16 rows): one tile; rows and channels
        // past a pair of tiles and a single last panel (the overlapping tiles); inputs past a
        // block; rows past MC.
        (16, 16, 64),
        (21, 33, 128),
        (45, 80, 576),
        (MC + 21, 17, 1088),
    ] {
        // Each kernel on weights up to its limit, and those whose limit is higher on the same.
        for limit in [128, 64] {
            let channels = random_channels(&mut rng, out, inner, limit);
            let x = random_rows(&mut rng, rows, inner);
            // The padding of each row may hold anything: the weights there are zero.
            let expected = reference(
                &x.values,
                (rows, inner, x.stride),
                &x.scales,
                &x.zeros,
                &channels,
            );
            let w = QuantizedMatrix::pack(&channels, inner);
            for kernel in Kernel::available() {
                if kernel.weight_limit() < limit {
                    continue;
                }
                let mut got = vec![f32::NAN; rows * out];
                matmul_with(kernel, &x, &w, &mut got);
                let same = got
                    .iter()
                    .zip(&expected)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                let name = kernel.name();
                assert!(
                    same,
                    "{name} on ({rows}, {out}, {inner}), weights to {limit}"
                );
            }
        }
    }
}

/// The largest sums a kernel can meet: every input 255 against every weight at the kernel's
/// limit, of either sign, over the most inputs a product takes: exact, without saturation.
#[test]
fn every_kernel_is_exact_at_the_edges_of_its_range() {
    for kernel in Kernel::available() {
        let limit = kernel.weight_limit();
        let inner = 1031;
        for sign in [1, -1] {
            let value = i8::try_from((sign * limit).min(127)).unwrap();
            let channels: Vec<Channel> = (0..NR + 1)
                .map(|_| Channel {
                    scale: 1.0,
                    values: vec![value; inner],
                })
                .collect();
            let stride = inner.next_multiple_of(GROUP);
            let rows = kernel.rows() + 1;
            let x = QuantizedRows::from_parts(
                vec![255; rows * stride],
                stride,
                vec![1.0; rows],
                vec![0; rows],
            );
            let w = QuantizedMatrix::pack(&channels, inner);
            let mut got = vec![0f32; rows * channels.len()];
            matmul_with(kernel, &x, &w, &mut got);
            let expected = (255 * inner as i64 * i64::from(value)) as f32;
            assert!(
                got.iter().all(|&v| v == expected),
                "{}: {:?} instead of {expected}",
                kernel.name(),
                &got[..4]
            );
        }
    }
}

/// A kernel refuses weights beyond its limit (its sums would saturate) and takes them up to it.
#[test]
fn a_kernel_refuses_weights_beyond_its_limit() {
    let channels = |value: i8| {
        vec![Channel {
            scale: 1.0,
            values: vec![value; 8],
        }]
    };
    let x = QuantizedRows::from_parts(vec![255; 8], 8, vec![1.0], vec![0]);
    for kernel in Kernel::available() {
        let limit = kernel.weight_limit();
        if limit > 127 {
            continue;
        }
        let at = QuantizedMatrix::pack(&channels(i8::try_from(-limit).unwrap()), 8);
        let mut out = [0f32];
        matmul_with(kernel, &x, &at, &mut out);
        assert_eq!(out[0], (255 * 8 * -limit) as f32);
        let beyond = QuantizedMatrix::pack(&channels(i8::try_from(limit + 1).unwrap()), 8);
        let refused = std::panic::catch_unwind(|| matmul_with(kernel, &x, &beyond, &mut [0f32]));
        let message = *refused.unwrap_err().downcast::<String>().unwrap();
        assert!(
            message.contains(&format!("weights of up to {}", limit + 1)),
            "{message}"
        );
    }
}

/// Weights quantized for a kernel stay within its limit and use all of it.
#[test]
fn weights_are_quantized_to_the_kernels_limit() {
    let mut rng = Rng::new(23);
    let (out, inner) = (5, 200);
    let weight = rng.normal_vec(out * inner);
    for kernel in Kernel::available() {
        let w = QuantizedMatrix::quantize_stacked(kernel, &[weight.as_slice()], inner, None);
        assert_eq!(
            w.largest,
            kernel.weight_limit().min(127),
            "{}",
            kernel.name()
        );
    }
}

#[test]
fn kernels_are_named_as_reported_and_only_those_of_this_cpu_are_given() {
    let available = Kernel::available();
    for name in Kernel::NAMES {
        match Kernel::named(&name.to_uppercase()) {
            Ok(kernel) => assert_eq!(kernel.name(), name),
            Err(why) => {
                assert!(available.iter().all(|k| k.name() != name));
                assert!(why.contains("is not available on this CPU"), "{why}");
            }
        }
    }
    assert_eq!(Kernel::named("portable"), Ok(Kernel::Portable));
    for kernel in &available {
        assert_eq!(Kernel::named(kernel.name()), Ok(*kernel));
    }
    let why = Kernel::named("avx512").unwrap_err();
    assert!(
        why.contains("\"avx512\" is not an int8 kernel: one of amx,"),
        "{why}"
    );
    assert!(why.contains("portable"), "{why}");
}

#[test]
fn a_row_gets_the_same_bits_whatever_the_other_rows() {
    let mut rng = Rng::new(5);
    let (out, inner) = (40, 300);
    let w = QuantizedMatrix::quantize_stacked(
        Kernel::detect(),
        &[rng.normal_vec(out * inner)],
        inner,
        None,
    );
    let x = rng.normal_vec(11 * inner);
    let mut all = QuantizedRows::default();
    all.quantize(&x, 11, inner, None);
    let mut batch = vec![0f32; 11 * out];
    matmul(&all, &w, &mut batch);
    for r in [0, 5, 10] {
        let mut one = QuantizedRows::default();
        one.quantize(&x[r * inner..(r + 1) * inner], 1, inner, None);
        let mut alone = vec![0f32; out];
        matmul(&one, &w, &mut alone);
        assert_eq!(
            alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            batch[r * out..(r + 1) * out]
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn quantized_products_are_close_to_f32() {
    let mut rng = Rng::new(7);
    let (rows, out, inner) = (5, 70, 1000);
    let weight = rng.normal_vec(out * inner);
    let mut x = rng.normal_vec(rows * inner);
    // Row 3 is all positive (as after GELU): the asymmetric range serves it as well.
    for v in &mut x[3 * inner..4 * inner] {
        *v = v.abs();
    }
    let w = QuantizedMatrix::quantize_stacked(Kernel::detect(), &[weight.as_slice()], inner, None);
    let mut q = QuantizedRows::default();
    q.quantize(&x, rows, inner, None);
    let mut got = vec![0f32; rows * out];
    matmul(&q, &w, &mut got);
    for r in 0..rows {
        for c in 0..out {
            let row = &x[r * inner..][..inner];
            let channel = &weight[c * inner..][..inner];
            let exact: f64 = row
                .iter()
                .zip(channel)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            // Rounding errors of at most half a step each, independent: their sum grows
            // like the square root of the inputs.
            let (lo, hi) = row
                .iter()
                .fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
            let a_step = f64::from((hi - lo) / 255.0);
            let limit = Kernel::detect().weight_limit().min(127) as f32;
            let w_step = f64::from(channel.iter().fold(0f32, |m, &v| m.max(v.abs())) / limit);
            let bound = 4.0 * (inner as f64).sqrt() * (a_step * 1.0 + w_step * 3.0);
            let error = (f64::from(got[r * out + c]) - exact).abs();
            assert!(error < bound, "({r}, {c}): {error} > {bound}");
        }
    }
}

#[test]
fn zeros_and_empty_shapes() {
    // A row of zeros: scale 1, zero point 0, every result exactly zero.
    let mut rng = Rng::new(9);
    let kernel = Kernel::detect();
    let w = QuantizedMatrix::quantize_stacked(kernel, &[rng.normal_vec(20 * 8)], 8, None);
    let mut q = QuantizedRows::default();
    q.quantize(&[0.0; 16], 2, 8, None);
    let mut out = vec![f32::NAN; 2 * 20];
    matmul(&q, &w, &mut out);
    assert!(out.iter().all(|&v| v == 0.0), "{out:?}");
    // A weight of zeros: every result exactly zero.
    let zero = QuantizedMatrix::quantize_stacked(kernel, &[vec![0f32; 3 * 8]], 8, None);
    q.quantize(&rng.normal_vec(16), 2, 8, None);
    let mut out = vec![f32::NAN; 2 * 3];
    matmul(&q, &zero, &mut out);
    assert!(out.iter().all(|&v| v == 0.0), "{out:?}");
    // No rows: nothing written.
    q.quantize(&[], 0, 8, None);
    matmul(&q, &w, &mut []);
    // No inputs: zeros.
    let empty = QuantizedMatrix::quantize_stacked(kernel, &[Vec::<f32>::new()], 0, None);
    assert_eq!(empty.out(), 0);
}

#[test]
fn a_row_with_a_value_that_is_not_finite_gives_nan() {
    let mut rng = Rng::new(11);
    let w = QuantizedMatrix::quantize_stacked(Kernel::detect(), &[rng.normal_vec(4 * 8)], 8, None);
    let mut x = rng.normal_vec(24);
    x[3] = f32::NAN;
    x[13] = f32::INFINITY;
    let mut q = QuantizedRows::default();
    q.quantize(&x, 3, 8, None);
    let mut out = vec![0f32; 3 * 4];
    matmul(&q, &w, &mut out);
    assert!(out[..8].iter().all(|v| v.is_nan()), "{out:?}");
    assert!(out[8..].iter().all(|v| v.is_finite()), "{out:?}");
}

#[test]
fn activations_use_the_whole_range_and_keep_zero_exact() {
    let mut q = QuantizedRows::default();
    q.quantize(&[-1.0, 0.0, 3.0, 1.5, 0.25], 1, 5, None);
    assert_eq!(q.stride, 8);
    let (scale, zero) = (q.scales[0], q.zeros[0]);
    assert_eq!(scale, 4.0 / 255.0);
    assert_eq!(zero, 64); // round(255 / 4)
    assert_eq!(q.values[0], 0);
    assert_eq!(q.values[1] as i32, zero);
    assert_eq!(q.values[2], 255);
    // Padding holds the zero point.
    assert!(q.values[5..8].iter().all(|&v| i32::from(v) == zero));
}

#[test]
fn smoothing_leaves_the_product_and_moves_the_range() {
    let mut rng = Rng::new(13);
    let (rows, out, inner) = (6, 24, 64);
    let weight = rng.normal_vec(out * inner);
    let mut x = rng.normal_vec(rows * inner);
    // Channel 5 is an outlier in every row, as in trained transformers.
    for row in x.chunks_exact_mut(inner) {
        row[5] *= 60.0;
    }
    let exact: Vec<f64> = (0..rows * out)
        .map(|i| {
            let (r, c) = (i / out, i % out);
            (0..inner)
                .map(|k| f64::from(x[r * inner + k]) * f64::from(weight[c * inner + k]))
                .sum()
        })
        .collect();
    let error = |smoothing: Option<&[f32]>| {
        let w = QuantizedMatrix::quantize_stacked(
            Kernel::detect(),
            &[weight.as_slice()],
            inner,
            smoothing,
        );
        let mut q = QuantizedRows::default();
        q.quantize(&x, rows, inner, w.input_scales());
        let mut got = vec![0f32; rows * out];
        matmul(&q, &w, &mut got);
        got.iter()
            .zip(&exact)
            .map(|(&g, &e)| (f64::from(g) - e).abs())
            .fold(0.0, f64::max)
    };
    let mut smoothing = vec![1f32; inner];
    smoothing[5] = 8.0;
    let (plain, smoothed) = (error(None), error(Some(&smoothing)));
    assert!(smoothed < plain / 2.0, "{smoothed} vs {plain}");
}

#[test]
fn every_kernel_quantizes_a_row_to_the_same_bytes() {
    let mut rng = Rng::new(17);
    for n in [0, 1, 7, 8, 31, 32, 33, 64, 70, 1000] {
        let mut x = rng.normal_vec(n);
        // Exact ties of the rounding, zeros and a large value.
        for (k, v) in x.iter_mut().enumerate() {
            match k % 9 {
                0 => *v = 0.0,
                1 => *v = (k as f32) * 0.5,
                2 => *v = -40.0,
                _ => {}
            }
        }
        let scales: Vec<f32> = (0..n).map(|k| 0.5 + (k % 5) as f32 / 4.0).collect();
        for input_scales in [None, Some(scales.as_slice())] {
            let padded = n.next_multiple_of(GROUP);
            let expected = {
                let mut values = vec![0u8; padded];
                let got = Kernel::Portable.quantize_row(&x, input_scales, &mut values);
                (got, values)
            };
            for kernel in Kernel::available() {
                let mut values = vec![0xAAu8; padded];
                let got = kernel.quantize_row(&x, input_scales, &mut values);
                assert_eq!((got, values), expected, "{} on {n} values", kernel.name());
            }
        }
    }
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for at in [0, 40] {
            let mut x = rng.normal_vec(45);
            x[at] = bad;
            for kernel in Kernel::available() {
                let mut values = vec![0u8; 48];
                let (scale, _) = kernel.quantize_row(&x, None, &mut values);
                assert!(scale.is_nan(), "{} with {bad} at {at}", kernel.name());
            }
        }
    }
}

#[test]
fn every_kernel_gives_the_same_bits_from_f32_rows() {
    let mut rng = Rng::new(19);
    let (rows, out, inner) = (13, 37, 531);
    let scales: Vec<f32> = (0..inner).map(|k| 0.5 + (k % 3) as f32).collect();
    // Weights every kernel can run.
    let w = QuantizedMatrix::quantize_stacked(
        most_limited(),
        &[rng.normal_vec(out * inner)],
        inner,
        Some(&scales),
    );
    assert_eq!(w.largest, most_limited().weight_limit().min(127));
    let x = rng.normal_vec(rows * inner);
    let mut results = Vec::new();
    for kernel in Kernel::available() {
        let mut q = QuantizedRows::default();
        q.quantize_for(kernel, &x, rows, inner, w.input_scales());
        let mut got = vec![0f32; rows * out];
        matmul_with(kernel, &q, &w, &mut got);
        results.push((
            kernel.name(),
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        ));
    }
    for (name, bits) in &results[1..] {
        assert!(
            *bits == results[0].1,
            "{name} differs from {}",
            results[0].0
        );
    }
}

#[test]
fn symmetric_quantization_rounds_ties_to_even() {
    // A row whose largest magnitude is 127: the scale is 1, so every value is its own quotient,
    // ties included (±0.5, 1.5, 2.5, 126.5 go to even), and out-of-range ones cannot occur.
    let row = [
        127.0, -127.0, 0.5, -0.5, 1.5, 2.5, -2.5, 126.5, 3.4999, -0.0, 0.0,
    ];
    let (scale, values) = quantize_symmetric(&row, 127);
    assert_eq!(scale, 1.0);
    assert_eq!(values, [127, -127, 0, 0, 2, 2, -2, 126, 3, 0, 0]);
    // The same row to 64: the scale 127 / 64.
    let (scale, values) = quantize_symmetric(&row, 64);
    assert_eq!(scale, 127.0 / 64.0);
    assert_eq!(values[..3], [64, -64, 0]);

    // Against the library's rounding on random rows of many magnitudes.
    let mut rng = Rng::new(9);
    for magnitude in [1e-30f32, 1e-3, 1.0, 3.0e5, 1e30] {
        for limit in [127, 64] {
            let row: Vec<f32> = rng.normal_vec(1000).iter().map(|v| v * magnitude).collect();
            let (scale, values) = quantize_symmetric(&row, limit);
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let limit = limit as f32;
            assert_eq!(scale, max / limit);
            for (&w, &q) in row.iter().zip(&values) {
                let expected = (w / scale).round_ties_even().clamp(-limit, limit) as i8;
                assert_eq!(q, expected, "{w} at scale {scale}");
            }
        }
    }

    // Zeros, NaN and infinities: the scale 1, NaN as 0, infinities at the ends.
    assert_eq!(quantize_symmetric(&[0.0, 0.0], 127), (1.0, vec![0, 0]));
    let odd = [f32::NAN, 2.0, f32::INFINITY, f32::NEG_INFINITY];
    let (scale, values) = quantize_symmetric(&odd, 127);
    assert_eq!(scale, 1.0);
    assert_eq!(values, [0, 2, 127, -127]);
    assert_eq!(quantize_symmetric(&odd, 64).1, [0, 2, 64, -64]);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn symmetric_quantization_on_avx2_gives_the_portable_bytes() {
    let Some(token) = crate::cpu::arch::Avx2::detect() else {
        eprintln!("skipped: this CPU has no AVX2");
        return;
    };
    let mut rng = Rng::new(23);
    let check = |row: &[f32], limit: f32| {
        let mut expected = vec![0i8; row.len()];
        let scale = kernels::symmetric_portable(row, limit, &mut expected);
        let mut got = vec![0x55i8; row.len()];
        // SAFETY: `token` proves that the CPU has AVX2.
        let got_scale = unsafe { kernels::symmetric_avx2(token, row, limit, &mut got) };
        assert_eq!(got_scale.to_bits(), scale.to_bits(), "{row:?} to {limit}");
        assert_eq!(got, expected, "{row:?} to {limit}");
    };
    // Every length around the 32-value steps, the remainder paths included.
    for n in (0..=100).chain([1000, 1024, 4096]) {
        let mut row = rng.normal_vec(n);
        // Exact ties once scaled (the largest magnitude set to the limit), zeros of both signs.
        for (k, v) in row.iter_mut().enumerate() {
            match k % 7 {
                0 => *v = (k % 20) as f32 + 0.5,
                1 => *v = -0.0,
                2 => *v = 0.0,
                _ => *v *= 40.0,
            }
        }
        if let Some(first) = row.first_mut() {
            *first = 127.0;
        }
        for limit in [1.0, 63.0, 64.0, 127.0] {
            check(&row, limit);
        }
    }
    // Magnitudes from subnormal to near the largest f32.
    for magnitude in [1e-42f32, 1e-30, 1e-3, 1.0, 3.0e5, 1e30, 3e38] {
        let row: Vec<f32> = rng.normal_vec(77).iter().map(|v| v * magnitude).collect();
        check(&row, 127.0);
    }
    // Not finite, in the steps and in the tail: NaN becomes 0 and is left out of the scale;
    // an infinity makes the scale 1 and goes to the limit.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        for at in [0, 5, 31, 32, 40, 64, 69] {
            let mut row = rng.normal_vec(70);
            row[at] = bad;
            check(&row, 127.0);
            check(&row, 64.0);
        }
    }
    check(&[f32::NAN; 40], 127.0);
    check(&[0.0; 40], 127.0);
}

/// Whether `kernel` runs a tile of `rows` rows of two lines, 16 inputs apart in `a`, writing
/// `cols` columns from element `offset` of a buffer of `len` (rows 16 apart); false if it
/// panics.
fn tile_runs(
    kernel: Kernel,
    (rows, a): (usize, &[u8]),
    len: usize,
    (offset, cols): (usize, usize),
) -> bool {
    let b = [Line([1; NR * GROUP]); 2];
    let operands = kernels::Operands {
        a,
        lda: 16,
        rows,
        b: &b,
        ahead: &[],
        first: true,
        dequantize: None,
    };
    let mut buffer = vec![0f32; len];
    let out = SharedMut::new(&mut buffer);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the only tile, and nothing else touches `buffer`.
        let mut tile = unsafe { kernels::Tile::new(kernel, operands, &out, offset, (16, cols)) };
        tile.run();
    }))
    .is_ok()
}

/// `Tile::new` refuses, for every kernel, a tile whose outputs leave the buffer, whose
/// activations are shorter than its rows, or whose rows are more than the kernel's: what the
/// kernels' unchecked reads and writes rely on.
#[test]
fn a_tile_outside_its_inputs_or_its_output_is_refused() {
    let a = [1u8; 9 * 16];
    for kernel in Kernel::available() {
        let name = kernel.name();
        // Four rows of 8 inputs (two lines), the last row's ending 7 elements short.
        let short_a = &a[..3 * 16 + 7];
        let four = (4, &a[..]);
        assert!(
            tile_runs(kernel, four, 64, (0, 16)),
            "{name}: a tile that fits"
        );
        assert!(
            !tile_runs(kernel, four, 64, (1, 16)),
            "{name}: one past the end"
        );
        assert!(!tile_runs(kernel, four, 64, (0, 17)), "{name}: 17 columns");
        assert!(
            !tile_runs(kernel, (4, short_a), 64, (0, 16)),
            "{name}: short rows"
        );
        let too_many = (kernel.rows() + 1, &a[..]);
        assert!(
            !tile_runs(kernel, too_many, 9 * 16, (0, 16)),
            "{name}: too many rows"
        );
    }
}

/// Everything a [`QuantizedMatrix`] holds, to compare two.
fn contents(w: &QuantizedMatrix) -> impl PartialEq + std::fmt::Debug {
    let lines: Vec<Vec<i8>> = w.lines.iter().map(|line| line.0.to_vec()).collect();
    let scales: Vec<u32> = w.scales.iter().map(|s| s.to_bits()).collect();
    (
        (w.out, w.inner, w.panels, w.largest),
        lines,
        scales,
        w.sums.clone(),
        w.input_scales.is_some(),
    )
}

#[test]
fn a_matrix_requantized_in_place_equals_one_quantized_anew() {
    let mut rng = Rng::new(23);
    for kernel in Kernel::available() {
        // One matrix reused for every shape, larger ones first then smaller: nothing of an
        // earlier shape may remain. Channels past a panel, inputs not a multiple of four and
        // past one block of KC, a matrix of no inputs.
        let mut reused = QuantizedMatrix::empty();
        for &(out, inner) in &[(40, 1100), (830, 64), (17, 7), (1, 1), (3, 0), (16, 64)] {
            let mut w = rng.normal_vec(out * inner);
            if let Some(v) = w.first_mut() {
                *v = 0.0;
            }
            let fresh = QuantizedMatrix::quantize_stacked(kernel, &[w.as_slice()], inner, None);
            reused.requantize(kernel, &w, inner);
            assert_eq!(
                contents(&reused),
                contents(&fresh),
                "{} at ({out}, {inner})",
                kernel.name()
            );
        }
        // A smoothed matrix's input scales do not stay either.
        let ones = [1.0f32; 8];
        let mut reused =
            QuantizedMatrix::quantize_stacked(kernel, &[ones.as_slice()], 8, Some(&[2.0; 8]));
        assert!(reused.input_scales().is_some());
        reused.requantize(kernel, &ones, 8);
        assert!(reused.input_scales().is_none());
    }
}

#[test]
fn a_product_on_this_thread_equals_the_parallel_one() {
    let mut rng = Rng::new(29);
    // Enough panels for the parallel product to split them into several tasks.
    let (rows, out, inner) = (11, 300, 70);
    for kernel in Kernel::available() {
        let w =
            QuantizedMatrix::quantize_stacked(kernel, &[rng.normal_vec(out * inner)], inner, None);
        let mut q = QuantizedRows::default();
        q.quantize_for(kernel, &rng.normal_vec(rows * inner), rows, inner, None);
        let (mut here, mut parallel) = (vec![0f32; rows * out], vec![1f32; rows * out]);
        matmul_here(kernel, &q, &w, &mut here);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        pool.install(|| matmul_with(kernel, &q, &w, &mut parallel));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&here), bits(&parallel), "{}", kernel.name());
    }
}
