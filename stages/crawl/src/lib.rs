//! # crawl
//!
//! Reads [`CrawlUrl`]s (keyed by registrable domain) and writes one [`Page`] record per URL,
//! fetched politely: robots.txt (RFC 9309) with Crawl-delay, a minimum delay per host, and a
//! per-registrable-domain concurrency limit shared by every replica through etcd slots.
//! Links found on a page go to the `discovered` port (normally `url-in`) with depth + 1, within
//! `max_depth` and `scope`.
//!
//! Files, in the order a URL meets them:
//! - `settings.rs` — the pipeline.yaml fields and their defaults;
//! - `clock.rs` — the recrawl clock it shares with the normalize-dedup stage feeding it;
//! - `crawler.rs` — the processor: the frontier (go ahead, or defer a URL of a busy domain),
//!   the page budget, retries, redirects, conditional recrawls, the page record;
//! - `politeness.rs` — domain queues, etcd slots, host turns, request permits, and the
//!   outlook of a domain the frontier decides by;
//! - `schedule.rs` — when a deferred URL comes back;
//! - `bundle.rs` — a domain's deferred URLs gathered into one record;
//! - `robots.rs` — the robots.txt cache;
//! - `client.rs` — the HTTP client and the SSRF guard in its resolver;
//! - `fetch.rs` — one GET with a body cap;
//! - `memory.rs` — the byte budget of the pages in memory;
//! - `charset.rs` — body to UTF-8;
//! - `links.rs` — link extraction;
//! - `sitemap.rs` — the URLs a sitemap lists (XML, index, text, gzip);
//! - `seen.rs` — links emitted recently, not sent again.
//!
//! [`CrawlUrl`]: sluice_topics::CrawlUrl
//! [`Page`]: sluice_topics::Page

mod bundle;
mod charset;
mod client;
mod clock;
mod crawler;
mod fetch;
mod links;
mod memory;
mod politeness;
mod robots;
mod schedule;
mod seen;
mod settings;
mod sitemap;

use std::sync::Arc;
use std::time::Duration;

use sluice_config::KindInfo;
use sluice_config::{Pipeline, StageSpec};
use sluice_recrawl::Dedup;
use sluice_runtime::stage::{StageContext, StageImpl, StageKind};
use sluice_topics::{Contract, CrawlUrl, Page, UrlIn};

pub use charset::{decode as decode_body, Decoded};
pub use client::{non_public_range, AddressGuard};
pub use crawler::{Crawler, Outputs};
pub use links::{extract as extract_links, Link, PageLinks};
pub use politeness::{Limits, Politeness};
pub use settings::{Scope, Settings};

/// The `crawl` stage kind.
pub struct Kind;

impl StageKind for Kind {
    type Settings = Settings;

    fn info(&self) -> KindInfo {
        KindInfo::new(
            "crawl",
            "fetch URLs politely (robots.txt, etcd domain slots), emit pages and discovered links",
        )
        .input(CrawlUrl::TYPE)
        .output("output", Page::TYPE)
        .optional_output("discovered", UrlIn::TYPE)
        .optional_output("deferred", CrawlUrl::TYPE)
    }

    async fn build(&self, settings: Settings, ctx: StageContext) -> anyhow::Result<StageImpl> {
        let outputs = Outputs {
            // Bodies waiting for the broker count against `max_pending`, so memory stays
            // bounded whatever the broker's pace.
            pages: ctx.output("output")?.with_budget(settings.max_pending.0),
            discovered: ctx.optional_output("discovered"),
            deferred: ctx.optional_output("deferred"),
        };
        let guard = AddressGuard::new(&settings);
        let client = client::http_client(&settings, guard.clone())?;
        let politeness = Politeness::new(
            ctx.services.slots.clone(),
            Limits {
                per_domain: settings.per_domain_concurrency,
                fetch_concurrency: settings.fetch_concurrency,
                lease_ttl: settings.slot_lease_ttl.0,
                min_delay: settings.min_delay.0,
                max_crawl_delay: settings.max_crawl_delay.0,
            },
        );
        ctx.watch("etcd", Arc::new(ctx.services.slots.clone()));
        let clock = clock::resolve(&settings, &ctx.spec, &ctx.pipeline)
            .map_err(|(field, m)| anyhow::anyhow!("stage `{}`: {field}: {m}", ctx.name))?;
        let recrawl = Dedup::new(
            ctx.services.cache.clone(),
            clock.key_prefix,
            clock.recrawl_after.0,
        );
        Ok(StageImpl::Processor(Arc::new(Crawler::new(
            settings,
            client,
            guard,
            politeness,
            recrawl,
            outputs,
            ctx.metrics.clone(),
        ))))
    }

    fn check_in_pipeline(
        &self,
        settings: &Settings,
        stage: &StageSpec,
        pipeline: &Pipeline,
    ) -> Result<(), (&'static str, String)> {
        clock::resolve(settings, stage, pipeline).map(drop)
    }

    fn default_concurrency(&self) -> usize {
        // URLs in flight, most of them parked in their domain's queue at the cost of a
        // future each (a few KiB); `fetch_concurrency` bounds the requests and
        // `max_fetch_memory` their bodies. The frontier parks about five URLs per domain
        // (`max_domain_wait` 3 s at 1 s a page, and the one in flight), so this many keep a
        // few thousand domains going at once in one process; at 4,096 the broad benchmark's
        // thousand domains already filled it and waited on each other.
        16_384
    }

    fn drain_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }
}
