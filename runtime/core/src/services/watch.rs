//! Keeps a service's readiness current by pinging it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::services::Cache;

/// Registers `component` and pings the cache every few seconds until shutdown, so `/readyz`
/// reflects an outage even while no record is being processed.
pub fn watch_cache(
    component: &'static str,
    cache: Arc<dyn Cache>,
    health: Health,
    shutdown: CancellationToken,
) {
    health.register(component);
    tokio::spawn(async move {
        loop {
            match cache.ping().await {
                Ok(()) => health.ready(component),
                Err(e) => health.not_ready(component, e),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(3)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
}
