//! Slots on etcd: one key per held slot, attached to the process's lease.
//!
//! Slot `i` of name `n` is the key `<prefix>/<n>/<i>`. Taking it is one transaction — "if the
//! key has never been created, put it with my lease" — so two processes racing for the last
//! slot cannot both win (the count-then-put pattern overshoots under contention). A keepalive
//! task renews the lease every third of its TTL; if the process dies the lease expires and
//! etcd deletes its keys. If renewal fails the lease is dropped and the next acquisition
//! grants a new one, so a process never keeps working on a lease it knows is gone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use rand::Rng;
use tokio::sync::Mutex;

use super::slots::{SlotError, SlotsBackend};

/// A granted lease and whether its keepalive still succeeds.
struct Lease {
    id: i64,
    alive: Arc<AtomicBool>,
}

/// [`SlotsBackend`] on an etcd cluster.
pub struct EtcdSlots {
    client: Client,
    prefix: String,
    holder: String,
    /// One lease per TTL in use (a process normally uses one).
    leases: Mutex<HashMap<u64, Lease>>,
}

fn unavailable(e: etcd_client::Error) -> SlotError {
    SlotError::Unavailable(format!("etcd: {e}"))
}

impl EtcdSlots {
    /// A store on `endpoints` (`http://host:port`), keys under `prefix`. Does not wait for the
    /// cluster: an etcd that is down shows up as errors on use.
    pub async fn connect(endpoints: &[String], prefix: &str) -> anyhow::Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| anyhow::anyhow!("etcd client for {endpoints:?}: {e}"))?;
        let holder = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "sluice".into()),
            std::process::id(),
            rand::rng().random::<u32>()
        );
        Ok(Self {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            holder,
            leases: Mutex::new(HashMap::new()),
        })
    }

    /// The live lease for `ttl`, granting one (and starting its keepalive) if needed.
    async fn lease(&self, ttl: Duration) -> Result<i64, SlotError> {
        let secs = ttl.as_secs().max(2);
        let mut leases = self.leases.lock().await;
        if let Some(l) = leases.get(&secs) {
            if l.alive.load(Ordering::Acquire) {
                return Ok(l.id);
            }
        }
        let mut client = self.client.clone();
        let id = client
            .lease_grant(secs as i64, None)
            .await
            .map_err(unavailable)?
            .id();
        let alive = Arc::new(AtomicBool::new(true));
        tokio::spawn(keep_alive(client, id, secs, alive.clone()));
        leases.insert(secs, Lease { id, alive });
        Ok(id)
    }
}

/// Renews lease `id` until renewal fails or etcd says it expired.
async fn keep_alive(mut client: Client, id: i64, ttl_secs: u64, alive: Arc<AtomicBool>) {
    let every = Duration::from_millis(ttl_secs * 1000 / 3);
    let result: Result<(), String> = async {
        let (mut keeper, mut stream) = client
            .lease_keep_alive(id)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            tokio::time::sleep(every).await;
            keeper.keep_alive().await.map_err(|e| e.to_string())?;
            let answer = tokio::time::timeout(every, stream.message())
                .await
                .map_err(|_| "no keepalive answer".to_string())?
                .map_err(|e| e.to_string())?;
            match answer {
                Some(r) if r.ttl() > 0 => {}
                _ => return Err("lease expired".into()),
            }
        }
    }
    .await;
    alive.store(false, Ordering::Release);
    if let Err(e) = result {
        tracing::warn!(lease = id, error = %e, "etcd lease lost; the next slot takes a new one");
    }
}

#[async_trait]
impl SlotsBackend for EtcdSlots {
    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn try_acquire(
        &self,
        name: &str,
        limit: u32,
        lease_ttl: Duration,
    ) -> Result<Option<String>, SlotError> {
        let lease = self.lease(lease_ttl).await?;
        let dir = format!("{}/{}/", self.prefix, name);
        let mut client = self.client.clone();
        // A lost race means someone took the slot we saw free: look again, a few times.
        for _ in 0..3 {
            let held = client
                .get(
                    dir.as_str(),
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await
                .map_err(unavailable)?;
            let taken: Vec<u32> = held
                .kvs()
                .iter()
                .filter_map(|kv| std::str::from_utf8(kv.key()).ok())
                .filter_map(|k| k.strip_prefix(dir.as_str())?.parse().ok())
                .collect();
            if taken.len() >= limit as usize {
                return Ok(None);
            }
            let free: Vec<u32> = (0..limit).filter(|i| !taken.contains(i)).collect();
            let Some(&index) = free.get(rand::rng().random_range(0..free.len().max(1))) else {
                return Ok(None);
            };
            let key = format!("{dir}{index}");
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.as_str(),
                    self.holder.as_str(),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            if client.txn(txn).await.map_err(unavailable)?.succeeded() {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    async fn release(&self, key: &str) {
        let mut client = self.client.clone();
        // Only our own key: after a lease loss another process may hold this slot now.
        let txn = Txn::new()
            .when([Compare::value(key, CompareOp::Equal, self.holder.as_str())])
            .and_then([TxnOp::delete(key, None)]);
        if let Err(e) = client.txn(txn).await {
            tracing::warn!(key, error = %e, "releasing an etcd slot failed; its lease frees it");
        }
    }

    async fn ping(&self) -> Result<(), SlotError> {
        let mut client = self.client.clone();
        client.status().await.map_err(unavailable)?;
        Ok(())
    }
}
