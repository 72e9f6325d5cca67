//! The int8 product on AMX (Intel's Advanced Matrix Extensions: Sapphire Rapids and later Xeons),
//! where `tdpbusd` multiplies a 16 x 64 tile of `u8` activations by a 64 x 16 tile of `i8`
//! weights into a 16 x 16 tile of `i32` sums: 16,384 multiply-adds in one instruction, against
//! 64 for AVX-512 VNNI's `vpdpbusd`.
//!
//! The packed weights need no other layout: a weight tile is sixteen consecutive [`Line`]s of a
//! panel (64 inputs of its sixteen channels, four inputs per channel in each 64-byte row), which
//! is the order `tdpbusd` reads, and an activation tile is sixteen rows of [`QuantizedRows`] read
//! in place, `stride` bytes apart. Each call of [`pair`] computes 32 rows by 32 channels (two
//! activation tiles by two weight tiles into four sum tiles: the eight tile registers) over every
//! input, in one `asm!` block that configures the tiles, runs the loops, stores the sums and
//! releases the tiles, so that no tile state lives between blocks. The sums are exact, as in
//! every kernel, and the dequantization is [`super::kernels`]' AVX-512 one, operation for
//! operation: the results are the same bits (`int8/tests.rs`).
//!
//! Shapes: the inputs must be a multiple of 64 (each row's stride: BGE-M3's 1,024 and 4,096,
//! MiniLM's 384 and 1,536), and the product at least 16 rows; otherwise, and for nothing else,
//! the AVX-512 VNNI kernel runs ([`fits`]). Rows and panels past the last full pair are covered
//! by tiles that overlap the ones before them (a tile starts at most 16 rows before the end),
//! computing some sums twice rather than reading past the rows.

use super::{Line, QuantizedMatrix, QuantizedRows, GROUP, KC, MC, NR};
use crate::cpu::arch::Avx512Vnni;
use crate::cpu::shared::SharedMut;
use std::arch::asm;
use std::arch::x86_64::*;

/// Rows of an activation tile and of a sum tile.
const TILE_ROWS: usize = 16;
/// Inputs of one tile step: an activation tile's 64 bytes per row, a weight tile's 16 lines.
const TILE_INPUTS: usize = 64;

/// The proof that this CPU has AMX's int8 tiles (AMX-TILE and AMX-INT8, read from CPUID:
/// `is_x86_feature_detected!` cannot name them on stable Rust) and that Linux lets this process
/// use them, holding the proof of the AVX-512 VNNI every such CPU has (the products the tiles do
/// not take, and the dequantization, run on it). Made only by [`Amx::detect`]: the field is
/// private to this module, which is why the token lives here and not in `cpu::arch` with the
/// others (its detection needs a system call, and `arch` has no unsafe code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Amx {
    vnni: Avx512Vnni,
}

impl Amx {
    /// The token, if this CPU has AMX's int8 tiles and AVX-512 VNNI, and Linux lets this
    /// process use the tiles (asked once).
    pub(crate) fn detect() -> Option<Self> {
        Avx512Vnni::detect()
            .filter(|_| available())
            .map(|vnni| Self { vnni })
    }

    /// The proof of AVX-512 VNNI it holds.
    pub(crate) fn vnni(self) -> Avx512Vnni {
        self.vnni
    }
}

/// Whether [`columns`] takes this product: inputs in whole tile steps and at least one full
/// activation tile of rows.
pub(super) fn fits(x: &QuantizedRows) -> bool {
    x.stride.is_multiple_of(TILE_INPUTS)
        && x.rows >= TILE_ROWS
        && x.values.len() >= x.rows * x.stride
}

/// `ldtilecfg`'s 64-byte operand: palette 1, the eight tiles 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    /// Bytes per row of each tile.
    colsb: [u16; 16],
    /// Rows of each tile.
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// One block of inputs ([`KC`]) for [`pair`]: where its lines of the two panels start, and its
/// tile steps. `#[repr(C)]`: the `asm!` block reads the three words at offsets 0, 8 and 16.
#[repr(C)]
struct Block {
    b0: *const Line,
    b1: *const Line,
    steps: usize,
}

/// The output columns of `panels`, for every row of `x`: [`super::matmul_with`]'s task for this
/// kernel, when [`fits`] says so.
///
/// # Safety
/// No other task accesses the columns of `panels` in `out` (`x.rows` rows of `w.out` elements)
/// meanwhile.
pub(super) unsafe fn columns(
    token: Amx,
    x: &QuantizedRows,
    w: &QuantizedMatrix,
    panels: std::ops::Range<usize>,
    out: &SharedMut,
) {
    let (rows, stride) = (x.rows, x.stride);
    assert!(fits(x), "a product AMX does not take");
    assert_eq!(
        stride,
        w.inner.next_multiple_of(GROUP),
        "rows for another matrix"
    );
    assert!(panels.end <= w.panels, "panels past the matrix");
    if panels.is_empty() {
        return;
    }
    let blocks = stride.div_ceil(KC);
    // Where each 16-row tile of a chunk starts: every 16 rows, the last one moved back so that
    // it ends at the last row.
    let tile_start = |r: usize| r.min(rows - TILE_ROWS);
    let mut sums = Sums([0; 4 * TILE_ROWS * NR]);
    let mut plan = Vec::with_capacity(blocks);
    for ic in (0..rows).step_by(MC) {
        let chunk = ic..(ic + MC).min(rows);
        for p0 in panels.clone().step_by(2) {
            // An odd last panel is paired with itself.
            let p1 = (p0 + 1).min(panels.end - 1);
            plan.clear();
            plan.extend((0..blocks).map(|block| {
                let k0 = block * KC;
                let groups = KC.min(stride - k0) / GROUP;
                Block {
                    b0: w.panel(k0, groups, p0).as_ptr(),
                    b1: w.panel(k0, groups, p1).as_ptr(),
                    steps: groups * GROUP / TILE_INPUTS,
                }
            }));
            for r in chunk.clone().step_by(2 * TILE_ROWS) {
                let t0 = tile_start(r);
                let t1 = tile_start((r + TILE_ROWS).min(chunk.end - 1));
                // SAFETY: tiles `t0` and `t1` are 16 whole rows of `x` (`tile_start` and `fits`),
                // every block's lines are `w`'s (`panel`), its steps within them and within the
                // rows' stride (a multiple of 64 inputs); `sums` is four tiles of sums.
                unsafe {
                    pair(
                        token,
                        x.values[t0 * stride..].as_ptr(),
                        x.values[t1 * stride..].as_ptr(),
                        stride,
                        &plan,
                        &mut sums,
                    );
                }
                for (tile, (t, p)) in [(t0, p0), (t0, p1), (t1, p0), (t1, p1)]
                    .into_iter()
                    .enumerate()
                {
                    // SAFETY: rows `t..t + 16` of panel `p`'s columns, which the caller
                    // promised no other task accesses.
                    unsafe { dequantize(token, &sums, tile, x, w, t, p, out) };
                }
            }
        }
    }
}

/// Four tiles of sums, row-major 16 x 16 each: `(t0, p0)`, `(t0, p1)`, `(t1, p0)`, `(t1, p1)`.
#[repr(C, align(64))]
struct Sums([i32; 4 * TILE_ROWS * NR]);

/// The sums of two activation tiles (`a0`, `a1`: 16 rows each, `lda` bytes apart) by the two
/// panels of `plan` over all its blocks, into `sums`.
///
/// # Safety
/// Each activation tile's 16 rows hold, from `a0`/`a1`, `64 · Σ steps` bytes each; each block's
/// `b0` and `b1` address `16 · steps` lines; the token proves AMX-TILE and AMX-INT8 and the
/// process's permission to use them.
#[inline]
unsafe fn pair(_: Amx, a0: *const u8, a1: *const u8, lda: usize, plan: &[Block], sums: &mut Sums) {
    if plan.is_empty() {
        return;
    }
    // SAFETY: the caller's promise: every load is inside the tiles and lines described, the one
    // store is `sums`' 4 KiB; the tile registers are configured, used and released in this one
    // block, and no other code uses them.
    unsafe {
        asm!(
            "ldtilecfg [{config}]",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "mov {b0}, [{block}]",
            "mov {b1}, [{block} + 8]",
            "mov {steps}, [{block} + 16]",
            "3:",
            "tileloadd tmm4, [{a0} + {lda} * 1]",
            "tileloadd tmm6, [{b0} + {line} * 1]",
            "tdpbusd tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {line} * 1]",
            "tdpbusd tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {lda} * 1]",
            "tdpbusd tmm2, tmm5, tmm6",
            "tdpbusd tmm3, tmm5, tmm7",
            "add {a0}, 64",
            "add {a1}, 64",
            "add {b0}, 1024",
            "add {b1}, 1024",
            "dec {steps}",
            "jnz 3b",
            "add {block}, 24",
            "dec {blocks}",
            "jnz 2b",
            "tilestored [{sums} + {line} * 1], tmm0",
            "tilestored [{sums} + {line} * 1 + 1024], tmm1",
            "tilestored [{sums} + {line} * 1 + 2048], tmm2",
            "tilestored [{sums} + {line} * 1 + 3072], tmm3",
            "tilerelease",
            config = in(reg) &CONFIG,
            block = inout(reg) plan.as_ptr() => _,
            blocks = inout(reg) plan.len() => _,
            a0 = inout(reg) a0 => _,
            a1 = inout(reg) a1 => _,
            lda = in(reg) lda,
            line = in(reg) std::mem::size_of::<Line>(),
            sums = in(reg) sums.0.as_mut_ptr(),
            b0 = out(reg) _,
            b1 = out(reg) _,
            steps = out(reg) _,
            options(nostack),
        );
    }
}

/// Writes tile `tile` of `sums`, rows `t..t + 16` by panel `p`'s channels, into `out` as
/// results: `y = f32(Σ - z_r · Σq_c) · (a_r · s_c)`, the operations of the AVX-512 VNNI kernel's
/// last block in the same order.
///
/// # Safety
/// No other task accesses rows `t..t + 16` of panel `p`'s columns in `out` meanwhile. (The
/// token proves the AVX-512 the function enables: it holds AVX-512 VNNI's.)
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,avx512f,avx512vnni")]
unsafe fn dequantize(
    _: Amx,
    sums: &Sums,
    tile: usize,
    x: &QuantizedRows,
    w: &QuantizedMatrix,
    t: usize,
    p: usize,
    out: &SharedMut,
) {
    let (n, c0) = (w.out, p * NR);
    let cols = NR.min(n - c0);
    // Channels past the matrix's are not written.
    let mask: __mmask16 = if cols == NR { !0 } else { (1 << cols) - 1 };
    let tile = &sums.0[tile * TILE_ROWS * NR..][..TILE_ROWS * NR];
    let (scales, col_sums) = (&w.scales[c0..c0 + NR], &w.sums[c0..c0 + NR]);
    // SAFETY: sixteen f32 (`w.scales` holds `NR` per panel).
    let col_scales = unsafe { _mm512_loadu_ps(scales.as_ptr()) };
    // SAFETY: sixteen i32 (`w.sums` holds `NR` per panel).
    let col_sums = unsafe { _mm512_loadu_si512(col_sums.as_ptr().cast()) };
    // The tile's sixteen rows of `cols` elements, `n` apart, checked once here: a check on
    // every row put two stores (its panic message's arguments) into the loop, which waited
    // behind the stores to `out` and nearly tripled this function's time.
    let first = out.ptr_at(t * n + c0, (TILE_ROWS - 1) * n + cols);
    for (i, row) in tile.chunks_exact(NR).enumerate() {
        let r = t + i;
        // SAFETY: `row` is sixteen i32.
        let sum = unsafe { _mm512_loadu_si512(row.as_ptr().cast()) };
        let zero = _mm512_set1_epi32(x.zeros[r]);
        let sum = _mm512_sub_epi32(sum, _mm512_mullo_epi32(zero, col_sums));
        let scale = _mm512_mul_ps(_mm512_set1_ps(x.scales[r]), col_scales);
        let y = _mm512_mul_ps(_mm512_cvtepi32_ps(sum), scale);
        let c = first.wrapping_add(i * n);
        // SAFETY: row `i` of the tile's sixteen, whose `cols` elements from `c` lie in `out`
        // (`ptr_at` checked the whole tile's extent); the mask keeps the store to them (masked
        // lanes are not accessed), and no other task accesses them (the caller's promise).
        unsafe { _mm512_mask_storeu_ps(c, mask, y) };
    }
}

/// Whether this CPU and this process can run AMX's int8 tiles, asking Linux for the permission
/// once (`arch_prctl(ARCH_REQ_XCOMP_PERM)`: the tile data is an XSAVE component a process must
/// request before its first tile instruction).
fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if cfg!(miri) {
            return false;
        }
        let leaf7 = __cpuid_count(7, 0);
        let (tile, int8) = (leaf7.edx >> 24 & 1 == 1, leaf7.edx >> 25 & 1 == 1);
        tile && int8 && request_permission()
    })
}

/// Linux's `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: true when granted. The system
/// call is made directly (x86-64's `syscall` instruction, call number 158), the one place the
/// core needs the kernel for.
#[cfg(target_os = "linux")]
fn request_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let result: i64;
    // SAFETY: Linux's system call convention on x86-64 (number in rax, arguments in rdi and rsi,
    // rcx and r11 clobbered, the result in rax); the call changes only which XSAVE components
    // this process may use, and touches no memory of ours.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => result,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result == 0
}

/// Other systems: not asked, not used.
#[cfg(not(target_os = "linux"))]
fn request_permission() -> bool {
    false
}
