//! FlagEmbedding's scoring helpers over its own output shapes, computed by the core's pure
//! scoring functions ([`bge_m3_core::score`]).

use bge_m3_core::score::{colbert_score as late_interaction, sparse_score};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::{guard, type_name};

/// The lexical matching score of two weight dicts (FlagEmbedding's `lexical_weights`, keyed by
/// token-id strings, or `convert_id_to_token`'s, keyed by tokens): the sum, over the keys in
/// both, of the products of their weights.
#[pyfunction]
pub(crate) fn lexical_matching_score(
    lexical_weights_1: &Bound<'_, PyDict>,
    lexical_weights_2: &Bound<'_, PyDict>,
) -> PyResult<f32> {
    guard(|| {
        let (first, second) = as_ids(lexical_weights_1, lexical_weights_2)?;
        Ok(sparse_score(&first, &second))
    })
}

/// [`lexical_matching_score`] of every dict of `lexical_weights_1` with every dict of
/// `lexical_weights_2`: a float64 array `(len(lexical_weights_1), len(lexical_weights_2))`.
#[pyfunction]
pub(crate) fn lexical_matching_scores<'py>(
    lexical_weights_1: &Bound<'py, PyList>,
    lexical_weights_2: &Bound<'py, PyList>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    guard(|| {
        let py = lexical_weights_1.py();
        let rows = dicts("lexical_weights_1", lexical_weights_1)?;
        let columns = dicts("lexical_weights_2", lexical_weights_2)?;
        let mut scores = Vec::with_capacity(rows.len() * columns.len());
        for row in &rows {
            for column in &columns {
                let (first, second) = as_ids(row, column)?;
                scores.push(f64::from(sparse_score(&first, &second)));
            }
        }
        let array = Array2::from_shape_vec((rows.len(), columns.len()), scores)
            .expect("one score per row and column");
        Ok(array.into_pyarray(py))
    })
}

/// The ColBERT (late-interaction) score of a query's vectors `q_reps` `(n, dim)` and a
/// passage's `p_reps` `(m, dim)`: the mean over the query's rows of each one's best dot product
/// with a passage row.
#[pyfunction]
pub(crate) fn colbert_score(
    q_reps: PyReadonlyArray2<'_, f32>,
    p_reps: PyReadonlyArray2<'_, f32>,
) -> PyResult<f32> {
    guard(|| {
        let (q_width, p_width) = (q_reps.as_array().ncols(), p_reps.as_array().ncols());
        if q_width != p_width {
            return Err(PyValueError::new_err(format!(
                "invalid `p_reps`: its rows have {p_width} values but those of `q_reps` {q_width}"
            )));
        }
        let query = rows(&q_reps);
        let passage = rows(&p_reps);
        Ok(late_interaction(&query, &passage))
    })
}

/// The rows of a 2-D array, contiguous or not.
fn rows(array: &PyReadonlyArray2<'_, f32>) -> Vec<Vec<f32>> {
    array
        .as_array()
        .rows()
        .into_iter()
        .map(|r| r.to_vec())
        .collect()
}

/// The dicts of a list, each checked to be one.
fn dicts<'py>(argument: &str, list: &Bound<'py, PyList>) -> PyResult<Vec<Bound<'py, PyDict>>> {
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            item.cast_into::<PyDict>().map_err(|e| {
                PyTypeError::new_err(format!(
                    "`{argument}[{i}]` must be a dict, got {}",
                    type_name(e.into_inner().as_any())
                ))
            })
        })
        .collect()
}

/// `(id, weight)` pairs, as [`sparse_score`] takes them.
type Weights = Vec<(u32, f32)>;

/// Both dicts as `(id, weight)` lists for [`sparse_score`]: each key of `first` is numbered by
/// its place in `first`, and a key of `second` takes the number of the same key in `first`
/// (Python's own equality decides), or a number of its own. So any keys compare as the dicts
/// compare them: token-id strings, tokens, ints.
fn as_ids(first: &Bound<'_, PyDict>, second: &Bound<'_, PyDict>) -> PyResult<(Weights, Weights)> {
    let py = first.py();
    let numbers = PyDict::new(py);
    let mut one = Vec::with_capacity(first.len());
    for (i, (key, weight)) in first.iter().enumerate() {
        let id = u32::try_from(i).map_err(|_| PyValueError::new_err("too many weights"))?;
        numbers.set_item(&key, id)?;
        one.push((id, weight_of(&key, &weight)?));
    }
    let mut fresh = u32::try_from(first.len()).map_err(|_| PyValueError::new_err("too many"))?;
    let mut two = Vec::with_capacity(second.len());
    for (key, weight) in second.iter() {
        let id = match numbers.get_item(&key)? {
            Some(id) => id.extract()?,
            None => {
                fresh += 1;
                fresh
            }
        };
        two.push((id, weight_of(&key, &weight)?));
    }
    Ok((one, two))
}

/// A weight as f32, or a `TypeError` naming its key.
fn weight_of(key: &Bound<'_, PyAny>, weight: &Bound<'_, PyAny>) -> PyResult<f32> {
    weight.extract::<f32>().map_err(|_| {
        PyTypeError::new_err(format!(
            "the weight of {key} must be a number, got {}",
            type_name(weight)
        ))
    })
}
