//! `x · wᵀ` against weights packed once, at load, in the layout the microkernel reads.
//!
//! A general matrix-product routine (the `gemm` crate, OpenBLAS) copies its right-hand side
//! into cache-sized panels inside every call. For the encoder's weights that copy is the same
//! on every pass, and on a short pass it is most of the work: the weights are read from memory
//! once to be packed and once more to be multiplied. Here each `Linear` weight is packed at
//! load into panels of [`NR`] output columns, blocked by [`KC`] inputs, so a pass streams each
//! weight matrix from memory exactly once, in address order, whatever the number of rows.
//!
//! The microkernel (`kernel`) keeps an `R x 16` tile of the output (`R <= 6` rows) in twelve
//! AVX2 registers and adds one rank-1 update per input, with fused multiply-adds, for [`KC`]
//! inputs at a time: the panel's slice (16 KiB) and the rows' slice stay in L1 meanwhile.
//! Threads take disjoint ranges of output columns, so each reads only its share of the weights
//! (and writes only its own columns of the one output buffer, a [`SharedMut`]).
//!
//! Every output element is the same sum in the same order whatever the number of rows and
//! wherever its row lies in the batch: a text's hidden states are bit for bit the same alone or
//! in any batch. On x86-64 without AVX2 and FMA, and on other architectures, a portable kernel
//! with the same loop structure runs instead (without fused multiply-adds).

use rayon::prelude::*;

use super::aligned::Aligned;
use super::shared::SharedMut;
use kernel::{Kernel, Panel};

/// Output columns of one packed panel: two AVX2 registers of f32.
pub(crate) const NR: usize = 16;
/// Rows of the microkernel's output tile.
const MR: usize = 6;
/// Inputs per block of the reduction: one panel's slice is `KC x NR` f32 (16 KiB).
pub(crate) const KC: usize = 256;
/// Rows per block of the left-hand side kept in L2 while the panels of a task go by
/// (`MC x KC` f32, 96 KiB).
const MC: usize = 96;
/// Fewest panels a task multiplies for its rows to be packed first (see `columns`).
const PACK_ROWS_PANELS: usize = 8;
/// Fewest panels a thread's task gets (128 output columns), so that a thread streams a
/// contiguous run of the weights.
const MIN_TASK_PANELS: usize = 8;

/// One line of a panel: the `NR` weights of one input, on one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; NR]);

/// A `Linear` weight `(out, in)`, packed for [`matmul`].
///
/// Layout: blocks of [`KC`] inputs, in order; in each block, the panels of [`NR`] outputs, in
/// order; in each panel, one [`Line`] per input of the block. Outputs past `out` (the last
/// panel's padding) are zero.
pub(crate) struct PackedMatrix {
    out: usize,
    inner: usize,
    panels: usize,
    lines: Vec<Line>,
}

impl PackedMatrix {
    /// Packs the row-major `(out, inner)` matrix `weight`.
    #[cfg(test)]
    pub(crate) fn pack(weight: &[f32], out: usize, inner: usize) -> Self {
        assert_eq!(weight.len(), out * inner, "weight is not ({out}, {inner})");
        Self::pack_stacked(&[weight], inner)
    }

    /// Packs row-major matrices of `inner` columns, stacked in order, as one matrix.
    pub(crate) fn pack_stacked<P: std::ops::Deref<Target = [f32]> + Sync>(
        parts: &[P],
        inner: usize,
    ) -> Self {
        let rows: Vec<&[f32]> = parts
            .iter()
            .flat_map(|part| {
                assert_eq!(part.len() % inner.max(1), 0, "a part is not {inner} wide");
                part.chunks_exact(inner.max(1))
            })
            .collect();
        let out = if inner == 0 { 0 } else { rows.len() };
        let panels = out.div_ceil(NR);
        let mut lines = vec![Line([0.0; NR]); inner * panels];
        if inner > 0 {
            lines
                .par_chunks_mut(KC * panels)
                .enumerate()
                .for_each(|(block, lines)| {
                    let k0 = block * KC;
                    let kc = lines.len() / panels;
                    for (panel, lines) in lines.chunks_exact_mut(kc).enumerate() {
                        for j in 0..NR.min(out - panel * NR) {
                            let row = &rows[panel * NR + j][k0..][..kc];
                            for (line, &w) in lines.iter_mut().zip(row) {
                                line.0[j] = w;
                            }
                        }
                    }
                });
        }
        Self {
            out,
            inner,
            panels,
            lines,
        }
    }

    /// Packs `wᵀ` for the row-major `(inner, out)` matrix `wt` (its rows are the inputs), so
    /// that [`matmul`] computes `x · wt`.
    pub(crate) fn pack_transposed(wt: &[f32], inner: usize, out: usize) -> Self {
        assert_eq!(wt.len(), inner * out, "wt is not ({inner}, {out})");
        let panels = out.div_ceil(NR);
        let mut lines = vec![Line([0.0; NR]); inner * panels];
        for (block, lines) in lines.chunks_mut(KC * panels.max(1)).enumerate() {
            let k0 = block * KC;
            let kc = lines.len() / panels.max(1);
            for (panel, lines) in lines.chunks_exact_mut(kc.max(1)).enumerate() {
                let cols = NR.min(out - panel * NR);
                for (kk, line) in lines.iter_mut().enumerate() {
                    let row = &wt[(k0 + kk) * out + panel * NR..][..cols];
                    line.0[..cols].copy_from_slice(row);
                }
            }
        }
        Self {
            out,
            inner,
            panels,
            lines,
        }
    }

    #[cfg(test)]
    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of_val(self.lines.as_slice())
    }

    /// The `kc` lines of `panel` in the block that starts at input `k0`.
    fn panel(&self, k0: usize, kc: usize, panel: usize) -> &[Line] {
        // Every block before this one is full.
        let start = k0 * self.panels + panel * kc;
        &self.lines[start..start + kc]
    }
}

/// `out = x · wᵀ` for row-major `x` `(rows, in)` and `out` `(rows, out)`, as `Linear` computes
/// it without its bias, on the current rayon pool.
pub(crate) fn matmul(x: &[f32], rows: usize, w: &PackedMatrix, out: &mut [f32]) {
    let (n, k) = (w.out, w.inner);
    assert_eq!(x.len(), rows * k, "x is not ({rows}, {k})");
    assert_eq!(out.len(), rows * n, "out is not ({rows}, {n})");
    if rows == 0 || n == 0 || k == 0 {
        out.fill(0.0);
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    let per_task = w.panels.div_ceil(threads).max(MIN_TASK_PANELS);
    let tasks = w.panels.div_ceil(per_task);
    let kernel = Kernel::detect();
    let out = SharedMut::new(out);
    let run = |task: usize| {
        let panels = task * per_task..((task + 1) * per_task).min(w.panels);
        // SAFETY: tasks take disjoint ranges of panels: each alone accesses its columns of
        // `out`, which this function borrows mutably.
        unsafe { columns(kernel, x, rows, w, panels, &out, (0, n)) };
    };
    if tasks == 1 {
        run(0);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

/// [`matmul`] on the calling thread alone, for products that are one task of a parallel loop
/// (attention): `out` `(rows, w.out)` row-major.
pub(crate) fn matmul_here(x: &[f32], rows: usize, w: &PackedMatrix, out: &mut [f32]) {
    assert_eq!(out.len(), rows * w.out, "out is not ({rows}, {})", w.out);
    let ldc = w.out;
    // SAFETY: `out` is borrowed mutably here: nothing else accesses it.
    unsafe { matmul_strided(x, rows, w, &SharedMut::new(out), (0, ldc)) };
}

/// [`matmul_here`] into rows `ldc` apart from element `offset` of `out`: element `offset + i *
/// ldc + j` becomes `(x · wᵀ)[i, j]` for `j < w.out`, and nothing else is written. Panics if
/// those elements are not all in `out`.
///
/// # Safety
/// Nothing else accesses those elements meanwhile.
pub(crate) unsafe fn matmul_strided(
    x: &[f32],
    rows: usize,
    w: &PackedMatrix,
    out: &SharedMut,
    (offset, ldc): (usize, usize),
) {
    let (n, k) = (w.out, w.inner);
    assert_eq!(x.len(), rows * k, "x is not ({rows}, {k})");
    assert!(ldc >= n, "rows {ldc} apart cannot hold {n} columns");
    if rows == 0 || n == 0 || k == 0 {
        return;
    }
    let panels = 0..w.panels;
    // SAFETY: the caller's promise, for all the columns.
    unsafe { columns(Kernel::detect(), x, rows, w, panels, out, (offset, ldc)) };
}

/// The output columns of `panels`, for every row, to `out` from element `offset` on, rows `ldc`
/// apart. Panics if they are not all in `out`.
///
/// # Safety
/// Nothing else accesses these columns of these rows of `out` meanwhile.
unsafe fn columns(
    kernel: Kernel,
    x: &[f32],
    rows: usize,
    w: &PackedMatrix,
    panels: std::ops::Range<usize>,
    out: &SharedMut,
    (offset, ldc): (usize, usize),
) {
    let (n, k) = (w.out, w.inner);
    let blocks = k.div_ceil(KC);
    let walk = Walk {
        rows,
        mc: MC,
        blocks,
        panels: panels.clone(),
    };
    // Packing a block of rows costs about what multiplying it by a few panels does: worth it
    // when the block meets many panels, not for a thin product (attention's `p · v`).
    let pack = panels.len() >= PACK_ROWS_PANELS;
    PACKED_ROWS.with_borrow_mut(|packed| {
        packed.resize(MC.next_multiple_of(MR) * KC);
        for ic in (0..rows).step_by(MC) {
            let mc = MC.min(rows - ic);
            let tiles = mc.div_ceil(MR);
            for block in 0..blocks {
                let (k0, kc) = (block * KC, KC.min(k - block * KC));
                if pack {
                    pack_rows(&x[ic * k..(ic + mc) * k], k, k0, kc, packed);
                }
                for panel in panels.clone() {
                    let b = w.panel(k0, kc, panel);
                    // The next panel, which this one's tiles prefetch ([`Walk`]).
                    let ahead = match walk.after(ic, block, panel) {
                        Some((block, panel)) => w.panel(block * KC, KC.min(k - block * KC), panel),
                        None => &[],
                    };
                    let cols = NR.min(n - panel * NR);
                    let (a, lda) = if pack {
                        (&packed[..], 0)
                    } else {
                        (&x[ic * k + k0..], k)
                    };
                    let at = offset + ic * ldc + panel * NR;
                    // SAFETY: the panel writes rows `ic..ic + mc` of the columns of `panel`,
                    // which the caller promised nothing else accesses; it lives for this
                    // iteration only.
                    let mut in_panel =
                        unsafe { Panel::new((a, lda, mc), b, k0 > 0, out, at, (ldc, cols)) };
                    for t in 0..tiles {
                        let mut tile = in_panel.tile(t, share(ahead, tiles, t));
                        kernel.run(&mut tile);
                    }
                }
            }
        }
    });
}

/// The order in which one task of a blocked product visits its panels: `mc` rows at a time;
/// for those rows, the blocks of inputs; in each block, the task's `panels`. While a panel is
/// multiplied its tiles prefetch the one visited after it ([`Walk::after`]), a [`share`]
/// each, so that the weights stream from memory at an even rate instead of in bursts that
/// stall the first tile of each panel. (The int8 product walks its panels the same way.)
pub(crate) struct Walk {
    pub(crate) rows: usize,
    pub(crate) mc: usize,
    pub(crate) blocks: usize,
    pub(crate) panels: std::ops::Range<usize>,
}

impl Walk {
    /// The block and panel visited after `panel` of `block` for the rows from `ic`, or `None`
    /// after the last.
    pub(crate) fn after(&self, ic: usize, block: usize, panel: usize) -> Option<(usize, usize)> {
        if panel + 1 < self.panels.end {
            Some((block, panel + 1))
        } else if block + 1 < self.blocks {
            Some((block + 1, self.panels.start))
        } else if ic + self.mc < self.rows {
            Some((0, self.panels.start))
        } else {
            None
        }
    }
}

/// Part `t` of `parts` nearly equal parts of `lines`, in order (empty past the end).
pub(crate) fn share<T>(lines: &[T], parts: usize, t: usize) -> &[T] {
    let per_part = lines.len().div_ceil(parts.max(1));
    let first = (t * per_part).min(lines.len());
    &lines[first..(first + per_part).min(lines.len())]
}

thread_local! {
    /// Each thread's copy of the block of rows it multiplies, in the microkernel's layout,
    /// starting a cache line whatever the allocator's history (see [`Aligned`]).
    static PACKED_ROWS: std::cell::RefCell<Aligned<f32>> =
        const { std::cell::RefCell::new(Aligned::empty()) };
}

/// Copies inputs `k0..k0 + kc` of the row-major `rows` (`k` wide) into `packed` as tiles of
/// [`MR`] rows: tile `t` holds, for each input, the values of its rows (zero past the last
/// row), so the microkernel reads it in address order.
fn pack_rows(rows: &[f32], k: usize, k0: usize, kc: usize, packed: &mut [f32]) {
    let count = rows.len() / k;
    for (t, tile) in packed
        .chunks_exact_mut(MR * kc)
        .take(count.div_ceil(MR))
        .enumerate()
    {
        // The tile's rows, each cut to inputs `k0..k0 + kc`; missing rows read as zeros.
        let zeros = [0f32; KC];
        let src: [&[f32]; MR] = std::array::from_fn(|i| {
            let row = t * MR + i;
            if row < count {
                &rows[row * k + k0..][..kc]
            } else {
                &zeros[..kc]
            }
        });
        // Written in address order, reading the MR rows side by side.
        for (kk, group) in tile.chunks_exact_mut(MR).enumerate() {
            for (v, row) in group.iter_mut().zip(&src) {
                *v = row[kk];
            }
        }
    }
}

mod kernel;

#[cfg(test)]
mod tests;

/// Measurements, ignored by default (see the module).
#[cfg(test)]
mod speed;
