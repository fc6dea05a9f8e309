//! The sink: one Parquet file per batch of one partition.
//!
//! Rows are encoded as they arrive (an Arrow builder flushed into the Parquet writer every
//! few MB), so a batch costs the writer's row group and upload buffer in memory, not its
//! records. A batch that starts at an offset for which a finished file already exists (a
//! replay after a crash between the file and the commit) ends where that file ended, so the
//! replay writes the same file again instead of an overlapping one.

use async_trait::async_trait;
use sluice_bus::{now_ms, Record, TopicPartition};
use sluice_runtime::stage::{BatchLimits, BatchSink, BatchWriter, Emitter, Output, StageError};
use sluice_tables::{
    file_prefix, pages_schema, table, FileName, PageRows, Storage, TableWriter,
    PAGES_SCHEMA_VERSION,
};
use sluice_topics::{Contract, Page, TableBatch};

use crate::settings::Settings;

/// Rows are handed to the Parquet writer in chunks of this many...
const CHUNK_ROWS: usize = 512;
/// ... or this many bytes.
const CHUNK_BYTES: usize = 4 << 20;

/// The parquet-batch sink.
pub struct PagesSink {
    storage: Storage,
    output: Output,
    limits: BatchLimits,
}

fn storage_error(e: impl Into<anyhow::Error>) -> StageError {
    StageError::unavailable("storage", e)
}

impl PagesSink {
    /// A sink writing under `storage`, publishing manifests to `output`.
    pub fn new(storage: Storage, output: Output, settings: &Settings) -> Self {
        Self {
            storage,
            output,
            limits: BatchLimits {
                max_rows: settings.max_rows,
                max_bytes: settings.max_bytes.0 as usize,
                max_age: settings.max_age.0,
                max_buffered: settings.max_buffered.0 as usize,
            },
        }
    }
}

#[async_trait]
impl BatchSink for PagesSink {
    fn limits(&self) -> BatchLimits {
        self.limits
    }

    async fn open(
        &self,
        tp: &TopicPartition,
        first_offset: i64,
    ) -> Result<Box<dyn BatchWriter>, StageError> {
        let prefix = file_prefix(&tp.topic, tp.partition, first_offset);
        let existing = self
            .storage
            .list(table::PAGES, &prefix)
            .await
            .map_err(storage_error)?;
        let end_at = existing
            .iter()
            .filter_map(|(name, _)| FileName::parse(name))
            .map(|f| f.last)
            .max();
        if let Some(end) = end_at {
            tracing::info!(%tp, first_offset, end, "replaying a batch that was written before: it ends where that file ended");
        }
        let tmp_name = sluice_tables::tmp_name(&format!("{prefix}open.parquet"));
        let writer = TableWriter::create(&self.storage, table::PAGES, &tmp_name, pages_schema())
            .map_err(storage_error)?;
        Ok(Box::new(PagesBatch {
            storage: self.storage.clone(),
            output: self.output.clone(),
            tp: tp.clone(),
            first: first_offset,
            end_at,
            rows: PageRows::new(),
            writer,
        }))
    }
}

struct PagesBatch {
    storage: Storage,
    output: Output,
    tp: TopicPartition,
    first: i64,
    end_at: Option<i64>,
    rows: PageRows,
    writer: TableWriter,
}

impl PagesBatch {
    async fn flush_rows(&mut self) -> Result<(), StageError> {
        if self.rows.rows() > 0 {
            let batch = self.rows.finish();
            self.writer.write(&batch).await.map_err(storage_error)?;
        }
        Ok(())
    }
}

#[async_trait]
impl BatchWriter for PagesBatch {
    fn end_at(&self) -> Option<i64> {
        self.end_at
    }

    async fn push(&mut self, record: &Record) -> Result<usize, StageError> {
        let page = Page::decode(&record.value)
            .map_err(|e| StageError::invalid(e.code(), format!("undecodable page record: {e}")))?;
        self.rows.push(&page, record.partition, record.offset);
        if self.rows.rows() >= CHUNK_ROWS || self.rows.bytes() >= CHUNK_BYTES {
            self.flush_rows().await?;
        }
        Ok(record.value.len())
    }

    async fn finish(
        mut self: Box<Self>,
        last_offset: i64,
        out: &mut Emitter,
    ) -> Result<(), StageError> {
        self.flush_rows().await?;
        if self.writer.rows() == 0 {
            // Only dead-lettered records: nothing to write, the offsets are still done.
            self.writer.abort().await;
            return Ok(());
        }
        let name = FileName {
            topic: self.tp.topic.clone(),
            partition: self.tp.partition,
            first: self.first,
            last: last_offset,
        }
        .render();
        let dest = self.storage.table_file(table::PAGES, &name);
        let written = self.writer.finish(dest).await.map_err(storage_error)?;
        let manifest = TableBatch {
            table: table::PAGES.into(),
            path: self.storage.relative(&written.path),
            rows: written.rows,
            bytes: written.bytes,
            source_topic: self.tp.topic.clone(),
            partition: self.tp.partition,
            first_offset: self.first,
            last_offset,
            schema_version: PAGES_SCHEMA_VERSION,
            created_at_ms: now_ms(),
            counts: Default::default(),
        };
        tracing::info!(path = %manifest.path, rows = manifest.rows, bytes = manifest.bytes, "pages file written");
        out.send(&self.output, manifest.encode()).await
    }

    async fn abort(self: Box<Self>) {
        self.writer.abort().await;
    }
}
