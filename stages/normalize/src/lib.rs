//! # normalize-dedup
//!
//! Reads [`UrlIn`] messages (bare URL strings or JSON) from its input topic, normalizes each
//! URL, rejects what cannot be crawled to the dead-letter topic with the reason, and passes
//! every URL on once per `recrawl_after` as a [`CrawlUrl`] keyed by registrable domain — so
//! one domain's URLs share a partition, and the crawl stage that owns it owns its politeness.
//!
//! Files: `settings.rs` (pipeline.yaml fields), `dedup.rs` (the memcached claim protocol),
//! `processor.rs` (one record in, at most one out).
//!
//! [`UrlIn`]: sluice_topics::UrlIn
//! [`CrawlUrl`]: sluice_topics::CrawlUrl

mod dedup;
mod processor;
mod settings;

use std::sync::Arc;

use futures::future::BoxFuture;
use sluice_config::{KindInfo, PortInfo};
use sluice_runtime::services::watch::watch_cache;
use sluice_runtime::stage::{StageContext, StageImpl, StageKind};
use sluice_topics::{Contract, CrawlUrl, UrlIn};

pub use dedup::{Claim, Dedup};
pub use processor::NormalizeDedup;
pub use settings::Settings;

/// The `normalize-dedup` stage kind.
pub struct Kind;

impl StageKind for Kind {
    fn info(&self) -> KindInfo {
        KindInfo {
            name: "normalize-dedup",
            summary: "normalize URLs, key them by registrable domain, pass each on once per recrawl interval",
            input: Some(UrlIn::TYPE),
            outputs: vec![PortInfo {
                field: "output",
                message_type: CrawlUrl::TYPE,
                required: true,
            }],
            check_settings: |node| {
                sluice_config::from_node::<Settings>(node)
                    .map(|_| ())
                    .map_err(|d| vec![d])
            },
            deployment: Default::default(),
        }
    }

    fn build(&self, ctx: StageContext) -> BoxFuture<'static, anyhow::Result<StageImpl>> {
        Box::pin(async move {
            let settings: Settings = ctx.settings()?;
            let output = ctx.output_topic("output")?;
            if settings.dedup {
                watch_cache(
                    "memcached",
                    ctx.services.cache.clone(),
                    ctx.health.clone(),
                    ctx.shutdown.clone(),
                );
            }
            let dedup = Dedup::new(
                ctx.services.cache.clone(),
                settings.key_prefix.clone(),
                settings.recrawl_after.0,
            );
            Ok(StageImpl::Processor(Arc::new(NormalizeDedup::new(
                settings,
                output,
                dedup,
                ctx.metrics.clone(),
            ))))
        })
    }

    fn default_concurrency(&self) -> usize {
        // Records are small (a URL), and each waits on a memcached and a broker round trip:
        // many in flight keep both pipes full for a few MB of memory.
        4096
    }
}
