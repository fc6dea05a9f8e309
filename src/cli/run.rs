//! `sluice run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use sluice_runtime::runner::{self, RunOptions};
use tokio_util::sync::CancellationToken;

use crate::PipelineArgs;

/// Arguments of `run`.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Stage to run (repeatable); all stages when none is given.
    #[arg(long = "stage", value_name = "NAME")]
    stages: Vec<String>,
    /// Address of /metrics, /healthz and /readyz; port 0 picks a free port (logged).
    #[arg(long, env = "SLUICE_METRICS_ADDR", default_value = "0.0.0.0:9400")]
    metrics_addr: SocketAddr,
    /// Produce these URLs (one per line) to the seed topic once the stages are up.
    #[arg(long, value_name = "FILE")]
    seeds: Option<PathBuf>,
    /// Topic the seeds go to.
    #[arg(long, default_value = "url-in")]
    seed_topic: String,
    /// Stop (draining and committing) once every consuming stage has caught up with its input
    /// and nothing new arrived for this long, e.g. `5s`. For one-off local runs.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    exit_when_idle: Option<Duration>,
}

/// Runs the stages until SIGINT/SIGTERM (or idleness with --exit-when-idle).
pub async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let p = super::load::pipeline(&a.pipeline)?;
    let shutdown = CancellationToken::new();
    runner::cancel_on_signals(shutdown.clone());
    let running = runner::start(
        p.clone(),
        &crate::stages::registry(),
        RunOptions {
            stages: a.stages.clone(),
            metrics_addr: a.metrics_addr,
        },
        shutdown.clone(),
    )
    .await?;
    if let Some(seeds) = &a.seeds {
        if !p.topics.contains_key(&a.seed_topic) {
            anyhow::bail!(
                "seed topic `{}` is not declared in the pipeline",
                a.seed_topic
            );
        }
        let text = std::fs::read_to_string(seeds)
            .with_context(|| format!("reading seeds from {}", seeds.display()))?;
        let summary = super::produce::send_lines(
            &*running.bus.producer()?,
            &a.seed_topic,
            text.lines().map(str::to_string),
            true,
            false,
        )
        .await?;
        tracing::info!(sent = summary.sent, rejected = summary.rejected, topic = %a.seed_topic, "seeds produced");
    }
    let bus = running.bus.clone();
    if let Some(idle) = a.exit_when_idle {
        let bus_check = IdleWatch { idle };
        bus_check.watch(&running).await;
        shutdown.cancel();
    }
    running.wait().await?;
    print_topic_sizes(&*bus, &p).await;
    Ok(ExitCode::SUCCESS)
}

/// A closing summary: how many messages each topic holds (the embedded bus dies with the
/// process, so this is the last chance to see what the run produced).
async fn print_topic_sizes(bus: &dyn sluice_bus::Bus, p: &sluice_config::Pipeline) {
    for name in p.topics.keys() {
        let Ok(n) = bus.partitions(name).await else {
            continue;
        };
        let mut total = 0;
        for part in 0..n {
            if let Ok((low, high)) = bus
                .watermarks(&sluice_bus::TopicPartition::new(name, part))
                .await
            {
                total += high - low;
            }
        }
        eprintln!("{name}: {total} messages");
    }
}

struct IdleWatch {
    idle: Duration,
}

impl IdleWatch {
    /// Returns once the pipeline stayed idle for `self.idle` (or shutdown began).
    async fn watch(&self, running: &runner::Running) {
        let step = Duration::from_millis(250).min(self.idle);
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = running.shutdown.cancelled() => return,
            }
            match running.is_idle().await {
                Ok(true) => {
                    let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= self.idle {
                        tracing::info!("pipeline idle; stopping");
                        return;
                    }
                }
                Ok(false) => idle_since = None,
                Err(e) => {
                    tracing::warn!(error = %e, "idle check failed");
                    idle_since = None;
                }
            }
        }
    }
}
