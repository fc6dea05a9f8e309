//! Liveness and readiness, and the HTTP server that exposes them with the metrics.
//!
//! `/healthz` answers while the process runs its stages; `/readyz` only when every component
//! (the broker, each service a stage depends on) last reported healthy — like Redpanda
//! Connect's `/ready`, so Kubernetes stops routing to a pod whose memcached is gone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

#[derive(Debug, Clone, serde::Serialize)]
struct Component {
    ready: bool,
    detail: String,
}

/// Readiness of the process's components. Cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<String, Component>>>,
}

impl Health {
    /// A health registry with no components yet (not ready until one reports).
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a component, not ready until it reports.
    pub fn register(&self, name: &str) {
        self.components
            .lock()
            .expect("health poisoned")
            .entry(name.to_string())
            .or_insert(Component {
                ready: false,
                detail: "starting".into(),
            });
    }

    /// Reports a component healthy.
    pub fn ready(&self, name: &str) {
        self.set(name, true, "ok".into());
    }

    /// Reports a component unhealthy, with why.
    pub fn not_ready(&self, name: &str, detail: impl std::fmt::Display) {
        self.set(name, false, detail.to_string());
    }

    fn set(&self, name: &str, ready: bool, detail: String) {
        let mut c = self.components.lock().expect("health poisoned");
        let entry = c.entry(name.to_string()).or_insert(Component {
            ready,
            detail: detail.clone(),
        });
        if entry.ready != ready {
            if ready {
                tracing::info!(component = name, "ready");
            } else {
                tracing::warn!(component = name, %detail, "not ready");
            }
        }
        entry.ready = ready;
        entry.detail = detail;
    }

    /// True when at least one component exists and all are ready.
    pub fn is_ready(&self) -> bool {
        let c = self.components.lock().expect("health poisoned");
        !c.is_empty() && c.values().all(|c| c.ready)
    }

    fn report(&self) -> serde_json::Value {
        let c = self.components.lock().expect("health poisoned");
        serde_json::to_value(&*c).unwrap_or_default()
    }
}

/// How often [`watch`] pings a service by default.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(3);

/// Something whose readiness [`watch`] keeps current: a service or the broker.
pub trait Ping: Send + Sync + 'static {
    /// One round trip; the error says what is wrong (shown on `/readyz`).
    fn ping(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// Registers `component` (not ready until its first ping) and pings `target` every `interval`
/// until `shutdown`, so `/readyz` reflects an outage even while no record is being processed.
/// The one health loop of the process: the broker and every service a stage depends on.
pub fn watch<T: Ping + ?Sized>(
    component: &str,
    interval: Duration,
    target: Arc<T>,
    health: &Health,
    shutdown: &CancellationToken,
) {
    health.register(component);
    let (component, health, shutdown) = (component.to_string(), health.clone(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            match target.ping().await {
                Ok(()) => health.ready(&component),
                Err(e) => health.not_ready(&component, e),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
}

impl Ping for dyn sluice_bus::Bus {
    fn ping(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { sluice_bus::Bus::ping(self).await.map_err(|e| e.to_string()) })
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: Metrics,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let status = if s.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(s.health.report()))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

/// Binds the metrics/health server and serves it until `shutdown`. Returns the bound address
/// (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(self::metrics))
        .with_state(AppState { health, metrics });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the metrics address {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_all_components_are() {
        let h = Health::new();
        assert!(!h.is_ready());
        h.register("broker");
        h.register("memcached");
        assert!(!h.is_ready());
        h.ready("broker");
        h.ready("memcached");
        assert!(h.is_ready());
        h.not_ready("memcached", "connection refused");
        assert!(!h.is_ready());
        assert_eq!(h.report()["memcached"]["detail"], "connection refused");
    }
}
