//! Producing with delivery acknowledgements.

use std::time::Duration;

use crate::{BusError, Delivered, OutRecord, Producer, DEFAULT_MAX_MESSAGE_BYTES};
use futures::future::BoxFuture;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;

use super::broker_err;

/// Longest wait between two tries while librdkafka's local queue is full.
const QUEUE_FULL_MAX_WAIT: Duration = Duration::from_millis(100);

/// A produce error as the bus reports it: [`BusError::Rejected`] for the errors that sending the
/// same record again cannot cure, [`BusError::Broker`] (retried) for the rest.
fn produce_err(e: KafkaError) -> BusError {
    use RDKafkaErrorCode as C;
    let code = match &e {
        KafkaError::MessageProduction(c) => Some(*c),
        _ => e.rdkafka_error_code(),
    };
    match code {
        Some(
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::MessageBatchTooLarge
            | C::InvalidMessage
            | C::InvalidRecord
            | C::InvalidTopic
            | C::UnknownTopic
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::PolicyViolation
            | C::InvalidRequiredAcks,
        ) => BusError::Rejected(e.to_string()),
        _ => broker_err(e),
    }
}

/// One producer per process (librdkafka batches across all callers).
pub struct KafkaProducer {
    inner: FutureProducer,
}

impl KafkaProducer {
    /// Creates the producer. Settings favour durability (acks=all, idempotence) and place keys
    /// like the Java client does (murmur2), so other Kafka clients agree on partitions.
    pub fn new(mut config: ClientConfig) -> Result<Self, BusError> {
        let defaults = [
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("partitioner", "murmur2_random"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
            ("queue.buffering.max.messages", "200000"),
        ];
        for (k, v) in defaults {
            if config.get(k).is_none() {
                config.set(k, v);
            }
        }
        // Page records carry bodies up to the crawl's max_body: as large as topics take.
        if config.get("message.max.bytes").is_none() {
            config.set("message.max.bytes", DEFAULT_MAX_MESSAGE_BYTES.to_string());
        }
        let inner: FutureProducer = config.create().map_err(broker_err)?;
        Ok(Self { inner })
    }
}

impl Producer for KafkaProducer {
    fn send(&self, record: OutRecord) -> BoxFuture<'static, Result<Delivered, BusError>> {
        let producer = self.inner.clone();
        Box::pin(async move {
            let mut queue_wait = Duration::from_millis(1);
            let delivery = loop {
                let mut fr = FutureRecord::to(&record.topic).payload(record.value.as_slice());
                if let Some(k) = &record.key {
                    fr = fr.key(k.as_slice());
                }
                if let Some(p) = record.partition {
                    fr = fr.partition(p);
                }
                if !record.headers.is_empty() {
                    let mut h = OwnedHeaders::new_with_capacity(record.headers.len());
                    for (key, value) in &record.headers {
                        h = h.insert(Header {
                            key,
                            value: Some(value.as_slice()),
                        });
                    }
                    fr = fr.headers(h);
                }
                match producer.send_result(fr) {
                    Ok(f) => break f,
                    // The local queue is full: wait for deliveries instead of failing, longer
                    // each time. The caller drops this future to give up (on shutdown).
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(queue_wait).await;
                        queue_wait = (queue_wait * 2).min(QUEUE_FULL_MAX_WAIT);
                    }
                    Err((e, _)) => return Err(produce_err(e)),
                }
            };
            match delivery.await {
                Ok(Ok(d)) => Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                }),
                Ok(Err((e, _))) => Err(produce_err(e)),
                Err(_) => Err(BusError::Closed),
            }
        })
    }

    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), BusError>> {
        let producer = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || producer.flush(timeout))
                .await
                .map_err(|e| BusError::Broker(e.to_string()))?
                .map_err(broker_err)
        })
    }
}
