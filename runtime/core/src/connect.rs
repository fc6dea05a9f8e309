//! Opening the bus that pipeline.yaml names.

use std::sync::Arc;

use sluice_bus::memory::MemoryBus;
use sluice_bus::{Bus, TopicSpec};
use sluice_config::{Broker, Pipeline};

use crate::kafka::KafkaBus;

/// The bus of `broker:` — a new embedded bus for `memory`, else a Kafka client.
pub fn bus(p: &Pipeline) -> Arc<dyn Bus> {
    match &p.broker.value {
        Broker::Memory => Arc::new(MemoryBus::new()),
        Broker::Kafka { bootstrap } => Arc::new(KafkaBus::new(bootstrap, p.broker_options.clone())),
    }
}

/// The topics the pipeline declares, as the bus wants them.
pub fn topic_specs(p: &Pipeline) -> Vec<TopicSpec> {
    p.topics
        .values()
        .map(|t| TopicSpec {
            name: t.name.clone(),
            partitions: t.partitions as i32,
            replication: t.replication,
        })
        .collect()
}
