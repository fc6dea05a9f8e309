//! # normalize-dedup
//!
//! Reads [`UrlIn`] messages (bare URL strings or JSON) from its input topic, normalizes each
//! URL, rejects what cannot be crawled to the dead-letter topic with the reason, and passes
//! every URL on once per `recrawl_after` as a [`CrawlUrl`] keyed by registrable domain — so
//! one domain's URLs share a partition, and the crawl stage that owns it owns its politeness.
//!
//! Files: `settings.rs` (pipeline.yaml fields), `processor.rs` (one record in, at most one
//! out). The memcached claim protocol is the recrawl clock's (`sluice-recrawl`), which this
//! stage owns: the crawl stage it feeds marks the same clock with the same settings.
//!
//! [`UrlIn`]: sluice_topics::UrlIn
//! [`CrawlUrl`]: sluice_topics::CrawlUrl

mod processor;
mod settings;

use std::sync::Arc;

use sluice_config::KindInfo;
use sluice_recrawl::Dedup;
use sluice_runtime::stage::{StageContext, StageImpl, StageKind};
use sluice_topics::{Contract, CrawlUrl, UrlIn};

pub use processor::NormalizeDedup;
pub use settings::Settings;

/// The `normalize-dedup` stage kind.
pub struct Kind;

impl StageKind for Kind {
    type Settings = Settings;

    fn info(&self) -> KindInfo {
        KindInfo::new(
            sluice_recrawl::OWNER_KIND,
            "normalize URLs, key them by registrable domain, pass each on once per recrawl interval",
        )
        .input(UrlIn::TYPE)
        .output("output", CrawlUrl::TYPE)
    }

    async fn build(&self, settings: Settings, ctx: StageContext) -> anyhow::Result<StageImpl> {
        let output = ctx.output("output")?;
        if settings.dedup {
            ctx.watch("memcached", ctx.services.cache.clone());
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
    }

    fn default_concurrency(&self) -> usize {
        // Records are small (a URL), and each waits on a memcached and a broker round trip:
        // many in flight keep both pipes full for a few MB of memory.
        4096
    }
}
