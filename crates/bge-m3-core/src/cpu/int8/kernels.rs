//! The int8 microkernels: `c[..rows, ..cols] (+)= a[..rows, ..4·groups] · b`, with `a` in `u8`
//! and `b` packed `i8` lines, summed in `i32`, and on the last block of inputs turned into f32
//! with the scales and zero points ([`Dequantize`]).
//!
//! - AVX-512 VNNI: `vpdpbusd` on 512-bit registers, a row's sixteen channels in one register;
//! - AVX-VNNI: `vpdpbusd` on 256-bit registers (two per row);
//! - AVX2: `vpmaddubsw` (each input times its weight, adjacent products added in 16 bits),
//!   then `vpmaddwd` with ones (the pairs added in 32 bits). Exact only for weights of at most
//!   64 in magnitude ([`Kernel::weight_limit`]): a pair's sum, at most `2 · 255 · 64 = 32,640`,
//!   then fits 16 bits, where `2 · 255 · 127` would saturate;
//! - AVX-512 BW (AVX-512 without VNNI: Skylake-SP): AVX2's two steps on 512-bit registers, with
//!   the same limit;
//! - portable: plain Rust.
//!
//! All compute the same integer sums and the same f32 operations in the same order, so on the
//! same weights their results are bit for bit equal (tested). The weights a model gets depend
//! on its kernel's limit, chosen at load: AVX2's and AVX-512 BW's run with 7-bit weights.
//!
//! The proof is split as in the f32 microkernel (`matmul/kernel.rs`): [`Tile::new`] checks
//! every bound of a tile for the kernel that will run it and asks its caller only that no other
//! task accesses the tile's outputs while it lives; the kernels read the inputs unchecked
//! within those bounds and write the outputs through [`Tile::row`]; a SIMD kernel takes the
//! token of its CPU features (`cpu::arch`), which only run-time detection makes.

#[cfg(target_arch = "x86_64")]
use super::amx::Amx;
use super::{Line, GROUP, NR};
#[cfg(target_arch = "x86_64")]
use crate::cpu::arch::{Avx2, Avx512Bw, Avx512Vnni, AvxVnni};
use crate::cpu::shared::SharedMut;
use std::sync::OnceLock;

/// What one call of a kernel multiplies: `rows` rows of activations against one panel of
/// weights.
pub(crate) struct Operands<'a> {
    /// Row `i`'s inputs start at `a[i * lda]`: `4 · b.len()` of them.
    pub(crate) a: &'a [u8],
    pub(crate) lda: usize,
    /// 1 ..= [`Kernel::rows`].
    pub(crate) rows: usize,
    /// The panel's lines for this block of inputs.
    pub(crate) b: &'a [Line],
    /// Lines of the next panel to prefetch (into L1) while this tile runs, spread evenly over
    /// its inputs ([`crate::cpu::matmul::Walk`]).
    pub(crate) ahead: &'a [Line],
    /// The first block of inputs: the output holds nothing yet. (Between blocks it holds the
    /// partial `i32` sums, their bits.)
    pub(crate) first: bool,
    /// The last block of inputs: write f32 results with these.
    pub(crate) dequantize: Option<Dequantize<'a>>,
}

/// What turns a sum into a result: `y = f32(Σ - z_r · Σq_c) · (a_r · s_c)`.
pub(crate) struct Dequantize<'a> {
    /// `a_r`, one per row of the tile.
    pub(crate) row_scales: &'a [f32],
    /// `z_r`, one per row of the tile.
    pub(crate) row_zeros: &'a [i32],
    /// `s_c`, [`NR`] of them (zero past the matrix's channels).
    pub(crate) col_scales: &'a [f32],
    /// `Σ_k q[c, k]`, [`NR`] of them.
    pub(crate) col_sums: &'a [i32],
}

/// [`Operands`] whose bounds are checked for one kernel, and where their product goes.
pub(crate) struct Tile<'a> {
    kernel: Kernel,
    operands: Operands<'a>,
    /// Row-major output, rows `ldc` apart, of which the first `cols` (1 ..= [`NR`]) columns are
    /// accessed.
    c: *mut f32,
    ldc: usize,
    cols: usize,
}

impl<'a> Tile<'a> {
    /// The tile that `kernel` runs, writing the product of `operands` to elements `offset + i *
    /// ldc + j` of `out`, for `i < operands.rows` and `j < cols`. Panics if those elements, or
    /// the inputs the kernel reads (the rows and the dequantization's scales and sums), are out
    /// of bounds.
    ///
    /// # Safety
    /// Nothing else accesses those elements of `out` while the tile lives.
    // Once per tile, in the product's innermost loop: inlined, as the f32 product's is.
    #[inline(always)]
    pub(crate) unsafe fn new(
        kernel: Kernel,
        operands: Operands<'a>,
        out: &'a SharedMut<'_>,
        offset: usize,
        (ldc, cols): (usize, usize),
    ) -> Self {
        let Operands {
            a,
            lda,
            rows,
            b,
            ref dequantize,
            ..
        } = operands;
        assert!(
            (1..=kernel.rows()).contains(&rows) && (1..=NR).contains(&cols) && cols <= ldc,
            "a tile of {rows} x {cols}, rows {ldc} apart, for the {} kernel",
            kernel.name()
        );
        let inputs = b.len() * GROUP;
        assert!(
            lda >= inputs && (rows - 1).saturating_mul(lda).saturating_add(inputs) <= a.len(),
            "the activations are shorter than the tile"
        );
        if let Some(d) = dequantize {
            assert!(d.row_scales.len() >= rows && d.row_zeros.len() >= rows);
            assert!(d.col_scales.len() >= NR && d.col_sums.len() >= NR);
        }
        let extent = (rows - 1).saturating_mul(ldc).saturating_add(cols);
        let c = out.ptr_at(offset, extent);
        Self {
            kernel,
            operands,
            c,
            ldc,
            cols,
        }
    }

    /// Runs the tile's kernel.
    ///
    /// A safe call: [`Tile::new`] checked the tile's bounds for this kernel and took its
    /// caller's promise that no other task accesses its outputs; and the CPU has the features
    /// of the kernel, whose variant of [`Kernel`] holds the token that only their detection
    /// makes.
    #[inline(always)]
    pub(crate) fn run(&mut self) {
        /// Calls the SIMD kernel `$kernel` for the tile's number of rows, with the token of its
        /// features.
        #[cfg(target_arch = "x86_64")]
        macro_rules! simd_by_rows {
            ($kernel:ident, $token:expr, $($r:literal)*) => {
                match self.operands.rows {
                    $($r => {
                        // SAFETY: the token, which only detection of the features the kernel
                        // enables makes, proves that this CPU has them.
                        unsafe { $kernel::<$r>($token, self) }
                    })*
                    _ => unreachable!("checked by `Tile::new`"),
                }
            };
        }
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            // The tiles of a product AMX does not take (`super::amx::fits`).
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(token) => {
                simd_by_rows!(avx512_vnni, token.vnni(), 1 2 3 4 5 6 7 8)
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni(token) => simd_by_rows!(avx512_vnni, token, 1 2 3 4 5 6 7 8),
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni(token) => simd_by_rows!(avx_vnni, token, 1 2 3 4 5 6),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bw(token) => simd_by_rows!(avx512bw, token, 1 2 3 4 5 6 7 8),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2(token) => simd_by_rows!(avx2, token, 1 2 3 4),
            Kernel::Portable => match self.operands.rows {
                1 => portable::<1>((), self),
                2 => portable::<2>((), self),
                3 => portable::<3>((), self),
                4 => portable::<4>((), self),
                _ => unreachable!("checked by `Tile::new`"),
            },
        }
    }

    /// Checks, once per call of a kernel, that its `R` is the tile's: what [`Tile::inputs`]
    /// relies on.
    #[inline(always)]
    fn check<const R: usize>(&self) {
        assert!(R == self.operands.rows);
    }

    /// The four inputs of row `i` in group `g`, as one native-endian word (what `vpdpbusd`
    /// multiplies with four weights).
    ///
    /// # Safety
    /// `i < R` and `g < self.operands.b.len()`, and [`Tile::check`] passed for `R`.
    #[inline(always)]
    unsafe fn inputs(&self, i: usize, g: usize) -> i32 {
        let first = i * self.operands.lda + g * GROUP;
        // SAFETY: `i < rows` and `g < b.len()` (the caller's promise) put the four inputs at
        // most at `(rows - 1) * lda + 4 · b.len()`, which `new` checked against `a`'s length.
        let four = unsafe { self.operands.a.get_unchecked(first..first + GROUP) };
        i32::from_ne_bytes([four[0], four[1], four[2], four[3]])
    }

    /// [`Operands::ahead`] in as many parts as the tile has groups of inputs (fewer when it
    /// is shorter), the lines each group prefetches: spread evenly over the tile.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn ahead(&self) -> std::slice::Chunks<'a, Line> {
        let Operands { ahead, b, .. } = self.operands;
        ahead.chunks(ahead.len().div_ceil(b.len().max(1)).max(1))
    }

    /// Row `i` of the tile's output, its `cols` elements: one at a time (`&mut self`).
    #[inline(always)]
    fn row(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.operands.rows);
        let first = self.c.wrapping_add(i * self.ldc);
        // SAFETY: row `i < rows` of the tile: `new` checked that its `cols` elements lie in the
        // output, and its caller promised that nothing else accesses them while the tile lives;
        // the slice borrows the tile mutably, so it is the only one meanwhile.
        unsafe { std::slice::from_raw_parts_mut(first, self.cols) }
    }

    /// Row `i` of the output when the tile is [`NR`] columns wide, else `None`.
    #[inline(always)]
    fn whole_row(&mut self, i: usize) -> Option<&mut [f32; NR]> {
        <&mut [f32; NR]>::try_from(self.row(i)).ok()
    }
}

/// An int8 kernel this CPU can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// AMX's tiles where a product fits them ([`super::amx`]), AVX-512 VNNI for the rest.
    #[cfg(target_arch = "x86_64")]
    Amx(Amx),
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni(Avx512Vnni),
    #[cfg(target_arch = "x86_64")]
    AvxVnni(AvxVnni),
    #[cfg(target_arch = "x86_64")]
    Avx512Bw(Avx512Bw),
    #[cfg(target_arch = "x86_64")]
    Avx2(Avx2),
    Portable,
}

/// The environment variable that names the kernel to run instead of the fastest: one of
/// [`Kernel::NAMES`] that this CPU has. The same kernel gives the same results on every CPU
/// that has it, so a fleet of different CPUs that all name one (`avx2` on any x86-64 with AVX2
/// and FMA) computes the same int8 vectors everywhere, where the fastest kernels would give
/// AVX2-only machines other weights ([`Kernel::weight_limit`]).
pub(crate) const KERNEL_VARIABLE: &str = "BGE_M3_INT8_KERNEL";

impl Kernel {
    /// Every kernel's name, fastest first.
    pub(crate) const NAMES: [&'static str; 6] = [
        "amx",
        "avx512-vnni",
        "avx-vnni",
        "avx512bw",
        "avx2",
        "portable",
    ];

    /// The kernel of the products: the one [`KERNEL_VARIABLE`] names, else the fastest of this
    /// CPU. Decided once per process. A name that is unknown or not on this CPU is refused by
    /// [`Kernel::chosen`], which loading an int8 model calls first; here it is passed over.
    pub(crate) fn detect() -> Self {
        static KERNEL: OnceLock<Kernel> = OnceLock::new();
        *KERNEL.get_or_init(|| {
            Self::chosen()
                .ok()
                .flatten()
                .unwrap_or_else(|| Self::available()[0])
        })
    }

    /// The kernel [`KERNEL_VARIABLE`] names, if it is set and not empty; an error that says
    /// why if it names none this CPU has.
    pub(crate) fn chosen() -> Result<Option<Self>, String> {
        match std::env::var(KERNEL_VARIABLE) {
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err("is not valid UTF-8".to_string()),
            Ok(name) if name.trim().is_empty() => Ok(None),
            Ok(name) => Self::named(name.trim()).map(Some),
        }
    }

    /// The kernel called `name` (any case), if this CPU has it.
    pub(crate) fn named(name: &str) -> Result<Self, String> {
        let available = Self::available();
        if let Some(kernel) = available
            .iter()
            .find(|kernel| kernel.name().eq_ignore_ascii_case(name))
        {
            return Ok(*kernel);
        }
        let here = available.iter().map(|k| k.name()).collect::<Vec<_>>();
        Err(
            if Self::NAMES.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                format!(
                    "{name:?} is not available on this CPU, which has: {}",
                    here.join(", ")
                )
            } else {
                format!(
                    "{name:?} is not an int8 kernel: one of {} (this CPU has: {})",
                    Self::NAMES.join(", "),
                    here.join(", ")
                )
            },
        )
    }

    /// Every kernel this CPU can run, fastest first.
    pub(crate) fn available() -> Vec<Self> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            kernels.extend(Amx::detect().map(Kernel::Amx));
            kernels.extend(Avx512Vnni::detect().map(Kernel::Avx512Vnni));
            kernels.extend(AvxVnni::detect().map(Kernel::AvxVnni));
            kernels.extend(Avx512Bw::detect().map(Kernel::Avx512Bw));
            kernels.extend(Avx2::detect().map(Kernel::Avx2));
        }
        kernels.push(Kernel::Portable);
        kernels
    }

    /// The kernel's name, as logged and reported.
    pub(crate) fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(_) => "amx",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni(_) => "avx512-vnni",
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni(_) => "avx-vnni",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bw(_) => "avx512bw",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2(_) => "avx2",
            Kernel::Portable => "portable",
        }
    }

    /// Quantizes one row, each value multiplied by `input_scales` first if given, into
    /// `values` (its padding included) as [`super::QuantizedRows`] describes; returns its scale
    /// and zero point. A row with a value that is not finite gets the scale NaN. Every kernel
    /// gives the same bytes.
    pub(crate) fn quantize_row(
        self,
        x: &[f32],
        input_scales: Option<&[f32]>,
        values: &mut [u8],
    ) -> (f32, i32) {
        assert!(values.len() >= x.len(), "no room for the row");
        if let Some(scales) = input_scales {
            assert_eq!(scales.len(), x.len(), "input scales of the wrong width");
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(token) => {
                // SAFETY: `token` holds AVX-512 VNNI's, which proves AVX2 (it converts to its
                // token), which `quantize_avx2` enables.
                unsafe { quantize_avx2(token.vnni().into(), x, input_scales, values) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni(token) => {
                // SAFETY: `token` proves AVX2 (it converts to its token), which
                // `quantize_avx2` enables.
                unsafe { quantize_avx2(token.into(), x, input_scales, values) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni(token) => {
                // SAFETY: as above.
                unsafe { quantize_avx2(token.into(), x, input_scales, values) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bw(token) => {
                // SAFETY: as above.
                unsafe { quantize_avx2(token.into(), x, input_scales, values) }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2(token) => {
                // SAFETY: `token` proves AVX2, which `quantize_avx2` enables.
                unsafe { quantize_avx2(token, x, input_scales, values) }
            }
            Kernel::Portable => quantize_portable(x, input_scales, values),
        }
    }

    /// The largest weight magnitude whose sums the kernel computes exactly: 128 (every `i8`),
    /// but 64 for AVX2's and AVX-512 BW's, whose 16-bit pair sums would saturate beyond (`2 ·
    /// 255 · 64 = 32,640`). A model's weights are quantized to its kernel's limit, capped at 127
    /// ([`super::QuantizedMatrix::quantize_stacked`]).
    pub(crate) fn weight_limit(self) -> i32 {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2(_) | Kernel::Avx512Bw(_) => 64,
            _ => 128,
        }
    }

    /// Whether attention's scores `q · kᵀ` run in int8 under this kernel, rather than in f32
    /// as every other part of attention: where that measured faster. With AVX-512 VNNI it
    /// took 6-9% off a pass of two 830-token texts on a Zen 4 (2026-12-08); with the AVX2
    /// kernel, whose products are at most twice f32's, the 64 inputs of a score gained
    /// nothing; AMX and AVX-VNNI were not measured.
    pub(crate) fn scores_in_int8(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni(_) => true,
            _ => false,
        }
    }

    /// Most rows of one tile.
    pub(crate) fn rows(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(_) | Kernel::Avx512Vnni(_) | Kernel::Avx512Bw(_) => 8,
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni(_) => 6,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2(_) => 4,
            Kernel::Portable => 4,
        }
    }
}

/// Adds the partial sums of earlier blocks to `acc` and writes the tile: the sums' bits, or on
/// the last block the results. In plain Rust; the SIMD kernels do the same operations on full
/// tiles.
#[inline(always)]
fn finish<const R: usize>(acc: &mut [[i32; NR]; R], tile: &mut Tile) {
    let first = tile.operands.first;
    for (i, acc) in acc.iter_mut().enumerate().take(tile.operands.rows) {
        let dequantize = tile
            .operands
            .dequantize
            .as_ref()
            .map(|d| (d.row_scales[i], d.row_zeros[i], d.col_scales, d.col_sums));
        let c = tile.row(i);
        if !first {
            for (acc, c) in acc.iter_mut().zip(c.iter()) {
                *acc += c.to_bits() as i32;
            }
        }
        match dequantize {
            None => {
                for (c, acc) in c.iter_mut().zip(acc.iter()) {
                    *c = f32::from_bits(*acc as u32);
                }
            }
            Some((scale, zero, col_scales, col_sums)) => {
                for (j, c) in c.iter_mut().enumerate() {
                    let sum = acc[j] - zero * col_sums[j];
                    *c = sum as f32 * (scale * col_scales[j]);
                }
            }
        }
    }
}

/// The kernel in plain Rust.
fn portable<const R: usize>((): (), tile: &mut Tile) {
    tile.check::<R>();
    let mut acc = [[0i32; NR]; R];
    for (g, line) in tile.operands.b.iter().enumerate() {
        for (i, acc) in acc.iter_mut().enumerate() {
            let a = &tile.operands.a[i * tile.operands.lda + g * GROUP..][..GROUP];
            for (j, acc) in acc.iter_mut().enumerate() {
                let w = &line.0[j * GROUP..][..GROUP];
                for t in 0..GROUP {
                    *acc += i32::from(a[t]) * i32::from(w[t]);
                }
            }
        }
    }
    finish(&mut acc, tile);
}

/// Fetches `lines` into the L1 cache. (A prefetch reads nothing the program sees and never
/// faults.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse")]
#[inline]
fn prefetch(lines: &[Line]) {
    use std::arch::x86_64::*;
    for line in lines {
        _mm_prefetch::<_MM_HINT_T0>(line.0.as_ptr());
    }
}

/// AVX-512 VNNI: row `i`'s sixteen sums in one register; each line is one `vpdpbusd` per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512vnni")]
fn avx512_vnni<const R: usize>(_: Avx512Vnni, tile: &mut Tile) {
    use std::arch::x86_64::*;
    tile.check::<R>();
    let mut acc = [_mm512_setzero_si512(); R];
    let mut ahead = tile.ahead();
    for (g, line) in tile.operands.b.iter().enumerate() {
        prefetch(ahead.next().unwrap_or_default());
        // SAFETY: a line is 64 bytes, 64-byte aligned, borrowed for the call.
        let w = unsafe { _mm512_load_si512(line.0.as_ptr().cast()) };
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `i < R` and `g` indexes a line of `b`; `check` passed above.
            let x = unsafe { tile.inputs(i, g) };
            *acc = _mm512_dpbusd_epi32(*acc, _mm512_set1_epi32(x), w);
        }
    }
    finish_avx512(&acc, tile);
}

/// [`finish`] for a tile whose sums are one 512-bit register per row: the same operations,
/// sixteen columns at a time on whole tiles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f")]
#[inline]
fn finish_avx512<const R: usize>(acc: &[std::arch::x86_64::__m512i; R], tile: &mut Tile) {
    use std::arch::x86_64::*;
    if tile.cols < NR {
        let mut sums = [[0i32; NR]; R];
        for (sums, acc) in sums.iter_mut().zip(acc) {
            // SAFETY: `sums` is sixteen i32, borrowed mutably.
            unsafe { _mm512_storeu_si512(sums.as_mut_ptr().cast(), *acc) };
        }
        return finish(&mut sums, tile);
    }
    let first = tile.operands.first;
    for (i, acc) in acc.iter().enumerate() {
        let dequantize = match &tile.operands.dequantize {
            None => None,
            Some(d) => {
                // SAFETY: `Tile::new` checked sixteen column scales.
                let col_scales = unsafe { _mm512_loadu_ps(d.col_scales.as_ptr()) };
                // SAFETY: `Tile::new` checked sixteen column sums.
                let col_sums = unsafe { _mm512_loadu_si512(d.col_sums.as_ptr().cast()) };
                Some((d.row_scales[i], d.row_zeros[i], col_scales, col_sums))
            }
        };
        let Some(c) = tile.whole_row(i) else {
            unreachable!("a row of `NR` elements")
        };
        let mut sum = *acc;
        if !first {
            // SAFETY: `c` is sixteen f32, borrowed mutably.
            let partial = unsafe { _mm512_loadu_si512(c.as_ptr().cast()) };
            sum = _mm512_add_epi32(sum, partial);
        }
        let out = match dequantize {
            None => _mm512_castsi512_ps(sum),
            Some((row_scale, row_zero, col_scales, col_sums)) => {
                let zero = _mm512_set1_epi32(row_zero);
                let sum = _mm512_sub_epi32(sum, _mm512_mullo_epi32(zero, col_sums));
                let scale = _mm512_mul_ps(_mm512_set1_ps(row_scale), col_scales);
                _mm512_mul_ps(_mm512_cvtepi32_ps(sum), scale)
            }
        };
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(c.as_mut_ptr(), out) };
    }
}

/// AVX-VNNI: row `i`'s sixteen sums in two registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avxvnni")]
fn avx_vnni<const R: usize>(_: AvxVnni, tile: &mut Tile) {
    use std::arch::x86_64::*;
    tile.check::<R>();
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    let mut ahead = tile.ahead();
    for (g, line) in tile.operands.b.iter().enumerate() {
        prefetch(ahead.next().unwrap_or_default());
        let [w0, w1]: [__m256i; 2] = bytemuck::cast(line.0);
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `i < R` and `g` indexes a line of `b`; `check` passed above.
            let x = _mm256_set1_epi32(unsafe { tile.inputs(i, g) });
            acc[0] = _mm256_dpbusd_avx_epi32(acc[0], x, w0);
            acc[1] = _mm256_dpbusd_avx_epi32(acc[1], x, w1);
        }
    }
    let mut sums: [[i32; NR]; R] = acc.map(bytemuck::cast);
    finish(&mut sums, tile);
}

/// AVX2: row `i`'s sixteen sums in two registers, as AVX-VNNI's, each `vpdpbusd` done in
/// two steps: `vpmaddubsw` multiplies the row's four inputs with four weights of eight channels
/// and adds the products in pairs (16 bits: exact for weights within
/// [`Kernel::weight_limit`], which [`super::matmul_with`] checks), and `vpmaddwd` with ones
/// adds the pairs into 32 bits. Four rows: six would need more than the sixteen registers
/// (twelve sums, two weights, the ones, the inputs, a product) and ran slower.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2<const R: usize>(_: Avx2, tile: &mut Tile) {
    use std::arch::x86_64::*;
    tile.check::<R>();
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    let mut ahead = tile.ahead();
    for (g, line) in tile.operands.b.iter().enumerate() {
        prefetch(ahead.next().unwrap_or_default());
        let [w0, w1]: [__m256i; 2] = bytemuck::cast(line.0);
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `i < R` and `g` indexes a line of `b`; `check` passed above.
            let x = _mm256_set1_epi32(unsafe { tile.inputs(i, g) });
            let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones);
            let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones);
            acc[0] = _mm256_add_epi32(acc[0], p0);
            acc[1] = _mm256_add_epi32(acc[1], p1);
        }
    }
    let mut sums: [[i32; NR]; R] = acc.map(bytemuck::cast);
    finish(&mut sums, tile);
}

/// AVX-512 BW (Skylake-SP: AVX-512 without VNNI): AVX2's two steps on 512-bit registers, a
/// row's sixteen sums in one register as AVX-512 VNNI's, so a line is one `vpmaddubsw` and one
/// `vpmaddwd` per row. The same 7-bit weights as AVX2's ([`Kernel::weight_limit`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw")]
fn avx512bw<const R: usize>(_: Avx512Bw, tile: &mut Tile) {
    use std::arch::x86_64::*;
    tile.check::<R>();
    let ones = _mm512_set1_epi16(1);
    let mut acc = [_mm512_setzero_si512(); R];
    let mut ahead = tile.ahead();
    for (g, line) in tile.operands.b.iter().enumerate() {
        prefetch(ahead.next().unwrap_or_default());
        // SAFETY: a line is 64 bytes, 64-byte aligned, borrowed for the call.
        let w = unsafe { _mm512_load_si512(line.0.as_ptr().cast()) };
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `i < R` and `g` indexes a line of `b`; `check` passed above.
            let x = _mm512_set1_epi32(unsafe { tile.inputs(i, g) });
            let pairs = _mm512_maddubs_epi16(x, w);
            *acc = _mm512_add_epi32(*acc, _mm512_madd_epi16(pairs, ones));
        }
    }
    finish_avx512(&acc, tile);
}

/// The range of a row's (scaled) values, whether they are all finite, and from it the scale,
/// zero point and the reciprocal of the scale, or `None` for a row without a step (all zeros:
/// scale 1, zero point 0) or not finite (scale NaN).
fn step(lo: f32, hi: f32, finite: bool) -> Result<(f32, f32, f32), (f32, i32)> {
    if !finite {
        return Err((f32::NAN, 0));
    }
    let scale = (hi - lo) / 255.0;
    if scale == 0.0 {
        return Err((1.0, 0));
    }
    let inverse = 1.0 / scale;
    let zero = (-lo * inverse).round_ties_even().clamp(0.0, 255.0);
    Ok((scale, inverse, zero))
}

/// One value quantized: the definition every kernel follows.
#[inline(always)]
fn quantize_one(v: f32, inverse: f32, zero: f32) -> u8 {
    (v * inverse + zero).round_ties_even().clamp(0.0, 255.0) as u8
}

/// [`Kernel::quantize_row`] in plain Rust.
fn quantize_portable(x: &[f32], input_scales: Option<&[f32]>, values: &mut [u8]) -> (f32, i32) {
    let scaled = |k: usize| match input_scales {
        Some(s) => x[k] * s[k],
        None => x[k],
    };
    let (mut lo, mut hi, mut finite) = (0f32, 0f32, true);
    for k in 0..x.len() {
        let v = scaled(k);
        lo = lo.min(v);
        hi = hi.max(v);
        finite &= v.is_finite();
    }
    let (scale, inverse, zero) = match step(lo, hi, finite) {
        Ok(step) => step,
        Err(empty) => {
            values.fill(0);
            return empty;
        }
    };
    for (k, q) in values[..x.len()].iter_mut().enumerate() {
        *q = quantize_one(scaled(k), inverse, zero);
    }
    values[x.len()..].fill(zero as u8);
    (scale, zero as i32)
}

/// [`Kernel::quantize_row`] on AVX2: eight values a step, the tail as in plain Rust. Panics
/// unless `values` holds at least `x.len()` bytes and `input_scales`, if given, `x.len()`
/// values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn quantize_avx2(
    _: Avx2,
    x: &[f32],
    input_scales: Option<&[f32]>,
    values: &mut [u8],
) -> (f32, i32) {
    use std::arch::x86_64::*;
    let n = x.len();
    assert!(values.len() >= n, "no room for the row");
    if let Some(s) = input_scales {
        assert_eq!(s.len(), n, "input scales of the wrong width");
    }
    let body = n / 32 * 32;
    // Eight values from `k` (checked: `k + 8 <= body`), scaled.
    let load = |k: usize| {
        let eight = |v: &[f32]| -> __m256 {
            let Ok(v) = <[f32; 8]>::try_from(&v[k..k + 8]) else {
                unreachable!("eight values")
            };
            bytemuck::cast(v)
        };
        match input_scales {
            Some(s) => _mm256_mul_ps(eight(x), eight(s)),
            None => eight(x),
        }
    };
    let scaled = |k: usize| match input_scales {
        Some(s) => x[k] * s[k],
        None => x[k],
    };
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let infinity = _mm256_set1_ps(f32::INFINITY);
    let (mut lo, mut hi, mut bad) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    for k in (0..body).step_by(8) {
        let v = load(k);
        lo = _mm256_min_ps(lo, v);
        hi = _mm256_max_ps(hi, v);
        // |v| is infinite, or v is NaN (unordered).
        bad = _mm256_or_ps(
            bad,
            _mm256_cmp_ps::<_CMP_NLT_UQ>(_mm256_and_ps(v, magnitude), infinity),
        );
    }
    let (los, his): ([f32; 8], [f32; 8]) = (bytemuck::cast(lo), bytemuck::cast(hi));
    let mut finite = _mm256_movemask_ps(bad) == 0;
    let (mut lo, mut hi) = (
        los.iter().fold(0f32, |m, &v| m.min(v)),
        his.iter().fold(0f32, |m, &v| m.max(v)),
    );
    for k in body..n {
        let v = scaled(k);
        lo = lo.min(v);
        hi = hi.max(v);
        finite &= v.is_finite();
    }
    let (scale, inverse, zero) = match step(lo, hi, finite) {
        Ok(step) => step,
        Err(empty) => {
            values.fill(0);
            return empty;
        }
    };
    let (inverse8, zero8) = (_mm256_set1_ps(inverse), _mm256_set1_ps(zero));
    let (floor, ceiling) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
    let quantize = |k: usize| {
        let q = _mm256_add_ps(_mm256_mul_ps(load(k), inverse8), zero8);
        let q = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(q);
        _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(q, floor), ceiling))
    };
    // Gathers the 32 bytes of four packed vectors back into order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (k, out) in (0..body)
        .step_by(32)
        .zip(values[..body].chunks_exact_mut(32))
    {
        let ab = _mm256_packus_epi32(quantize(k), quantize(k + 8));
        let cd = _mm256_packus_epi32(quantize(k + 16), quantize(k + 24));
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
        out.copy_from_slice(&bytemuck::cast::<__m256i, [u8; 32]>(bytes));
    }
    for (k, value) in values[body..n].iter_mut().enumerate() {
        *value = quantize_one(scaled(body + k), inverse, zero);
    }
    values[n..].fill(zero as u8);
    (scale, zero as i32)
}

/// Adding then subtracting 1.5 · 2^23 rounds any |v| < 2^22 to an integer, ties to even, in
/// the current (default) rounding mode: the same as `round_ties_even`, which is a library call
/// per value, while this is two additions, on vectors too.
const ROUND: f32 = 12_582_912.0;

/// The scale of [`super::quantize_symmetric`] for a row whose largest magnitude, NaNs left
/// out, is `max`: 1 for a row of zeros or one with an infinity.
fn symmetric_scale(max: f32, limit: f32) -> f32 {
    if max > 0.0 && max.is_finite() {
        max / limit
    } else {
        1.0
    }
}

/// One value of [`super::quantize_symmetric`]: the definition both quantizers follow.
#[inline(always)]
fn symmetric_one(w: f32, scale: f32, limit: f32) -> i8 {
    (((w / scale).clamp(-limit, limit) + ROUND) - ROUND) as i8
}

/// [`super::quantize_symmetric`] into `values`, as long as `row`, in plain Rust; returns the
/// scale.
pub(super) fn symmetric_portable(row: &[f32], limit: f32, values: &mut [i8]) -> f32 {
    assert_eq!(values.len(), row.len(), "values for {} inputs", row.len());
    let max = row.iter().fold(0f32, |m, &w| m.max(w.abs()));
    let scale = symmetric_scale(max, limit);
    for (v, &w) in values.iter_mut().zip(row) {
        *v = symmetric_one(w, scale, limit);
    }
    scale
}

/// [`symmetric_portable`] on AVX2, thirty-two values a step and the tail as in plain Rust: the
/// same scale and bytes. (The largest magnitude is the same whatever the order it is found in,
/// and each value goes through the same IEEE operations, NaN included.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn symmetric_avx2(_: Avx2, row: &[f32], limit: f32, values: &mut [i8]) -> f32 {
    use std::arch::x86_64::*;
    let n = row.len();
    assert_eq!(values.len(), n, "values for {n} inputs");
    let body = n / 32 * 32;
    let load = |k: usize| -> __m256 {
        let Ok(v) = <[f32; 8]>::try_from(&row[k..k + 8]) else {
            unreachable!("eight values")
        };
        bytemuck::cast(v)
    };
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut max = _mm256_setzero_ps();
    for k in (0..body).step_by(8) {
        // `vmaxps` answers its second operand where either is NaN: a NaN value is left out,
        // as `f32::max` leaves it out.
        max = _mm256_max_ps(_mm256_and_ps(load(k), magnitude), max);
    }
    let lanes: [f32; 8] = bytemuck::cast(max);
    let max = row[body..]
        .iter()
        .fold(lanes.iter().fold(0f32, |m, &v| m.max(v)), |m, &w| {
            m.max(w.abs())
        });
    let scale = symmetric_scale(max, limit);
    let (scale8, round) = (_mm256_set1_ps(scale), _mm256_set1_ps(ROUND));
    let (low, high) = (_mm256_set1_ps(-limit), _mm256_set1_ps(limit));
    let quantize = |k: usize| {
        let q = _mm256_div_ps(load(k), scale8);
        // The bound first: a NaN quotient stays NaN, as through `f32::clamp`.
        let q = _mm256_min_ps(high, _mm256_max_ps(low, q));
        let q = _mm256_sub_ps(_mm256_add_ps(q, round), round);
        // A NaN converts to `i32::MIN`; `as i8` makes it 0.
        let ordered = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_ORD_Q>(q, q));
        _mm256_and_si256(_mm256_cvttps_epi32(q), ordered)
    };
    // Gathers the 32 bytes of four packed vectors back into order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (k, out) in (0..body)
        .step_by(32)
        .zip(values[..body].chunks_exact_mut(32))
    {
        let ab = _mm256_packs_epi32(quantize(k), quantize(k + 8));
        let cd = _mm256_packs_epi32(quantize(k + 16), quantize(k + 24));
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
        out.copy_from_slice(&bytemuck::cast::<__m256i, [i8; 32]>(bytes));
    }
    for (v, &w) in values[body..].iter_mut().zip(&row[body..]) {
        *v = symmetric_one(w, scale, limit);
    }
    scale
}
