//! Opening the bus that pipeline.yaml names.
//!
//! The Kafka bus is only compiled in with this crate's `kafka` feature: stage crates depend on
//! the runtime for its drivers and must not link librdkafka for it, while the binary that runs
//! them turns the feature on. A build without it still runs `broker: memory` pipelines and
//! says plainly why it cannot open a Kafka one.

use std::sync::Arc;

use sluice_bus::memory::MemoryBus;
use sluice_bus::{Bus, BusError, TopicSpec};
use sluice_config::{Broker, Pipeline};

/// The bus of `broker:` — a new embedded bus for `memory`, else a Kafka client.
///
/// Fails only for a Kafka broker in a build without the `kafka` feature.
pub fn bus(p: &Pipeline) -> Result<Arc<dyn Bus>, BusError> {
    match &p.broker.value {
        Broker::Memory => Ok(Arc::new(MemoryBus::new())),
        Broker::Kafka { bootstrap } => kafka(bootstrap, p),
    }
}

#[cfg(feature = "kafka")]
fn kafka(bootstrap: &str, p: &Pipeline) -> Result<Arc<dyn Bus>, BusError> {
    let mut options = p.broker_options.clone();
    // The producer refuses records over its own `message.max.bytes` before any topic sees
    // them: let it send what the largest topic takes.
    let largest = topic_specs(p).iter().map(TopicSpec::record_limit).max();
    if let Some(largest) = largest.filter(|l| *l > sluice_bus::DEFAULT_MAX_MESSAGE_BYTES) {
        options
            .entry("message.max.bytes".to_string())
            .or_insert_with(|| largest.to_string());
    }
    Ok(Arc::new(sluice_bus::kafka::KafkaBus::new(
        bootstrap, options,
    )))
}

#[cfg(not(feature = "kafka"))]
fn kafka(bootstrap: &str, _: &Pipeline) -> Result<Arc<dyn Bus>, BusError> {
    Err(BusError::Invalid(format!(
        "broker `{bootstrap}` is Kafka, but this build has no Kafka bus (feature `kafka` of sluice-runtime)"
    )))
}

/// The topics the pipeline declares, as the bus wants them.
pub fn topic_specs(p: &Pipeline) -> Vec<TopicSpec> {
    p.topics
        .values()
        .map(|t| TopicSpec {
            name: t.name.clone(),
            partitions: t.partitions as i32,
            replication: t.replication,
            max_message_bytes: t.max_message_bytes,
        })
        .collect()
}
