//! # parquet-batch
//!
//! Reads [`Page`] records and writes them as Parquet files of the `pages` table (zstd, the
//! schema in `sluice-tables`) under `<storage>/pages/`, one file per batch of one partition,
//! named after the offsets it covers. A batch closes at `max_rows`, `max_bytes` or `max_age`;
//! the file is written aside and renamed into place when complete, then a [`TableBatch`]
//! manifest is published, then the offsets are committed. The rows never travel through
//! Kafka again: consumers read the file the manifest points to.
//!
//! Files: `settings.rs` (pipeline.yaml fields), `sink.rs` (the batches). The batching,
//! committing and failure handling are the runtime's `batch` driver.
//!
//! [`Page`]: sluice_topics::Page
//! [`TableBatch`]: sluice_topics::TableBatch

mod settings;
mod sink;

use std::sync::Arc;

use anyhow::Context as _;
use sluice_config::KindInfo;
use sluice_runtime::stage::{StageContext, StageImpl, StageKind};
use sluice_topics::{Contract, Page, TableBatch};

pub use settings::Settings;
pub use sink::PagesSink;

/// The `parquet-batch` stage kind.
pub struct Kind;

impl StageKind for Kind {
    type Settings = Settings;

    fn info(&self) -> KindInfo {
        KindInfo::new(
            "parquet-batch",
            "write page records as Parquet files of the pages table; publish a manifest per file",
        )
        .input(Page::TYPE)
        .output("output", TableBatch::TYPE)
    }

    async fn build(&self, settings: Settings, ctx: StageContext) -> anyhow::Result<StageImpl> {
        let storage = ctx
            .services
            .storage()
            .context("opening the dataset's storage")?;
        let output = ctx.output("output")?;
        Ok(StageImpl::Batch(Arc::new(PagesSink::new(
            storage, output, &settings,
        ))))
    }
}
