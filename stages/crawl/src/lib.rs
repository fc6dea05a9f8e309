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
//! - `crawler.rs` — the processor: retries, redirects, the page record;
//! - `politeness.rs` — domain queues, etcd slots, host turns, request permits;
//! - `robots.rs` — the robots.txt cache;
//! - `client.rs` — the HTTP client and the SSRF guard in its resolver;
//! - `fetch.rs` — one GET with a body cap;
//! - `charset.rs` — body to UTF-8;
//! - `links.rs` — link extraction;
//! - `seen.rs` — links emitted recently, not sent again.
//!
//! [`CrawlUrl`]: sluice_topics::CrawlUrl
//! [`Page`]: sluice_topics::Page

mod charset;
mod client;
mod crawler;
mod fetch;
mod links;
mod politeness;
mod robots;
mod seen;
mod settings;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_config::{KindInfo, PortInfo};
use sluice_runtime::stage::{StageContext, StageImpl, StageKind};
use sluice_stage_normalize::Dedup;
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
    fn info(&self) -> KindInfo {
        KindInfo {
            name: "crawl",
            summary: "fetch URLs politely (robots.txt, etcd domain slots), emit pages and discovered links",
            input: Some(CrawlUrl::TYPE),
            outputs: vec![
                PortInfo {
                    field: "output",
                    message_type: Page::TYPE,
                    required: true,
                },
                PortInfo {
                    field: "discovered",
                    message_type: UrlIn::TYPE,
                    required: false,
                },
            ],
            check_settings: sluice_config::check_validated::<Settings>,
            deployment: Default::default(),
        }
    }

    fn build(&self, ctx: StageContext) -> BoxFuture<'static, anyhow::Result<StageImpl>> {
        Box::pin(async move {
            let settings: Settings = ctx.settings()?;
            sluice_config::Validate::validate(&settings)
                .map_err(|(_, m)| anyhow::anyhow!("stage `{}`: {m}", ctx.name))?;
            let outputs = Outputs {
                pages: ctx.output_topic("output")?,
                discovered: ctx.output_topic("discovered").ok(),
                producer: ctx.producer.clone(),
                shutdown: ctx.shutdown.clone(),
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
            watch_slots(&ctx);
            let recrawl = Dedup::new(
                ctx.services.cache.clone(),
                settings.key_prefix.clone(),
                settings.recrawl_after.0,
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
        })
    }

    fn default_concurrency(&self) -> usize {
        // URLs in flight, most of them parked in their domain's queue at the cost of a
        // future each; `fetch_concurrency` bounds the requests (and bodies) in memory.
        // Many in flight keep one big domain from filling the stage while others wait.
        4096
    }

    fn drain_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }
}

/// Keeps `/readyz` current for etcd while no URL is being fetched.
fn watch_slots(ctx: &StageContext) {
    const COMPONENT: &str = "etcd";
    let slots = ctx.services.slots.clone();
    let health = ctx.health.clone();
    let shutdown = ctx.shutdown.clone();
    health.register(COMPONENT);
    tokio::spawn(async move {
        loop {
            match slots.ping().await {
                Ok(()) => health.ready(COMPONENT),
                Err(e) => health.not_ready(COMPONENT, e),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
}
