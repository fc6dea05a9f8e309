//! Reading some columns of one table file, a few rows at a time, from any store.

use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
// Deprecated upstream in favour of hand-written readers; it still does exactly this job
// (ranged reads from any object store), so it stays until parquet removes it.
#[allow(deprecated)]
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::ProjectionMask;
use parquet::errors::ParquetError;

use sluice_runtime::services::Storage;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The store did not answer: an outage, worth retrying.
    #[error("storage: {0}")]
    Outage(String),
    /// The file is gone, is not Parquet, or lacks a column: the manifest's fault.
    #[error("{0}")]
    Unreadable(String),
}

fn classify(e: ParquetError) -> ReadError {
    if let ParquetError::External(inner) = &e {
        if let Some(store) = inner.downcast_ref::<object_store::Error>() {
            if !matches!(store, object_store::Error::NotFound { .. }) {
                return ReadError::Outage(store.to_string());
            }
        }
    }
    ReadError::Unreadable(format!("cannot read the file: {e}"))
}

/// The named `columns` of the Parquet file at `path`, in batches of `batch_rows` rows (in the
/// file's column order: look columns up by name). Each column must have its type in `table`
/// (the table's schema), so readers can downcast without checking.
pub async fn read_columns(
    storage: &Storage,
    path: &Path,
    table: &Schema,
    columns: &[&str],
    batch_rows: usize,
) -> Result<BoxStream<'static, Result<RecordBatch, ReadError>>, ReadError> {
    #[allow(deprecated)]
    let reader = ParquetObjectReader::new(storage.store(), path.clone());
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(classify)?;
    let roots: Vec<usize> = columns
        .iter()
        .map(|c| {
            let i = builder
                .schema()
                .index_of(c)
                .map_err(|_| ReadError::Unreadable(format!("the file has no `{c}` column")))?;
            let found = builder.schema().field(i).data_type();
            if let Ok(want) = table.field_with_name(c) {
                if !found.equals_datatype(want.data_type()) {
                    return Err(ReadError::Unreadable(format!(
                        "column `{c}` is {found}, expected {}",
                        want.data_type()
                    )));
                }
            }
            Ok(i)
        })
        .collect::<Result<_, _>>()?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let stream = builder
        .with_projection(mask)
        .with_batch_size(batch_rows.max(1))
        .build()
        .map_err(classify)?;
    Ok(stream.map_err(classify).boxed())
}
