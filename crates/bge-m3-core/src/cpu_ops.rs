//! The encoder layers on the CPU in f32, fused and multi-threaded.
//!
//! candle's CPU backend runs one op at a time, each into a freshly allocated tensor: a layer
//! makes about fifteen passes over memory, most of its large buffers are mapped and page-faulted
//! in anew for every op, and softmax and the erf-GELU call scalar `expf`/`erff`. Here a layer is
//! five matrix products (the `gemm` crate, which candle itself calls) and four fused passes
//! (bias + split into heads; bias + GELU; bias + residual + LayerNorm, twice), plus attention
//! computed per (sequence, head, block of queries), with each sequence's keys cut at its real
//! length. Buffers live for one forward pass and are reused by every layer.
//!
//! Only f32 on the CPU takes this path; every other device and dtype runs the candle ops of
//! [`crate::encoder`], which remain the reference the tests compare this path with.

use std::ops::Deref;

use candle_core::{CpuStorage, Storage, StorageRef, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use crate::{Error, Result};

/// Upper bound on one block of attention scores (queries x keys), per thread: 1 Mi f32 (4 MiB),
/// which leaves at least 128 queries a block up to 8192 keys: fewer queries would leave the
/// matrix products too thin to run near the CPU's peak.
const SCORE_BLOCK_ELEMENTS: usize = 1 << 20;

/// Fewest queries in a block of attention scores (unless the sequence is shorter).
const MIN_QUERY_BLOCK: usize = 64;

/// Fewest elements an element-wise task gets, so that short batches are not split into tasks
/// that cost more to schedule than to run.
const MIN_TASK_ELEMENTS: usize = 1 << 14;

/// The f32 elements of a contiguous CPU tensor, borrowed from its storage.
pub(crate) struct CpuF32<'a> {
    storage: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> CpuF32<'a> {
    pub(crate) fn new(tensor: &'a Tensor) -> Result<Self> {
        let (storage, layout) = tensor.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(Error::Candle(candle_core::Error::Msg(
                "cpu_ops: tensor is not contiguous".into(),
            )));
        };
        if !matches!(&*storage, Storage::Cpu(CpuStorage::F32(_))) {
            return Err(Error::Candle(candle_core::Error::Msg(
                "cpu_ops: tensor is not f32 on the CPU".into(),
            )));
        }
        Ok(Self {
            storage,
            start,
            end,
        })
    }
}

impl Deref for CpuF32<'_> {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(data)) => &data[self.start..self.end],
            _ => unreachable!("checked in CpuF32::new"),
        }
    }
}

/// `Linear` weights: `(out, in)` matrix and `(out,)` bias.
pub(crate) struct DenseRef<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
}

/// `LayerNorm` parameters.
pub(crate) struct NormRef<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub eps: f32,
}

/// One `encoder.layer.N`, with the erf GELU. Query, key and value are one fused `(3 x hidden,
/// hidden)` projection, in that order.
pub(crate) struct LayerRef<'a> {
    pub qkv: DenseRef<'a>,
    pub attention_output: DenseRef<'a>,
    pub attention_norm: NormRef<'a>,
    pub intermediate: DenseRef<'a>,
    pub output: DenseRef<'a>,
    pub output_norm: NormRef<'a>,
    pub num_heads: usize,
}

/// The padding of a batch: an additive `(batch, len)` mask and, per sequence, how many leading
/// keys can have a non-zero attention weight (keys after them are masked with `f32::MIN`, whose
/// weight is exactly zero, so they are skipped).
pub(crate) struct Padding {
    mask: Option<Vec<f32>>,
    key_lens: Vec<usize>,
}

impl Padding {
    /// From the encoder's `(batch, 1, 1, len)` additive mask, or `None` for an unpadded batch.
    pub(crate) fn new(mask: Option<&Tensor>, batch: usize, len: usize) -> Result<Self> {
        let Some(mask) = mask else {
            return Ok(Self {
                mask: None,
                key_lens: vec![len; batch],
            });
        };
        let mask = mask.flatten_all()?.to_vec1::<f32>()?;
        if mask.len() != batch * len {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "cpu_ops: mask of {} elements for a ({batch}, {len}) batch",
                mask.len()
            ))));
        }
        let key_lens = mask
            .chunks_exact(len.max(1))
            .map(|row| match row.iter().rposition(|&m| m > f32::MIN) {
                Some(last) => last + 1,
                // Everything masked: every key gets the same weight, as in a plain softmax.
                None => len,
            })
            .collect();
        Ok(Self {
            mask: Some(mask),
            key_lens,
        })
    }
}

/// Scratch buffers of one forward pass, sized for its batch and reused by every layer.
pub(crate) struct Workspace {
    qkv: Vec<f32>,
    context: Vec<f32>,
    attended: Vec<f32>,
    /// The intermediate activations, and before them the split heads (3 x hidden per token).
    inner: Vec<f32>,
    intermediate: usize,
}

impl Workspace {
    pub(crate) fn new(tokens: usize, hidden: usize, intermediate: usize) -> Self {
        Self {
            qkv: vec![0.0; tokens * 3 * hidden],
            context: vec![0.0; tokens * hidden],
            attended: vec![0.0; tokens * hidden],
            inner: vec![0.0; tokens * intermediate.max(3 * hidden)],
            intermediate,
        }
    }
}

/// Runs one layer on `x`, the `(batch, len, hidden)` hidden states, in place.
pub(crate) fn layer_forward(
    layer: &LayerRef,
    x: &mut [f32],
    (batch, len): (usize, usize),
    padding: &Padding,
    ws: &mut Workspace,
) -> Result<()> {
    let tokens = batch * len;
    let hidden = x.len() / tokens.max(1);
    let intermediate = ws.intermediate;
    let threads = candle_core::utils::get_num_threads();

    let qkv_w = CpuF32::new(layer.qkv.weight)?;
    let qkv_b = CpuF32::new(layer.qkv.bias)?;
    matmul_transposed(x, &qkv_w, &mut ws.qkv, tokens, threads);
    let shape = AttentionShape {
        batch,
        len,
        heads: layer.num_heads,
        head_dim: hidden / layer.num_heads,
    };
    // The intermediate activations are not needed before the attention is done: their buffer
    // holds the split heads meanwhile.
    let heads = &mut ws.inner[..3 * tokens * hidden];
    split_heads(&ws.qkv, &qkv_b, heads, shape);
    attention(heads, &mut ws.context, shape, padding);

    let (out_w, out_b) = (
        CpuF32::new(layer.attention_output.weight)?,
        CpuF32::new(layer.attention_output.bias)?,
    );
    matmul_transposed(&ws.context, &out_w, &mut ws.attended, tokens, threads);
    bias_residual_layer_norm(&mut ws.attended, x, &out_b, &layer.attention_norm)?;

    let (inter_w, inter_b) = (
        CpuF32::new(layer.intermediate.weight)?,
        CpuF32::new(layer.intermediate.bias)?,
    );
    let inner = &mut ws.inner[..tokens * intermediate];
    matmul_transposed(&ws.attended, &inter_w, inner, tokens, threads);
    bias_gelu(inner, &inter_b);

    let (w, b) = (
        CpuF32::new(layer.output.weight)?,
        CpuF32::new(layer.output.bias)?,
    );
    // `x` is not needed any more: the layer's output goes there.
    matmul_transposed(inner, &w, x, tokens, threads);
    bias_residual_layer_norm(x, &ws.attended, &b, &layer.output_norm)
}

/// `out = x · wᵀ` for row-major `x` `(rows, in)` and `w` `(out, in)`, as `Linear` computes it.
fn matmul_transposed(x: &[f32], w: &[f32], out: &mut [f32], rows: usize, threads: usize) {
    let inner = x.len() / rows.max(1);
    let cols = w.len() / inner.max(1);
    assert_eq!(x.len(), rows * inner);
    assert_eq!(w.len(), cols * inner);
    assert_eq!(out.len(), rows * cols);
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the three slices hold exactly the (rows, cols), (rows, inner) and (inner, cols)
    // matrices that the strides describe, and `out` does not overlap the inputs.
    unsafe {
        gemm(
            rows,
            cols,
            inner,
            out.as_mut_ptr(),
            1,
            cols as isize,
            false,
            x.as_ptr(),
            1,
            inner as isize,
            // wᵀ: element (k, n) is w[n * inner + k].
            w.as_ptr(),
            inner as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Rows per element-wise task for rows of `width` elements.
fn rows_per_task(rows: usize, width: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_size = MIN_TASK_ELEMENTS.div_ceil(width.max(1));
    // A few tasks per thread, so that a thread slowed by other work does not hold up the rest.
    let by_balance = rows.div_ceil(4 * threads);
    by_size.max(by_balance).max(1)
}

/// Adds the bias to the fused projection's output `qkv`, `(batch, len, 3, heads, head_dim)`,
/// and writes it out as `(3, batch, heads, len, head_dim)`: each head's queries, keys and values
/// contiguous, as the attention's matrix products read them best.
pub(crate) fn split_heads(qkv: &[f32], bias: &[f32], out: &mut [f32], shape: AttentionShape) {
    let AttentionShape {
        batch,
        len,
        heads,
        head_dim,
    } = shape;
    let width = 3 * heads * head_dim;
    assert_eq!(qkv.len(), batch * len * width);
    assert_eq!(out.len(), qkv.len());
    assert_eq!(bias.len(), width);
    let dst = SharedMut(out.as_mut_ptr());
    let per_task = rows_per_task(batch * len, width);
    qkv.par_chunks(width * per_task)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, row) in chunk.chunks_exact(width).enumerate() {
                let token = task * per_task + i;
                let (b, l) = (token / len, token % len);
                let parts = row.chunks_exact(head_dim).zip(bias.chunks_exact(head_dim));
                for (part, (src, bias)) in parts.enumerate() {
                    // part = p * heads + h for p in (query, key, value).
                    let (p, h) = (part / heads, part % heads);
                    let offset = (((p * batch + b) * heads + h) * len + l) * head_dim;
                    // SAFETY: each (p, b, h, l) row of `out` is written by exactly one token.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(dst.get().add(offset), head_dim) };
                    for ((d, s), b) in dst.iter_mut().zip(src).zip(bias) {
                        *d = s + b;
                    }
                }
            }
        });
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
pub(crate) fn bias_residual_layer_norm(
    x: &mut [f32],
    residual: &[f32],
    bias: &[f32],
    norm: &NormRef,
) -> Result<()> {
    let gamma = CpuF32::new(norm.weight)?;
    let beta = CpuF32::new(norm.bias)?;
    let width = bias.len();
    assert_eq!(x.len(), residual.len());
    assert_eq!(gamma.len(), width);
    assert_eq!(beta.len(), width);
    let rows = x.len() / width;
    let chunk = width * rows_per_task(rows, width);
    let eps = norm.eps;
    x.par_chunks_mut(chunk)
        .zip(residual.par_chunks(chunk))
        .for_each(|(x, residual)| {
            for (row, res) in x.chunks_exact_mut(width).zip(residual.chunks_exact(width)) {
                simd::bias_residual_layer_norm(row, res, bias, (&gamma, &beta), eps);
            }
        });
    Ok(())
}

/// Dimensions of a self-attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionShape {
    pub batch: usize,
    pub len: usize,
    pub heads: usize,
    pub head_dim: usize,
}

/// A pointer that tasks writing disjoint parts of one buffer can share.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every task writes only its own rows and columns of the buffer (see `attention`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer. (A method, so that closures capture the whole `Send` wrapper, not the
    /// field.)
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Exact softmax self-attention. `qkv` is `(3, batch, heads, len, head_dim)` (from
/// [`split_heads`]), `context` receives `(batch, len, heads, head_dim)`.
///
/// One task per (sequence, head, block of queries): scores `q · kᵀ / sqrt(head_dim)` plus the
/// mask for the sequence's keys up to its real length, softmax in f32, then `p · v`, with the
/// division by each row's sum done on the `head_dim` outputs instead of the `len` weights.
pub(crate) fn attention(
    qkv: &[f32],
    context: &mut [f32],
    shape: AttentionShape,
    padding: &Padding,
) {
    let AttentionShape {
        batch,
        len,
        heads,
        head_dim,
    } = shape;
    let hidden = heads * head_dim;
    let part = batch * heads * len * head_dim;
    assert_eq!(qkv.len(), 3 * part);
    assert_eq!(context.len(), batch * len * hidden);
    assert_eq!(padding.key_lens.len(), batch);
    if batch * len == 0 {
        return;
    }
    let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
    let max_keys = padding.key_lens.iter().copied().max().unwrap_or(len).max(1);
    let block = (SCORE_BLOCK_ELEMENTS / max_keys)
        .max(MIN_QUERY_BLOCK)
        .min(len);
    let blocks = len.div_ceil(block);
    let out = SharedMut(context.as_mut_ptr());

    (0..batch * heads * blocks).into_par_iter().for_each_init(
        || (Vec::<f32>::new(), Vec::<f32>::new()),
        |(scores, sums), task| {
            let b = task / (heads * blocks);
            let h = (task / blocks) % heads;
            let q0 = (task % blocks) * block;
            let rows = block.min(len - q0);
            let keys = padding.key_lens[b];
            scores.resize(rows * keys, 0.0);
            sums.resize(rows, 0.0);
            let head = (b * heads + h) * len * head_dim;
            let q = qkv[head + q0 * head_dim..].as_ptr();
            let k = qkv[part + head..].as_ptr();
            let v = qkv[2 * part + head..].as_ptr();
            // SAFETY: q, k and v address `rows` and `keys` rows of `head_dim` values of this
            // sequence and head in `qkv`; `scores` holds rows x keys.
            unsafe {
                gemm(
                    rows,
                    keys,
                    head_dim,
                    scores.as_mut_ptr(),
                    1,
                    keys as isize,
                    false,
                    q,
                    1,
                    head_dim as isize,
                    // kᵀ: element (d, j) is k[j * head_dim + d].
                    k,
                    head_dim as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            let mask = padding.mask.as_ref().map(|m| &m[b * len..b * len + keys]);
            for (scores, sum) in scores.chunks_exact_mut(keys).zip(sums.iter_mut()) {
                *sum = simd::exp_normalizer(scores, mask);
            }
            // SAFETY: this task alone writes rows q0..q0 + rows, columns h * head_dim..(h + 1)
            // * head_dim of the sequence's context, which lies inside `context`.
            unsafe {
                let dst = out.get().add((b * len + q0) * hidden + h * head_dim);
                gemm(
                    rows,
                    head_dim,
                    keys,
                    dst,
                    1,
                    hidden as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    keys as isize,
                    v,
                    1,
                    head_dim as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
                for (i, &sum) in sums.iter().enumerate() {
                    let dst = std::slice::from_raw_parts_mut(dst.add(i * hidden), head_dim);
                    let inv = 1.0 / sum;
                    for d in dst {
                        *d *= inv;
                    }
                }
            }
        },
    );
}

/// The per-row kernels, compiled twice on x86-64: for AVX2 + FMA (chosen at run time, with fused
/// multiply-adds in the polynomials) and for the baseline. The bodies are written so that the
/// compiler vectorises them (eight independent partial sums, no calls, branch-free `exp`).
mod simd {
    use super::math::{self, Fused, Separate};

    macro_rules! dispatch {
        ($(fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:ident;)*) => {
            $(
                pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
                    #[cfg(target_arch = "x86_64")]
                    {
                        #[target_feature(enable = "avx2,fma")]
                        unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                            math::$body::<Fused>($($arg),*)
                        }
                        if std::is_x86_feature_detected!("avx2")
                            && std::is_x86_feature_detected!("fma")
                        {
                            // SAFETY: the CPU has the features `avx2` was compiled for.
                            return unsafe { avx2($($arg),*) };
                        }
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
        fn exp_normalizer(scores: &mut [f32], mask: Option<&[f32]>) -> f32
            => exp_normalizer;
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

    /// Adds `mask` to one row of scores, replaces them with `exp(s - max)` and returns their
    /// sum (the softmax's divisor).
    #[inline(always)]
    pub fn exp_normalizer<M: MulAdd>(scores: &mut [f32], mask: Option<&[f32]>) -> f32 {
        if let Some(mask) = mask {
            for (s, m) in scores.iter_mut().zip(mask) {
                *s += m;
            }
        }
        let m = max(scores);
        for s in scores.iter_mut() {
            *s = exp::<M>(*s - m);
        }
        sum(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module, D};

    fn random(shape: &[usize], seed: u64, scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

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
        let norm = NormRef {
            weight: &gamma,
            bias: &beta,
            eps: 1e-5,
        };
        bias_residual_layer_norm(&mut ours, &residual, &bias.to_vec1().unwrap(), &norm).unwrap();
        let expected = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(max_abs_diff(&ours, &expected) < 1e-5);
    }

    /// Plain candle attention on the `(batch, len, 3, heads, head_dim)` layout.
    fn reference_attention(qkv: &Tensor, mask: Option<&Tensor>, shape: AttentionShape) -> Tensor {
        let AttentionShape {
            batch,
            len,
            heads,
            head_dim,
        } = shape;
        let qkv = qkv
            .reshape((batch, len, 3, heads, head_dim))
            .unwrap()
            .permute((2, 0, 3, 1, 4))
            .unwrap();
        let q = qkv.get(0).unwrap().contiguous().unwrap();
        let k = qkv.get(1).unwrap().contiguous().unwrap();
        let v = qkv.get(2).unwrap().contiguous().unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (head_dim as f64).sqrt()).unwrap();
        let scores = match mask {
            Some(m) => scores.broadcast_add(m).unwrap(),
            None => scores,
        };
        let probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        probs
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((batch, len, heads * head_dim))
            .unwrap()
    }

    fn check_attention(lens: &[usize], heads: usize, head_dim: usize, seed: u64) {
        let (batch, len) = (lens.len(), lens.iter().copied().max().unwrap());
        let shape = AttentionShape {
            batch,
            len,
            heads,
            head_dim,
        };
        let qkv = random(&[batch, len, 3 * heads * head_dim], seed, 2.0);
        let mask: Vec<f32> = lens
            .iter()
            .flat_map(|&n| (0..len).map(move |j| if j < n { 0.0 } else { f32::MIN }))
            .collect();
        let mask = Tensor::from_vec(mask, (batch, 1, 1, len), &Device::Cpu).unwrap();
        let padded = lens.iter().any(|&n| n != len);
        let mask = padded.then_some(&mask);
        let expected = reference_attention(&qkv, mask, shape);
        let padding = Padding::new(mask, batch, len).unwrap();
        let qkv = qkv.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut split = vec![0.0; qkv.len()];
        split_heads(&qkv, &vec![0.0; 3 * heads * head_dim], &mut split, shape);
        let mut ours = vec![0.0; batch * len * heads * head_dim];
        attention(&split, &mut ours, shape, &padding);
        let expected = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let diff = max_abs_diff(&ours, &expected);
        assert!(diff < 1e-5, "lens {lens:?}: {diff}");
    }

    #[test]
    fn attention_matches_candle_with_and_without_padding() {
        check_attention(&[7], 2, 8, 10);
        check_attention(&[33, 33], 4, 16, 11);
        check_attention(&[40, 3, 17], 3, 8, 12);
    }

    #[test]
    fn attention_over_several_query_blocks_matches_candle() {
        // 1100 keys make blocks of 953 queries, the last one partial.
        check_attention(&[1100, 650], 2, 8, 13);
    }

    #[test]
    fn padding_keeps_the_keys_up_to_the_last_unmasked_one() {
        let mask = Tensor::from_vec(
            vec![0.0, 0.0, f32::MIN, f32::MIN, 0.0, 0.0, 0.0, 0.0],
            (2, 1, 1, 4),
            &Device::Cpu,
        )
        .unwrap();
        let padding = Padding::new(Some(&mask), 2, 4).unwrap();
        assert_eq!(padding.key_lens, vec![2, 4]);
        assert_eq!(Padding::new(None, 3, 5).unwrap().key_lens, vec![5, 5, 5]);
    }
}
