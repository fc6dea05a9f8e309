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

use futures::future::BoxFuture;
use sluice_config::{KindInfo, PortInfo};
use sluice_runtime::stage::{StageContext, StageImpl, StageKind};
use sluice_tables::Storage;
use sluice_topics::{Contract, Page, TableBatch};

pub use settings::Settings;
pub use sink::PagesSink;

/// The `parquet-batch` stage kind.
pub struct Kind;

impl StageKind for Kind {
    fn info(&self) -> KindInfo {
        KindInfo {
            name: "parquet-batch",
            summary: "write page records as Parquet files of the pages table; publish a manifest per file",
            input: Some(Page::TYPE),
            outputs: vec![PortInfo {
                field: "output",
                message_type: TableBatch::TYPE,
                required: true,
            }],
            check_settings: sluice_config::check_validated::<Settings>,
            deployment: Default::default(),
        }
    }

    fn build(&self, ctx: StageContext) -> BoxFuture<'static, anyhow::Result<StageImpl>> {
        Box::pin(async move {
            let settings: Settings = ctx.settings()?;
            sluice_config::Validate::validate(&settings)
                .map_err(|(_, m)| anyhow::anyhow!("stage `{}`: {m}", ctx.name))?;
            let spec = &ctx.pipeline.services.storage;
            let storage = Storage::open(&spec.value).map_err(|e| anyhow::anyhow!("{e}"))?;
            let output = ctx.output_topic("output")?;
            Ok(StageImpl::Batch(Arc::new(PagesSink::new(
                storage, output, &settings,
            ))))
        })
    }
}
