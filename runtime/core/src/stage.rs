//! What a stage kind implements, and what the runtime hands it.
//!
//! A stage kind is registered once (see `registry`) and built once per stage process from its
//! `pipeline.yaml` entry. It is either a [`Processor`] — the runtime feeds it the input topic's
//! records and takes care of offsets, retries, dead-lettering and output delivery — or a
//! [`Source`] that produces on its own (an HTTP endpoint, a file reader).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use sluice_bus::{OutRecord, Producer, Record};
use sluice_config::{KindInfo, Pipeline, StageSpec};
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::StageMetrics;
use crate::services::Services;

/// Why processing one record failed. The variant decides what the runtime does next.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The record itself is bad (malformed URL, undecodable value): retrying cannot help, so
    /// it goes straight to the dead-letter topic with this reason.
    #[error("{reason}")]
    Invalid {
        /// Stable machine-readable code (`unparsable`, `too_long`, ...).
        code: &'static str,
        /// Human-readable reason.
        reason: String,
    },
    /// Something failed that may work next time; retried with backoff up to the stage's
    /// `retry.attempts`, then dead-lettered.
    #[error("{0:#}")]
    Transient(anyhow::Error),
    /// A dependency (memcached, etcd, ...) is down. Not the record's fault: retried without
    /// limit, the stage reports not-ready meanwhile, and nothing is dead-lettered.
    #[error("{dependency} unavailable: {error:#}")]
    Unavailable {
        /// Name of the dependency, as shown on `/readyz`.
        dependency: &'static str,
        /// What went wrong.
        error: anyhow::Error,
    },
}

impl StageError {
    /// A bad record.
    pub fn invalid(code: &'static str, reason: impl Into<String>) -> Self {
        StageError::Invalid {
            code,
            reason: reason.into(),
        }
    }

    /// A dependency outage.
    pub fn unavailable(dependency: &'static str, error: impl Into<anyhow::Error>) -> Self {
        StageError::Unavailable {
            dependency,
            error: error.into(),
        }
    }

    /// The code written to the dead-letter headers.
    pub fn code(&self) -> &'static str {
        match self {
            StageError::Invalid { code, .. } => code,
            StageError::Transient(_) => "failed_after_retries",
            StageError::Unavailable { .. } => "unavailable",
        }
    }
}

/// Turns one input record into output records.
///
/// Must be idempotent: after a crash the runtime replays records whose outputs were not all
/// acknowledged, so a record may be processed more than once.
#[async_trait]
pub trait Processor: Send + Sync + 'static {
    /// Processes one record; the returned records are produced, and the input is committed
    /// once they are all acknowledged.
    async fn process(&self, record: &Record) -> Result<Vec<OutRecord>, StageError>;
}

/// A stage that produces without an input topic (an HTTP endpoint, a file reader).
#[async_trait]
pub trait Source: Send + 'static {
    /// Runs until `ctx.shutdown` is cancelled (then returns after draining) or fails.
    async fn run(self: Box<Self>, ctx: StageContext) -> anyhow::Result<()>;
}

/// A built stage.
pub enum StageImpl {
    /// Consumes the stage's input topic.
    Processor(Arc<dyn Processor>),
    /// Consumes the stage's input topic in batches (files), see [`crate::batch`].
    Batch(Arc<dyn crate::batch::BatchSink>),
    /// Runs by itself.
    Source(Box<dyn Source>),
}

/// Everything a stage gets from the runtime.
#[derive(Clone)]
pub struct StageContext {
    /// Stage name from `pipeline.yaml`.
    pub name: String,
    /// Its configuration.
    pub spec: Arc<StageSpec>,
    /// The whole pipeline (for lookups such as topic partition counts).
    pub pipeline: Arc<Pipeline>,
    /// Shared state services (cache, slots), created once per process.
    pub services: Services,
    /// The process's producer.
    pub producer: Arc<dyn Producer>,
    /// This stage's metrics.
    pub metrics: StageMetrics,
    /// Readiness reporting.
    pub health: Health,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
}

impl StageContext {
    /// The topic bound to an output port (`output`, `discovered`, ...).
    pub fn output_topic(&self, port: &str) -> anyhow::Result<String> {
        self.spec
            .outputs
            .get(port)
            .map(|t| t.value.clone())
            .ok_or_else(|| anyhow::anyhow!("stage `{}` has no `{port}` topic", self.name))
    }

    /// The stage's kind-specific settings as a typed struct.
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        sluice_config::from_node(&self.spec.settings)
            .map_err(|d| anyhow::anyhow!("stage `{}`: {d}", self.name))
    }
}

/// A registered stage implementation.
pub trait StageKind: Send + Sync + 'static {
    /// What `validate` needs to know: input/output types and settings check.
    fn info(&self) -> KindInfo;
    /// Builds the stage for one process. Failing here is a start-up error with context.
    fn build(&self, ctx: StageContext) -> BoxFuture<'static, anyhow::Result<StageImpl>>;
    /// Default number of records in flight per process when the stage sets no `concurrency`.
    fn default_concurrency(&self) -> usize {
        64
    }
    /// How long a stage may take to drain on shutdown.
    fn drain_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}
