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

/// Most URLs of one domain written as one `crawl-url` message (a JSON array).
const MAX_PER_RECORD: usize = 512;

impl NormalizeDedup {
    /// The URL `input` asks for, normalized, if it is new (or due for a recrawl): a bad URL is
    /// an `Invalid` error, a duplicate `None`.
    async fn admit(&self, input: UrlIn, claim: &str) -> Result<Option<CrawlUrl>, StageError> {
        let url = normalize(&input.url, &self.options)
            .map_err(|r| StageError::invalid(r.code(), format!("{r}: {}", truncate(&input.url))))?;
        let domain = registrable_domain_of(&url)
            .ok_or_else(|| StageError::invalid("no_host", format!("no host: {url}")))?;
        let url = url.to_string();
        let mut validators = None;
        if let Some(dedup) = &self.dedup {
            match dedup.claim(&url, claim).await.map_err(cache_error)? {
                Claim::Duplicate => {
                    self.metrics.event("duplicate");
                    return Ok(None);
                }
                Claim::Pass => {}
                Claim::Revalidate(v) => validators = Some(v),
            }
        }
        self.metrics.event("passed");
        Ok(Some(CrawlUrl {
            url,
            domain,
            depth: input.depth,
            source: input.source,
            queued_at_ms: now_ms(),
            validators,
            sitemap: input.sitemap,
            deferred: false,
        }))
    }
}

#[async_trait]
impl Processor for NormalizeDedup {
    /// A message of one URL passes it on or dead-letters it. A message of several (the links
    /// the crawler found on a page) passes on each new one, those of a domain together as one
    /// message, so that a page's links cost the broker a few records rather than one each; a
    /// link that does not normalize is counted (`invalid_link`) and left out, since it was
    /// found on a page rather than asked for.
    async fn process(&self, record: &Record, out: &mut Emitter) -> Result<(), StageError> {
        let inputs = UrlIn::decode_all(&record.value).map_err(|e| {
            StageError::invalid(e.code(), format!("undecodable url-in message: {e}"))
        })?;
        let several = inputs.len() > 1;
        let claim = claim_id(record);
        // One claim id per URL of the message: the same URL twice in it is a duplicate, and a
        // replay of the message claims each again as its own.
        let claims: Vec<String> = match several {
            false => vec![claim],
            true => (0..inputs.len()).map(|i| format!("{claim}:{i}")).collect(),
        };
        let admits = inputs
            .into_iter()
            .zip(&claims)
            .map(|(input, claim)| self.admit(input, claim));
        let admitted = futures::future::join_all(admits).await;
        // By domain, in the order found.
        let mut by_domain: Vec<(String, Vec<CrawlUrl>)> = Vec::new();
        for result in admitted {
            let next = match result {
                Ok(Some(next)) => next,
                Ok(None) => continue,
                Err(StageError::Invalid { code, reason }) if several => {
                    self.metrics.event("invalid_link");
                    tracing::debug!(code, reason, "a link left out");
                    continue;
                }
                Err(e) => return Err(e),
            };
            match by_domain.iter_mut().find(|(d, _)| *d == next.domain) {
                Some((_, urls)) => urls.push(next),
                None => by_domain.push((next.domain.clone(), vec![next])),
            }
        }
        for (domain, urls) in &by_domain {
            for chunk in urls.chunks(MAX_PER_RECORD) {
                let value = match chunk {
                    [one] => one.encode(),
                    _ => CrawlUrl::encode_all(chunk),
                };
                out.send_keyed(&self.output, domain.as_bytes(), value)
                    .await?;
            }
        }
        Ok(())
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
