//! The tolerances and the one close-enough check: `actual` first, `expected` second, the
//! tolerance third, everywhere.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

/// Absolute tolerance of every f32 comparison: with FlagEmbedding's recorded outputs, with
/// bge-m3-core on the same model, and between two answers to the same input (docs/API.md,
/// "Numerics": fp32 on the CPU, 1e-5 absolute). A request that shares a forward pass with
/// others is padded with them, which moves the last bits of its floats, so answers are never
/// compared exactly across requests.
pub const TOLERANCE: f32 = 1e-5;

/// Slack of a unit-length check, `|‖v‖ − 1|`, and of range checks on scores (`[-1, 1]`): the
/// norm is a sum of up to 1024 squares, each rounded to f32 (and to its shortest decimal form
/// on its way through JSON), so its error grows with the width, past [`TOLERANCE`].
pub const NORM_TOLERANCE: f32 = 1e-4;

/// Where two slices first differ by more than the tolerance, or why they cannot be compared.
#[derive(Debug, Clone, PartialEq)]
pub enum Mismatch {
    /// The slices have different lengths.
    Length { actual: usize, expected: usize },
    /// `|actual[index] - expected[index]| > tolerance` (or one of them is NaN).
    Value {
        index: usize,
        actual: f32,
        expected: f32,
        tolerance: f32,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Length { actual, expected } => {
                write!(f, "{actual} values, {expected} expected")
            }
            Self::Value {
                index,
                actual,
                expected,
                tolerance,
            } => write!(
                f,
                "[{index}]: {actual} vs {expected} expected (difference {}, tolerance {tolerance})",
                (actual - expected).abs()
            ),
        }
    }
}

impl std::error::Error for Mismatch {}

impl Mismatch {
    /// The mismatch of the values named `what`: `what[i]: a vs e expected …`, or
    /// `what: n values, m expected`.
    pub fn of(&self, what: impl fmt::Display) -> String {
        match self {
            Self::Length { .. } => format!("{what}: {self}"),
            Self::Value { .. } => format!("{what}{self}"),
        }
    }
}

/// `|actual - expected| <= tolerance`; false when either is NaN (a NaN is never close).
fn within(actual: f32, expected: f32, tolerance: f32) -> bool {
    (actual - expected).abs() <= tolerance
}

/// The first index where `actual` and `expected` differ by more than `tolerance`; a NaN on
/// either side is a difference.
///
/// ```
/// use bge_m3_test_support::{check_close, Mismatch, TOLERANCE};
///
/// assert_eq!(check_close(&[0.5, 0.25], &[0.500_001, 0.25], TOLERANCE), Ok(()));
/// let error = check_close(&[0.5, 0.3], &[0.5, 0.25], TOLERANCE).unwrap_err();
/// assert!(matches!(error, Mismatch::Value { index: 1, .. }));
/// assert!(error.to_string().starts_with("[1]: 0.3 vs 0.25"));
/// ```
pub fn check_close(actual: &[f32], expected: &[f32], tolerance: f32) -> Result<(), Mismatch> {
    if actual.len() != expected.len() {
        return Err(Mismatch::Length {
            actual: actual.len(),
            expected: expected.len(),
        });
    }
    match actual
        .iter()
        .zip(expected)
        .position(|(a, e)| !within(*a, *e, tolerance))
    {
        None => Ok(()),
        Some(index) => Err(Mismatch::Value {
            index,
            actual: actual[index],
            expected: expected[index],
            tolerance,
        }),
    }
}

/// Whether every value of `actual` is within `tolerance` of `expected`'s (same lengths).
///
/// ```
/// use bge_m3_test_support::{close, TOLERANCE};
///
/// assert!(close(&[1.0], &[1.000_005], TOLERANCE));
/// assert!(!close(&[1.0], &[1.0, 0.0], TOLERANCE));
/// assert!(!close(&[f32::NAN], &[f32::NAN], TOLERANCE));
/// ```
pub fn close(actual: &[f32], expected: &[f32], tolerance: f32) -> bool {
    check_close(actual, expected, tolerance).is_ok()
}

/// Panics unless every value of `actual` is within `tolerance` of `expected`'s, naming `what`
/// and the first index that differs.
///
/// ```should_panic
/// use bge_m3_test_support::{assert_close, TOLERANCE};
///
/// // Panics naming `dense[2]`, both values, their difference and the tolerance.
/// assert_close(&[0.0, 0.1, 0.2], &[0.0, 0.1, 0.3], TOLERANCE, "dense");
/// ```
#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32, what: impl fmt::Display) {
    if let Err(mismatch) = check_close(actual, expected, tolerance) {
        panic!("{}", mismatch.of(what));
    }
}

/// The largest `|a - b|` over the two slices; `f32::INFINITY` when their lengths differ, NaN
/// when a value is NaN.
///
/// ```
/// use bge_m3_test_support::max_abs_diff;
///
/// assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
/// assert_eq!(max_abs_diff(&[], &[]), 0.0);
/// assert_eq!(max_abs_diff(&[1.0], &[]), f32::INFINITY);
/// ```
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).fold(0.0, |max, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() || d > max {
            d
        } else {
            max
        }
    })
}

/// The L2 norm.
///
/// ```
/// assert_eq!(bge_m3_test_support::norm(&[3.0, 4.0]), 5.0);
/// ```
pub fn norm(values: &[f32]) -> f32 {
    values.iter().map(|v| v * v).sum::<f32>().sqrt()
}

/// The cosine of the angle between `a` and `b`; 0 when either is the zero vector. Panics when
/// the lengths differ.
///
/// ```
/// use bge_m3_test_support::cosine;
///
/// assert_eq!(cosine(&[1.0, 0.0], &[2.0, 0.0]), 1.0);
/// assert_eq!(cosine(&[1.0, 0.0], &[0.0, 3.0]), 0.0);
/// assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
/// ```
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "cosine of vectors of different lengths");
    let norms = norm(a) * norm(b);
    if norms == 0.0 {
        return 0.0;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / norms
}

/// Sparse weights compared like FlagEmbedding's dicts, in any order: each key's weights within
/// `tolerance`, a key that only one side has within `tolerance` of zero there (a relu at its
/// edge may keep or drop it). Keys must be unique on each side.
///
/// ```
/// use bge_m3_test_support::{check_same_weights, TOLERANCE};
///
/// let expected = [(5, 0.25), (9, 0.000_001)];
/// assert!(check_same_weights(&[(5, 0.25)], &expected, TOLERANCE).is_ok());
/// let error = check_same_weights(&[(5, 0.2)], &expected, TOLERANCE).unwrap_err();
/// assert_eq!(error, "5 weighs 0.2, 0.25 expected (tolerance 0.00001)");
/// ```
pub fn check_same_weights<K: Eq + Hash + fmt::Debug>(
    actual: &[(K, f32)],
    expected: &[(K, f32)],
    tolerance: f32,
) -> Result<(), String> {
    let actual_weights: HashMap<&K, f32> = actual.iter().map(|(k, w)| (k, *w)).collect();
    let expected_weights: HashMap<&K, f32> = expected.iter().map(|(k, w)| (k, *w)).collect();
    let weight = |weights: &HashMap<&K, f32>, key: &K| weights.get(key).copied().unwrap_or(0.0);
    // In the slices' order, so that the same difference is reported every run.
    for (key, _) in actual.iter().chain(expected) {
        let (a, e) = (weight(&actual_weights, key), weight(&expected_weights, key));
        if !within(a, e, tolerance) {
            return Err(format!(
                "{key:?} weighs {a}, {e} expected (tolerance {tolerance})"
            ));
        }
    }
    Ok(())
}
