//! Exact softmax self-attention over a batch of sequences laid end to end, without padding.

use rayon::prelude::*;

use super::aligned::Aligned;
use super::int8::{self, Kernel, QuantizedMatrix, QuantizedRows};
use super::kernels::simd;
use super::matmul::{self, PackedMatrix};
use super::shared::SharedMut;
use crate::{Error, Result};

/// Upper bound on one block of attention scores (queries x keys), per thread: 1 Mi f32 (4 MiB),
/// which leaves at least 128 queries a block up to 8192 keys: fewer queries would leave the
/// matrix products too thin to run near the CPU's peak.
const SCORE_BLOCK_ELEMENTS: usize = 1 << 20;

/// Fewest queries in a block of attention scores (unless the sequence is shorter).
const MIN_QUERY_BLOCK: usize = 64;

/// The sequences of a batch laid end to end: sequence `i` is tokens `start..start + len` of
/// every `(tokens, ...)` buffer of the pass, `start` being the sum of the lengths before it.
///
/// Made only from the lengths, so the sequences are disjoint and each lies within the pass's
/// tokens (`start + len <= tokens`): what lets [`attention`] give each sequence's rows of the
/// output to a task of their own.
#[derive(Debug, Clone)]
pub(crate) struct Segments {
    starts: Vec<usize>,
    lens: Vec<usize>,
    tokens: usize,
}

impl Segments {
    /// The segments of sequences of `lens` tokens, in this order. An error if their total
    /// does not fit in a `usize`.
    pub(crate) fn new(lens: impl IntoIterator<Item = usize>) -> Result<Self> {
        let lens: Vec<usize> = lens.into_iter().collect();
        let mut starts = Vec::with_capacity(lens.len());
        let mut tokens = 0usize;
        for &len in &lens {
            starts.push(tokens);
            tokens = tokens.checked_add(len).ok_or_else(|| {
                Error::cpu_encoder(format!(
                    "{} sequences of more tokens in all than a usize counts",
                    lens.len()
                ))
            })?;
        }
        Ok(Self {
            starts,
            lens,
            tokens,
        })
    }

    /// Tokens of the whole batch.
    pub(crate) fn tokens(&self) -> usize {
        self.tokens
    }

    /// The number of sequences.
    pub(crate) fn count(&self) -> usize {
        self.lens.len()
    }

    /// `(start, len)` of sequence `i`.
    pub(crate) fn get(&self, i: usize) -> (usize, usize) {
        (self.starts[i], self.lens[i])
    }

    /// The first token of each sequence.
    pub(crate) fn into_starts(self) -> Vec<usize> {
        self.starts
    }

    /// Tokens of the longest sequence (0 without any).
    fn longest(&self) -> usize {
        self.lens.iter().copied().max().unwrap_or(0)
    }
}

/// Heads of the attention.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    pub count: usize,
    pub dim: usize,
}

/// Adds the bias to the fused projection's output `qkv`, `(tokens, 3, heads, head_dim)`, and
/// writes it out as `(3, heads, tokens, head_dim)`: each head's queries, keys and values of a
/// sequence contiguous, as the attention's matrix products read them best.
pub(crate) fn split_heads(qkv: &[f32], bias: &[f32], out: &mut [f32], heads: Heads) {
    let width = 3 * heads.count * heads.dim;
    assert_eq!(qkv.len() % width, 0);
    assert_eq!(out.len(), qkv.len());
    assert_eq!(bias.len(), width);
    let tokens = qkv.len() / width;
    let out = SharedMut::new(out);
    let per_task = (tokens / (4 * rayon::current_num_threads().max(1))).max(16);
    qkv.par_chunks(width * per_task)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, row) in chunk.chunks_exact(width).enumerate() {
                let token = task * per_task + i;
                let parts = row
                    .chunks_exact(heads.dim)
                    .zip(bias.chunks_exact(heads.dim));
                // part = p * heads + h for p in (query, key, value).
                for (part, (src, bias)) in parts.enumerate() {
                    let offset = (part * tokens + token) * heads.dim;
                    // SAFETY: each (part, token) row of `out` is written by the task of its
                    // token alone.
                    let dst = unsafe { out.part(offset, heads.dim) };
                    for ((d, s), b) in dst.iter_mut().zip(src).zip(bias) {
                        *d = s + b;
                    }
                }
            }
        });
}

/// Self-attention of every sequence with itself. `qkv` is `(3, heads, tokens, head_dim)` (from
/// [`split_heads`]); `context` receives `(tokens, heads, head_dim)`.
///
/// One task per (sequence, head): its keys and values are packed once for the microkernel of
/// [`matmul`], then for each block of queries the scores `q · kᵀ` over the sequence's keys,
/// the softmax of `scores / sqrt(head_dim)` in f32, and `p · v`, with the division by each
/// row's sum done on the `head_dim` outputs instead of the `len` weights.
///
/// With `int8`, the scores are that kernel's int8 product instead ([`Kernel::scores_in_int8`]):
/// each key quantized on its own scale, as a weight's channel, and each query as a row of
/// activations.
pub(crate) fn attention(
    qkv: &[f32],
    context: &mut [f32],
    segments: &Segments,
    heads: Heads,
    int8: Option<Kernel>,
) {
    let tokens = segments.tokens();
    let (head_dim, hidden) = (heads.dim, heads.count * heads.dim);
    let part = heads.count * tokens * head_dim;
    assert_eq!(qkv.len(), 3 * part);
    assert_eq!(context.len(), tokens * hidden);
    if tokens == 0 {
        return;
    }
    let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
    let longest = segments.longest().max(1);
    let block = (SCORE_BLOCK_ELEMENTS / longest).max(MIN_QUERY_BLOCK);
    let sequences = segments.count();
    let out = SharedMut::new(context);

    (0..heads.count * sequences).into_par_iter().for_each_init(
        || Buffers {
            scores: Aligned::empty(),
            sums: Vec::new(),
            queries: QuantizedRows::default(),
            keys: QuantizedMatrix::empty(),
        },
        |Buffers {
             scores,
             sums,
             queries,
             keys: quantized_keys,
         },
         task| {
            let (h, s) = (task / sequences, task % sequences);
            let (start, keys) = segments.get(s);
            let head = (h * tokens + start) * head_dim;
            let rows_of = |p: usize| &qkv[p * part + head..][..keys * head_dim];
            let (q, k, v) = (rows_of(0), rows_of(1), rows_of(2));
            // `k` is (keys, head_dim): the weight of `q · kᵀ`; `v` is (keys, head_dim), the
            // transposed weight of `p · v`.
            let k = match int8 {
                None => Keys::F32(PackedMatrix::pack_stacked(&[k], head_dim)),
                Some(kernel) => {
                    quantized_keys.requantize(kernel, k, head_dim);
                    Keys::Int8(kernel, quantized_keys)
                }
            };
            let v = PackedMatrix::pack_transposed(v, keys, head_dim);
            for q0 in (0..keys).step_by(block) {
                let rows = block.min(keys - q0);
                scores.resize(rows * keys);
                sums.resize(rows, 0.0);
                let q = &q[q0 * head_dim..(q0 + rows) * head_dim];
                match &k {
                    Keys::F32(k) => matmul::matmul_here(q, rows, k, scores),
                    Keys::Int8(kernel, k) => {
                        queries.quantize_for(*kernel, q, rows, head_dim, None);
                        int8::matmul_here(*kernel, queries, k, scores);
                    }
                }
                for (scores, sum) in scores.chunks_exact_mut(keys).zip(sums.iter_mut()) {
                    *sum = simd::exp_normalizer(scores, scale);
                }
                // This task alone accesses rows `start + q0..start + q0 + rows`, columns
                // `h * head_dim..(h + 1) * head_dim` of `context`: one task per (sequence,
                // head), and the sequences' rows are disjoint (see `Segments`).
                let first = (start + q0) * hidden + h * head_dim;
                // SAFETY: these rows and columns are this task's alone (above).
                unsafe { matmul::matmul_strided(scores, rows, &v, &out, (first, hidden)) };
                for (i, &sum) in sums.iter().enumerate() {
                    // SAFETY: row `i` of the same block and columns: this task's alone.
                    let row = unsafe { out.part(first + i * hidden, head_dim) };
                    let inv = 1.0 / sum;
                    for d in row {
                        *d *= inv;
                    }
                }
            }
        },
    );
}

/// A head's keys, as the weight of its scores' product.
enum Keys<'a> {
    F32(PackedMatrix),
    Int8(Kernel, &'a QuantizedMatrix),
}

/// What each task of [`attention`] reuses from one (sequence, head) to the next.
struct Buffers {
    /// The scores start a cache line, as the workspace's buffers do (see `Aligned`): the
    /// products store whole rows of them.
    scores: Aligned<f32>,
    sums: Vec<f32>,
    /// For scores in int8.
    queries: QuantizedRows,
    keys: QuantizedMatrix,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::{max_abs_diff, random};
    use candle_core::{Tensor, D};

    /// Plain candle attention of one sequence, `(len, 3 x hidden)` in the projection's layout.
    fn reference(qkv: &Tensor, heads: Heads) -> Vec<f32> {
        let len = qkv.dim(0).unwrap();
        let qkv = qkv
            .reshape((len, 3, heads.count, heads.dim))
            .unwrap()
            .permute((1, 2, 0, 3))
            .unwrap();
        let q = qkv.get(0).unwrap().contiguous().unwrap();
        let k = qkv.get(1).unwrap().contiguous().unwrap();
        let v = qkv.get(2).unwrap().contiguous().unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (heads.dim as f64).sqrt()).unwrap();
        let probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        probs
            .matmul(&v)
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn check(lens: &[usize], heads: Heads, seed: u64) {
        let width = 3 * heads.count * heads.dim;
        let segments = Segments::new(lens.iter().copied()).unwrap();
        let tokens = segments.tokens();
        let qkv = random(&[tokens, width], seed, 2.0);
        let expected: Vec<f32> = (0..segments.count())
            .map(|i| segments.get(i))
            .flat_map(|(start, len)| reference(&qkv.narrow(0, start, len).unwrap(), heads))
            .collect();
        let qkv = qkv.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut split = vec![0.0; qkv.len()];
        split_heads(&qkv, &vec![0.0; width], &mut split, heads);
        let mut ours = vec![0.0; tokens * heads.count * heads.dim];
        attention(&split, &mut ours, &segments, heads, None);
        let diff = max_abs_diff(&ours, &expected);
        assert!(diff < 1e-5, "lens {lens:?}: {diff}");
    }

    #[test]
    fn attention_of_each_sequence_matches_candle() {
        check(&[7], Heads { count: 2, dim: 8 }, 10);
        check(&[33, 33], Heads { count: 4, dim: 16 }, 11);
        check(&[40, 3, 17, 1], Heads { count: 3, dim: 8 }, 12);
    }

    #[test]
    fn attention_over_several_query_blocks_matches_candle() {
        // 1100 keys make blocks of 953 queries, the last one partial.
        check(&[1100, 650], Heads { count: 2, dim: 8 }, 13);
    }

    /// Scores in int8 are exactly those of the queries and keys as int8 holds them (each query
    /// a row of activations, each key a weight's channel), with every kernel.
    #[test]
    fn int8_scores_are_those_of_the_quantized_queries_and_keys() {
        let heads = Heads { count: 2, dim: 16 };
        let (dim, width) = (heads.dim, 3 * heads.count * heads.dim);
        let segments = Segments::new([37, 5, 70]).unwrap();
        let tokens = segments.tokens();
        let qkv = random(&[tokens, width], 14, 2.0)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let attended = |qkv: &[f32], int8: Option<Kernel>| {
            let mut split = vec![0.0; qkv.len()];
            split_heads(qkv, &vec![0.0; width], &mut split, heads);
            let mut out = vec![0.0; tokens * heads.count * dim];
            attention(&split, &mut out, &segments, heads, int8);
            out
        };
        let exact = attended(&qkv, None);
        for kernel in Kernel::available() {
            // Row `t` is token `t`'s (query, key, value) x heads x dim.
            let mut seen = qkv.clone();
            for row in seen.chunks_exact_mut(width) {
                for h in 0..heads.count {
                    let query = &mut row[h * dim..][..dim];
                    let mut rows = QuantizedRows::default();
                    rows.quantize_for(kernel, query, 1, dim, None);
                    query.copy_from_slice(&rows.dequantized(dim));
                    let key = &mut row[(heads.count + h) * dim..][..dim];
                    let mut keys = QuantizedMatrix::empty();
                    keys.requantize(kernel, key, dim);
                    key.copy_from_slice(&keys.dequantized());
                }
            }
            let ours = attended(&qkv, Some(kernel));
            let diff = max_abs_diff(&ours, &attended(&seen, None));
            assert!(diff < 1e-5, "{}: {diff}", kernel.name());
            // What the rounding of queries and keys costs: visible, and small.
            let cost = max_abs_diff(&ours, &exact);
            assert!(1e-4 < cost && cost < 0.1, "{}: {cost}", kernel.name());
        }
    }

    #[test]
    fn segments_lie_end_to_end_within_the_tokens() {
        let segments = Segments::new([3, 0, 5, 1]).unwrap();
        assert_eq!(segments.tokens(), 9);
        assert_eq!(segments.count(), 4);
        let parts: Vec<_> = (0..4).map(|i| segments.get(i)).collect();
        assert_eq!(parts, [(0, 3), (3, 0), (3, 5), (8, 1)]);
        assert_eq!(segments.longest(), 5);
        assert_eq!(segments.into_starts(), [0, 3, 3, 8]);
        let none = Segments::new([]).unwrap();
        assert_eq!((none.tokens(), none.count(), none.longest()), (0, 0, 0));
    }

    /// Lengths whose sum a `usize` cannot count would make sequences overlap (or lie past the
    /// buffers) if the sum wrapped: they are refused.
    #[test]
    fn segments_refuse_lengths_past_what_a_usize_counts() {
        let error = Segments::new([usize::MAX - 2, 2, 1]).unwrap_err();
        assert!(
            matches!(&error, Error::CpuEncoder { message } if message.contains("3 sequences")),
            "{error:?}"
        );
        assert!(Segments::new([usize::MAX - 2, 2]).is_ok());
    }

    #[test]
    fn split_heads_adds_the_bias_and_groups_by_head() {
        let heads = Heads { count: 2, dim: 2 };
        // Two tokens of (q, k, v) x 2 heads x 2 values, numbered.
        let qkv: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let bias: Vec<f32> = (0..12).map(|v| 100.0 * v as f32).collect();
        let mut out = vec![0.0; 24];
        split_heads(&qkv, &bias, &mut out, heads);
        // (part 0 = query head 0): token 0 values 0, 1; token 1 values 12, 13.
        assert_eq!(out[..4], [0.0, 101.0, 12.0, 113.0]);
        // Part 5 (value head 1): token 0 values 10, 11; token 1 values 22, 23.
        assert_eq!(out[20..], [1010.0, 1111.0, 1022.0, 1123.0]);
    }
}
