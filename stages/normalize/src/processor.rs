use async_trait::async_trait;
use sluice_bus::Record;
use sluice_runtime::metrics::StageMetrics;
use sluice_runtime::services::CacheError;
use sluice_runtime::stage::{Emitter, Output, Processor, StageError};
use sluice_topics::{Contract, CrawlUrl, UrlIn};
use sluice_web::domain::registrable_domain_of;
use sluice_web::normalize::{normalize, NormalizeOptions};

use crate::settings::Settings;
use sluice_bus::now_ms;
use sluice_recrawl::{Claim, Dedup};

/// The stage's processor.
pub struct NormalizeDedup {
    options: NormalizeOptions,
    dedup: Option<Dedup>,
    output: Output,
    metrics: StageMetrics,
}

fn cache_error(e: CacheError) -> StageError {
    match e {
        CacheError::Unavailable(msg) => StageError::unavailable("memcached", anyhow::anyhow!(msg)),
        CacheError::Rejected(msg) => StageError::Transient(anyhow::anyhow!(msg)),
    }
}

fn claim_id(r: &Record) -> String {
    format!("{}:{}:{}", r.topic, r.partition, r.offset)
}

impl NormalizeDedup {
    /// A processor writing to `output`.
    pub fn new(settings: Settings, output: Output, dedup: Dedup, metrics: StageMetrics) -> Self {
        Self {
            options: settings.normalize_options(),
            dedup: settings.dedup.then_some(dedup),
            output,
            metrics,
        }
    }
}

#[async_trait]
impl Processor for NormalizeDedup {
    async fn process(&self, record: &Record, out: &mut Emitter) -> Result<(), StageError> {
        let input = UrlIn::decode(&record.value).map_err(|e| {
            StageError::invalid(e.code(), format!("undecodable url-in message: {e}"))
        })?;
        let url = normalize(&input.url, &self.options)
            .map_err(|r| StageError::invalid(r.code(), format!("{r}: {}", truncate(&input.url))))?;
        let domain = registrable_domain_of(&url)
            .ok_or_else(|| StageError::invalid("no_host", format!("no host: {url}")))?;
        let url = url.to_string();
        let mut validators = None;
        if let Some(dedup) = &self.dedup {
            match dedup
                .claim(&url, &claim_id(record))
                .await
                .map_err(cache_error)?
            {
                Claim::Duplicate => {
                    self.metrics.event("duplicate");
                    return Ok(());
                }
                Claim::Pass => {}
                Claim::Revalidate(v) => validators = Some(v),
            }
        }
        self.metrics.event("passed");
        let next = CrawlUrl {
            url,
            domain,
            depth: input.depth,
            source: input.source,
            queued_at_ms: now_ms(),
            validators,
            sitemap: input.sitemap,
        };
        out.send_keyed(&self.output, next.domain.as_bytes(), next.encode())
            .await
    }
}

fn truncate(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
