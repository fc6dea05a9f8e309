//! Shared-state services that stages use, opened once per process from `services:` in
//! pipeline.yaml: the cache (memcached), leased slots (etcd), the dataset's storage (a local
//! directory or an object store) and Chroma. With `memory` the cache and slots are in-process
//! (one-process laptop mode); otherwise they talk to the real servers. Stage kinds get them
//! through the `StageContext`, and keep them current on `/readyz` with `StageContext::watch`.

pub mod cache;
pub mod chroma;
pub mod etcd;
pub mod memcached;
pub mod slots;
pub mod storage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use sluice_config::{Endpoint, Pipeline};

pub use cache::{Cache, CacheError, CacheItem, MemoryCache};
pub use chroma::Chroma;
pub use etcd::EtcdSlots;
pub use memcached::MemcachedCache;
pub use slots::{Slot, SlotError, Slots};
pub use storage::{Storage, StorageError};

/// The process's service handles. Cheap to clone; clones share the handles.
#[derive(Clone)]
pub struct Services {
    /// Key-value cache (memcached): URL dedup and recrawl clock.
    pub cache: Arc<dyn Cache>,
    /// Leased slots shared by all processes (etcd): per-domain fetch limits.
    pub slots: Slots,
    lazy: Arc<Lazy>,
}

/// Handles opened on first use, so a process whose stages never write files does not create
/// the storage directory, and one without Chroma never asks for it.
struct Lazy {
    storage_spec: String,
    storage: OnceLock<Result<Storage, Arc<StorageError>>>,
    chroma_url: Option<String>,
    collections: Mutex<HashMap<String, Arc<Chroma>>>,
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
        Ok(Self::with(p, cache, slots))
    }

    /// Given cache and slots; storage and Chroma from the pipeline's `services:`.
    pub fn with(p: &Pipeline, cache: Arc<dyn Cache>, slots: Slots) -> Self {
        Self {
            cache,
            slots,
            lazy: Arc::new(Lazy {
                storage_spec: p.services.storage.value.clone(),
                storage: OnceLock::new(),
                chroma_url: p
                    .services
                    .chroma
                    .as_ref()
                    .map(|c| c.value.trim().to_string())
                    .filter(|c| !c.is_empty()),
                collections: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// In-process cache and slots (several runners of one test share them like stages of one
    /// process); storage and Chroma from the pipeline's `services:`.
    pub fn in_memory(p: &Pipeline) -> Self {
        Self::with(p, Arc::new(MemoryCache::new()), Slots::in_memory())
    }

    /// The dataset's storage (`services.storage`), opened on first use.
    pub fn storage(&self) -> Result<Storage, Arc<StorageError>> {
        self.lazy
            .storage
            .get_or_init(|| Storage::open(&self.lazy.storage_spec).map_err(Arc::new))
            .clone()
    }

    /// The Chroma collection `name` on `services.chroma`; `None` when no Chroma is configured.
    /// One handle per collection per process.
    pub fn chroma(&self, collection: &str) -> Option<Arc<Chroma>> {
        let url = self.lazy.chroma_url.as_deref()?;
        let mut open = self
            .lazy
            .collections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(
            open.entry(collection.to_string())
                .or_insert_with(|| Arc::new(Chroma::new(url, collection)))
                .clone(),
        )
    }
}
