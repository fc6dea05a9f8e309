//! The dedup claim protocol on memcached.
//!
//! Each normalized URL has one cache key (a 128-bit hash, since URLs can exceed memcached's
//! 250-byte keys) whose value is one of
//! - `p|<ms>|<claim id>`: claimed at `<ms>` by the record `<claim id>` (topic:partition:offset),
//!   whose output may not be acknowledged yet;
//! - `d|<ms>`: passed on (or fetched, by the crawl stage) at `<ms>`.
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
use xxhash_rust::xxh3::xxh3_128;

/// What the cache says about a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Pass it on: this record owns the URL now.
    Pass,
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
    Pending { at_ms: i64, claim: &'a str },
    Done { at_ms: i64 },
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
        (Some("d"), Some(at_ms), None) => Entry::Done { at_ms },
        _ => Entry::Unknown,
    }
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
            let since = match parse(&item.value) {
                Entry::Pending { claim, .. } if claim == claim_id => return Ok(Claim::Pass),
                Entry::Pending { at_ms, .. } | Entry::Done { at_ms } => at_ms,
                Entry::Unknown => i64::MIN, // foreign or corrupt value: reclaim it
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
                return Ok(Claim::Pass);
            }
        }
        Ok(Claim::Duplicate)
    }

    /// Marks `url` as passed on (its output is acknowledged).
    pub async fn passed(&self, url: &str) -> Result<(), CacheError> {
        self.mark(url, now_ms()).await
    }

    /// Records that `url` was handled at `at_ms` (also the crawl stage's recrawl clock).
    pub async fn mark(&self, url: &str, at_ms: i64) -> Result<(), CacheError> {
        let key = self.key(url);
        self.cache
            .set(&key, format!("d|{at_ms}").as_bytes(), self.ttl())
            .await
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
