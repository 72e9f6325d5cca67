//! The Parquet writer: one row group per window, Snappy-compressed, written to `OUT.partial`
//! and renamed to `OUT` once complete, so that `OUT` is always a whole Parquet file.
//!
//! Columns: `id` (string), `tokens` (uint32), then those asked for: `dense` (list of float32),
//! `sparse` (`indices`: a struct of `indices` uint32 and `values` float32 lists; `token` and
//! `id`: a map from string to float32; `sparsevec`: a string), `colbert` (list of lists of
//! float32). Milvus's bulk insert, LanceDB, DuckDB and pandas (pyarrow) read them as they are.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, ListBuilder, MapBuilder, StringBuilder};
use arrow_array::types::{Float32Type, UInt32Type};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, StringArray, StructArray, UInt32Array};
use arrow_schema::{Field, Schema, SchemaRef};
use bge_m3_core::SparseWeights;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::output::{with_path, Row, Shape, Sink, SparseFormat};

pub struct Parquet {
    writer: ArrowWriter<File>,
    shape: Shape,
    partial: PathBuf,
    path: PathBuf,
}

impl Parquet {
    /// Writes a new file at `path` (through `path.partial`).
    pub fn create(path: &Path, shape: Shape) -> io::Result<Self> {
        let partial = partial_path(path);
        let file = File::create(&partial).map_err(|e| with_path(e, &partial))?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer =
            ArrowWriter::try_new(file, schema(&shape)?, Some(properties)).map_err(to_io)?;
        Ok(Self {
            writer,
            shape,
            partial,
            path: path.to_path_buf(),
        })
    }

    /// Continues `path`: copies its rows into the new file and returns their ids. The file must
    /// have been written with the same outputs and sparse format.
    pub fn resume(path: &Path, shape: Shape) -> io::Result<(Self, HashSet<String>)> {
        let file = File::open(path).map_err(|e| with_path(e, path))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|builder| builder.build())
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: cannot read it as Parquet: {e}", path.display()),
                )
            })?;
        let mut sink = Self::create(path, shape)?;
        let expected = schema(&shape)?;
        let mut done = HashSet::new();
        for batch in reader {
            let batch = batch.map_err(to_io)?;
            if batch.schema().fields() != expected.fields() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: its columns differ from what these options write (other --outputs \
                         or --sparse-format?): cannot resume it",
                        path.display()
                    ),
                ));
            }
            let ids = batch
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("the schema's first column is a string");
            done.extend(ids.iter().flatten().map(str::to_string));
            sink.writer.write(&batch).map_err(to_io)?;
            sink.writer.flush().map_err(to_io)?;
        }
        Ok((sink, done))
    }
}

impl Sink for Parquet {
    fn write(&mut self, rows: &[Row]) -> io::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = batch(rows, &self.shape)?;
        self.writer.write(&batch).map_err(to_io)?;
        // One row group per window: the writer holds no more than a window.
        self.writer.flush().map_err(to_io)
    }

    fn finish(self: Box<Self>) -> io::Result<u64> {
        let Parquet {
            writer,
            partial,
            path,
            ..
        } = *self;
        writer.close().map_err(to_io)?;
        std::fs::rename(&partial, &path).map_err(|e| with_path(e, &path))?;
        Ok(std::fs::metadata(&path)?.len())
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// The schema of the rows of `shape`: that of an empty batch.
fn schema(shape: &Shape) -> io::Result<SchemaRef> {
    Ok(batch(&[], shape)?.schema())
}

/// The rows as one record batch.
pub(crate) fn batch(rows: &[Row], shape: &Shape) -> io::Result<RecordBatch> {
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        (
            "id",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|row| crate::input::id_key(&row.id)),
            )),
        ),
        (
            "tokens",
            Arc::new(UInt32Array::from_iter_values(
                rows.iter().map(|row| row.tokens as u32),
            )),
        ),
    ];
    if shape.outputs.dense {
        let dense = ListArray::from_iter_primitive::<Float32Type, _, _>(rows.iter().map(|row| {
            row.dense
                .as_ref()
                .map(|dense| dense.iter().map(|&v| Some(v)).collect::<Vec<_>>())
        }));
        columns.push(("dense", Arc::new(dense)));
    }
    if shape.outputs.sparse {
        columns.push(("sparse", sparse_column(rows, shape.sparse)?));
    }
    if shape.outputs.colbert {
        let mut colbert = ListBuilder::new(ListBuilder::new(Float32Builder::new()));
        for row in rows {
            match &row.colbert {
                Some(vectors) => {
                    for vector in vectors {
                        colbert.values().values().append_slice(vector);
                        colbert.values().append(true);
                    }
                    colbert.append(true);
                }
                None => colbert.append(false),
            }
        }
        columns.push(("colbert", Arc::new(colbert.finish())));
    }
    // `id` and `tokens` are never null; an output column is null where it was not computed.
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| {
            let required = matches!(*name, "id" | "tokens");
            Field::new(*name, array.data_type().clone(), !required)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema, columns.into_iter().map(|(_, a)| a).collect()).map_err(to_io)
}

fn sparse_column(rows: &[Row], format: SparseFormat) -> io::Result<ArrayRef> {
    let sparse = rows.iter().map(|row| row.sparse.as_ref());
    Ok(match format {
        SparseFormat::Sparsevec => Arc::new(StringArray::from_iter(sparse.map(|s| match s {
            Some(SparseWeights::Literal(literal)) => Some(literal.as_str()),
            _ => None,
        }))),
        SparseFormat::Token | SparseFormat::Id => {
            let mut map = MapBuilder::new(None, StringBuilder::new(), Float32Builder::new());
            for entry in sparse {
                if let Some(SparseWeights::Map(weights)) = entry {
                    for (key, weight) in weights {
                        map.keys().append_value(key);
                        map.values().append_value(*weight);
                    }
                }
                map.append(entry.is_some()).map_err(to_io)?;
            }
            Arc::new(map.finish())
        }
        SparseFormat::Indices => {
            let (indices, values): (Vec<_>, Vec<_>) = sparse
                .map(|s| match s {
                    Some(SparseWeights::Indices { indices, values }) => (
                        Some(indices.iter().map(|&i| Some(i)).collect::<Vec<_>>()),
                        Some(values.iter().map(|&v| Some(v)).collect::<Vec<_>>()),
                    ),
                    _ => (None, None),
                })
                .unzip();
            let indices = ListArray::from_iter_primitive::<UInt32Type, _, _>(indices);
            let values = ListArray::from_iter_primitive::<Float32Type, _, _>(values);
            Arc::new(StructArray::from(vec![
                (
                    Arc::new(Field::new("indices", indices.data_type().clone(), true)),
                    Arc::new(indices) as ArrayRef,
                ),
                (
                    Arc::new(Field::new("values", values.data_type().clone(), true)),
                    Arc::new(values) as ArrayRef,
                ),
            ]))
        }
    })
}

fn to_io(error: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(error)
}
