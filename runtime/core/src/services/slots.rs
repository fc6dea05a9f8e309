//! Leased slots: named counting semaphores shared by every process of a pipeline.
//!
//! A slot is held by one process for as long as the work it guards runs, and is gone when the
//! process is: on etcd the slot key is attached to the process's lease, which a keepalive task
//! renews, so a crashed holder's slots expire after the lease TTL. The in-process version
//! (`memory`) serves one-process laptop runs.
//!
//! [`Slots::try_acquire`] never waits. Waiting is the caller's business, so that a caller can
//! keep its own queue per name (one busy name must not hold up the others).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

/// Slot store errors.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The store cannot be reached or timed out: a dependency outage.
    #[error("{0}")]
    Unavailable(String),
}

/// A held slot. Give it back with [`Slot::release`]; dropping it releases in the background.
pub struct Slot {
    inner: Option<(Arc<dyn SlotsBackend>, String)>,
}

impl Slot {
    /// Releases the slot now.
    pub async fn release(mut self) {
        if let Some((backend, key)) = self.inner.take() {
            backend.release(&key).await;
        }
    }

    /// The store key that represents this slot (for logs and tests).
    pub fn key(&self) -> &str {
        self.inner.as_ref().map(|(_, k)| k.as_str()).unwrap_or("")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((backend, key)) = self.inner.take() {
            // A cancelled task drops its slot; without a runtime the lease expiry frees it.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move { backend.release(&key).await });
            }
        }
    }
}

/// The store behind [`Slots`].
#[async_trait]
pub trait SlotsBackend: Send + Sync + 'static {
    /// `memory` or `etcd`, for logs and readiness.
    fn name(&self) -> &'static str;
    /// Takes a free slot of `name` among `limit`, returning its key; `None` when all are held.
    /// `lease_ttl` is how long the slot outlives a holder that stopped renewing it.
    async fn try_acquire(
        &self,
        name: &str,
        limit: u32,
        lease_ttl: Duration,
    ) -> Result<Option<String>, SlotError>;
    /// Gives a slot back. Errors are logged: the lease expiry frees the slot anyway.
    async fn release(&self, key: &str);
    /// Checks the store answers.
    async fn ping(&self) -> Result<(), SlotError>;
}

/// Cheap-to-clone handle to the process's slot store.
#[derive(Clone)]
pub struct Slots {
    backend: Arc<dyn SlotsBackend>,
}

impl Slots {
    /// Wraps a backend.
    pub fn new(backend: Arc<dyn SlotsBackend>) -> Self {
        Self { backend }
    }

    /// An in-process store.
    pub fn in_memory() -> Self {
        Self::new(Arc::new(MemorySlots::default()))
    }

    /// `memory` or `etcd`.
    pub fn name(&self) -> &'static str {
        self.backend.name()
    }

    /// Takes one of `limit` slots of `name` if one is free. A holder that dies keeps it for
    /// at most `lease_ttl`.
    pub async fn try_acquire(
        &self,
        name: &str,
        limit: u32,
        lease_ttl: Duration,
    ) -> Result<Option<Slot>, SlotError> {
        Ok(self
            .backend
            .try_acquire(name, limit, lease_ttl)
            .await?
            .map(|key| Slot {
                inner: Some((self.backend.clone(), key)),
            }))
    }

    /// Checks the store answers.
    pub async fn ping(&self) -> Result<(), SlotError> {
        self.backend.ping().await
    }
}

/// Slots held in this process only.
#[derive(Default)]
pub struct MemorySlots {
    held: Mutex<HashMap<String, Vec<bool>>>,
}

#[async_trait]
impl SlotsBackend for MemorySlots {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn try_acquire(
        &self,
        name: &str,
        limit: u32,
        _lease_ttl: Duration,
    ) -> Result<Option<String>, SlotError> {
        let mut held = self.held.lock().expect("slots lock");
        let slots = held.entry(name.to_string()).or_default();
        if slots.len() < limit as usize {
            slots.resize(limit as usize, false);
        }
        match slots.iter().take(limit as usize).position(|h| !h) {
            Some(i) => {
                slots[i] = true;
                Ok(Some(format!("{name}/{i}")))
            }
            None => Ok(None),
        }
    }

    async fn release(&self, key: &str) {
        let Some((name, index)) = key.rsplit_once('/') else {
            return;
        };
        let Ok(index) = index.parse::<usize>() else {
            return;
        };
        let mut held = self.held.lock().expect("slots lock");
        if let Some(slots) = held.get_mut(name) {
            if let Some(h) = slots.get_mut(index) {
                *h = false;
            }
            if slots.iter().all(|h| !h) {
                held.remove(name);
            }
        }
    }

    async fn ping(&self) -> Result<(), SlotError> {
        Ok(())
    }
}

impl crate::health::Ping for Slots {
    fn ping(&self) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { Slots::ping(self).await.map_err(|e| e.to_string()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_slots_enforce_the_limit_and_come_back() {
        let slots = Slots::in_memory();
        let ttl = Duration::from_secs(5);
        let a = slots.try_acquire("d", 2, ttl).await.unwrap().unwrap();
        let b = slots.try_acquire("d", 2, ttl).await.unwrap().unwrap();
        assert_ne!(a.key(), b.key());
        assert!(slots.try_acquire("d", 2, ttl).await.unwrap().is_none());
        assert!(slots.try_acquire("other", 2, ttl).await.unwrap().is_some());
        a.release().await;
        let c = slots.try_acquire("d", 2, ttl).await.unwrap();
        assert!(c.is_some());
        assert!(slots.try_acquire("d", 2, ttl).await.unwrap().is_none());
    }
}
