//! The element-wise passes of a layer, fused and multi-threaded over rows: bias + GELU, bias +
//! residual + LayerNorm, the embeddings' sum + LayerNorm, and the softmax's exponentials.

use rayon::prelude::*;

/// Fewest elements an element-wise task gets, so that short batches are not split into tasks
/// that cost more to schedule than to run.
const MIN_TASK_ELEMENTS: usize = 1 << 14;

/// `LayerNorm` parameters.
#[derive(Clone)]
pub(crate) struct Norm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f32,
}

/// Rows per element-wise task for rows of `width` elements.
fn rows_per_task(rows: usize, width: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_size = MIN_TASK_ELEMENTS.div_ceil(width.max(1));
    // A few tasks per thread, so that a thread slowed by other work does not hold up the rest.
    let by_balance = rows.div_ceil(4 * threads);
    by_size.max(by_balance).max(1)
}

/// `x = gelu(x + bias)` on every row, with the exact (erf) GELU.
pub(crate) fn bias_gelu(x: &mut [f32], bias: &[f32]) {
    let width = bias.len();
    let rows = x.len() / width;
    x.par_chunks_mut(width * rows_per_task(rows, width))
        .for_each(|chunk| simd::bias_gelu(chunk, bias));
}

/// `x = layer_norm(x + bias + residual)` on every row, as `LayerNorm(dense(h) + residual)` in
/// `XLMRobertaSelfOutput` / `XLMRobertaOutput` with `x = h · wᵀ`.
pub(crate) fn bias_residual_layer_norm(x: &mut [f32], residual: &[f32], bias: &[f32], norm: &Norm) {
    let width = bias.len();
    assert_eq!(x.len(), residual.len());
    assert_eq!(norm.gamma.len(), width);
    assert_eq!(norm.beta.len(), width);
    let rows = x.len() / width;
    let chunk = width * rows_per_task(rows, width);
    x.par_chunks_mut(chunk)
        .zip(residual.par_chunks(chunk))
        .for_each(|(x, residual)| {
            for (row, res) in x.chunks_exact_mut(width).zip(residual.chunks_exact(width)) {
                simd::bias_residual_layer_norm(row, res, bias, (&norm.gamma, &norm.beta), norm.eps);
            }
        });
}

/// Writes the word table's row of a token id into a row of the embeddings.
pub(crate) type WordRow<'a> = &'a (dyn Fn(usize, &mut [f32]) + Sync);

/// The embedding rows of `XLMRobertaEmbeddings`: for token `t`,
/// `x[t] = layer_norm((words[ids[t]] + token_type) + positions[position_ids[t]])`, in the order
/// transformers adds them. `word(id, row)` writes the word table's row `id` into `row`;
/// `positions` is a row-major table of `token_type.len()` columns.
pub(crate) fn embed(
    x: &mut [f32],
    (ids, position_ids): (&[u32], &[u32]),
    (word, positions, token_type): (WordRow<'_>, &[f32], &[f32]),
    norm: &Norm,
) {
    let width = token_type.len();
    assert_eq!(x.len(), ids.len() * width);
    assert_eq!(ids.len(), position_ids.len());
    let per_task = rows_per_task(ids.len(), width);
    x.par_chunks_mut(width * per_task)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, row) in chunk.chunks_exact_mut(width).enumerate() {
                let t = task * per_task + i;
                let position = &positions[position_ids[t] as usize * width..][..width];
                word(ids[t] as usize, row);
                simd::bias_residual_layer_norm(
                    row,
                    position,
                    token_type,
                    (&norm.gamma, &norm.beta),
                    norm.eps,
                );
            }
        });
}

/// The per-row kernels, compiled twice on x86-64: for AVX2 + FMA (chosen at run time, with fused
/// multiply-adds in the polynomials) and for the baseline. The bodies are written so that the
/// compiler vectorises them (eight independent partial sums, no calls, branch-free `exp`).
pub(crate) mod simd {
    use super::math::{self, Fused, Separate};
    #[cfg(target_arch = "x86_64")]
    use crate::cpu::arch::Avx2Fma;

    /// Each kernel: a safe fn compiled for AVX2 and FMA that takes their token (so it is
    /// reachable only where detection found them), and the baseline build otherwise.
    macro_rules! dispatch {
        ($(fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:ident;)*) => {
            $(
                pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
                    #[cfg(target_arch = "x86_64")]
                    if let Some(token) = Avx2Fma::detect() {
                        #[target_feature(enable = "avx2,fma")]
                        fn avx2(_: Avx2Fma, $($arg: $ty),*) $(-> $ret)? {
                            math::$body::<Fused>($($arg),*)
                        }
                        // SAFETY: `token` proves that the CPU has AVX2 and FMA, which `avx2`
                        // enables.
                        return unsafe { avx2(token, $($arg),*) };
                    }
                    math::$body::<Separate>($($arg),*)
                }
            )*
        };
    }

    dispatch! {
        fn bias_gelu(x: &mut [f32], bias: &[f32]) => bias_gelu;
        fn bias_residual_layer_norm(
            x: &mut [f32],
            residual: &[f32],
            bias: &[f32],
            affine: (&[f32], &[f32]),
            eps: f32
        ) => bias_residual_layer_norm;
        fn exp_normalizer(scores: &mut [f32], scale: f32) -> f32 => exp_normalizer;
    }
}

/// Scalar definitions of the kernels, inlined into both builds of [`simd`].
pub(crate) mod math {
    /// `a * b + c`, rounded once ([`Fused`], where the CPU has FMA) or twice ([`Separate`]:
    /// without the instruction, `f32::mul_add` is a slow library call).
    pub trait MulAdd {
        fn mul_add(a: f32, b: f32, c: f32) -> f32;
    }

    pub struct Fused;
    pub struct Separate;

    impl MulAdd for Fused {
        #[inline(always)]
        fn mul_add(a: f32, b: f32, c: f32) -> f32 {
            a.mul_add(b, c)
        }
    }

    impl MulAdd for Separate {
        #[inline(always)]
        fn mul_add(a: f32, b: f32, c: f32) -> f32 {
            a * b + c
        }
    }

    /// Eight partial sums, so that the additions vectorise without reassociating.
    #[inline(always)]
    fn sum(xs: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        let chunks = xs.chunks_exact(8);
        let tail: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            for i in 0..8 {
                acc[i] += c[i];
            }
        }
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
    }

    #[inline(always)]
    fn max(xs: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; 8];
        let chunks = xs.chunks_exact(8);
        let tail = chunks
            .remainder()
            .iter()
            .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for c in chunks {
            for i in 0..8 {
                acc[i] = acc[i].max(c[i]);
            }
        }
        acc.iter().fold(tail, |m, &v| m.max(v))
    }

    /// `e^x` within 2 ulp for `x` in [-87, 88] (exactly 0 below), branch-free: `x = n ln2 + r`
    /// with `|r| <= ln2 / 2`, a degree-7 Taylor polynomial for `e^r`, and `2^n` from the
    /// exponent bits.
    #[inline(always)]
    pub fn exp<M: MulAdd>(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        // ln 2 split so that `n * LN2_HI` is exact for |n| < 2^15.
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
        const ROUND: f32 = 12_582_912.0;
        let clamped = x.clamp(-87.0, 88.0);
        let n = (clamped * LOG2E + ROUND) - ROUND;
        let r = M::mul_add(-n, LN2_LO, M::mul_add(-n, LN2_HI, clamped));
        let mut p = 1.0 / 5040.0;
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = M::mul_add(p, r, c);
        }
        // 2^n from the bits of n + 127 + 2^23, whose low mantissa bits are n + 127: shifted into
        // the exponent field. (A float-to-int cast would not vectorise: Rust's saturates.)
        let scale = f32::from_bits((n + 8_388_735.0).to_bits() << 23);
        if x < -87.0 {
            0.0
        } else {
            p * scale
        }
    }

    /// `erf(x)` within 5e-7 in f32 arithmetic (Abramowitz and Stegun 7.1.26, the approximation PyTorch's
    /// vectorised CPU `erf` uses).
    #[inline(always)]
    pub fn erf<M: MulAdd>(x: f32) -> f32 {
        const P: f32 = 0.327_591_1;
        const A1: f32 = 0.254_829_6;
        const A2: f32 = -0.284_496_74;
        const A3: f32 = 1.421_413_8;
        const A4: f32 = -1.453_152;
        const A5: f32 = 1.061_405_4;
        let a = x.abs();
        let t = 1.0 / (1.0 + P * a);
        let mut poly = A5;
        for c in [A4, A3, A2, A1] {
            poly = M::mul_add(poly, t, c);
        }
        let y = M::mul_add(-(poly * t), exp::<M>(-a * a), 1.0);
        y.copysign(x)
    }

    #[inline(always)]
    pub fn bias_gelu<M: MulAdd>(x: &mut [f32], bias: &[f32]) {
        for row in x.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                let h = *v + b;
                *v = 0.5 * h * (1.0 + erf::<M>(h * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
    }

    /// One row: `x = ((x + bias + residual) - mean) / sqrt(var + eps) * gamma + beta`, with
    /// the mean and the (biased) variance computed in two passes.
    #[inline(always)]
    pub fn bias_residual_layer_norm<M: MulAdd>(
        x: &mut [f32],
        residual: &[f32],
        bias: &[f32],
        (gamma, beta): (&[f32], &[f32]),
        eps: f32,
    ) {
        let n = x.len() as f32;
        for ((v, r), b) in x.iter_mut().zip(residual).zip(bias) {
            *v = (*v + b) + r;
        }
        let mean = sum(x) / n;
        let mut acc = [0f32; 8];
        let chunks = x.chunks_exact(8);
        let tail: f32 = chunks
            .remainder()
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum();
        for c in chunks {
            for i in 0..8 {
                let d = c[i] - mean;
                acc[i] += d * d;
            }
        }
        let sq = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        let inv_std = 1.0 / ((sq + tail) / n + eps).sqrt();
        for ((v, g), b) in x.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv_std * g + b;
        }
    }

    /// Replaces one row of dot products `s` with `exp(scale * s - scale * max)` (`scale > 0`:
    /// the softmax of the scaled scores, shifted by their maximum) and returns their sum (the
    /// softmax's divisor).
    #[inline(always)]
    pub fn exp_normalizer<M: MulAdd>(scores: &mut [f32], scale: f32) -> f32 {
        let shift = -scale * max(scores);
        for s in scores.iter_mut() {
            *s = exp::<M>(M::mul_add(scale, *s, shift));
        }
        sum(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::{max_abs_diff, random};
    use candle_core::{Module, Tensor};

    #[test]
    fn exp_is_within_two_ulp_and_zero_far_below() {
        fn check<M: math::MulAdd>() {
            let mut x = -87.0f32;
            while x < 88.0 {
                let (ours, std) = (math::exp::<M>(x), x.exp());
                assert!(
                    ((ours - std) / std).abs() < 2.5e-7,
                    "exp({x}) = {ours}, not {std}"
                );
                x += 0.0137;
            }
            assert_eq!(math::exp::<M>(f32::MIN), 0.0);
            assert_eq!(math::exp::<M>(-1000.0), 0.0);
            assert_eq!(math::exp::<M>(0.0), 1.0);
        }
        check::<math::Fused>();
        check::<math::Separate>();
    }

    #[test]
    fn erf_is_within_5e_7() {
        let x = random(&[4096], 1, 6.0);
        let expected = x.erf().unwrap().to_vec1::<f32>().unwrap();
        let x = x.to_vec1::<f32>().unwrap();
        for ours in [
            x.iter()
                .map(|&v| math::erf::<math::Fused>(v))
                .collect::<Vec<_>>(),
            x.iter().map(|&v| math::erf::<math::Separate>(v)).collect(),
        ] {
            let diff = max_abs_diff(&ours, &expected);
            assert!(diff < 5e-7, "{diff}");
        }
    }

    #[test]
    fn bias_gelu_matches_candle() {
        let x = random(&[37, 96], 2, 4.0);
        let bias = random(&[96], 3, 1.0);
        let expected = x.broadcast_add(&bias).unwrap().gelu_erf().unwrap();
        let mut ours = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        bias_gelu(&mut ours, &bias.to_vec1::<f32>().unwrap());
        let expected = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(max_abs_diff(&ours, &expected) < 1e-6);
    }

    #[test]
    fn bias_residual_layer_norm_matches_candle() {
        let (rows, width) = (53, 200);
        let x = random(&[rows, width], 4, 3.0);
        let residual = random(&[rows, width], 5, 3.0);
        let bias = random(&[width], 6, 1.0);
        let gamma = random(&[width], 7, 1.0);
        let beta = random(&[width], 8, 1.0);
        let norm = candle_nn::LayerNorm::new(gamma.clone(), beta.clone(), 1e-5);
        let sum = (x.broadcast_add(&bias).unwrap() + &residual).unwrap();
        let expected = norm.forward(&sum).unwrap();
        let mut ours = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let residual = residual.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let norm = Norm {
            gamma: gamma.to_vec1().unwrap(),
            beta: beta.to_vec1().unwrap(),
            eps: 1e-5,
        };
        bias_residual_layer_norm(&mut ours, &residual, &bias.to_vec1().unwrap(), &norm);
        let expected = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(max_abs_diff(&ours, &expected) < 1e-5);
    }

    /// The embeddings' sum and LayerNorm, against candle's `Embedding` and `LayerNorm` ops.
    #[test]
    fn embed_matches_candle() {
        let (vocab, width, positions) = (50, 40, 30);
        let words = random(&[vocab, width], 9, 1.0);
        let table = random(&[positions, width], 10, 1.0);
        let token_type = random(&[width], 11, 1.0);
        let (gamma, beta) = (random(&[width], 12, 1.0), random(&[width], 13, 1.0));
        let ids = [3u32, 0, 49, 7, 7];
        let position_ids = [2u32, 3, 4, 1, 29];
        let embed_ids = |t: &Tensor, ids: &[u32]| {
            let ids = Tensor::new(ids, &candle_core::Device::Cpu).unwrap();
            candle_nn::Embedding::new(t.clone(), width)
                .forward(&ids)
                .unwrap()
        };
        let sum = (embed_ids(&words, &ids).broadcast_add(&token_type).unwrap()
            + embed_ids(&table, &position_ids))
        .unwrap();
        let expected = candle_nn::LayerNorm::new(gamma.clone(), beta.clone(), 1e-5)
            .forward(&sum)
            .unwrap();
        let norm = Norm {
            gamma: gamma.to_vec1().unwrap(),
            beta: beta.to_vec1().unwrap(),
            eps: 1e-5,
        };
        let mut ours = vec![0.0; ids.len() * width];
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let words = flat(&words);
        let word = |id: usize, row: &mut [f32]| row.copy_from_slice(&words[id * width..][..width]);
        embed(
            &mut ours,
            (&ids, &position_ids),
            (&word, &flat(&table), &flat(&token_type)),
            &norm,
        );
        assert!(max_abs_diff(&ours, &flat(&expected)) < 1e-5);
    }
}
