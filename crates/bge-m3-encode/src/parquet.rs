//! The Parquet writer: one row group per window, Snappy-compressed, written to a partial file
//! and renamed to `OUT` once complete, so that `OUT` is always a whole Parquet file.
//!
//! Columns: `id` (string), `tokens` (uint32), then those asked for: `dense` (list of float32),
//! `sparse` (`indices`: a struct of `indices` uint32 and `values` float32 lists; `token` and
//! `id`: a map from string to float32; `sparsevec`: a string), `colbert` (list of lists of
//! float32). Milvus's bulk insert, LanceDB, DuckDB and pandas (pyarrow) read them as they are.
//!
//! # Surviving a kill
//!
//! A Parquet file is readable only once its footer, the metadata of every row group, is
//! written at its end; a process killed before that leaves row groups no reader can find. So
//! as each window's row group is flushed, its metadata (a footer holding that one row group,
//! as arrow-rs's `ParquetMetaDataWriter` writes it) is appended to a log beside the partial
//! file (`OUT.partial.G.groups`), both are synced, and only then does the manifest count the
//! window. A resume rebuilds the footer of the complete row groups from the log, reads them
//! from the partial file, and writes them into a new partial file (generation G+1, named by the
//! manifest once it is complete) before it encodes the rest: at most the window being written
//! at the kill is lost.
//!
//! Why not the alternatives: writing each window to a file of its own and concatenating them
//! at the end would copy the whole output on every run, killed or not, and need twice its
//! size on disk; continuing the partial file in place needs a writer that starts from
//! existing row groups, which arrow-rs does not offer. Copying column chunks without decoding
//! them (`SerializedRowGroupWriter::append_column`) would make the resume's copy faster, but
//! needs arrow-rs's low-level writer for the new windows as well, and leaves the copied chunks
//! without their page index; re-encoding keeps one writer, and its cost falls on a resume only.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, ListBuilder, MapBuilder, StringBuilder};
use arrow_array::types::{Float32Type, UInt32Type};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch, StringArray, StructArray, UInt32Array};
use arrow_schema::{Field, Schema, SchemaRef};
use bge_m3_core::{SparseFormat, SparseWeights};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::{
    FileMetaData, ParquetMetaData, ParquetMetaDataReader, ParquetMetaDataWriter, RowGroupMetaData,
};
use parquet::file::properties::WriterProperties;
use serde_json::Value;

use crate::manifest::{sync_directory, with_suffix, OutputState};
use crate::output::{invalid, with_path, Row, Shape, Sink};

pub struct Parquet {
    writer: ArrowWriter<File>,
    /// The row-group log.
    groups: File,
    shape: Shape,
    path: PathBuf,
    partial: PathBuf,
    generation: u64,
}

/// The partial file of generation `generation` of `path`.
pub fn partial_path(path: &Path, generation: u64) -> PathBuf {
    with_suffix(path, &format!(".partial.{generation}"))
}

/// Its row-group log.
pub fn groups_path(partial: &Path) -> PathBuf {
    with_suffix(partial, ".groups")
}

impl Parquet {
    /// Writes a new file at `path` (through its partial file of `generation`).
    pub fn create(path: &Path, shape: Shape, generation: u64) -> io::Result<Self> {
        let partial = partial_path(path, generation);
        let groups_file = groups_path(&partial);
        let file = File::create(&partial).map_err(|e| with_path(e, &partial))?;
        let groups = File::create(&groups_file).map_err(|e| with_path(e, &groups_file))?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let writer = ArrowWriter::try_new(file, schema(&shape)?, Some(properties))
            .map_err(|e| with_path(to_io(e), &partial))?;
        Ok(Self {
            writer,
            groups,
            shape,
            path: path.to_path_buf(),
            partial,
            generation,
        })
    }

    /// Continues the output at `path` as its manifest's `state` describes it: copies its
    /// complete row groups into a new partial file (the next generation). They must hold
    /// `documents` rows, the last with id `last_id`. Returns the sink and the files it replaces,
    /// to remove once the manifest names the new one.
    pub fn resume(
        path: &Path,
        shape: Shape,
        state: &OutputState,
        documents: u64,
        last_id: Option<&Value>,
    ) -> io::Result<(Self, Vec<PathBuf>)> {
        let OutputState::Parquet {
            generation,
            partial,
            row_groups,
            bytes,
        } = state
        else {
            return Err(invalid(format!(
                "{}: its manifest describes a JSONL output: cannot resume it as Parquet",
                path.display()
            )));
        };
        let expected = schema(&shape)?;
        let row_groups = *row_groups as usize;
        if row_groups == 0 {
            if documents != 0 {
                return Err(invalid(format!(
                    "{}: its manifest counts {documents} rows in no row group: cannot resume it",
                    path.display()
                )));
            }
            let replaced = partial.iter().map(PathBuf::from);
            let replaced = replaced.flat_map(|p| [groups_path(&p), p]).collect();
            return Ok((Self::create(path, shape, generation + 1)?, replaced));
        }
        // The row groups are in the partial file while it is written; once it is complete
        // (or closed by an interruption) it was renamed to `path`, footer and all.
        let partial = partial.as_ref().map(PathBuf::from);
        let (source, metadata) = match &partial {
            Some(partial) if partial.exists() => {
                let metadata = from_log(partial, row_groups, *bytes)?;
                (partial.clone(), metadata)
            }
            _ => {
                let file = File::open(path).map_err(|e| with_path(e, path))?;
                let metadata = ParquetMetaDataReader::new()
                    .parse_and_finish(&file)
                    .map_err(|e| {
                        invalid(format!(
                            "{}: cannot read it as Parquet: {e}",
                            path.display()
                        ))
                    })?;
                if metadata.num_row_groups() < row_groups {
                    return Err(invalid(format!(
                        "{}: {} row groups, fewer than the {row_groups} its manifest counts: it \
                         changed since; cannot resume it",
                        path.display(),
                        metadata.num_row_groups()
                    )));
                }
                let groups = metadata.row_groups()[..row_groups].to_vec();
                (path.to_path_buf(), with_groups(&metadata, groups))
            }
        };
        let rows: i64 = metadata.row_groups().iter().map(|g| g.num_rows()).sum();
        if rows as u64 != documents {
            return Err(invalid(format!(
                "{}: its first {row_groups} row groups hold {rows} rows, its manifest counts \
                 {documents}: it changed since; cannot resume it",
                source.display()
            )));
        }
        let mut sink = Self::create(path, shape, generation + 1)?;
        let file = File::open(&source).map_err(|e| with_path(e, &source))?;
        let options = ArrowReaderOptions::new().with_schema(expected.clone());
        let reader_metadata =
            ArrowReaderMetadata::try_new(Arc::new(metadata), options).map_err(|e| {
                invalid(format!(
                    "{}: its columns differ from what these options write: cannot resume it \
                     ({e})",
                    source.display()
                ))
            })?;
        let mut last = None;
        for (i, group) in reader_metadata.metadata().row_groups().iter().enumerate() {
            let batches = ParquetRecordBatchReaderBuilder::new_with_metadata(
                file.try_clone()?,
                reader_metadata.clone(),
            )
            .with_row_groups(vec![i])
            .with_batch_size(group.num_rows().max(1) as usize)
            .build()
            .map_err(|e| with_path(to_io(e), &source))?;
            for batch in batches {
                let batch = batch.map_err(|e| with_path(to_io(e), &source))?;
                if batch.num_rows() > 0 {
                    let ids = batch
                        .column(0)
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .expect("the schema's first column is a string");
                    last = Some(ids.value(ids.len() - 1).to_string());
                }
                sink.writer
                    .write(&batch)
                    .map_err(|e| sink.error(to_io(e)))?;
            }
            sink.commit().map_err(|e| sink.error(e))?;
        }
        let want = last_id.map(crate::input::id_key);
        if last != want {
            return Err(invalid(format!(
                "{}: its last row has id {last:?}, its manifest says {want:?}: it changed since; \
                 cannot resume it",
                source.display()
            )));
        }
        let mut replaced = Vec::new();
        if let Some(partial) = partial {
            replaced.push(groups_path(&partial));
            replaced.push(partial);
        }
        Ok((sink, replaced))
    }

    /// Makes the row group just written durable: the partial file synced, then the group's
    /// metadata appended to the log and synced.
    fn commit(&mut self) -> io::Result<()> {
        // One row group per window: the writer holds no more than a window.
        self.writer.flush().map_err(to_io)?;
        self.writer.sync()?;
        self.writer.inner().sync_data()?;
        let group = self
            .writer
            .flushed_row_groups()
            .last()
            .expect("a row group was just flushed")
            .clone();
        let footer = footer(vec![group])?;
        let length = u32::try_from(footer.len()).map_err(io::Error::other)?;
        self.groups.write_all(&length.to_le_bytes())?;
        self.groups.write_all(&footer)?;
        self.groups.sync_data()
    }

    /// `error` naming the file written.
    fn error(&self, error: io::Error) -> io::Error {
        with_path(error, &self.partial)
    }
}

/// What a complete Parquet output holds, read from its footer and its last row group's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub rows: u64,
    pub row_groups: u64,
    /// The last row's id (none without rows).
    pub last_id: Option<String>,
}

/// Reads `path`'s footer and the `id` column of its last row group: cheap whatever the file's
/// size (`verify`).
pub fn contents(path: &Path) -> io::Result<Contents> {
    let file = File::open(path).map_err(|e| with_path(e, path))?;
    let unreadable = |e: parquet::errors::ParquetError| {
        invalid(format!(
            "{}: cannot read it as Parquet: {e}",
            path.display()
        ))
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(unreadable)?;
    let metadata = builder.metadata().clone();
    let row_groups = metadata.num_row_groups();
    let rows: i64 = metadata.row_groups().iter().map(|g| g.num_rows()).sum();
    let mut last_id = None;
    if let Some(last) = row_groups.checked_sub(1) {
        let ids =
            parquet::arrow::ProjectionMask::roots(metadata.file_metadata().schema_descr(), [0]);
        let batches = builder
            .with_projection(ids)
            .with_row_groups(vec![last])
            .build()
            .map_err(unreadable)?;
        for batch in batches {
            let batch = batch.map_err(|e| with_path(to_io(e), path))?;
            let ids = batch.column(0).as_any().downcast_ref::<StringArray>();
            if let Some(ids) = ids.filter(|ids| !ids.is_empty()) {
                last_id = Some(ids.value(ids.len() - 1).to_string());
            }
        }
    }
    Ok(Contents {
        rows: rows as u64,
        row_groups: row_groups as u64,
        last_id,
    })
}

/// The footer of a Parquet file holding `groups`, as bytes (the log's entries).
fn footer(groups: Vec<RowGroupMetaData>) -> io::Result<Vec<u8>> {
    let schema = groups[0].schema_descr_ptr();
    let rows = groups.iter().map(|g| g.num_rows()).sum();
    let file = FileMetaData::new(1, rows, None, None, schema, None);
    let metadata = ParquetMetaData::new(file, groups);
    let mut bytes = Vec::new();
    ParquetMetaDataWriter::new(&mut bytes, &metadata)
        .finish()
        .map_err(to_io)?;
    Ok(bytes)
}

/// The metadata of `metadata`'s file with only `groups`.
fn with_groups(metadata: &ParquetMetaData, groups: Vec<RowGroupMetaData>) -> ParquetMetaData {
    let file = metadata.file_metadata();
    let rows = groups.iter().map(|g| g.num_rows()).sum();
    let file = FileMetaData::new(
        file.version(),
        rows,
        file.created_by().map(str::to_string),
        file.key_value_metadata().cloned(),
        file.schema_descr_ptr(),
        file.column_orders().cloned(),
    );
    ParquetMetaData::new(file, groups)
}

/// The metadata of the first `row_groups` row groups of `partial`, from its log; they must
/// end within its first `bytes`.
fn from_log(partial: &Path, row_groups: usize, bytes: u64) -> io::Result<ParquetMetaData> {
    let log = groups_path(partial);
    let length = std::fs::metadata(partial)
        .map_err(|e| with_path(e, partial))?
        .len();
    if length < bytes {
        return Err(invalid(format!(
            "{} has {length} bytes, fewer than the {bytes} its manifest counts: it changed \
             since; cannot resume it",
            partial.display()
        )));
    }
    let mut entries = Vec::new();
    File::open(&log)
        .and_then(|mut f| f.read_to_end(&mut entries))
        .map_err(|e| with_path(e, &log))?;
    let torn = || {
        invalid(format!(
            "{}: fewer than the {row_groups} row groups its manifest counts: cannot resume it",
            log.display()
        ))
    };
    let mut groups = Vec::with_capacity(row_groups);
    let mut rest = &entries[..];
    while groups.len() < row_groups {
        let (size, after) = rest.split_first_chunk::<4>().ok_or_else(torn)?;
        let size = u32::from_le_bytes(*size) as usize;
        // The entry is a whole footer: the metadata, its length (4 bytes) and `PAR1`.
        if after.len() < size || size < 8 {
            return Err(torn());
        }
        let metadata = ParquetMetaDataReader::decode_metadata(&after[..size - 8])
            .map_err(|e| with_path(to_io(e), &log))?;
        groups.extend(metadata.row_groups().iter().cloned());
        rest = &after[size..];
    }
    let end = groups
        .iter()
        .flat_map(|g| g.columns())
        .map(|c| {
            let (start, size) = c.byte_range();
            start + size
        })
        .max()
        .unwrap_or(0);
    if end > bytes {
        return Err(invalid(format!(
            "{}: its row groups end at byte {end}, past the {bytes} its manifest counts: \
             cannot resume it",
            log.display()
        )));
    }
    let schema = groups[0].schema_descr_ptr();
    let rows = groups.iter().map(|g| g.num_rows()).sum();
    Ok(ParquetMetaData::new(
        FileMetaData::new(1, rows, None, None, schema, None),
        groups,
    ))
}

impl Sink for Parquet {
    fn write(&mut self, rows: &[Row]) -> io::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = batch(rows, &self.shape)?;
        self.writer
            .write(&batch)
            .map_err(|e| self.error(to_io(e)))?;
        self.commit().map_err(|e| self.error(e))
    }

    fn state(&self) -> Option<OutputState> {
        Some(OutputState::Parquet {
            generation: self.generation,
            partial: Some(self.partial.display().to_string()),
            row_groups: self.writer.flushed_row_groups().len() as u64,
            bytes: self.writer.bytes_written() as u64,
        })
    }

    fn finish(self: Box<Self>) -> io::Result<(u64, Option<OutputState>)> {
        let Parquet {
            writer,
            groups,
            partial,
            path,
            generation,
            ..
        } = *self;
        let metadata = writer.close().map_err(|e| with_path(to_io(e), &partial))?;
        File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| with_path(e, &partial))?;
        std::fs::rename(&partial, &path).map_err(|e| with_path(e, &path))?;
        sync_directory(&path).map_err(|e| with_path(e, &path))?;
        // The output holds its footer now: the log is of no more use.
        drop(groups);
        let _ = std::fs::remove_file(groups_path(&partial));
        let state = OutputState::Parquet {
            generation,
            partial: None,
            row_groups: metadata.num_row_groups() as u64,
            bytes: 0,
        };
        Ok((std::fs::metadata(&path)?.len(), Some(state)))
    }
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
