//! Writing one Parquet file: zstd, the table's explicit schema, row groups capped in bytes so
//! memory stays bounded, written to a temporary path and published (renamed into the table,
//! synced on local disks) only when complete.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use sluice_runtime::services::{Storage, StorageError};

/// Errors while writing a file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Encoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// Row groups are flushed at this size, bounding the writer's memory.
pub const ROW_GROUP_BYTES: usize = 8 << 20;

/// Bytes buffered before they go to the store (one multipart part).
const UPLOAD_BUFFER: usize = 5 << 20;

/// A temporary file name for `final_name` that no other writer (in this or another process)
/// uses at the same time.
pub fn tmp_name(final_name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{final_name}.{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A finished file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Its path inside the store.
    pub path: Path,
    /// Rows.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// A Parquet file being written.
pub struct TableWriter {
    storage: Storage,
    tmp: Path,
    writer: AsyncArrowWriter<BufWriter>,
    rows: u64,
}

impl TableWriter {
    /// Starts a file for `table` at a temporary path named after `tmp_name`.
    pub fn create(
        storage: &Storage,
        table: &str,
        tmp_name: &str,
        schema: SchemaRef,
    ) -> Result<Self, WriteError> {
        let tmp = storage.tmp_file(table, tmp_name);
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .build();
        let object = BufWriter::with_capacity(storage.store(), tmp.clone(), UPLOAD_BUFFER);
        let writer = AsyncArrowWriter::try_new(object, schema, Some(props))?;
        Ok(Self {
            storage: storage.clone(),
            tmp,
            writer,
            rows: 0,
        })
    }

    /// Appends rows (flushing a row group to the store when it is full).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        self.rows += batch.num_rows() as u64;
        self.writer.write(batch).await?;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes the writer holds in memory (the row group in progress).
    pub fn memory(&self) -> usize {
        self.writer.memory_size()
    }

    /// Completes the file and publishes it as `dest`.
    pub async fn finish(self, dest: Path) -> Result<Written, WriteError> {
        let Self {
            storage,
            tmp,
            writer,
            rows,
        } = self;
        writer.close().await?;
        let bytes = storage.publish(&tmp, &dest).await?;
        Ok(Written {
            path: dest,
            rows,
            bytes,
        })
    }

    /// Gives the file up, deleting what was written.
    pub async fn abort(self) {
        let tmp = self.tmp.clone();
        drop(self.writer);
        if let Err(e) = self.storage.delete(&tmp).await {
            tracing::warn!(path = %tmp, error = %e, "could not delete an abandoned file");
        }
    }
}
