//! A small key-value cache contract (memcached's add / gets / cas / set / delete) and its
//! in-process implementation; the memcached one is in `memcached.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

/// A cached value and its compare-and-swap token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheItem {
    /// Stored bytes.
    pub value: Vec<u8>,
    /// Token for [`Cache::cas`].
    pub cas: u64,
}

/// Cache errors.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The server cannot be reached or timed out: a dependency outage.
    #[error("{0}")]
    Unavailable(String),
    /// The request was refused (bad key, value too large).
    #[error("{0}")]
    Rejected(String),
}

/// A memcached-like cache. Keys are at most 250 bytes without whitespace.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// `memory` or `memcached`, for logs and readiness.
    fn name(&self) -> &'static str;
    /// The value and its CAS token.
    async fn gets(&self, key: &str) -> Result<Option<CacheItem>, CacheError>;
    /// Stores only if the key is absent; false when it exists.
    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError>;
    /// Stores only if the key still has CAS token `cas`; false when it changed or vanished.
    async fn cas(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        cas: u64,
    ) -> Result<bool, CacheError>;
    /// Stores unconditionally.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError>;
    /// Deletes; false when absent.
    async fn delete(&self, key: &str) -> Result<bool, CacheError>;
    /// Adds `delta` to the counter at `key` and returns the new count; a missing counter
    /// starts at 0 and lives for `ttl` (an existing one keeps its expiry).
    async fn incr(&self, key: &str, delta: u64, ttl: Duration) -> Result<u64, CacheError>;
    /// Checks the server answers.
    async fn ping(&self) -> Result<(), CacheError>;
}

/// memcached's expiration: 0 is "never", up to 30 days is relative seconds, beyond that an
/// absolute Unix time.
pub(crate) fn memcached_exptime(ttl: Duration) -> u32 {
    const THIRTY_DAYS: u64 = 30 * 24 * 3600;
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    if secs == 0 {
        0
    } else if secs <= THIRTY_DAYS {
        secs as u32
    } else {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        (now + secs).min(u64::from(u32::MAX)) as u32
    }
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    cas: u64,
    expires: Option<Instant>,
}

/// In-process cache with memcached semantics (for `services.memcached: memory`).
#[derive(Default)]
pub struct MemoryCache {
    entries: Mutex<HashMap<String, Entry>>,
    next_cas: AtomicU64,
}

impl MemoryCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn expiry(ttl: Duration) -> Option<Instant> {
        (!ttl.is_zero()).then(|| Instant::now() + ttl)
    }

    fn live<'a>(map: &'a mut HashMap<String, Entry>, key: &str) -> Option<&'a mut Entry> {
        let expired = map
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|t| t <= Instant::now()));
        if expired {
            map.remove(key);
        }
        map.get_mut(key)
    }

    fn token(&self) -> u64 {
        self.next_cas.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn gets(&self, key: &str) -> Result<Option<CacheItem>, CacheError> {
        let mut map = self.entries.lock().expect("cache poisoned");
        Ok(Self::live(&mut map, key).map(|e| CacheItem {
            value: e.value.clone(),
            cas: e.cas,
        }))
    }

    async fn add(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        let mut map = self.entries.lock().expect("cache poisoned");
        if Self::live(&mut map, key).is_some() {
            return Ok(false);
        }
        let cas = self.token();
        map.insert(
            key.to_string(),
            Entry {
                value: value.to_vec(),
                cas,
                expires: Self::expiry(ttl),
            },
        );
        Ok(true)
    }

    async fn cas(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        cas: u64,
    ) -> Result<bool, CacheError> {
        let token = self.token();
        let mut map = self.entries.lock().expect("cache poisoned");
        match Self::live(&mut map, key) {
            Some(e) if e.cas == cas => {
                e.value = value.to_vec();
                e.cas = token;
                e.expires = Self::expiry(ttl);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let cas = self.token();
        self.entries.lock().expect("cache poisoned").insert(
            key.to_string(),
            Entry {
                value: value.to_vec(),
                cas,
                expires: Self::expiry(ttl),
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let mut map = self.entries.lock().expect("cache poisoned");
        let existed = Self::live(&mut map, key).is_some();
        map.remove(key);
        Ok(existed)
    }

    async fn incr(&self, key: &str, delta: u64, ttl: Duration) -> Result<u64, CacheError> {
        let token = self.token();
        let mut map = self.entries.lock().expect("cache poisoned");
        if let Some(e) = Self::live(&mut map, key) {
            let count = std::str::from_utf8(&e.value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| CacheError::Rejected(format!("`{key}` does not hold a number")))?
                .wrapping_add(delta);
            e.value = count.to_string().into_bytes();
            e.cas = token;
            return Ok(count);
        }
        map.insert(
            key.to_string(),
            Entry {
                value: delta.to_string().into_bytes(),
                cas: token,
                expires: Self::expiry(ttl),
            },
        );
        Ok(delta)
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

impl crate::health::Ping for dyn Cache {
    fn ping(&self) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { Cache::ping(self).await.map_err(|e| e.to_string()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_cache_has_memcached_semantics() {
        let c = MemoryCache::new();
        let ttl = Duration::from_secs(60);
        assert!(c.add("k", b"1", ttl).await.unwrap());
        assert!(!c.add("k", b"2", ttl).await.unwrap());
        let item = c.gets("k").await.unwrap().unwrap();
        assert_eq!(item.value, b"1");
        assert!(c.cas("k", b"3", ttl, item.cas).await.unwrap());
        // The token changed with the write: a second swap with the old token fails.
        assert!(!c.cas("k", b"4", ttl, item.cas).await.unwrap());
        assert_eq!(c.gets("k").await.unwrap().unwrap().value, b"3");
        assert!(c.delete("k").await.unwrap());
        assert!(!c.delete("k").await.unwrap());
        assert!(!c.cas("k", b"5", ttl, item.cas).await.unwrap());
    }

    #[tokio::test]
    async fn memory_cache_expires() {
        let c = MemoryCache::new();
        assert!(c.add("k", b"1", Duration::from_millis(20)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(c.gets("k").await.unwrap().is_none());
        assert!(c.add("k", b"2", Duration::ZERO).await.unwrap());
    }

    #[test]
    fn exptime_follows_memcached_rules() {
        assert_eq!(memcached_exptime(Duration::ZERO), 0);
        assert_eq!(memcached_exptime(Duration::from_millis(1500)), 2);
        assert_eq!(memcached_exptime(Duration::from_secs(3600)), 3600);
        let far = memcached_exptime(Duration::from_secs(90 * 24 * 3600));
        assert!(far > 1_700_000_000, "absolute time expected, got {far}");
    }
}
