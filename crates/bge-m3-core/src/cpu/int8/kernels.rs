//! The int8 microkernels: `c[..rows, ..cols] (+)= a[..rows, ..4·groups] · b`, with `a` in `u8`
//! and `b` packed `i8` lines, summed in `i32`, and on the last block of inputs turned into f32
//! with the scales and zero points ([`Dequantize`]).
//!
//! - AVX-512 VNNI: `vpdpbusd` on 512-bit registers, a row's sixteen channels in one register;
//! - AVX-VNNI: `vpdpbusd` on 256-bit registers (two per row);
//! - AVX2: both operands widened to 16 bits and `vpmaddwd` (exact; `vpmaddubsw` would
//!   saturate its 16-bit pair sums at 2 · 255 · 127);
//! - portable: plain Rust.
//!
//! All four compute the same integer sums and the same f32 operations in the same order, so
//! their results are bit for bit equal (tested).

use super::{Line, GROUP, NR};

/// One call of a kernel: `rows` rows of activations against one panel of weights.
pub(crate) struct Tile<'a> {
    /// Row `i`'s inputs start at `a[i * lda]`: `4 · b.len()` of them.
    pub(crate) a: &'a [u8],
    /// The same, widened to 16 bits, for the kernels that read them so ([`Kernel::wide_rows`]);
    /// empty for the others.
    pub(crate) a_wide: &'a [u16],
    pub(crate) lda: usize,
    /// 1 ..= [`Kernel::rows`].
    pub(crate) rows: usize,
    /// The panel's lines for this block of inputs.
    pub(crate) b: &'a [Line],
    /// Row-major output, rows `ldc` apart; only the first `cols` (1 ..= [`NR`]) columns are
    /// accessed. Between blocks of inputs it holds the partial `i32` sums (their bits).
    pub(crate) c: *mut f32,
    pub(crate) ldc: usize,
    pub(crate) cols: usize,
    /// The first block of inputs: `c` holds nothing yet.
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

/// Proofs of CPU features, made only by detection (the fields are private to this module), so
/// that a kernel needing a feature cannot be chosen on a CPU without it.
#[cfg(target_arch = "x86_64")]
mod tokens {
    /// This CPU has AVX-512 F, BW and VNNI (and AVX2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct Avx512Vnni(());

    impl Avx512Vnni {
        pub(crate) fn detect() -> Option<Self> {
            let yes = std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512vnni");
            yes.then_some(Self(()))
        }
    }

    /// This CPU has AMX-TILE and AMX-INT8, this process may use them (Linux granted it the
    /// tile data), and the CPU has AVX-512 F, BW and VNNI too.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct Amx(());

    impl Amx {
        pub(crate) fn detect() -> Option<Self> {
            let yes = Avx512Vnni::detect().is_some() && super::super::amx::available();
            yes.then_some(Self(()))
        }
    }

    impl From<Amx> for Avx512Vnni {
        fn from(_: Amx) -> Self {
            Self(())
        }
    }

    /// This CPU has AVX2 and AVX-VNNI.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct AvxVnni(());

    impl AvxVnni {
        pub(crate) fn detect() -> Option<Self> {
            let yes =
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("avxvnni");
            yes.then_some(Self(()))
        }
    }

    /// This CPU has AVX2.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct Avx2(());

    impl Avx2 {
        pub(crate) fn detect() -> Option<Self> {
            std::is_x86_feature_detected!("avx2").then_some(Self(()))
        }
    }

    impl From<Avx512Vnni> for Avx2 {
        fn from(_: Avx512Vnni) -> Self {
            Self(())
        }
    }

    impl From<AvxVnni> for Avx2 {
        fn from(_: AvxVnni) -> Self {
            Self(())
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use tokens::Amx;
#[cfg(target_arch = "x86_64")]
use tokens::{Avx2, Avx512Vnni, AvxVnni};

/// The proof of AVX2 where there is one (none elsewhere).
#[cfg(target_arch = "x86_64")]
type Avx2Proof = Avx2;
#[cfg(not(target_arch = "x86_64"))]
type Avx2Proof = std::convert::Infallible;

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
    Avx2(Avx2),
    Portable,
}

impl Kernel {
    /// The fastest kernel of this CPU.
    pub(crate) fn detect() -> Self {
        Self::available()[0]
    }

    /// Every kernel this CPU can run, fastest first.
    pub(crate) fn available() -> Vec<Self> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            kernels.extend(Amx::detect().map(Kernel::Amx));
            kernels.extend(Avx512Vnni::detect().map(Kernel::Avx512Vnni));
            kernels.extend(AvxVnni::detect().map(Kernel::AvxVnni));
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
        let avx2: Option<Avx2Proof> = match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(token) => Some(Avx512Vnni::from(token).into()),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni(token) => Some(token.into()),
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni(token) => Some(token.into()),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2(token) => Some(token),
            Kernel::Portable => None,
        };
        match avx2 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the lengths were checked above; the token proves AVX2.
            Some(token) => unsafe { quantize_avx2(token, x, input_scales, values) },
            _ => quantize_portable(x, input_scales, values),
        }
    }

    /// Whether the kernel reads the activations widened to 16 bits (`Tile::a_wide`).
    pub(crate) fn wide_rows(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2(_) => true,
            _ => false,
        }
    }

    /// Most rows of one tile.
    pub(crate) fn rows(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx(_) | Kernel::Avx512Vnni(_) => 8,
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni(_) => 6,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2(_) => 6,
            Kernel::Portable => 4,
        }
    }

    /// Runs `tile`. The CPU features a kernel needs are proven by its token.
    ///
    /// # Safety
    /// `tile.c` addresses `tile.rows` rows of `tile.cols` elements, `tile.ldc` apart, valid for
    /// reads and writes, which nothing else accesses meanwhile; when `tile.first` is false they
    /// hold the partial sums this kernel wrote for the previous blocks.
    pub(crate) unsafe fn run(self, tile: &Tile) {
        check(tile, self.rows(), self.wide_rows());
        macro_rules! by_rows {
            ($kernel:ident, $token:expr, $($r:literal)*) => {
                match tile.rows {
                    $($r => $kernel::<$r>($token, tile),)*
                    _ => unreachable!("checked above"),
                }
            };
        }
        // SAFETY: the caller's promise about `c`; `check` proved the rest of the tile's shape.
        unsafe {
            match self {
                // The tiles of a product AMX does not take (`super::amx::fits`).
                #[cfg(target_arch = "x86_64")]
                Kernel::Amx(token) => by_rows!(avx512_vnni, token.into(), 1 2 3 4 5 6 7 8),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512Vnni(token) => by_rows!(avx512_vnni, token, 1 2 3 4 5 6 7 8),
                #[cfg(target_arch = "x86_64")]
                Kernel::AvxVnni(token) => by_rows!(avx_vnni, token, 1 2 3 4 5 6),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2(token) => by_rows!(avx2, token, 1 2 3 4 5 6),
                Kernel::Portable => by_rows!(portable, (), 1 2 3 4),
            }
        }
    }
}

/// Panics unless the tile's slices hold what the kernels read.
fn check(tile: &Tile, max_rows: usize, wide: bool) {
    assert!((1..=max_rows).contains(&tile.rows), "{} rows", tile.rows);
    assert!((1..=NR).contains(&tile.cols), "{} columns", tile.cols);
    let inputs = tile.b.len() * GROUP;
    let held = if wide {
        tile.a_wide.len()
    } else {
        tile.a.len()
    };
    assert!(
        held >= (tile.rows - 1) * tile.lda + inputs && tile.lda >= inputs,
        "the activations are shorter than the tile"
    );
    if let Some(d) = &tile.dequantize {
        assert!(d.row_scales.len() >= tile.rows && d.row_zeros.len() >= tile.rows);
        assert!(d.col_scales.len() >= NR && d.col_sums.len() >= NR);
    }
}

/// Adds the partial sums of earlier blocks to `acc` and writes the tile: the sums' bits, or on
/// the last block the results. In plain Rust; the SIMD kernels do the same operations on full
/// tiles.
///
/// # Safety
/// As [`Kernel::run`].
unsafe fn finish<const R: usize>(acc: &mut [[i32; NR]; R], tile: &Tile) {
    for (i, acc) in acc.iter_mut().enumerate() {
        // SAFETY: row `i` of the tile holds `cols` elements at `c + i * ldc` (the contract).
        let c = unsafe { std::slice::from_raw_parts_mut(tile.c.add(i * tile.ldc), tile.cols) };
        if !tile.first {
            for (acc, c) in acc.iter_mut().zip(c.iter()) {
                *acc += c.to_bits() as i32;
            }
        }
        match &tile.dequantize {
            None => {
                for (c, acc) in c.iter_mut().zip(acc.iter()) {
                    *c = f32::from_bits(*acc as u32);
                }
            }
            Some(d) => {
                let (scale, zero) = (d.row_scales[i], d.row_zeros[i]);
                for (j, c) in c.iter_mut().enumerate() {
                    let sum = acc[j] - zero * d.col_sums[j];
                    *c = sum as f32 * (scale * d.col_scales[j]);
                }
            }
        }
    }
}

/// The kernel in plain Rust.
///
/// # Safety
/// As [`Kernel::run`].
unsafe fn portable<const R: usize>((): (), tile: &Tile) {
    let mut acc = [[0i32; NR]; R];
    for (g, line) in tile.b.iter().enumerate() {
        for (i, acc) in acc.iter_mut().enumerate() {
            let a = &tile.a[i * tile.lda + g * GROUP..][..GROUP];
            for (j, acc) in acc.iter_mut().enumerate() {
                let w = &line.0[j * GROUP..][..GROUP];
                for t in 0..GROUP {
                    *acc += i32::from(a[t]) * i32::from(w[t]);
                }
            }
        }
    }
    // SAFETY: the caller's promise.
    unsafe { finish(&mut acc, tile) };
}

/// AVX-512 VNNI: row `i`'s sixteen sums in one register; each line is one `vpdpbusd` per row.
///
/// # Safety
/// As [`Kernel::run`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn avx512_vnni<const R: usize>(_: Avx512Vnni, tile: &Tile) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_si512(); R];
    let a = tile.a.as_ptr();
    for (g, line) in tile.b.iter().enumerate() {
        // SAFETY: a line is 64 bytes, 64-byte aligned.
        let w = unsafe { _mm512_load_si512(line.0.as_ptr().cast()) };
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `check` proved the four inputs of row `i` at group `g` inside `a`.
            let x = unsafe {
                a.add(i * tile.lda + g * GROUP)
                    .cast::<i32>()
                    .read_unaligned()
            };
            *acc = _mm512_dpbusd_epi32(*acc, _mm512_set1_epi32(x), w);
        }
    }
    if tile.cols < NR {
        let mut sums = [[0i32; NR]; R];
        for (sums, acc) in sums.iter_mut().zip(&acc) {
            // SAFETY: `sums` is sixteen i32.
            unsafe { _mm512_storeu_si512(sums.as_mut_ptr().cast(), *acc) };
        }
        // SAFETY: the caller's promise.
        return unsafe { finish(&mut sums, tile) };
    }
    for (i, acc) in acc.iter().enumerate() {
        // SAFETY: row `i` of the tile holds sixteen elements at `c + i * ldc` (the contract).
        let c = unsafe { tile.c.add(i * tile.ldc) };
        let mut sum = *acc;
        if !tile.first {
            // SAFETY: as above.
            sum = _mm512_add_epi32(sum, unsafe { _mm512_loadu_si512(c.cast()) });
        }
        let out = match &tile.dequantize {
            None => _mm512_castsi512_ps(sum),
            Some(d) => {
                // SAFETY: `check` proved sixteen column scales and sums.
                let (col_scales, col_sums) = unsafe {
                    (
                        _mm512_loadu_ps(d.col_scales.as_ptr()),
                        _mm512_loadu_si512(d.col_sums.as_ptr().cast()),
                    )
                };
                let zero = _mm512_set1_epi32(d.row_zeros[i]);
                let sum = _mm512_sub_epi32(sum, _mm512_mullo_epi32(zero, col_sums));
                let scale = _mm512_mul_ps(_mm512_set1_ps(d.row_scales[i]), col_scales);
                _mm512_mul_ps(_mm512_cvtepi32_ps(sum), scale)
            }
        };
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(c, out) };
    }
}

/// AVX-VNNI: row `i`'s sixteen sums in two registers.
///
/// # Safety
/// As [`Kernel::run`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn avx_vnni<const R: usize>(_: AvxVnni, tile: &Tile) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    let a = tile.a.as_ptr();
    for (g, line) in tile.b.iter().enumerate() {
        let p = line.0.as_ptr().cast::<__m256i>();
        // SAFETY: a line is 64 bytes, 64-byte aligned: two aligned 32-byte halves.
        let (w0, w1) = unsafe { (_mm256_load_si256(p), _mm256_load_si256(p.add(1))) };
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `check` proved the four inputs of row `i` at group `g` inside `a`.
            let x = unsafe {
                a.add(i * tile.lda + g * GROUP)
                    .cast::<i32>()
                    .read_unaligned()
            };
            let x = _mm256_set1_epi32(x);
            acc[0] = _mm256_dpbusd_avx_epi32(acc[0], x, w0);
            acc[1] = _mm256_dpbusd_avx_epi32(acc[1], x, w1);
        }
    }
    let mut sums = [[0i32; NR]; R];
    for (sums, acc) in sums.iter_mut().zip(&acc) {
        let p = sums.as_mut_ptr().cast::<__m256i>();
        // SAFETY: `sums` is sixteen i32: two 32-byte halves.
        unsafe {
            _mm256_storeu_si256(p, acc[0]);
            _mm256_storeu_si256(p.add(1), acc[1]);
        }
    }
    // SAFETY: the caller's promise.
    unsafe { finish(&mut sums, tile) };
}

/// AVX2: the panel in two halves of eight channels; each half-line's two 16-byte quarters
/// (four channels' four inputs) widened to 16 bits, each row's four inputs read widened and
/// repeated, and `vpmaddwd` giving two partial sums per channel, added pairwise at the end.
/// (`vpmaddubsw` would take the bytes as they are, but its 16-bit pair sums saturate at
/// `2 · 255 · 127`.)
///
/// # Safety
/// As [`Kernel::run`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<const R: usize>(_: Avx2, tile: &Tile) {
    use std::arch::x86_64::*;
    let a = tile.a_wide.as_ptr();
    let mut sums = [[0i32; NR]; R];
    for half in 0..2 {
        // acc[i][q]: channels 8 · half + 4q .. + 4 of row i, two partial sums each.
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        for (g, line) in tile.b.iter().enumerate() {
            let p = line.0[32 * half..].as_ptr().cast::<__m128i>();
            // SAFETY: a line is 64 bytes, 64-byte aligned: its quarters are aligned.
            let w = unsafe {
                [
                    _mm256_cvtepi8_epi16(_mm_load_si128(p)),
                    _mm256_cvtepi8_epi16(_mm_load_si128(p.add(1))),
                ]
            };
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: `check` proved the four inputs of row `i` at group `g` inside
                // `a_wide`: eight bytes.
                let x = unsafe {
                    a.add(i * tile.lda + g * GROUP)
                        .cast::<i64>()
                        .read_unaligned()
                };
                let x = _mm256_set1_epi64x(x);
                acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(x, w[0]));
                acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(x, w[1]));
            }
        }
        for (sums, acc) in sums.iter_mut().zip(&acc) {
            // Within each 128-bit half, `hadd` sums adjacent lanes: [c0 c1 c4 c5 | c2 c3 c6 c7];
            // the 64-bit lanes then go back in order.
            let pairs = _mm256_hadd_epi32(acc[0], acc[1]);
            let ordered = _mm256_permute4x64_epi64::<0b11_01_10_00>(pairs);
            // SAFETY: `sums[8 · half..]` holds eight i32.
            unsafe { _mm256_storeu_si256(sums[8 * half..].as_mut_ptr().cast(), ordered) };
        }
    }
    // SAFETY: the caller's promise.
    unsafe { finish(&mut sums, tile) };
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

/// [`Kernel::quantize_row`] on AVX2: eight values a step, the tail as in plain Rust.
///
/// # Safety
/// `values` holds at least `x.len()` bytes and `input_scales`, if given, `x.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(
    _: Avx2,
    x: &[f32],
    input_scales: Option<&[f32]>,
    values: &mut [u8],
) -> (f32, i32) {
    use std::arch::x86_64::*;
    let n = x.len();
    let body = n / 32 * 32;
    let load = |k: usize| {
        // SAFETY: `k + 8 <= body <= n`: inside `x`, and inside the scales (the contract).
        unsafe {
            let v = _mm256_loadu_ps(x.as_ptr().add(k));
            match input_scales {
                Some(s) => _mm256_mul_ps(v, _mm256_loadu_ps(s.as_ptr().add(k))),
                None => v,
            }
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
    let (mut los, mut his) = ([0f32; 8], [0f32; 8]);
    // SAFETY: eight f32 each.
    unsafe {
        _mm256_storeu_ps(los.as_mut_ptr(), lo);
        _mm256_storeu_ps(his.as_mut_ptr(), hi);
    }
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
    for k in (0..body).step_by(32) {
        let ab = _mm256_packus_epi32(quantize(k), quantize(k + 8));
        let cd = _mm256_packus_epi32(quantize(k + 16), quantize(k + 24));
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
        // SAFETY: `k + 32 <= body <= n <= values.len()`.
        unsafe { _mm256_storeu_si256(values.as_mut_ptr().add(k).cast(), bytes) };
    }
    for (k, value) in values[body..n].iter_mut().enumerate() {
        *value = quantize_one(scaled(body + k), inverse, zero);
    }
    values[n..].fill(zero as u8);
    (scale, zero as i32)
}
