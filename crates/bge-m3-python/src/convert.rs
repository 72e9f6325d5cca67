//! The core's embeddings as FlagEmbedding returns them: numpy arrays and dicts.

use bge_m3_core::{truncate_dense, Embedding, Outputs};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray2};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// `(dense, sparse, colbert)` of [`crate::model::Model`]'s `encode`.
pub(crate) type Encoded<'py> = (
    Option<Bound<'py, PyArray2<f32>>>,
    Option<Bound<'py, PyList>>,
    Option<Bound<'py, PyList>>,
);

/// The outputs asked for, one entry per embedding: the dense vectors as one float32 array
/// `(n, widths.0)`, the lexical weights as dicts from token-id strings to floats in
/// FlagEmbedding's order, the ColBERT rows as one float32 array `(rows, widths.1)` per text. `truncate_dim` cuts
/// the dense and ColBERT vectors and makes them unit length again, as FlagEmbedding's
/// `truncate_dim` does (it cuts before it normalises).
pub(crate) fn embeddings_to_python(
    py: Python<'_>,
    embeddings: Vec<Embedding>,
    outputs: Outputs,
    widths: (usize, usize),
    truncate_dim: Option<usize>,
) -> PyResult<Encoded<'_>> {
    let cut = |vector: Vec<f32>| match truncate_dim {
        Some(dim) => truncate_dense(vector, dim),
        None => vector,
    };
    let width = |full: usize| truncate_dim.map_or(full, |dim| dim.min(full));
    let (dense_width, colbert_width) = (width(widths.0), width(widths.1));
    let n = embeddings.len();
    let mut dense = outputs.dense.then(|| Vec::with_capacity(n * dense_width));
    let sparse = outputs.sparse.then(|| PyList::empty(py));
    let colbert = outputs.colbert.then(|| PyList::empty(py));
    for embedding in embeddings {
        if let (Some(all), Some(vector)) = (dense.as_mut(), embedding.dense) {
            all.extend(cut(vector));
        }
        if let (Some(list), Some(weights)) = (&sparse, embedding.sparse) {
            let dict = PyDict::new(py);
            for (id, weight) in weights.weights {
                dict.set_item(id.to_string(), weight)?;
            }
            list.append(dict)?;
        }
        if let (Some(list), Some(rows)) = (&colbert, embedding.colbert) {
            let count = rows.len();
            let flat: Vec<f32> = rows.into_iter().flat_map(cut).collect();
            list.append(matrix(py, flat, count, colbert_width)?)?;
        }
    }
    let dense = dense
        .map(|values| matrix(py, values, n, dense_width))
        .transpose()?;
    Ok((dense, sparse, colbert))
}

/// A `(rows, columns)` float32 array that takes `values` over without copying them.
fn matrix(
    py: Python<'_>,
    values: Vec<f32>,
    rows: usize,
    columns: usize,
) -> PyResult<Bound<'_, PyArray2<f32>>> {
    let array = Array2::from_shape_vec((rows, columns), values).map_err(|e| {
        pyo3::exceptions::PyRuntimeError::new_err(format!(
            "internal error: {rows} x {columns} values expected: {e}"
        ))
    })?;
    Ok(array.into_pyarray(py))
}
