//! # anchors
//!
//! Reads page-batch manifests ([`TableBatch`] of the `pages` table), reads each pages file
//! from storage, extracts every `<a href>` of every HTML page with lol_html, and writes the
//! `anchors` table (`<storage>/anchors/`, same file names as the pages files) with a manifest
//! per file on its output topic (the embeddings stage reads them).
//!
//! Bad HTML never fails a batch: a page that cannot be parsed to the end keeps the anchors
//! found before the error and is counted in the manifest (`page_errors`). A pages file that
//! cannot be read goes to the dead-letter topic; a store that does not answer is an outage.
//!
//! Files: `extract.rs` (one page → its anchors), `processor.rs` (one file → one file).
//!
//! [`TableBatch`]: sluice_topics::TableBatch

mod extract;
mod processor;

use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;
use sluice_config::KindInfo;
use sluice_runtime::stage::{StageContext, StageImpl, StageKind};
use sluice_topics::{Contract, TableBatch};

pub use extract::{collapse, extract, Anchor, PageAnchors, Skipped};
pub use processor::Anchors;

/// `anchors` has no settings of its own yet; unknown fields are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

impl sluice_config::Validate for Settings {}

/// The `anchors` stage kind.
pub struct Kind;

impl StageKind for Kind {
    type Settings = Settings;

    fn info(&self) -> KindInfo {
        KindInfo::new(
            "anchors",
            "extract every <a href> of page batches into the anchors table; publish a manifest per file",
        )
        .input(TableBatch::TYPE)
        .output("output", TableBatch::TYPE)
    }

    async fn build(&self, _settings: Settings, ctx: StageContext) -> anyhow::Result<StageImpl> {
        let storage = ctx
            .services
            .storage()
            .context("opening the dataset's storage")?;
        let output = ctx.output("output")?;
        Ok(StageImpl::Processor(Arc::new(Anchors::new(
            storage,
            output,
            ctx.metrics.clone(),
        ))))
    }

    fn default_concurrency(&self) -> usize {
        // Each file is CPU work for one core.
        2
    }

    fn drain_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(120)
    }
}
