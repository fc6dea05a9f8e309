//! Starting a pipeline's stages in this process: one (Kubernetes), several, or all (laptop).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sluice_bus::{Bus, StartFrom, SubscribeOptions, TopicPartition};
use sluice_config::{Pipeline, StageSpec};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::BatchDriver;
use crate::connect;
use crate::driver::Driver;
use crate::emit::Delivery;
use crate::health::{self, Health};
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::retry::Backoff;
use crate::services::Services;
use crate::stage::{StageContext, StageImpl};

/// Health component name of the broker.
pub const BROKER: &str = "broker";
/// How often the broker is pinged for readiness.
const BROKER_WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stage names; empty means every stage of the pipeline.
    pub stages: Vec<String>,
    /// Address of `/metrics`, `/healthz`, `/readyz`.
    pub metrics_addr: SocketAddr,
}

/// A running set of stages.
pub struct Running {
    /// The bus the stages use (the embedded one lives only in this process).
    pub bus: Arc<dyn Bus>,
    /// Where the metrics server listens.
    pub metrics_addr: SocketAddr,
    /// Process metrics.
    pub metrics: Metrics,
    /// Readiness.
    pub health: Health,
    /// Cancel to stop every stage (they drain and commit).
    pub shutdown: CancellationToken,
    /// Names of the running stages that consume a topic.
    pub consumers: Vec<(String, String)>,
    tasks: JoinSet<(String, anyhow::Result<()>)>,
}

impl Running {
    /// Waits for every stage to end. The first failure stops the others and is returned.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_err = None;
        while let Some(r) = self.tasks.join_next().await {
            let (name, result) = match r {
                Ok(x) => x,
                Err(e) => (
                    "?".to_string(),
                    Err(anyhow::anyhow!("stage task panicked: {e}")),
                ),
            };
            if let Err(e) = result {
                tracing::error!(stage = %name, error = %format!("{e:#}"), "stage failed");
                self.shutdown.cancel();
                first_err.get_or_insert(e.context(format!("stage `{name}`")));
            }
        }
        self.shutdown.cancel();
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops every stage at once without draining or committing — what a crash (SIGKILL)
    /// does, for tests of at-least-once delivery.
    pub fn abort(mut self) {
        self.tasks.abort_all();
        self.shutdown.cancel();
    }

    /// True when every consuming stage has committed everything in its input topic (the
    /// pipeline has nothing left to do unless new input arrives).
    pub async fn is_idle(&self) -> anyhow::Result<bool> {
        for (stage, topic) in &self.consumers {
            let n = self.bus.partitions(topic).await?;
            let tps: Vec<TopicPartition> = (0..n).map(|p| TopicPartition::new(topic, p)).collect();
            let committed = self.bus.committed(stage, &tps).await?;
            for (tp, c) in tps.iter().zip(committed) {
                let (low, high) = self.bus.watermarks(tp).await?;
                if high > c.unwrap_or(low) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// Starts the stages on the bus pipeline.yaml names. Returns once they are all started.
pub async fn start(
    pipeline: Arc<Pipeline>,
    registry: &Registry,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let bus = connect::bus(&pipeline)?;
    let services = Services::from_pipeline(&pipeline).await?;
    start_on(bus, services, pipeline, registry, opts, shutdown).await
}

/// Starts the stages on a given bus and services (several runners can share one embedded bus,
/// like several processes share a Kafka cluster).
pub async fn start_on(
    bus: Arc<dyn Bus>,
    services: Services,
    pipeline: Arc<Pipeline>,
    registry: &Registry,
    opts: RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let names: Vec<String> = if opts.stages.is_empty() {
        pipeline.stages.keys().cloned().collect()
    } else {
        for s in &opts.stages {
            if !pipeline.stages.contains_key(s) {
                anyhow::bail!(
                    "no stage `{s}` in {} (stages: {})",
                    pipeline.path.display(),
                    pipeline
                        .stages
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        opts.stages.clone()
    };
    let metrics = Metrics::new();
    let health = Health::new();
    health.register(BROKER);
    let metrics_addr = health::serve(
        opts.metrics_addr,
        health.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(%metrics_addr, "serving /metrics, /healthz and /readyz");

    let producer = bus.producer().context("creating the producer")?;
    // Build every stage first: a configuration mistake (no API keys, bad settings) is
    // reported at once, not after the broker comes up.
    let mut built_stages = Vec::new();
    for name in names {
        let spec = pipeline.stages[&name].clone();
        let kind = registry
            .get(&spec.kind.value)
            .with_context(|| format!("stage `{name}`: unknown kind `{}`", spec.kind.value))?;
        let stage_metrics = metrics.stage(&name);
        let ctx = StageContext {
            name: name.clone(),
            spec: Arc::new(spec.clone()),
            pipeline: pipeline.clone(),
            services: services.clone(),
            metrics: stage_metrics.clone(),
            health: health.clone(),
            shutdown: shutdown.clone(),
            delivery: Delivery::new(
                producer.clone(),
                stage_metrics,
                backoff_of(&spec),
                shutdown.clone(),
            ),
        };
        let built = kind
            .build(ctx.clone())
            .await
            .with_context(|| format!("starting stage `{name}`"))?;
        built_stages.push((name, spec, kind, ctx, built));
    }

    // Wait for the broker (Kubernetes starts pods in any order), then make sure the topics exist.
    wait_for_broker(&*bus, &health, &shutdown).await?;
    bus.create_topics(&connect::topic_specs(&pipeline))
        .await
        .context("creating the pipeline's topics")?;
    health::watch(
        BROKER,
        BROKER_WATCH_INTERVAL,
        bus.clone(),
        &health,
        &shutdown,
    );

    let mut tasks = JoinSet::new();
    let mut consumers = Vec::new();
    for (name, spec, kind, ctx, built) in built_stages {
        match built {
            StageImpl::Source(source) => {
                tracing::info!(stage = %name, kind = %spec.kind.value, "source started");
                tasks.spawn(async move { (name, source.run(ctx).await) });
            }
            StageImpl::Batch(sink) => {
                let (input, dead_letter) = consumed_topics(&pipeline, &name, &spec)?;
                let driver = BatchDriver {
                    stage: name.clone(),
                    sink,
                    bus: bus.clone(),
                    subscribe: SubscribeOptions {
                        group: name.clone(),
                        topics: vec![input.clone()],
                        start_from: StartFrom::Earliest,
                        buffer: 1024,
                    },
                    producer: producer.clone(),
                    dead_letter,
                    backoff: backoff_of(&spec),
                    metrics: ctx.metrics.clone(),
                    health: health.clone(),
                    shutdown: shutdown.clone(),
                };
                tracing::info!(stage = %name, kind = %spec.kind.value, %input, "batch stage started");
                consumers.push((name.clone(), input));
                tasks.spawn(async move { (name, driver.run().await) });
            }
            StageImpl::Processor(processor) => {
                let (input, dead_letter) = consumed_topics(&pipeline, &name, &spec)?;
                let concurrency = spec
                    .concurrency
                    .map(|c| c as usize)
                    .unwrap_or_else(|| kind.default_concurrency());
                let consumer = bus
                    .subscribe(SubscribeOptions {
                        group: name.clone(),
                        topics: vec![input.clone()],
                        start_from: StartFrom::Earliest,
                        buffer: concurrency.max(64),
                    })
                    .await
                    .with_context(|| format!("stage `{name}`: subscribing to `{input}`"))?;
                let driver = Driver {
                    stage: name.clone(),
                    processor,
                    consumer,
                    producer: producer.clone(),
                    bus: bus.clone(),
                    dead_letter,
                    backoff: backoff_of(&spec),
                    concurrency,
                    drain_timeout: kind.drain_timeout(),
                    metrics: ctx.metrics.clone(),
                    health: health.clone(),
                    shutdown: shutdown.clone(),
                };
                tracing::info!(stage = %name, kind = %spec.kind.value, %input, concurrency, "stage started");
                consumers.push((name.clone(), input));
                tasks.spawn(async move { (name, driver.run().await) });
            }
        }
    }
    Ok(Running {
        bus,
        metrics_addr,
        metrics,
        health,
        shutdown,
        consumers,
        tasks,
    })
}

/// The input topic of a consuming stage and the pipeline's dead-letter topic.
fn consumed_topics(
    pipeline: &Pipeline,
    name: &str,
    spec: &StageSpec,
) -> anyhow::Result<(String, String)> {
    let input = spec
        .input
        .as_ref()
        .with_context(|| format!("stage `{name}` has no input topic"))?
        .value
        .clone();
    let dead_letter = pipeline
        .dead_letter
        .as_ref()
        .map(|d| d.value.clone())
        .with_context(|| {
            format!("stage `{name}` consumes a topic, so the pipeline needs a `dead_letter` topic (nothing may be lost)")
        })?;
    Ok((input, dead_letter))
}

/// The stage's `retry:` as a backoff policy.
fn backoff_of(spec: &StageSpec) -> Backoff {
    Backoff {
        attempts: spec.retry.attempts,
        base: spec.retry.backoff,
        max: spec.retry.max_backoff,
    }
}

async fn wait_for_broker(
    bus: &dyn Bus,
    health: &Health,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(200);
    loop {
        match bus.ping().await {
            Ok(()) => {
                health.ready(BROKER);
                return Ok(());
            }
            Err(e) => {
                health.not_ready(BROKER, &e);
                tracing::warn!(error = %e, "waiting for the broker");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => anyhow::bail!("stopped while waiting for the broker"),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Waits for SIGINT or SIGTERM, then cancels `token` (the stages drain, within their drain
/// timeouts); a second signal exits at once, leaving what is uncommitted to be replayed.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        if let Err(e) = next_signal().await {
            tracing::warn!(error = %e, "cannot watch signals; stop with SIGKILL");
            return;
        }
        tracing::info!("signal received; draining (a second signal exits at once)");
        token.cancel();
        if next_signal().await.is_ok() {
            tracing::warn!(
                "second signal: exiting without draining; uncommitted records will be replayed"
            );
            std::process::exit(130);
        }
    });
}

/// The next SIGINT or SIGTERM.
async fn next_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}
