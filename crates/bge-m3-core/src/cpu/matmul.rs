//! `x · wᵀ` against weights packed once, at load, in the layout the microkernel reads.
//!
//! A general matrix-product routine (the `gemm` crate, OpenBLAS) copies its right-hand side
//! into cache-sized panels inside every call. For the encoder's weights that copy is the same
//! on every pass, and on a short pass it is most of the work: the weights are read from memory
//! once to be packed and once more to be multiplied. Here each `Linear` weight is packed at
//! load into panels of [`NR`] output columns, blocked by [`KC`] inputs, so a pass streams each
//! weight matrix from memory exactly once, in address order, whatever the number of rows.
//!
//! The microkernel keeps an `R x 16` tile of the output (`R <= 6` rows) in twelve AVX2
//! registers and adds one rank-1 update per input, with fused multiply-adds, for [`KC`] inputs
//! at a time: the panel's slice (16 KiB) and the rows' slice stay in L1 meanwhile. Threads take
//! disjoint ranges of output columns, so each reads only its share of the weights.
//!
//! Every output element is the same sum in the same order whatever the number of rows and
//! wherever its row lies in the batch: a text's hidden states are bit for bit the same alone or
//! in any batch. On x86-64 without AVX2 and FMA, and on other architectures, a portable kernel
//! with the same loop structure runs instead (without fused multiply-adds).

use rayon::prelude::*;

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
    let dst = SharedOut(out.as_mut_ptr());
    let run = |task: usize| {
        let panels = task * per_task..((task + 1) * per_task).min(w.panels);
        // SAFETY: tasks write disjoint column ranges (their panels) of `out`, which holds
        // `rows x n` elements.
        unsafe { columns(kernel, x, rows, w, panels, (dst.get(), n)) };
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
    // SAFETY: `out` holds exactly the `rows` rows of `w.out` elements, and is borrowed mutably.
    unsafe { matmul_strided(x, rows, w, out.as_mut_ptr(), w.out) };
}

/// [`matmul_here`] into rows `ldc` apart: `*out.add(i * ldc + j) = (x · wᵀ)[i, j]` for
/// `j < w.out`, nothing else written.
///
/// # Safety
/// `out` is valid for writes of those elements, and nothing else accesses them meanwhile.
pub(crate) unsafe fn matmul_strided(
    x: &[f32],
    rows: usize,
    w: &PackedMatrix,
    out: *mut f32,
    ldc: usize,
) {
    let (n, k) = (w.out, w.inner);
    assert_eq!(x.len(), rows * k, "x is not ({rows}, {k})");
    assert!(ldc >= n, "rows {ldc} apart cannot hold {n} columns");
    if rows == 0 || n == 0 || k == 0 {
        return;
    }
    // SAFETY: the caller's promise.
    unsafe { columns(Kernel::detect(), x, rows, w, 0..w.panels, (out, ldc)) };
}

/// The output columns of `panels`, for every row; output rows are `ldc` apart.
///
/// # Safety
/// `out` addresses `rows` rows of `w.out` elements, `ldc >= w.out` apart, and no other thread
/// writes these columns.
unsafe fn columns(
    kernel: Kernel,
    x: &[f32],
    rows: usize,
    w: &PackedMatrix,
    panels: std::ops::Range<usize>,
    (out, ldc): (*mut f32, usize),
) {
    let (n, k) = (w.out, w.inner);
    let blocks = k.div_ceil(KC);
    // The panel visited after (ic, block, panel), in this task's order.
    let next = |ic: usize, block: usize, panel: usize| {
        if panel + 1 < panels.end {
            Some((block, panel + 1))
        } else if block + 1 < blocks {
            Some((block + 1, panels.start))
        } else if ic + MC < rows {
            Some((0, panels.start))
        } else {
            None
        }
    };
    // Packing a block of rows costs about what multiplying it by a few panels does: worth it
    // when the block meets many panels, not for a thin product (attention's `p · v`).
    let pack = panels.len() >= PACK_ROWS_PANELS;
    PACKED_ROWS.with_borrow_mut(|packed| {
        packed.resize(MC.next_multiple_of(MR) * KC, 0.0);
        for ic in (0..rows).step_by(MC) {
            let mc = MC.min(rows - ic);
            let tiles = mc.div_ceil(MR);
            for block in 0..blocks {
                let (k0, kc) = (block * KC, KC.min(k - block * KC));
                if pack {
                    pack_rows(&x[ic * k..(ic + mc) * k], k, k0, kc, packed);
                }
                for panel in panels.clone() {
                    let b = w.panel(k0, kc, panel).as_ptr().cast::<f32>();
                    // While this panel is multiplied, its tiles prefetch the next one, spread
                    // over all of them: the weights stream from memory at an even rate
                    // instead of in bursts that stall the first tile of each panel.
                    let (ahead, ahead_lines) = match next(ic, block, panel) {
                        Some((block, panel)) => {
                            let kc = KC.min(k - block * KC);
                            (w.panel(block * KC, kc, panel).as_ptr().cast::<f32>(), kc)
                        }
                        None => (b, 0),
                    };
                    let per_tile = ahead_lines.div_ceil(tiles);
                    let cols = NR.min(n - panel * NR);
                    for t in 0..tiles {
                        let first = (t * per_tile).min(ahead_lines);
                        let tile = Tile {
                            a: if pack {
                                packed.as_ptr().add(t * MR * kc)
                            } else {
                                x.as_ptr().add((ic + t * MR) * k + k0)
                            },
                            lda: if pack { 0 } else { k },
                            b,
                            kc,
                            c: out.add((ic + t * MR) * ldc + panel * NR),
                            ldc,
                            cols,
                            accumulate: k0 > 0,
                            ahead: ahead.add(first * NR),
                            ahead_lines: per_tile.min(ahead_lines - first),
                        };
                        kernel.run(MR.min(mc - t * MR), &tile);
                    }
                }
            }
        }
    });
}

thread_local! {
    /// Each thread's copy of the block of rows it multiplies, in the microkernel's layout.
    static PACKED_ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
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

/// One call of the microkernel: `c[..rows, ..cols] (+)= a[..rows, ..kc] · b[..kc, ..NR]`.
struct Tile {
    /// The rows' inputs: `kc` groups of [`MR`] values packed by [`pack_rows`] when `lda` is 0,
    /// else row-major rows `lda` apart.
    a: *const f32,
    lda: usize,
    /// `kc` packed lines of `NR` values, 64-byte aligned.
    b: *const f32,
    kc: usize,
    /// Row-major output, `ldc` apart; only the first `cols` columns are written.
    c: *mut f32,
    ldc: usize,
    cols: usize,
    /// Add to `c` (a later block of inputs) instead of overwriting it.
    accumulate: bool,
    /// Lines of the next panel to prefetch (into L1) while this tile runs, spread evenly over
    /// its `kc` steps.
    ahead: *const f32,
    ahead_lines: usize,
}

#[derive(Clone, Copy)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    Portable,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Kernel::Avx2Fma;
        }
        Kernel::Portable
    }

    /// # Safety
    /// The tile's pointers address what [`Tile`] describes; `rows` is 1..=MR.
    #[inline(always)]
    unsafe fn run(self, rows: usize, tile: &Tile) {
        macro_rules! by_rows {
            ($kernel:ident, $packed:literal) => {
                match rows {
                    1 => $kernel::<1, $packed>(tile),
                    2 => $kernel::<2, $packed>(tile),
                    3 => $kernel::<3, $packed>(tile),
                    4 => $kernel::<4, $packed>(tile),
                    5 => $kernel::<5, $packed>(tile),
                    _ => $kernel::<MR, $packed>(tile),
                }
            };
        }
        match (self, tile.lda == 0) {
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2Fma, true) => by_rows!(avx2_fma, true),
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2Fma, false) => by_rows!(avx2_fma, false),
            (Kernel::Portable, true) => by_rows!(portable, true),
            (Kernel::Portable, false) => by_rows!(portable, false),
        }
    }
}

/// The distances, in floats, between a tile's rows and between its consecutive inputs.
#[inline(always)]
fn a_layout<const PACKED: bool>(tile: &Tile) -> (usize, usize) {
    if PACKED {
        (1, MR)
    } else {
        (tile.lda, 1)
    }
}

/// Stores a finished `R x NR` tile, adding to what is there for a later block of inputs, and
/// writing only the first `cols` columns.
#[inline(always)]
unsafe fn store<const R: usize>(acc: &[[f32; NR]; R], tile: &Tile) {
    for (i, row) in acc.iter().enumerate() {
        let c = std::slice::from_raw_parts_mut(tile.c.add(i * tile.ldc), tile.cols);
        if tile.accumulate {
            for (c, v) in c.iter_mut().zip(row) {
                *c += v;
            }
        } else {
            c.copy_from_slice(&row[..tile.cols]);
        }
    }
}

/// The microkernel in plain Rust, for CPUs without AVX2 and FMA.
unsafe fn portable<const R: usize, const PACKED: bool>(tile: &Tile) {
    let (row, step) = a_layout::<PACKED>(tile);
    let mut acc = [[0f32; NR]; R];
    for kk in 0..tile.kc {
        let b = &*tile.b.add(kk * NR).cast::<[f32; NR]>();
        for (i, acc) in acc.iter_mut().enumerate() {
            let a = *tile.a.add(kk * step + i * row);
            for (acc, &b) in acc.iter_mut().zip(b) {
                *acc += a * b;
            }
        }
    }
    store(&acc, tile);
}

/// The microkernel on AVX2 with fused multiply-adds: the `R x 16` tile in `2R` registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_fma<const R: usize, const PACKED: bool>(tile: &Tile) {
    use std::arch::x86_64::*;
    /// One input: `acc[i] += a[row[i]] * b` for the tile's rows.
    #[inline(always)]
    unsafe fn step<const R: usize>(
        acc: &mut [[__m256; 2]; R],
        a: *const f32,
        rows: &[usize; R],
        b: *const f32,
    ) {
        let b0 = _mm256_load_ps(b);
        let b1 = _mm256_load_ps(b.add(8));
        for (acc, &row) in acc.iter_mut().zip(rows) {
            let x = _mm256_broadcast_ss(&*a.add(row));
            acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
        }
    }
    let (row, a_step) = a_layout::<PACKED>(tile);
    let rows: [usize; R] = std::array::from_fn(|i| i * row);
    const UNROLL: usize = 4;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (mut a, mut b) = (tile.a, tile.b);
    let groups = tile.kc / UNROLL;
    // The prefetches, spread over the groups of inputs.
    let per_group = tile.ahead_lines.div_ceil(groups.max(1));
    let (mut ahead, mut left) = (tile.ahead, tile.ahead_lines);
    for _ in 0..groups {
        for _ in 0..per_group.min(left) {
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            ahead = ahead.add(NR);
        }
        left -= per_group.min(left);
        for u in 0..UNROLL {
            step(&mut acc, a.add(u * a_step), &rows, b.add(u * NR));
        }
        a = a.add(UNROLL * a_step);
        b = b.add(UNROLL * NR);
    }
    for _ in groups * UNROLL..tile.kc {
        step(&mut acc, a, &rows, b);
        a = a.add(a_step);
        b = b.add(NR);
    }
    if tile.cols == NR {
        for (i, acc) in acc.iter().enumerate() {
            let c = tile.c.add(i * tile.ldc);
            let (mut lo, mut hi) = (acc[0], acc[1]);
            if tile.accumulate {
                lo = _mm256_add_ps(_mm256_loadu_ps(c), lo);
                hi = _mm256_add_ps(_mm256_loadu_ps(c.add(8)), hi);
            }
            _mm256_storeu_ps(c, lo);
            _mm256_storeu_ps(c.add(8), hi);
        }
    } else {
        let mut rows = [[0f32; NR]; R];
        for (row, acc) in rows.iter_mut().zip(&acc) {
            _mm256_storeu_ps(row.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[1]);
        }
        store(&rows, tile);
    }
}

/// The output pointer, shared by tasks that write disjoint columns (the f32 products here and
/// the int8 ones of `cpu::int8`).
#[derive(Clone, Copy)]
pub(super) struct SharedOut(pub(super) *mut f32);
// SAFETY: each user (`matmul`, `int8::matmul_with`) has every task write only its own columns.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// A method, so that closures capture the whole `Send` wrapper, not the field.
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests;

/// Measurements, ignored by default (see the module).
#[cfg(test)]
mod speed;
