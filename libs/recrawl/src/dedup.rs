//! The dedup claim protocol on memcached.
//!
//! Each normalized URL has one cache key (a 128-bit hash, since URLs can exceed memcached's
//! 250-byte keys) whose value is one of
//! - `p|<ms>|<claim id>`: claimed at `<ms>` by the record `<claim id>` (topic:partition:offset),
//!   whose output may not be acknowledged yet;
//! - `d|<ms>`: passed on (or fetched, by the crawl stage) at `<ms>`; after a fetch that returned
//!   cache validators, `d|<ms>|<etag>\n<last-modified>` (either may be empty), which the next
//!   claim after `recrawl_after` hands on so the recrawl can be a conditional request.
//!
//! A record passes its URL on when it creates the key (`add` is atomic: of two replicas racing
//! on one URL exactly one wins), when it finds its *own* claim (a replay after a crash between
//! the claim and the acknowledged output — the URL would be lost otherwise), or when the entry
//! is older than `recrawl_after` (taken over with `cas`, so again only one wins). An evicted
//! key means an early recrawl, never a lost URL.
//!
//! One round trip per URL is the common case: the claim is not turned into `d|…` after the
//! output is acknowledged (that second write halved the stage's throughput in the benchmark).
//! The cost: a record replayed after a crash re-emits its URL even if the first output made it
//! — at most the records of one commit interval, which at-least-once delivery allows anyway.
//! `d|…` entries are written by the crawl stage when it fetches (the recrawl clock).

use std::sync::Arc;
use std::time::Duration;

use sluice_bus::now_ms;
use sluice_runtime::services::{Cache, CacheError};
pub use sluice_topics::Validators;
use xxhash_rust::xxh3::xxh3_128;

/// What the cache says about a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Pass it on: this record owns the URL now.
    Pass,
    /// Pass it on for a recrawl: the last crawl left these validators to revalidate with.
    Revalidate(Validators),
    /// Seen within the recrawl interval (or claimed by another in-flight record).
    Duplicate,
}

/// The dedup store.
#[derive(Clone)]
pub struct Dedup {
    cache: Arc<dyn Cache>,
    prefix: String,
    recrawl_after: Duration,
}

/// How many times a lost `cas` race is retried before calling the URL a duplicate: losing
/// means someone else just claimed it.
const CAS_ATTEMPTS: usize = 3;

enum Entry<'a> {
    Pending {
        at_ms: i64,
        claim: &'a str,
    },
    Done {
        at_ms: i64,
        validators: Option<&'a str>,
    },
    Unknown,
}

fn parse(value: &[u8]) -> Entry<'_> {
    let Ok(text) = std::str::from_utf8(value) else {
        return Entry::Unknown;
    };
    let mut parts = text.splitn(3, '|');
    match (
        parts.next(),
        parts.next().and_then(|t| t.parse().ok()),
        parts.next(),
    ) {
        (Some("p"), Some(at_ms), Some(claim)) => Entry::Pending { at_ms, claim },
        (Some("d"), Some(at_ms), validators) => Entry::Done { at_ms, validators },
        _ => Entry::Unknown,
    }
}

/// The validators of a `d|<ms>|<etag>\n<last-modified>` entry.
fn decode_validators(text: &str) -> Option<Validators> {
    let (etag, last_modified) = text.split_once('\n')?;
    Validators::from_headers(
        (!etag.is_empty()).then_some(etag),
        (!last_modified.is_empty()).then_some(last_modified),
    )
}

impl Dedup {
    /// A store over `cache` with keys `prefix + hash(url)`.
    pub fn new(cache: Arc<dyn Cache>, prefix: String, recrawl_after: Duration) -> Self {
        Self {
            cache,
            prefix,
            recrawl_after,
        }
    }

    /// How long a URL is not passed again.
    pub fn recrawl_after(&self) -> Duration {
        self.recrawl_after
    }

    /// The cache key of a normalized URL.
    pub fn key(&self, url: &str) -> String {
        format!("{}{:032x}", self.prefix, xxh3_128(url.as_bytes()))
    }

    fn ttl(&self) -> Duration {
        // Keep entries a little past the interval so `cas` sees the old value, not a gap.
        self.recrawl_after + self.recrawl_after / 10 + Duration::from_secs(60)
    }

    /// Decides whether the record `claim_id` passes `url` on.
    pub async fn claim(&self, url: &str, claim_id: &str) -> Result<Claim, CacheError> {
        let key = self.key(url);
        for _ in 0..CAS_ATTEMPTS {
            let now = now_ms();
            let mine = format!("p|{now}|{claim_id}");
            if self.cache.add(&key, mine.as_bytes(), self.ttl()).await? {
                return Ok(Claim::Pass);
            }
            let Some(item) = self.cache.gets(&key).await? else {
                continue; // expired between add and gets: try to add again
            };
            let (since, validators) = match parse(&item.value) {
                Entry::Pending { claim, .. } if claim == claim_id => return Ok(Claim::Pass),
                Entry::Pending { at_ms, .. } => (at_ms, None),
                Entry::Done { at_ms, validators } => {
                    (at_ms, validators.and_then(decode_validators))
                }
                Entry::Unknown => (i64::MIN, None), // foreign or corrupt value: reclaim it
            };
            let age = now.saturating_sub(since);
            if age < self.recrawl_after.as_millis() as i64 {
                return Ok(Claim::Duplicate);
            }
            if self
                .cache
                .cas(&key, mine.as_bytes(), self.ttl(), item.cas)
                .await?
            {
                return Ok(validators.map_or(Claim::Pass, Claim::Revalidate));
            }
        }
        Ok(Claim::Duplicate)
    }

    /// Marks `url` as passed on (its output is acknowledged).
    pub async fn passed(&self, url: &str) -> Result<(), CacheError> {
        self.mark(url, now_ms(), None).await
    }

    /// Records that `url` was handled at `at_ms` (also the crawl stage's recrawl clock), with
    /// the validators its response carried, for the next crawl to revalidate with.
    pub async fn mark(
        &self,
        url: &str,
        at_ms: i64,
        validators: Option<&Validators>,
    ) -> Result<(), CacheError> {
        let key = self.key(url);
        let value = match validators {
            Some(v) => format!(
                "d|{at_ms}|{}\n{}",
                v.etag.as_deref().unwrap_or(""),
                v.last_modified.as_deref().unwrap_or("")
            ),
            None => format!("d|{at_ms}"),
        };
        self.cache.set(&key, value.as_bytes(), self.ttl()).await
    }

    /// Counts one more page of registrable domain `domain` in the current recrawl interval
    /// (a counter that starts with the domain's first page and lives `recrawl_after`); the
    /// count so far, this page included.
    pub async fn count_page(&self, domain: &str) -> Result<u64, CacheError> {
        self.count("pages", domain, 1).await
    }

    /// Counts `n` more URLs passed on from sitemaps of `domain` in the current recrawl
    /// interval; the count so far, these included.
    pub async fn count_sitemap_urls(&self, domain: &str, n: u64) -> Result<u64, CacheError> {
        self.count("sitemap-urls", domain, n).await
    }

    async fn count(&self, what: &str, domain: &str, n: u64) -> Result<u64, CacheError> {
        let key = format!("{}{what}:{:032x}", self.prefix, xxh3_128(domain.as_bytes()));
        self.cache.incr(&key, n, self.recrawl_after).await
    }

    /// Gives a claim up (its record was dead-lettered), if it is still ours.
    pub async fn release(&self, url: &str, claim_id: &str) -> Result<(), CacheError> {
        let key = self.key(url);
        if let Some(item) = self.cache.gets(&key).await? {
            if matches!(parse(&item.value), Entry::Pending { claim, .. } if claim == claim_id) {
                self.cache.delete(&key).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_runtime::services::MemoryCache;

    fn store(recrawl: Duration) -> Dedup {
        Dedup::new(Arc::new(MemoryCache::new()), "t:".into(), recrawl)
    }

    #[tokio::test]
    async fn a_recrawl_claim_hands_on_the_last_fetch_validators() {
        // recrawl_after 0: every claim after a mark is a recrawl.
        let d = store(Duration::ZERO);
        assert_eq!(d.claim("http://a/", "x:0:1").await.unwrap(), Claim::Pass);
        let v = Validators {
            etag: Some("W/\"a|b\"".into()),
            last_modified: Some("Tue, 03 Nov 2026 10:00:00 GMT".into()),
        };
        d.mark("http://a/", now_ms() - 1, Some(&v)).await.unwrap();
        assert_eq!(
            d.claim("http://a/", "x:0:2").await.unwrap(),
            Claim::Revalidate(v)
        );
        // Only one validator, or none.
        let etag_only = Validators {
            etag: Some("\"e\"".into()),
            last_modified: None,
        };
        d.mark("http://a/", now_ms() - 1, Some(&etag_only))
            .await
            .unwrap();
        assert_eq!(
            d.claim("http://a/", "x:0:3").await.unwrap(),
            Claim::Revalidate(etag_only)
        );
        d.mark("http://a/", now_ms() - 1, None).await.unwrap();
        assert_eq!(d.claim("http://a/", "x:0:4").await.unwrap(), Claim::Pass);
    }

    #[tokio::test]
    async fn first_claim_passes_and_others_are_duplicates() {
        let d = store(Duration::from_secs(3600));
        assert_eq!(
            d.claim("http://a/", "url-in:0:1").await.unwrap(),
            Claim::Pass
        );
        assert_eq!(
            d.claim("http://a/", "url-in:0:2").await.unwrap(),
            Claim::Duplicate
        );
        assert_eq!(
            d.claim("http://b/", "url-in:0:3").await.unwrap(),
            Claim::Pass
        );
    }

    #[tokio::test]
    async fn a_replayed_record_passes_again_until_acknowledged() {
        let d = store(Duration::from_secs(3600));
        assert_eq!(
            d.claim("http://a/", "url-in:0:1").await.unwrap(),
            Claim::Pass
        );
        // Crash before the output was acknowledged: the same record comes back.
        assert_eq!(
            d.claim("http://a/", "url-in:0:1").await.unwrap(),
            Claim::Pass
        );
        d.passed("http://a/").await.unwrap();
        // Acknowledged: a replay of it is now a duplicate.
        assert_eq!(
            d.claim("http://a/", "url-in:0:1").await.unwrap(),
            Claim::Duplicate
        );
    }

    #[tokio::test]
    async fn recrawl_after_the_interval() {
        let d = store(Duration::from_millis(50));
        assert_eq!(d.claim("http://a/", "x:0:1").await.unwrap(), Claim::Pass);
        d.passed("http://a/").await.unwrap();
        assert_eq!(
            d.claim("http://a/", "x:0:2").await.unwrap(),
            Claim::Duplicate
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(d.claim("http://a/", "x:0:3").await.unwrap(), Claim::Pass);
        assert_eq!(
            d.claim("http://a/", "x:0:4").await.unwrap(),
            Claim::Duplicate
        );
    }

    #[tokio::test]
    async fn racing_claims_pass_once() {
        let d = store(Duration::from_secs(3600));
        let mut tasks = Vec::new();
        for i in 0..32 {
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                d.claim("http://race/", &format!("t:0:{i}")).await.unwrap()
            }));
        }
        let mut passes = 0;
        for t in tasks {
            if t.await.unwrap() == Claim::Pass {
                passes += 1;
            }
        }
        assert_eq!(passes, 1);
    }

    #[tokio::test]
    async fn release_frees_only_own_claims() {
        let d = store(Duration::from_secs(3600));
        assert_eq!(d.claim("http://a/", "x:0:1").await.unwrap(), Claim::Pass);
        d.release("http://a/", "x:0:9").await.unwrap();
        assert_eq!(
            d.claim("http://a/", "x:0:2").await.unwrap(),
            Claim::Duplicate
        );
        d.release("http://a/", "x:0:1").await.unwrap();
        assert_eq!(d.claim("http://a/", "x:0:2").await.unwrap(), Claim::Pass);
    }
}
