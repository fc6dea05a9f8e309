//! `sluice produce`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use sluice_bus::{OutRecord, Producer};
use sluice_config::Broker;
use sluice_topics::{Contract, UrlIn};

use crate::PipelineArgs;

/// Arguments of `produce`.
#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Topic to write to.
    #[arg(long, default_value = "url-in")]
    topic: String,
    /// Send lines as they are, without checking them as URLs.
    #[arg(long)]
    raw: bool,
    /// Input file, or `-` for standard input.
    #[arg(default_value = "-")]
    input: String,
}

/// Counts of a produce run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Acknowledged by the broker.
    pub sent: u64,
    /// Refused before sending (not a URL).
    pub rejected: u64,
}

/// Most sends awaiting acknowledgement at once.
const WINDOW: usize = 10_000;

/// Sends `lines` to `topic`; with `check_urls`, lines that are not crawlable URLs are
/// reported and skipped. Blank lines and `#` comments are skipped.
pub async fn send_lines(
    producer: &dyn Producer,
    topic: &str,
    lines: impl Iterator<Item = String>,
    check_urls: bool,
    progress: bool,
) -> anyhow::Result<Summary> {
    let bar = if progress {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {pos} sent {msg} [{elapsed}, {per_sec}]")
                .expect("static template"),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let opts = sluice_web::normalize::NormalizeOptions::default();
    let mut summary = Summary::default();
    let mut in_flight = FuturesUnordered::new();
    for (n, line) in lines.enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let value = if check_urls {
            let u = UrlIn::decode(line.as_bytes());
            match u
                .as_ref()
                .map(|u| sluice_web::normalize::normalize(&u.url, &opts))
            {
                Ok(Ok(_)) => line.as_bytes().to_vec(),
                Ok(Err(reason)) => {
                    bar.suspend(|| eprintln!("line {}: rejected: {reason}: {line}", n + 1));
                    summary.rejected += 1;
                    continue;
                }
                Err(e) => {
                    bar.suspend(|| eprintln!("line {}: rejected: {e}", n + 1));
                    summary.rejected += 1;
                    continue;
                }
            }
        } else {
            line.as_bytes().to_vec()
        };
        in_flight.push(producer.send(OutRecord::new(topic, value)));
        if in_flight.len() >= WINDOW {
            if let Some(r) = in_flight.next().await {
                r.context("broker did not acknowledge a message")?;
                summary.sent += 1;
                bar.inc(1);
            }
        }
    }
    while let Some(r) = in_flight.next().await {
        r.context("broker did not acknowledge a message")?;
        summary.sent += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// Produces the input's lines.
pub async fn run(a: ProduceArgs) -> anyhow::Result<ExitCode> {
    let p = super::load::pipeline(&a.pipeline)?;
    if matches!(p.broker.value, Broker::Memory) {
        anyhow::bail!(
            "broker is `memory`: the embedded bus lives inside `sluice run`; use `sluice run --seeds FILE`, the ingest endpoint, or set SLUICE_BROKER to a Kafka address"
        );
    }
    if !p.topics.contains_key(&a.topic) {
        anyhow::bail!(
            "topic `{}` is not declared in {}",
            a.topic,
            a.pipeline.file.display()
        );
    }
    let bus = sluice_runtime::connect::bus(&p)?;
    let producer = bus.producer()?;
    let reader: Box<dyn BufRead> = if a.input == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let path = PathBuf::from(&a.input);
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?,
        ))
    };
    let lines = reader.lines().map_while(Result::ok);
    let progress = std::io::stderr().is_terminal();
    let summary = send_lines(&*producer, &a.topic, lines, !a.raw, progress).await?;
    producer.flush(std::time::Duration::from_secs(30)).await?;
    eprintln!("sent {}, rejected {}", summary.sent, summary.rejected);
    Ok(ExitCode::SUCCESS)
}
