//! Shared-state services that stages use, created once per process from `services:` in
//! pipeline.yaml. With `memory` they are in-process (one-process laptop mode); otherwise they
//! talk to the real servers. Stage kinds get them through the `StageContext`.

pub mod cache;
pub mod etcd;
pub mod memcached;
pub mod slots;
pub mod watch;

use std::sync::Arc;

use sluice_config::{Endpoint, Pipeline};

pub use cache::{Cache, CacheError, CacheItem, MemoryCache};
pub use etcd::EtcdSlots;
pub use memcached::MemcachedCache;
pub use slots::{Slot, SlotError, Slots};

/// The process's service handles. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    /// Key-value cache (memcached): URL dedup and recrawl clock.
    pub cache: Arc<dyn Cache>,
    /// Leased slots shared by all processes (etcd): per-domain fetch limits.
    pub slots: Slots,
}

impl Services {
    /// Creates the handles from the pipeline's `services:`. Does not wait for the servers: one
    /// that is down at start-up shows up as a not-ready stage, not a crash.
    pub async fn from_pipeline(p: &Pipeline) -> anyhow::Result<Self> {
        let cache: Arc<dyn Cache> = match &p.services.memcached.value {
            Endpoint::Memory => Arc::new(MemoryCache::new()),
            Endpoint::Remote(addrs) => Arc::new(MemcachedCache::new(addrs)?),
        };
        let slots = match &p.services.etcd.value {
            Endpoint::Memory => Slots::in_memory(),
            Endpoint::Remote(endpoints) => Slots::new(Arc::new(
                EtcdSlots::connect(endpoints, &format!("/sluice/{}/slots", p.name)).await?,
            )),
        };
        Ok(Self { cache, slots })
    }

    /// In-process services only.
    pub fn in_memory() -> Self {
        Self {
            cache: Arc::new(MemoryCache::new()),
            slots: Slots::in_memory(),
        }
    }
}
