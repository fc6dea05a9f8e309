//! `sluice consume`: print a topic as JSON lines, for debugging and tests.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};
use sluice_bus::{ConsumerEvent, StartFrom, SubscribeOptions};
use sluice_config::Broker;

use crate::PipelineArgs;

/// Arguments of `consume`.
#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Start at the oldest message instead of only new ones.
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this many seconds without a message.
    #[arg(long)]
    timeout: Option<f64>,
    /// Consumer group (default: a throw-away group; offsets are never committed).
    #[arg(long)]
    group: Option<String>,
}

fn bytes_json(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
    }
}

/// Prints messages until --max, --timeout or Ctrl-C.
pub async fn run(a: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let p = super::load::pipeline(&a.pipeline)?;
    if matches!(p.broker.value, Broker::Memory) {
        anyhow::bail!("broker is `memory`: the embedded bus lives inside `sluice run`; set SLUICE_BROKER to a Kafka address");
    }
    let bus = sluice_runtime::connect::bus(&p)?;
    let group = a.group.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("sluice-consume-{}-{nanos}", std::process::id())
    });
    let mut consumer = bus
        .subscribe(SubscribeOptions {
            group,
            topics: vec![a.topic.clone()],
            start_from: if a.from_beginning {
                StartFrom::Earliest
            } else {
                StartFrom::Latest
            },
            buffer: 1024,
        })
        .await?;
    let timeout = a.timeout.map(Duration::from_secs_f64);
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    loop {
        if a.max.is_some_and(|m| seen >= m) {
            break;
        }
        let ev = match timeout {
            Some(t) => match tokio::time::timeout(t, consumer.next()).await {
                Ok(ev) => ev,
                Err(_) => break,
            },
            None => tokio::select! {
                ev = consumer.next() => ev,
                _ = tokio::signal::ctrl_c() => break,
            },
        };
        match ev? {
            ConsumerEvent::Record(r) => {
                let headers: serde_json::Map<String, Value> = r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), bytes_json(v)))
                    .collect();
                let line = json!({
                    "topic": r.topic,
                    "partition": r.partition,
                    "offset": r.offset,
                    "key": r.key.as_deref().map(bytes_json),
                    "value": bytes_json(&r.value),
                    "headers": headers,
                    "timestamp_ms": r.timestamp_ms,
                });
                let mut out = stdout.lock();
                writeln!(out, "{line}")?;
                seen += 1;
            }
            ConsumerEvent::Revoked { ack, .. } => ack.done(Vec::new()),
            ConsumerEvent::Assigned(_) => {}
        }
    }
    std::io::stdout().flush()?;
    consumer.close().await.ok();
    Ok(ExitCode::SUCCESS)
}
