//! `x · wᵀ` in int8: weights quantized per output channel and packed once at load, activations
//! quantized per row (token) at each product, products summed exactly in 32-bit integers, and
//! the scales applied in f32.
//!
//! **Weights** `(out, in)`: each output channel `c` gets the scale `s_c = max_k |w[c, k]| / L` and
//! the values `q[c, k] = round(w[c, k] / s_c)` in `-L..=L`, where `L` is 127, or 64 for the AVX2
//! and AVX-512 BW kernels ([`Kernel::weight_limit`]), packed into panels of [`NR`] channels in
//! blocks of [`KC`] inputs, each panel a run of 64-byte [`Line`]s holding four consecutive inputs
//! of its sixteen channels: the order in which `vpdpbusd` (AVX-512 VNNI, AVX-VNNI) and AVX2's
//! `vpmaddubsw` multiply them, and AMX's `tdpbusd` reads a tile of sixteen lines ([`amx`]). Each
//! channel also keeps `Σ_k q[c, k]` for the zero point below.
//!
//! **Activations** `(rows, in)`: each row `r` is quantized asymmetrically to `u8`, over its own
//! range widened to hold zero: `a_r = (max(hi, 0) - min(lo, 0)) / 255`, the zero point
//! `z_r = round(-min(lo, 0) / a_r)`, and `u[r, k] = clamp(round(x[r, k] / a_r) + z_r, 0, 255)`,
//! ties to even. Per row rather than per tensor, so that one token's large values do not cost
//! the other tokens their precision, and asymmetric, so that a row of mostly positive values
//! (GELU's output) uses all 256 levels.
//!
//! **The product**: `y[r, c] = a_r · s_c · (Σ_k u[r, k] · q[c, k] - z_r · Σ_k q[c, k])`. The sum is
//! exact in `i32` (at most 255 · 128 per term: [`MAX_INNER`], 65,793 inputs, cannot overflow), so every
//! kernel, SIMD or portable, returns the same bits from the same weights, and so does a row
//! whatever the other rows of its batch: a text's hidden states do not depend on the texts it
//! shares a pass with, as in f32.
//!
//! Threads take disjoint ranges of panels, as in the f32 product ([`super::matmul`]).

use rayon::prelude::*;

use super::aligned::Aligned;
use super::matmul::{share, Walk};
use super::shared::SharedMut;

#[cfg(target_arch = "x86_64")]
mod amx;

mod kernels;
#[cfg(test)]
mod tests;

/// Measurements, ignored by default (see the module).
#[cfg(test)]
mod speed;

pub(crate) use kernels::{Kernel, KERNEL_VARIABLE};

/// Output channels of one packed panel.
pub(crate) const NR: usize = 16;
/// Inputs of one [`Line`].
pub(crate) const GROUP: usize = 4;
/// Inputs per block of the reduction: a panel's block is `KC / GROUP` lines (16 KiB, in L1).
/// Between blocks a tile's partial sums wait in the output, whose rows of an `MC` block (2.4 MB
/// for a product of 3072 channels) leave the L2 cache before the next block comes back to
/// them: 1024, the width of BGE-M3's hidden states, makes three of a layer's four products
/// one block (a forward pass took 6-20% less time than with 512, under every kernel).
const KC: usize = 1024;
/// Rows per block of the activations kept in L2 while the panels of a task go by.
const MC: usize = 192;
/// Fewest panels a thread's task gets (128 output channels).
const MIN_TASK_PANELS: usize = 8;
/// Most inputs of a product: the sums of `255 · 127` per input stay inside `i32`.
const MAX_INNER: usize = i32::MAX as usize / (255 * 128);

/// Four consecutive inputs of a panel's sixteen channels: `0[4 * j + t]` is channel `j`'s input
/// `t`, on one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line(pub(crate) [i8; NR * GROUP]);

/// A `Linear` weight `(out, in)` in int8, packed for [`matmul`].
///
/// Layout: blocks of [`KC`] inputs (the last one shorter), in order; in each block, the panels of
/// [`NR`] channels, in order; in each panel, one [`Line`] per [`GROUP`] inputs of the block.
/// Inputs past `inner` (up to a multiple of [`GROUP`]) and channels past `out` are zero.
pub(crate) struct QuantizedMatrix {
    out: usize,
    inner: usize,
    panels: usize,
    lines: Vec<Line>,
    /// The largest `|q[c, k]|`: a kernel whose [`Kernel::weight_limit`] is lower cannot run
    /// the matrix.
    largest: i32,
    /// `s_c`, per channel (zero past `out`).
    scales: Vec<f32>,
    /// `Σ_k q[c, k]`, per channel (zero past `out`).
    sums: Vec<i32>,
    /// `1 / s_k`, per input, for a weight smoothed by `s` ([`super::calibration`]): its inputs
    /// are multiplied by these before they are quantized.
    input_scales: Option<Vec<f32>>,
}

impl QuantizedMatrix {
    /// Quantizes and packs the row-major `(out, inner)` matrices `parts`, stacked in order, as
    /// one matrix (query, key and value become one product), for `kernel`: to values within its
    /// [`Kernel::weight_limit`], at most 127. With `smoothing`, input `k` of every channel is
    /// multiplied by `smoothing[k]` first, and the product's inputs divided by it
    /// ([`Self::input_scales`]).
    pub(crate) fn quantize_stacked<P: std::ops::Deref<Target = [f32]> + Sync>(
        kernel: Kernel,
        parts: &[P],
        inner: usize,
        smoothing: Option<&[f32]>,
    ) -> Self {
        let limit = kernel.weight_limit().min(127);
        let rows: Vec<&[f32]> = parts
            .iter()
            .flat_map(|part| {
                assert_eq!(part.len() % inner.max(1), 0, "a part is not {inner} wide");
                part.chunks_exact(inner.max(1))
            })
            .collect();
        if let Some(smoothing) = smoothing {
            assert_eq!(smoothing.len(), inner, "smoothing of the wrong width");
        }
        let channels: Vec<Channel> = rows
            .par_iter()
            .map(|row| match smoothing {
                None => Channel::quantize(row, limit),
                Some(s) => {
                    let smoothed: Vec<f32> = row.iter().zip(s).map(|(w, s)| w * s).collect();
                    Channel::quantize(&smoothed, limit)
                }
            })
            .collect();
        let mut matrix = Self::pack(&channels, inner);
        matrix.input_scales = smoothing.map(|s| s.iter().map(|s| 1.0 / s).collect());
        matrix
    }

    /// A matrix of no channels, for [`Self::requantize`] to fill.
    pub(crate) fn empty() -> Self {
        Self::pack(&[], 0)
    }

    /// [`Self::quantize_stacked`] of the one row-major `(out, inner)` matrix `w`, unsmoothed,
    /// in place of what this held: on this thread, reusing the buffers, for the small matrices
    /// that each task of a parallel loop quantizes anew (a head's keys, in
    /// [`super::attention`]).
    pub(crate) fn requantize(&mut self, kernel: Kernel, w: &[f32], inner: usize) {
        assert!(
            inner <= MAX_INNER,
            "{inner} inputs could overflow the 32-bit sums (at most {MAX_INNER})"
        );
        assert_eq!(w.len() % inner.max(1), 0, "w is not {inner} wide");
        let limit = kernel.weight_limit().min(127);
        let out = w.len().checked_div(inner).unwrap_or(0);
        let panels = out.div_ceil(NR);
        let padded = inner.next_multiple_of(GROUP);
        (self.out, self.inner, self.panels) = (out, inner, panels);
        self.largest = 0;
        self.input_scales = None;
        self.scales.clear();
        self.scales.resize(panels * NR, 0.0);
        self.sums.clear();
        self.sums.resize(panels * NR, 0);
        self.lines.clear();
        self.lines
            .resize(padded / GROUP * panels, Line([0; NR * GROUP]));
        let mut values = vec![0i8; inner];
        for (c, row) in w.chunks_exact(inner.max(1)).take(out).enumerate() {
            self.scales[c] = quantize_symmetric_into(row, limit, &mut values);
            self.sums[c] = values.iter().map(|&q| i32::from(q)).sum();
            let magnitudes = values.iter().map(|&q| i32::from(q).abs());
            self.largest = magnitudes.fold(self.largest, i32::max);
            // The layout of [`Self::pack`]: channel `c` is column `j` of its panel's lines.
            let (panel, j) = (c / NR, c % NR);
            for (k0, block) in (0..inner).step_by(KC).zip(values.chunks(KC)) {
                let groups = KC.min(padded - k0) / GROUP;
                let lines = self.panel_lines(k0, groups, panel);
                let lines = &mut self.lines[lines];
                for (line, group) in lines.iter_mut().zip(block.chunks(GROUP)) {
                    line.0[j * GROUP..j * GROUP + group.len()].copy_from_slice(group);
                }
            }
        }
    }

    /// What the product's inputs are multiplied by before they are quantized, if anything.
    pub(crate) fn input_scales(&self) -> Option<&[f32]> {
        self.input_scales.as_deref()
    }

    /// Packs quantized channels of `inner` inputs each.
    fn pack(channels: &[Channel], inner: usize) -> Self {
        assert!(
            inner <= MAX_INNER,
            "{inner} inputs could overflow the 32-bit sums (at most {MAX_INNER})"
        );
        let out = if inner == 0 { 0 } else { channels.len() };
        let panels = out.div_ceil(NR);
        let padded = inner.next_multiple_of(GROUP);
        let mut scales = vec![0f32; panels * NR];
        let mut sums = vec![0i32; panels * NR];
        let mut largest = 0;
        for (c, channel) in channels.iter().take(out).enumerate() {
            assert_eq!(
                channel.values.len(),
                inner,
                "channel {c} is not {inner} wide"
            );
            scales[c] = channel.scale;
            sums[c] = channel.values.iter().map(|&q| i32::from(q)).sum();
            let magnitudes = channel.values.iter().map(|&q| i32::from(q).abs());
            largest = magnitudes.fold(largest, i32::max);
        }
        let mut lines = vec![Line([0; NR * GROUP]); padded / GROUP * panels];
        let block_lines = KC / GROUP * panels;
        lines
            .par_chunks_mut(block_lines.max(1))
            .enumerate()
            .for_each(|(block, lines)| {
                let k0 = block * KC;
                let groups = lines.len() / panels.max(1);
                for (panel, lines) in lines.chunks_exact_mut(groups.max(1)).enumerate() {
                    for j in 0..NR.min(out - panel * NR) {
                        let values = &channels[panel * NR + j].values;
                        for (g, line) in lines.iter_mut().enumerate() {
                            for t in 0..GROUP {
                                if let Some(&q) = values.get(k0 + g * GROUP + t) {
                                    line.0[j * GROUP + t] = q;
                                }
                            }
                        }
                    }
                }
            });
        Self {
            out,
            inner,
            panels,
            lines,
            largest,
            scales,
            sums,
            input_scales: None,
        }
    }

    /// Output channels.
    #[cfg(test)]
    pub(crate) fn out(&self) -> usize {
        self.out
    }

    /// Inputs.
    pub(crate) fn inner(&self) -> usize {
        self.inner
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of_val(self.lines.as_slice())
            + std::mem::size_of_val(self.scales.as_slice())
            + std::mem::size_of_val(self.sums.as_slice())
            + self
                .input_scales
                .as_ref()
                .map_or(0, |s| std::mem::size_of_val(s.as_slice()))
    }

    /// The lines of `panel` in the block that starts at input `k0`, `groups` of them.
    fn panel(&self, k0: usize, groups: usize, panel: usize) -> &[Line] {
        &self.lines[self.panel_lines(k0, groups, panel)]
    }

    /// Where [`Self::panel`]'s lines lie in `lines`.
    fn panel_lines(&self, k0: usize, groups: usize, panel: usize) -> std::ops::Range<usize> {
        // Every block before this one is full.
        let start = k0 / GROUP * self.panels + panel * groups;
        start..start + groups
    }
}

/// One output channel in int8: `w[k] ≈ scale · values[k]`.
struct Channel {
    scale: f32,
    values: Vec<i8>,
}

impl Channel {
    fn quantize(row: &[f32], limit: i32) -> Self {
        let (scale, values) = quantize_symmetric(row, limit);
        Self { scale, values }
    }
}

/// Quantizes `row` symmetrically over its largest magnitude: `row[k] ≈ scale · values[k]` with
/// values in `-limit..=limit` (`limit` in `1..=127`), rounded to nearest, ties to even. A row of
/// zeros, or one holding a NaN or an infinity, gets the scale 1 (a NaN becomes 0, an infinity
/// ±`limit`).
pub(crate) fn quantize_symmetric(row: &[f32], limit: i32) -> (f32, Vec<i8>) {
    let mut values = vec![0; row.len()];
    let scale = quantize_symmetric_into(row, limit, &mut values);
    (scale, values)
}

/// [`quantize_symmetric`] into `values` (as long as `row`), returning the scale: with AVX2
/// where the CPU has it, whatever the kernel of the products (the same bytes either way).
pub(crate) fn quantize_symmetric_into(row: &[f32], limit: i32, values: &mut [i8]) -> f32 {
    assert!((1..=127).contains(&limit), "a limit of {limit}");
    #[cfg(target_arch = "x86_64")]
    if let Some(token) = super::arch::Avx2::detect() {
        // SAFETY: `token` proves that the CPU has AVX2, which `symmetric_avx2` enables.
        return unsafe { kernels::symmetric_avx2(token, row, limit as f32, values) };
    }
    kernels::symmetric_portable(row, limit as f32, values)
}

/// Rows of activations quantized to `u8` for [`matmul`]: one buffer reused by every product of
/// a pass.
#[derive(Default)]
pub(crate) struct QuantizedRows {
    rows: usize,
    /// Inputs per row, a multiple of [`GROUP`] (the padding holds each row's zero point).
    stride: usize,
    /// Row-major, each row starting a cache line (so that AMX's 64-byte tile rows read one line
    /// each).
    values: Aligned<u8>,
    scales: Vec<f32>,
    zeros: Vec<i32>,
}

impl QuantizedRows {
    /// Quantizes the row-major `(rows, inner)` activations `x`, each input `k` multiplied by
    /// `input_scales[k]` first if given, replacing what was held, for this CPU's kernel.
    pub(crate) fn quantize(
        &mut self,
        x: &[f32],
        rows: usize,
        inner: usize,
        input_scales: Option<&[f32]>,
    ) {
        self.quantize_for(Kernel::detect(), x, rows, inner, input_scales);
    }

    /// [`Self::quantize`] for `kernel`.
    pub(crate) fn quantize_for(
        &mut self,
        kernel: Kernel,
        x: &[f32],
        rows: usize,
        inner: usize,
        input_scales: Option<&[f32]>,
    ) {
        if let Some(scales) = input_scales {
            assert_eq!(scales.len(), inner, "input scales of the wrong width");
        }
        assert_eq!(x.len(), rows * inner, "x is not ({rows}, {inner})");
        let stride = inner.next_multiple_of(GROUP);
        self.rows = rows;
        self.stride = stride;
        self.values.resize(rows * stride);
        self.scales.resize(rows, 0.0);
        self.zeros.resize(rows, 0);
        if rows == 0 || inner == 0 {
            return;
        }
        let per_task = rows_per_task(rows, inner);
        self.values
            .par_chunks_mut(stride * per_task)
            .zip(self.scales.par_chunks_mut(per_task))
            .zip(self.zeros.par_chunks_mut(per_task))
            .zip(x.par_chunks(inner * per_task))
            .for_each(|(((values, scales), zeros), x)| {
                for (((values, scale), zero), x) in values
                    .chunks_exact_mut(stride)
                    .zip(scales)
                    .zip(zeros)
                    .zip(x.chunks_exact(inner))
                {
                    (*scale, *zero) = kernel.quantize_row(x, input_scales, values);
                }
            });
    }

    /// Rows already quantized: `values` row-major `(rows, stride)`, with their scales and zero
    /// points.
    #[cfg(test)]
    fn from_parts(values: Vec<u8>, stride: usize, scales: Vec<f32>, zeros: Vec<i32>) -> Self {
        assert_eq!(stride % GROUP, 0);
        let rows = scales.len();
        assert_eq!(values.len(), rows * stride);
        assert_eq!(zeros.len(), rows);
        Self {
            rows,
            stride,
            values: Aligned::from_slice(&values),
            scales,
            zeros,
        }
    }
}

#[cfg(test)]
impl QuantizedRows {
    /// The rows of `inner` inputs as the products see them, in f32: `scale · (u - zero)`.
    pub(crate) fn dequantized(&self, inner: usize) -> Vec<f32> {
        let rows = self.values.chunks_exact(self.stride.max(1)).take(self.rows);
        rows.zip(&self.scales)
            .zip(&self.zeros)
            .flat_map(|((row, &scale), &zero)| {
                row[..inner]
                    .iter()
                    .map(move |&u| scale * (i32::from(u) - zero) as f32)
            })
            .collect()
    }
}

#[cfg(test)]
impl QuantizedMatrix {
    /// The `(out, inner)` weights as the products see them, in f32: `scale · q`.
    pub(crate) fn dequantized(&self) -> Vec<f32> {
        let padded = self.inner.next_multiple_of(GROUP);
        let mut w = Vec::with_capacity(self.out * self.inner);
        for c in 0..self.out {
            let (panel, j) = (c / NR, c % NR);
            for k in 0..self.inner {
                let k0 = k / KC * KC;
                let groups = KC.min(padded - k0) / GROUP;
                let line = &self.panel(k0, groups, panel)[(k - k0) / GROUP];
                let q = line.0[j * GROUP + k % GROUP];
                w.push(self.scales[c] * f32::from(q));
            }
        }
        w
    }
}

/// Rows per quantization task, so that short batches are not split into tasks that cost more
/// to schedule than to run.
fn rows_per_task(rows: usize, width: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_size = (1usize << 14).div_ceil(width.max(1));
    by_size.max(rows.div_ceil(4 * threads)).max(1)
}

/// `out = x · wᵀ` for the quantized rows `x` `(rows, in)` and `out` `(rows, out)`, on the
/// current rayon pool, with the kernel of this CPU.
pub(crate) fn matmul(x: &QuantizedRows, w: &QuantizedMatrix, out: &mut [f32]) {
    matmul_with(Kernel::detect(), x, w, out);
}

/// [`matmul`] with the kernel `kernel`.
pub(crate) fn matmul_with(kernel: Kernel, x: &QuantizedRows, w: &QuantizedMatrix, out: &mut [f32]) {
    product(kernel, x, w, out, rayon::current_num_threads());
}

/// [`matmul_with`] on the calling thread alone, for products that are one task of a parallel
/// loop (a head's scores, in [`super::attention`]).
pub(crate) fn matmul_here(kernel: Kernel, x: &QuantizedRows, w: &QuantizedMatrix, out: &mut [f32]) {
    product(kernel, x, w, out, 1);
}

/// [`matmul_with`] in at most `threads` tasks of the current rayon pool.
fn product(
    kernel: Kernel,
    x: &QuantizedRows,
    w: &QuantizedMatrix,
    out: &mut [f32],
    threads: usize,
) {
    let (rows, n) = (x.rows, w.out);
    assert_eq!(
        x.stride,
        w.inner.next_multiple_of(GROUP),
        "rows of {} inputs for a matrix of {}",
        x.stride,
        w.inner
    );
    assert_eq!(out.len(), rows * n, "out is not ({rows}, {n})");
    assert!(
        w.largest <= kernel.weight_limit(),
        "weights of up to {} for the {} kernel, which sums exactly only up to {}",
        w.largest,
        kernel.name(),
        kernel.weight_limit()
    );
    if rows == 0 || n == 0 {
        return;
    }
    if w.inner == 0 {
        out.fill(0.0);
        return;
    }
    let per_task = w.panels.div_ceil(threads.max(1)).max(MIN_TASK_PANELS);
    let tasks = w.panels.div_ceil(per_task);
    let out = SharedMut::new(out);
    let run = |task: usize| {
        let panels = task * per_task..((task + 1) * per_task).min(w.panels);
        #[cfg(target_arch = "x86_64")]
        if let Kernel::Amx(token) = kernel {
            if amx::fits(x) {
                // SAFETY: as below.
                unsafe { amx::columns(token, x, w, panels, &out) };
                return;
            }
        }
        // SAFETY: tasks take disjoint ranges of panels: each alone accesses its columns of
        // `out`, which this function borrows mutably.
        unsafe { columns(kernel, x, w, panels, &out) };
    };
    if tasks == 1 {
        run(0);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

/// The output columns of `panels`, for every row of `out` (`x.rows` rows of `w.out`
/// elements). Panics if they are not all in `out`.
///
/// # Safety
/// Nothing else accesses these columns of `out` meanwhile.
unsafe fn columns(
    kernel: Kernel,
    x: &QuantizedRows,
    w: &QuantizedMatrix,
    panels: std::ops::Range<usize>,
    out: &SharedMut,
) {
    let (rows, n, stride) = (x.rows, w.out, x.stride);
    let blocks = stride.div_ceil(KC);
    let tile_rows = kernel.rows();
    // The block's lines of a panel.
    let lines = |block: usize, panel: usize| {
        let k0 = block * KC;
        w.panel(k0, KC.min(stride - k0) / GROUP, panel)
    };
    let walk = Walk {
        rows,
        mc: MC,
        blocks,
        panels: panels.clone(),
    };
    for ic in (0..rows).step_by(MC) {
        let mc = MC.min(rows - ic);
        let tiles = mc.div_ceil(tile_rows);
        for block in 0..blocks {
            let k0 = block * KC;
            let last = block + 1 == blocks;
            for panel in panels.clone() {
                let c0 = panel * NR;
                let cols = NR.min(n - c0);
                let b = lines(block, panel);
                // The next panel, which this one's tiles prefetch ([`Walk`]).
                let ahead = walk
                    .after(ic, block, panel)
                    .map_or(&[][..], |(block, panel)| lines(block, panel));
                for (t, r0) in (ic..ic + mc).step_by(tile_rows).enumerate() {
                    let r = tile_rows.min(ic + mc - r0);
                    let operands = kernels::Operands {
                        a: &x.values[r0 * stride + k0..],
                        lda: stride,
                        rows: r,
                        b,
                        ahead: share(ahead, tiles, t),
                        first: block == 0,
                        dequantize: last.then(|| kernels::Dequantize {
                            row_scales: &x.scales[r0..r0 + r],
                            row_zeros: &x.zeros[r0..r0 + r],
                            col_scales: &w.scales[c0..c0 + NR],
                            col_sums: &w.sums[c0..c0 + NR],
                        }),
                    };
                    // SAFETY: the tile writes rows `r0..r0 + r` of the columns of `panel`,
                    // which the caller promised nothing else accesses; it lives for this
                    // iteration only.
                    let mut tile = unsafe {
                        kernels::Tile::new(kernel, operands, out, r0 * n + c0, (n, cols))
                    };
                    tile.run();
                }
            }
        }
    }
}
