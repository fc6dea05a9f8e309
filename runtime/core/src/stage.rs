//! What a stage kind implements, and what the runtime hands it: every contract between a
//! stage and the runtime is in this file.
//!
//! A stage kind ([`StageKind`]) is registered once (see `registry`) with a typed `Settings`
//! struct, and built once per stage process from its `pipeline.yaml` entry, the settings
//! already parsed and validated. It builds one of:
//! - a [`Processor`]: the runtime feeds it the input topic's records and takes care of
//!   offsets, retries, dead-lettering and output delivery (the record driver, `driver.rs`);
//! - a [`BatchSink`]: the runtime feeds it records into per-partition batches (files) and
//!   commits when a batch is closed (the batch driver, `batch.rs`);
//! - a [`Source`]: it runs by itself (an HTTP endpoint) and writes through an [`Emitter`].
//!
//! No stage holds the producer: outputs go through an [`Emitter`] on an [`Output`] port.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use sluice_bus::{Record, TopicPartition};
use sluice_config::{Diagnostic, KindInfo, Node, Pipeline, StageSpec, Validate};
use tokio_util::sync::CancellationToken;

pub use crate::emit::{Emitter, Output};

use crate::emit::Delivery;
use crate::health::{Health, Ping};
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
    /// The runtime gave up on the record (the drain timeout after shutdown passed): it is
    /// left uncommitted and replayed, never dead-lettered.
    #[error("abandoned at shutdown")]
    Abandoned,
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
            StageError::Abandoned => "abandoned",
        }
    }
}

/// Turns one input record into output records.
///
/// Must be idempotent: after a crash the runtime replays records whose outputs were not all
/// acknowledged, so a record may be processed more than once. Decide before emitting: what
/// was sent before an error is not taken back.
#[async_trait]
pub trait Processor: Send + Sync + 'static {
    /// Processes one record, sending its outputs through `out`. The input is committed once
    /// everything sent is acknowledged; a processor that must know that earlier (to remember
    /// what it delivered) calls [`Emitter::flush`] itself.
    async fn process(&self, record: &Record, out: &mut Emitter) -> Result<(), StageError>;
}

/// When the batch driver closes a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Rows per batch.
    pub max_rows: usize,
    /// Bytes per batch, as the sink counts them.
    pub max_bytes: usize,
    /// Age of a batch (from its first record).
    pub max_age: Duration,
    /// Bytes of all open batches together; the biggest is closed beyond it.
    pub max_buffered: usize,
}

/// A stage that writes its input in batches (files) instead of record by record.
#[async_trait]
pub trait BatchSink: Send + Sync + 'static {
    /// Batch limits.
    fn limits(&self) -> BatchLimits;
    /// Starts a batch of partition `tp` whose first record is at `first_offset`.
    async fn open(
        &self,
        tp: &TopicPartition,
        first_offset: i64,
    ) -> Result<Box<dyn BatchWriter>, StageError>;
}

/// One open batch.
#[async_trait]
pub trait BatchWriter: Send {
    /// The offset this batch must end at, when a replay finds a file finished for the same
    /// first offset before a crash: ending there rewrites the same file.
    fn end_at(&self) -> Option<i64> {
        None
    }
    /// Adds a record and returns the bytes it adds. `Invalid` sends the record to the
    /// dead-letter topic (it stays covered by the batch's offsets).
    async fn push(&mut self, record: &Record) -> Result<usize, StageError>;
    /// Completes the batch, which ends at `last_offset`, sending what it publishes (a
    /// manifest) through `out`; the offsets are committed once that is acknowledged.
    async fn finish(self: Box<Self>, last_offset: i64, out: &mut Emitter)
        -> Result<(), StageError>;
    /// Drops the batch and whatever it wrote.
    async fn abort(self: Box<Self>);
}

/// A stage that runs without an input topic (an HTTP endpoint, a file reader).
#[async_trait]
pub trait Source: Send + 'static {
    /// Runs until `ctx.shutdown` is cancelled (then returns after draining) or fails. Writes
    /// through [`StageContext::emitter`].
    async fn run(self: Box<Self>, ctx: StageContext) -> anyhow::Result<()>;
}

/// A built stage.
pub enum StageImpl {
    /// Consumes the stage's input topic record by record.
    Processor(Arc<dyn Processor>),
    /// Consumes the stage's input topic in batches (files).
    Batch(Arc<dyn BatchSink>),
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
    /// Shared-state services (cache, slots, storage, Chroma), opened once per process.
    pub services: Services,
    /// This stage's metrics.
    pub metrics: StageMetrics,
    /// Readiness reporting.
    pub health: Health,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// How this stage's outputs reach the broker.
    pub(crate) delivery: Delivery,
}

impl StageContext {
    /// The output port `port` (`output`, `discovered`, ...); an error when the stage does not
    /// bind it.
    pub fn output(&self, port: &str) -> anyhow::Result<Output> {
        self.optional_output(port)
            .ok_or_else(|| anyhow::anyhow!("stage `{}` has no `{port}` topic", self.name))
    }

    /// The output port `port`, if the stage binds it.
    pub fn optional_output(&self, port: &str) -> Option<Output> {
        self.spec.outputs.get(port).map(|t| {
            let limit = self
                .pipeline
                .topics
                .get(&t.value)
                .and_then(|topic| topic.max_message_bytes);
            let output = Output::new(port, &t.value);
            match limit {
                Some(bytes) => output.with_record_limit(bytes as usize),
                None => output,
            }
        })
    }

    /// An emitter for a source's unit of work (one request): its sends are retried up to the
    /// stage's `retry.attempts` rounds, then fail, so the caller can answer.
    pub fn emitter(&self) -> Emitter {
        self.delivery.clone().bounded().emitter()
    }

    /// Keeps `component`'s readiness current by pinging `target` every few seconds until
    /// shutdown, so `/readyz` shows an outage even while no record is in work.
    pub fn watch<T: Ping + ?Sized>(&self, component: &str, target: Arc<T>) {
        crate::health::watch(
            component,
            crate::health::WATCH_INTERVAL,
            target,
            &self.health,
            &self.shutdown,
        );
    }
}

/// A stage implementation, registered in the binary's registry (`src/stages.rs`).
///
/// The runtime parses and validates `Settings` from the stage's pipeline.yaml entry once,
/// reporting errors at their line, both for `sluice validate` and before `build`.
pub trait StageKind: Send + Sync + 'static {
    /// The kind's own pipeline.yaml fields (not the common ones such as `input`, `replicas`,
    /// nor its output ports). `#[serde(deny_unknown_fields)]` makes typos errors.
    type Settings: DeserializeOwned + Validate + Send + 'static;
    /// Name, message types and ports, for `validate` and the renderers.
    fn info(&self) -> KindInfo;
    /// Builds the stage for one process (write it as an `async fn`). Failing here is a
    /// start-up error with context.
    fn build(
        &self,
        settings: Self::Settings,
        ctx: StageContext,
    ) -> impl Future<Output = anyhow::Result<StageImpl>> + Send;
    /// Checks the stage against the rest of the pipeline, for settings it shares with
    /// another stage; errors name the field (reported at its line) and say why.
    fn check_in_pipeline(
        &self,
        settings: &Self::Settings,
        stage: &StageSpec,
        pipeline: &Pipeline,
    ) -> Result<(), (&'static str, String)> {
        let _ = (settings, stage, pipeline);
        Ok(())
    }
    /// Default number of records in flight per process when the stage sets no `concurrency`.
    fn default_concurrency(&self) -> usize {
        64
    }
    /// How long a stage may take to drain on shutdown.
    fn drain_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// A [`StageKind`] with its settings type erased, as the registry holds it.
pub trait DynKind: Send + Sync + 'static {
    /// See [`StageKind::info`].
    fn info(&self) -> KindInfo;
    /// Parses and validates a stage's settings, reporting every problem at its position.
    fn check_settings(&self, settings: &Node) -> Result<(), Vec<Diagnostic>>;
    /// See [`StageKind::check_in_pipeline`]; `settings` passed [`DynKind::check_settings`].
    fn check_in_pipeline(
        &self,
        stage: &StageSpec,
        settings: &Node,
        pipeline: &Pipeline,
    ) -> Vec<Diagnostic>;
    /// Parses the settings and checks them against the pipeline, then [`StageKind::build`].
    fn build(&self, ctx: StageContext) -> BoxFuture<'_, anyhow::Result<StageImpl>>;
    /// See [`StageKind::default_concurrency`].
    fn default_concurrency(&self) -> usize;
    /// See [`StageKind::drain_timeout`].
    fn drain_timeout(&self) -> Duration;
}

impl<K: StageKind> DynKind for K {
    fn info(&self) -> KindInfo {
        StageKind::info(self)
    }

    fn check_settings(&self, settings: &Node) -> Result<(), Vec<Diagnostic>> {
        sluice_config::check_validated::<K::Settings>(settings)
    }

    fn check_in_pipeline(
        &self,
        stage: &StageSpec,
        settings: &Node,
        pipeline: &Pipeline,
    ) -> Vec<Diagnostic> {
        let Ok(parsed) = sluice_config::parse_validated::<K::Settings>(settings) else {
            return Vec::new(); // reported by check_settings
        };
        match StageKind::check_in_pipeline(self, &parsed, stage, pipeline) {
            Ok(()) => Vec::new(),
            Err((field, message)) => {
                let pos = settings.get(field).map_or(&stage.pos, |n| &n.pos);
                vec![Diagnostic::error(
                    pos.clone(),
                    format!("stage `{}`: {message}", stage.name),
                )]
            }
        }
    }

    fn build(&self, ctx: StageContext) -> BoxFuture<'_, anyhow::Result<StageImpl>> {
        let parsed = sluice_config::parse_validated::<K::Settings>(&ctx.spec.settings)
            .map_err(|d| anyhow::anyhow!("stage `{}`: {d}", ctx.name))
            .and_then(|settings| {
                StageKind::check_in_pipeline(self, &settings, &ctx.spec, &ctx.pipeline)
                    .map_err(|(field, m)| anyhow::anyhow!("stage `{}`: {field}: {m}", ctx.name))?;
                Ok(settings)
            });
        Box::pin(async move { StageKind::build(self, parsed?, ctx).await })
    }

    fn default_concurrency(&self) -> usize {
        StageKind::default_concurrency(self)
    }

    fn drain_timeout(&self) -> Duration {
        StageKind::drain_timeout(self)
    }
}
