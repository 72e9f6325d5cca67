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

/// The output pointer, shared by tasks that write disjoint columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: see `matmul`: every task writes only its own columns.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// A method, so that closures capture the whole `Send` wrapper, not the field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testing::random_vec;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        random_vec(n, seed, 1.0)
    }

    /// `x · wᵀ` in f64.
    fn reference(x: &[f32], rows: usize, w: &[f32], out: usize, inner: usize) -> Vec<f64> {
        let mut c = vec![0f64; rows * out];
        for i in 0..rows {
            for j in 0..out {
                c[i * out + j] = (0..inner)
                    .map(|k| x[i * inner + k] as f64 * w[j * inner + k] as f64)
                    .sum();
            }
        }
        c
    }

    fn check(rows: usize, out: usize, inner: usize, kernel: Kernel) {
        let x = random(rows * inner, 1 + rows as u64);
        let w = random(out * inner, 2 + out as u64);
        let packed = PackedMatrix::pack(&w, out, inner);
        let mut ours = vec![f32::NAN; rows * out];
        let dst = SharedOut(ours.as_mut_ptr());
        // SAFETY: one task writes every column of `ours`.
        unsafe {
            columns(
                kernel,
                &x,
                rows,
                &packed,
                0..packed.panels,
                (dst.get(), out),
            )
        };
        let expected = reference(&x, rows, &w, out, inner);
        // Each sum has `inner` terms of magnitude below 1.
        let tolerance = 1e-6 * inner as f64;
        for (i, (&ours, &expected)) in ours.iter().zip(&expected).enumerate() {
            assert!(
                (ours as f64 - expected).abs() <= tolerance,
                "({rows}, {out}, {inner}) element {i}: {ours} vs {expected}"
            );
        }
    }

    fn kernels() -> Vec<Kernel> {
        let mut kernels = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        if matches!(Kernel::detect(), Kernel::Avx2Fma) {
            kernels.push(Kernel::Avx2Fma);
        }
        kernels
    }

    #[test]
    fn products_match_f64_at_every_edge() {
        for kernel in kernels() {
            // Rows around the tile (6) and block (96) edges, columns around the panel (16),
            // inputs around the block of 256.
            for rows in [1, 2, 5, 6, 7, 13, 95, 97, 200] {
                check(rows, 48, 64, kernel);
            }
            for out in [1, 15, 17, 40] {
                check(9, out, 100, kernel);
            }
            for inner in [1, 255, 256, 257, 600] {
                check(8, 32, inner, kernel);
            }
        }
    }

    #[test]
    fn threaded_product_equals_the_single_task_one() {
        let (rows, out, inner) = (37, 16 * 40, 300);
        let x = random(rows * inner, 3);
        let w = random(out * inner, 4);
        let packed = PackedMatrix::pack(&w, out, inner);
        let mut threaded = vec![0.0; rows * out];
        rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(|| matmul(&x, rows, &packed, &mut threaded));
        let mut single = vec![0.0; rows * out];
        matmul_here(&x, rows, &packed, &mut single);
        assert_eq!(threaded, single);
    }

    /// A row's result is bit for bit the same whatever the rows around it: what makes a text's
    /// vectors independent of the batch it runs in.
    #[test]
    fn each_row_is_the_same_alone_and_in_any_batch() {
        let (out, inner) = (64, 1030);
        let w = random(out * inner, 5);
        let packed = PackedMatrix::pack(&w, out, inner);
        let rows = 101;
        let x = random(rows * inner, 6);
        let mut batch = vec![0.0; rows * out];
        matmul(&x, rows, &packed, &mut batch);
        for row in [0, 5, 6, 50, 96, 100] {
            let mut alone = vec![0.0; out];
            matmul(&x[row * inner..][..inner], 1, &packed, &mut alone);
            assert_eq!(alone, batch[row * out..][..out], "row {row}");
        }
    }

    /// `pack_transposed` of `wᵀ` is `pack` of `w`, and strided output leaves the gaps alone.
    #[test]
    fn transposed_packing_and_strided_rows() {
        let (rows, out, inner) = (7, 21, 300);
        let x = random(rows * inner, 8);
        let w = random(out * inner, 9);
        let wt: Vec<f32> = (0..inner * out)
            .map(|i| w[(i % out) * inner + i / out])
            .collect();
        let mut direct = vec![0.0; rows * out];
        matmul_here(&x, rows, &PackedMatrix::pack(&w, out, inner), &mut direct);
        let ldc = out + 5;
        let mut strided = vec![-1.0; rows * ldc];
        let packed = PackedMatrix::pack_transposed(&wt, inner, out);
        // SAFETY: `strided` holds `rows` rows `ldc` apart.
        unsafe { matmul_strided(&x, rows, &packed, strided.as_mut_ptr(), ldc) };
        for (i, row) in strided.chunks(ldc).enumerate() {
            assert_eq!(row[..out], direct[i * out..][..out], "row {i}");
            assert!(
                row[out..].iter().all(|&v| v == -1.0),
                "row {i} past its columns"
            );
        }
    }

    /// Rows packed (a product of many panels) or read in place (a thin one) give the same
    /// bits: the same sums in the same order.
    #[test]
    fn packed_and_unpacked_rows_agree_bit_for_bit() {
        let (rows, inner) = (23, 520);
        let wide = 16 * PACK_ROWS_PANELS;
        let x = random(rows * inner, 10);
        let w = random(wide * inner, 11);
        let mut packed = vec![0.0; rows * wide];
        matmul_here(&x, rows, &PackedMatrix::pack(&w, wide, inner), &mut packed);
        let thin = 16 * 2;
        let mut unpacked = vec![0.0; rows * thin];
        let w_thin = PackedMatrix::pack(&w[..thin * inner], thin, inner);
        matmul_here(&x, rows, &w_thin, &mut unpacked);
        for i in 0..rows {
            assert_eq!(
                unpacked[i * thin..][..thin],
                packed[i * wide..][..thin],
                "row {i}"
            );
        }
    }

    #[test]
    fn no_rows_is_no_work() {
        let packed = PackedMatrix::pack(&random(12, 7), 4, 3);
        matmul(&[], 0, &packed, &mut []);
    }
}

/// Measurements rather than tests, ignored by default; run them on a release build:
///
/// ```text
/// cargo test --release -p bge-m3-core --lib cpu::matmul::speed -- --ignored --nocapture
/// SHAPES=22x3072x1024,2048x4096x1024 cargo test ... speed::speed   # rows x n x k
/// ROWS=22 cargo test ... speed::stream
/// ```
///
/// Both time this thread's CPU clock, not the wall clock, so that other load on the machine
/// disturbs them less.
#[cfg(test)]
mod speed {
    use super::*;

    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    /// Linux's `CLOCK_THREAD_CPUTIME_ID`.
    const THREAD_CPU_CLOCK: i32 = 3;

    /// This thread's CPU time in seconds.
    fn cpu_now() -> f64 {
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec for the call.
        unsafe { clock_gettime(THREAD_CPU_CLOCK, &mut ts) };
        ts.sec as f64 + ts.nsec as f64 * 1e-9
    }

    fn gemm_crate(x: &[f32], rows: usize, w: &[f32], n: usize, k: usize, out: &mut [f32]) {
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
        let shapes: Vec<(usize, usize, usize)> = std::env::var("SHAPES")
            .ok()
            .map(|s| {
                s.split(',')
                    .map(|t| {
                        let v: Vec<usize> = t.split('x').map(|x| x.parse().unwrap()).collect();
                        (v[0], v[1], v[2])
                    })
                    .collect()
            })
            .unwrap_or(vec![
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
}
