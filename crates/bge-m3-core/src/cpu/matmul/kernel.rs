//! The microkernel: one tile of a product, `c[..rows, ..cols] (+)= a[..rows, ..kc] · b[..kc, ..NR]`,
//! on AVX2 with fused multiply-adds where the CPU has them, else in plain Rust.
//!
//! The proof is split three ways, so that each kernel's body needs none of its own:
//! - [`Panel::new`] checks every bound of a panel's tiles (the rows' inputs, the output's
//!   extent) and asks its caller only that no other task accesses the panel's outputs while it
//!   lives; [`Panel::tile`] hands out its tiles, one at a time, within those bounds;
//! - the kernels read the inputs without bounds checks ([`Tile::inputs`]) within what the
//!   panel checked, and write the outputs through [`Tile::store`];
//! - a SIMD kernel takes the token of its CPU features (`cpu::arch`) as its first argument:
//!   a [`Kernel`] that holds one exists only where run-time detection found them.

use super::{Line, MR, NR};
#[cfg(target_arch = "x86_64")]
use crate::cpu::arch::Avx2Fma;
use crate::cpu::shared::SharedMut;

/// What one call of the microkernel multiplies: the first `rows` rows of `a` by the panel `b`.
struct Operands<'a> {
    /// The rows' inputs: [`MR`] values per input (packed by `pack_rows`) when `lda` is 0, else
    /// row-major rows `lda` apart.
    a: &'a [f32],
    lda: usize,
    /// Rows of the tile, 1..=[`MR`].
    rows: usize,
    /// The panel's lines, one per input: the tile's `kc` is `b.len()`.
    b: &'a [Line],
    /// Add to the output (a later block of inputs) instead of overwriting it.
    accumulate: bool,
    /// Lines of the next panel to prefetch (into L1) while this tile runs, spread evenly over
    /// its inputs.
    ahead: &'a [Line],
}

/// A tile of a [`Panel`], whose bounds the panel checked, and where its product goes.
pub(super) struct Tile<'a> {
    operands: Operands<'a>,
    /// Row-major output, rows `ldc` apart, of which the first `cols` columns are written.
    c: *mut f32,
    ldc: usize,
    cols: usize,
}

/// The tiles of one panel of weights for a block of rows: the product of `rows` rows of `a`
/// by the panel, into `cols` columns of the output. Its bounds are checked once, for all its
/// tiles, when it is made; [`Panel::tile`] then hands its tiles out one at a time. (Checked
/// tile by tile, the checks weighed most where tiles are smallest: attention's `q · kᵀ`, 64
/// inputs deep.)
pub(super) struct Panel<'a> {
    /// The rows' inputs: packed tile by tile (`pack_rows`, [`MR`] rows by `b.len()` inputs
    /// each) when `lda` is 0, else row-major rows `lda` apart.
    a: &'a [f32],
    lda: usize,
    rows: usize,
    b: &'a [Line],
    accumulate: bool,
    c: *mut f32,
    ldc: usize,
    cols: usize,
}

impl<'a> Panel<'a> {
    /// The panel that writes the product of `rows` rows of `a` (laid out as `lda` says) by
    /// `b` to elements `offset + i * ldc + j` of `out`, for `i < rows` and `j < cols`, adding
    /// to them if `accumulate`. Panics if those elements, or the inputs of the rows, are out of
    /// bounds.
    ///
    /// # Safety
    /// Nothing else accesses those elements of `out` while the panel lives.
    // Once per panel, in the product's loops: inlined, its fields stay in registers.
    #[inline(always)]
    pub(super) unsafe fn new(
        (a, lda, rows): (&'a [f32], usize, usize),
        b: &'a [Line],
        accumulate: bool,
        out: &'a SharedMut<'_>,
        offset: usize,
        (ldc, cols): (usize, usize),
    ) -> Self {
        assert!(
            rows >= 1 && (1..=NR).contains(&cols) && cols <= ldc,
            "a panel of {rows} x {cols}, rows {ldc} apart"
        );
        if !b.is_empty() {
            // One past the furthest input a tile reads: packed, every tile (the last one too)
            // is `MR` rows of `kc` inputs; row-major, the last row's last input.
            let end = if lda == 0 {
                rows.div_ceil(MR).saturating_mul(MR).saturating_mul(b.len())
            } else {
                (rows - 1).saturating_mul(lda).saturating_add(b.len())
            };
            assert!(end <= a.len(), "{rows} rows of {} inputs past `a`", b.len());
        }
        let extent = (rows - 1).saturating_mul(ldc).saturating_add(cols);
        let c = out.ptr_at(offset, extent);
        Self {
            a,
            lda,
            rows,
            b,
            accumulate,
            c,
            ldc,
            cols,
        }
    }

    /// Tile `t`: rows `t * MR..` of the panel, at most [`MR`] of them, prefetching `ahead`
    /// (lines of the next panel) as it runs. One at a time: the tile borrows the panel.
    #[inline(always)]
    pub(super) fn tile(&mut self, t: usize, ahead: &'a [Line]) -> Tile<'_> {
        let r0 = t * MR;
        assert!(r0 < self.rows, "tile {t} of a panel of {} rows", self.rows);
        // Within what `new` checked: packed, tile `t`'s `MR * kc` inputs start at `r0 * kc`;
        // row-major, its rows are rows `r0..` of the panel's.
        let start = if self.lda == 0 {
            r0 * self.b.len()
        } else {
            r0 * self.lda
        };
        Tile {
            operands: Operands {
                a: &self.a[start..],
                lda: self.lda,
                rows: MR.min(self.rows - r0),
                b: self.b,
                accumulate: self.accumulate,
                ahead,
            },
            c: self.c.wrapping_add(r0 * self.ldc),
            ldc: self.ldc,
            cols: self.cols,
        }
    }
}

impl Tile<'_> {
    fn packed(&self) -> bool {
        self.operands.lda == 0
    }

    /// Checks, once per call of a kernel, that the kernel's `R` and `PACKED` are the tile's:
    /// what [`Tile::inputs`] relies on.
    #[inline(always)]
    fn check<const R: usize, const PACKED: bool>(&self) {
        assert!(R == self.operands.rows && PACKED == self.packed());
    }

    /// Input `kk` of each of the first `R` rows. (References, not values: the SIMD kernel
    /// broadcasts each straight from memory, where a copy of the values would go through the
    /// stack.)
    ///
    /// # Safety
    /// `kk < self.operands.b.len()`, and [`Tile::check`] passed for `R` and `PACKED`.
    #[inline(always)]
    unsafe fn inputs<const R: usize, const PACKED: bool>(&self, kk: usize) -> [&f32; R] {
        let (row, step) = if PACKED {
            (1, MR)
        } else {
            (self.operands.lda, 1)
        };
        std::array::from_fn(|i| {
            // SAFETY: `i < R == rows` and `kk < kc` (the caller's promise), so the index is at
            // most `(rows - 1) * row + (kc - 1) * step`, inside `a` (`Panel::new` checked the
            // panel's furthest input, and `Panel::tile` starts `a` at the tile's first).
            unsafe { self.operands.a.get_unchecked(kk * step + i * row) }
        })
    }

    /// Row `i` of the tile's output, its `cols` elements: one at a time (`&mut self`).
    #[inline(always)]
    fn row(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.operands.rows);
        let first = self.c.wrapping_add(i * self.ldc);
        // SAFETY: row `i < rows` of the tile: its panel checked that its `cols` elements lie in
        // the output, and the panel's maker promised that nothing else accesses them while the
        // panel lives (the tile borrows the panel); the slice borrows the tile mutably, so it
        // is the only one meanwhile.
        unsafe { std::slice::from_raw_parts_mut(first, self.cols) }
    }

    /// Stores the tile's rows of `acc` (its first `rows`), adding to what is there for a later
    /// block of inputs, and writing only the first `cols` columns.
    #[inline(always)]
    fn store<const R: usize>(&mut self, acc: &[[f32; NR]; R]) {
        let (accumulate, cols) = (self.operands.accumulate, self.cols);
        for (i, acc) in acc.iter().enumerate().take(self.operands.rows) {
            let c = self.row(i);
            match <&mut [f32; NR]>::try_from(&mut *c) {
                // A whole row, of a width known at compile time: a few vector instructions.
                Ok(whole) => write_row(whole, acc, accumulate),
                Err(_) => write_row(c, &acc[..cols], accumulate),
            }
        }
    }
}

#[inline(always)]
fn write_row(c: &mut [f32], row: &[f32], accumulate: bool) {
    if accumulate {
        for (c, v) in c.iter_mut().zip(row) {
            *c += v;
        }
    } else {
        c.copy_from_slice(row);
    }
}

/// The microkernel this CPU runs; a SIMD kernel's variant holds the token of its features.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Avx2Fma(Avx2Fma),
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub(super) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(token) = Avx2Fma::detect() {
            return Kernel::Avx2Fma(token);
        }
        Kernel::Portable
    }

    /// Runs the kernel on `tile`.
    ///
    /// A safe call: the tile's [`Panel`] checked its bounds and took its maker's promise that
    /// no other task accesses its outputs; and the CPU has the features of the kernel chosen,
    /// since a `Kernel::Avx2Fma` holds the token that only detection of AVX2 and FMA makes.
    #[inline(always)]
    pub(super) fn run(self, tile: &mut Tile) {
        match tile.operands.rows {
            1 => self.rows::<1>(tile),
            2 => self.rows::<2>(tile),
            3 => self.rows::<3>(tile),
            4 => self.rows::<4>(tile),
            5 => self.rows::<5>(tile),
            _ => self.rows::<MR>(tile),
        }
    }

    #[inline(always)]
    fn rows<const R: usize>(self, tile: &mut Tile) {
        match (self, tile.packed()) {
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2Fma(token), true) => {
                // SAFETY: `token` proves that the CPU has AVX2 and FMA, which `avx2_fma` enables.
                unsafe { avx2_fma::<R, true>(token, tile) }
            }
            #[cfg(target_arch = "x86_64")]
            (Kernel::Avx2Fma(token), false) => {
                // SAFETY: as above.
                unsafe { avx2_fma::<R, false>(token, tile) }
            }
            (Kernel::Portable, true) => portable::<R, true>(tile),
            (Kernel::Portable, false) => portable::<R, false>(tile),
        }
    }
}

/// The microkernel in plain Rust, for CPUs without AVX2 and FMA (and the reference the tests
/// compare the other with).
fn portable<const R: usize, const PACKED: bool>(tile: &mut Tile) {
    tile.check::<R, PACKED>();
    let mut acc = [[0f32; NR]; R];
    for (kk, line) in tile.operands.b.iter().enumerate() {
        // SAFETY: `kk` indexes a line of `b`, and `check` passed above.
        let x = unsafe { tile.inputs::<R, PACKED>(kk) };
        for (acc, &x) in acc.iter_mut().zip(x) {
            for (acc, &b) in acc.iter_mut().zip(&line.0) {
                *acc += x * b;
            }
        }
    }
    tile.store(&acc);
}

/// The microkernel on AVX2 with fused multiply-adds: the `R x 16` tile in `2R` registers,
/// four inputs per iteration, prefetching the next panel as it goes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2_fma<const R: usize, const PACKED: bool>(token: Avx2Fma, tile: &mut Tile) {
    use std::arch::x86_64::_mm256_setzero_ps;
    use std::arch::x86_64::{__m256, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps};
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};

    /// One input: `acc[i] += x[i] * b` for the tile's rows. (A nested fn does not inherit the
    /// features of the fn around it: it enables them, and takes their token, itself.)
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn step<const R: usize>(_: Avx2Fma, acc: &mut [[__m256; 2]; R], x: [&f32; R], b: &Line) {
        let [b0, b1]: [__m256; 2] = bytemuck::cast(b.0);
        for (acc, x) in acc.iter_mut().zip(x) {
            let x = _mm256_broadcast_ss(x);
            acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
        }
    }

    const UNROLL: usize = 4;
    tile.check::<R, PACKED>();
    let Operands { b, ahead, .. } = tile.operands;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let groups = b.chunks_exact(UNROLL);
    let whole = b.len() - groups.remainder().len();
    // The prefetches, spread over the groups of inputs. (A prefetch reads nothing the program
    // sees and never faults: its address needs no proof.)
    let per_group = ahead.len().div_ceil(groups.len().max(1));
    let (mut next, mut left) = (ahead.as_ptr(), ahead.len());
    // Input `kk` of row `i` is `a[kk * a_step + rows[i]]`; `a` below steps by whole groups.
    let (row, a_step) = if PACKED {
        (1, MR)
    } else {
        (tile.operands.lda, 1)
    };
    let rows: [usize; R] = std::array::from_fn(|i| i * row);
    let mut a = tile.operands.a.as_ptr();
    for group in groups {
        for _ in 0..per_group.min(left) {
            _mm_prefetch::<_MM_HINT_T0>(next.cast());
            next = next.wrapping_add(1);
        }
        left -= per_group.min(left);
        for (u, line) in group.iter().enumerate() {
            let x = rows.map(|offset| {
                // SAFETY: input `g * UNROLL + u` of row `i`, where `g` is this group and `line`
                // that input's line of `b`, and `offset = i * row`: inside `a` (`check` passed
                // and the panel checked the furthest input), which the tile borrows.
                unsafe { &*a.wrapping_add(u * a_step + offset) }
            });
            step(token, &mut acc, x, line);
        }
        a = a.wrapping_add(UNROLL * a_step);
    }
    for (kk, line) in b.iter().enumerate().skip(whole) {
        // SAFETY: `kk` indexes a line of `b`; `check` passed above.
        let x = unsafe { tile.inputs::<R, PACKED>(kk) };
        step(token, &mut acc, x, line);
    }
    if tile.cols == NR {
        // Whole rows: added and stored straight from the registers.
        let accumulate = tile.operands.accumulate;
        for (i, [lo, hi]) in acc.into_iter().enumerate() {
            let Ok(c) = <&mut [f32; NR]>::try_from(tile.row(i)) else {
                unreachable!("a row of `cols` elements")
            };
            let (lo, hi) = if accumulate {
                let [c_lo, c_hi]: [__m256; 2] = bytemuck::cast(*c);
                (_mm256_add_ps(c_lo, lo), _mm256_add_ps(c_hi, hi))
            } else {
                (lo, hi)
            };
            *c = bytemuck::cast([lo, hi]);
        }
    } else {
        tile.store(&acc.map(bytemuck::cast));
    }
}
