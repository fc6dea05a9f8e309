//! The Kafka bus, through rdkafka (librdkafka). Plain Kafka client code: it runs against
//! Apache Kafka, Redpanda or any Kafka-protocol broker.
//!
//! Only built with the `kafka` feature, since librdkafka is a large C build that crates which
//! need only the bus contract (stage kinds) should not pay for.

mod admin;
mod consumer;
mod producer;
mod rebalance;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::{
    Bus, BusError, Consumer, CreateOutcome, Producer, SubscribeOptions, TopicPartition, TopicSpec,
};
use async_trait::async_trait;
use indexmap::IndexMap;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::TopicPartitionList;

pub use consumer::KafkaConsumer;
pub use producer::KafkaProducer;

/// How long metadata and offset queries may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A Kafka cluster.
pub struct KafkaBus {
    bootstrap: String,
    options: IndexMap<String, String>,
    producer: OnceLock<Arc<KafkaProducer>>,
    /// A group-less consumer for metadata and watermark queries.
    meta: OnceLock<Arc<BaseConsumer>>,
}

fn broker_err(e: impl std::fmt::Display) -> BusError {
    BusError::Broker(e.to_string())
}

/// librdkafka properties that only producers read.
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "linger.ms",
    "queue.buffering.max.ms",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "compression.type",
    "compression.codec",
    "compression.level",
    "batch.num.messages",
    "batch.size",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "partitioner",
    "retries",
    "message.send.max.retries",
    "sticky.partitioning.linger.ms",
];

/// librdkafka properties that only consumers read.
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "partition.assignment.strategy",
    "isolation.level",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.wait.max.ms",
    "max.partition.fetch.bytes",
    "queued.min.messages",
    "queued.max.messages.kbytes",
];

impl KafkaBus {
    /// A bus for `bootstrap` servers (`host:port,...`) with extra librdkafka properties.
    pub fn new(bootstrap: &str, options: IndexMap<String, String>) -> Self {
        let bootstrap = bootstrap.trim().trim_start_matches("kafka://").to_string();
        Self {
            bootstrap,
            options,
            producer: OnceLock::new(),
            meta: OnceLock::new(),
        }
    }

    /// Base client configuration: bootstrap servers plus the user's options.
    /// Config for consumers and admin clients: `broker_options` minus producer-only
    /// properties (librdkafka warns about each one it ignores).
    fn client_config(&self) -> ClientConfig {
        self.config_without(PRODUCER_ONLY)
    }

    /// Config for the producer: `broker_options` minus consumer-only properties.
    fn producer_config(&self) -> ClientConfig {
        self.config_without(CONSUMER_ONLY)
    }

    fn config_without(&self, skip: &[&str]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c.set("client.id", "sluice");
        for (k, v) in &self.options {
            if !skip.contains(&k.as_str()) {
                c.set(k, v);
            }
        }
        c
    }

    fn meta(&self) -> Result<Arc<BaseConsumer>, BusError> {
        if let Some(m) = self.meta.get() {
            return Ok(m.clone());
        }
        let m: BaseConsumer = self
            .client_config()
            .set("group.id", "sluice-metadata")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(broker_err)?;
        Ok(self.meta.get_or_init(|| Arc::new(m)).clone())
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, BusError> + Send + 'static,
    ) -> Result<T, BusError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| BusError::Broker(format!("query task failed: {e}")))?
    }
}

#[async_trait]
impl Bus for KafkaBus {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn create_topics(
        &self,
        topics: &[TopicSpec],
    ) -> Result<Vec<(String, CreateOutcome)>, BusError> {
        admin::create_topics(self, topics).await
    }

    async fn partitions(&self, topic: &str) -> Result<i32, BusError> {
        let meta = self.meta()?;
        let topic = topic.to_string();
        Self::blocking(move || {
            let md = meta
                .fetch_metadata(Some(&topic), QUERY_TIMEOUT)
                .map_err(broker_err)?;
            let t = md
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .ok_or_else(|| BusError::UnknownTopic(topic.clone()))?;
            if t.error().is_some() || t.partitions().is_empty() {
                return Err(BusError::UnknownTopic(topic.clone()));
            }
            Ok(t.partitions().len() as i32)
        })
        .await
    }

    async fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64), BusError> {
        let meta = self.meta()?;
        let tp = tp.clone();
        Self::blocking(move || {
            meta.fetch_watermarks(&tp.topic, tp.partition, QUERY_TIMEOUT)
                .map_err(broker_err)
        })
        .await
    }

    async fn committed(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<Option<i64>>, BusError> {
        let c: BaseConsumer = self
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(broker_err)?;
        let partitions = partitions.to_vec();
        Self::blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for tp in &partitions {
                tpl.add_partition(&tp.topic, tp.partition);
            }
            let got = c
                .committed_offsets(tpl, QUERY_TIMEOUT)
                .map_err(broker_err)?;
            Ok(partitions
                .iter()
                .map(|tp| {
                    got.find_partition(&tp.topic, tp.partition)
                        .and_then(|e| e.offset().to_raw())
                        .filter(|o| *o >= 0)
                })
                .collect())
        })
        .await
    }

    fn producer(&self) -> Result<Arc<dyn Producer>, BusError> {
        if let Some(p) = self.producer.get() {
            return Ok(p.clone());
        }
        let p = Arc::new(KafkaProducer::new(self.producer_config())?);
        Ok(self.producer.get_or_init(|| p).clone())
    }

    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Consumer>, BusError> {
        Ok(Box::new(KafkaConsumer::start(
            self.client_config(),
            options,
        )?))
    }

    async fn ping(&self) -> Result<(), BusError> {
        let meta = self.meta()?;
        Self::blocking(move || {
            let md = meta
                .fetch_metadata(None, Duration::from_secs(5))
                .map_err(broker_err)?;
            if md.brokers().is_empty() {
                return Err(BusError::Broker("no broker in metadata".into()));
            }
            Ok(())
        })
        .await
    }
}
