//! The products against an f64 reference, and their row-order invariants.

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
    let dst = SharedMut::new(&mut ours);
    // SAFETY: one task writes every column of `ours`, which nothing else accesses.
    unsafe { columns(kernel, &x, rows, &packed, 0..packed.panels, &dst, (0, out)) };
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

/// The portable kernel, and the SIMD one where this CPU has it.
fn kernels() -> Vec<Kernel> {
    let mut kernels = vec![Kernel::Portable];
    #[cfg(target_arch = "x86_64")]
    if let Some(token) = crate::cpu::arch::Avx2Fma::detect() {
        kernels.push(Kernel::Avx2Fma(token));
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
    let dst = SharedMut::new(&mut strided);
    // SAFETY: nothing else accesses `strided`.
    unsafe { matmul_strided(&x, rows, &packed, &dst, (0, ldc)) };
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

/// The packed rows start a cache line whatever the allocator's history, as the workspace's
/// buffers do: where they started was chance before (docs/BENCHMARKS.md).
#[test]
fn packed_rows_start_a_cache_line() {
    let (rows, inner, wide) = (7, 40, 16 * PACK_ROWS_PANELS);
    let w = PackedMatrix::pack(&random(wide * inner, 12), wide, inner);
    std::thread::spawn(move || {
        for rows in [rows, rows + MC] {
            let mut out = vec![0.0; rows * wide];
            matmul_here(&random(rows * inner, 13), rows, &w, &mut out);
            let start = PACKED_ROWS.with_borrow(|packed| packed.as_ptr() as usize);
            assert_eq!(start % 64, 0, "packed rows at {start:#x}, {rows} rows");
        }
    })
    .join()
    .unwrap();
}

/// No rows, no work: nothing is written, and the thread does not even set up its buffer for
/// packed rows.
#[test]
fn no_rows_is_no_work() {
    let packed = PackedMatrix::pack(&random(12, 7), 4, 3);
    // A thread of its own, whose buffer for packed rows nothing has touched yet.
    std::thread::spawn(move || {
        matmul(&[], 0, &packed, &mut []);
        let mut sentinel = vec![-1.0; 8];
        let dst = SharedMut::new(&mut sentinel);
        // SAFETY: nothing else accesses `sentinel`.
        unsafe { matmul_strided(&[], 0, &packed, &dst, (0, 4)) };
        assert!(sentinel.iter().all(|&v| v == -1.0), "{sentinel:?}");
        let set_up = PACKED_ROWS.with_borrow(|rows| rows.capacity());
        assert_eq!(set_up, 0, "a product of no rows set up the packing buffer");
    })
    .join()
    .unwrap();
}

/// `Walk::after` names, for every panel a task visits, the one its loops visit next (what the
/// tiles prefetch), and nothing after the last; on tasks that start past panel 0, with one
/// block or several, one block of rows or several.
#[test]
fn each_panel_prefetches_the_one_visited_next() {
    for (rows, mc, blocks, panels) in [
        (1, 96, 1, 0..1),
        (21, 96, 4, 3..7),
        (200, 96, 3, 8..16),
        (192, 96, 1, 5..6),
    ] {
        let walk = Walk {
            rows,
            mc,
            blocks,
            panels: panels.clone(),
        };
        let mut visits = vec![];
        for ic in (0..rows).step_by(mc) {
            for block in 0..blocks {
                for panel in panels.clone() {
                    visits.push((ic, block, panel));
                }
            }
        }
        let named: Vec<_> = visits
            .iter()
            .map(|&(ic, b, p)| walk.after(ic, b, p))
            .collect();
        let next: Vec<_> = visits[1..]
            .iter()
            .map(|&(_, b, p)| Some((b, p)))
            .chain([None])
            .collect();
        assert_eq!(
            named, next,
            "{rows} rows, {mc} a block, {blocks} blocks, {panels:?}"
        );
    }
}

/// `share` cuts the lines into consecutive parts of nearly equal length that cover them all,
/// and gives the parts past the end nothing.
#[test]
fn shares_cover_the_lines_in_order() {
    let lines: Vec<usize> = (0..23).collect();
    for parts in [1, 2, 5, 23, 40] {
        let shares: Vec<&[usize]> = (0..parts).map(|t| share(&lines, parts, t)).collect();
        assert_eq!(shares.concat(), lines, "{parts} parts");
        let longest = shares.iter().map(|s| s.len()).max().unwrap();
        assert_eq!(longest, lines.len().div_ceil(parts), "{parts} parts");
        assert!(share(&lines, parts, parts).is_empty());
    }
    assert!(share(&lines, 0, 0) == lines.as_slice());
    assert!(share::<usize>(&[], 3, 1).is_empty());
}

/// Each kernel on every shape of tile: 1 to 6 rows (and a second tile), rows packed (a
/// product of many panels) and read in place (a thin one), every remainder of the AVX2
/// kernel's four-input loop, whole and partial panels.
#[test]
fn every_kernel_matches_f64_on_every_tile_shape() {
    let wide = NR * PACK_ROWS_PANELS + 5;
    for kernel in kernels() {
        for out in [wide, 2 * NR + 5] {
            for rows in 1..=MR + 1 {
                for inner in 36..40 {
                    check(rows, out, inner, kernel);
                }
            }
        }
    }
}

/// A panel's bounds are checked once, for all its tiles, before any of them runs: inputs and
/// outputs short by one element are refused, whether its rows are packed or read in place, and
/// so is a tile past its rows.
mod panel_bounds {
    use super::*;
    use crate::cpu::matmul::kernel::Panel;

    const KC: usize = 4;

    /// `Panel::new` on `a` (`rows` rows, `lda` as the panel takes it) into `out` from `offset`.
    fn panel(a: &[f32], lda: usize, rows: usize, out: &mut [f32], offset: usize) {
        let lines = [Line([0.0; NR]); KC];
        let out = SharedMut::new(out);
        // SAFETY: nothing else accesses `out`.
        let mut panel =
            unsafe { Panel::new((a, lda, rows), &lines, false, &out, offset, (NR, NR)) };
        // The panel's last tile, which the checks above cover.
        let _ = panel.tile((rows - 1) / MR, &[]);
    }

    #[test]
    fn fitting_panels_are_taken() {
        // Packed: two tiles (7 rows) of MR rows by KC inputs each; in place: 7 rows of KC.
        panel(&[0.0; 2 * MR * KC], 0, MR + 1, &mut [0.0; (MR + 1) * NR], 0);
        panel(
            &[0.0; MR * KC + KC],
            KC,
            MR + 1,
            &mut [0.0; (MR + 1) * NR],
            0,
        );
    }

    #[test]
    #[should_panic(expected = "7 rows of 4 inputs past `a`")]
    fn packed_rows_short_of_their_last_tile_are_refused() {
        panel(
            &[0.0; 2 * MR * KC - 1],
            0,
            MR + 1,
            &mut [0.0; (MR + 1) * NR],
            0,
        );
    }

    #[test]
    #[should_panic(expected = "7 rows of 4 inputs past `a`")]
    fn rows_in_place_short_of_their_last_input_are_refused() {
        panel(
            &[0.0; MR * KC + KC - 1],
            KC,
            MR + 1,
            &mut [0.0; (MR + 1) * NR],
            0,
        );
    }

    #[test]
    #[should_panic(expected = "of a buffer of 112")]
    fn outputs_past_the_buffer_are_refused() {
        panel(&[0.0; 2 * MR * KC], 0, MR + 1, &mut [0.0; (MR + 1) * NR], 1);
    }

    #[test]
    #[should_panic(expected = "tile 2 of a panel of 7 rows")]
    fn a_tile_past_the_rows_is_refused() {
        let lines = [Line([0.0; NR]); KC];
        let mut out = [0.0; (MR + 1) * NR];
        let out = SharedMut::new(&mut out);
        let a = [0.0; 2 * MR * KC];
        // SAFETY: nothing else accesses `out`.
        let mut panel = unsafe { Panel::new((&a, 0, MR + 1), &lines, false, &out, 0, (NR, NR)) };
        let _ = panel.tile(2, &[]);
    }
}
