//! The front door: [`MemoryBus`] (topics, groups, members) and its producer.
//!
//! Requests are checked here, before anything changes, so that a rejected request leaves the
//! bus as it was; the logs and the groups below trust what they are given.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use tracing::debug;

use super::consumer::{MemberShared, MemoryConsumer};
use super::group::{Group, Member};
use super::log::{check_topic_name, Topic};
use super::{lock, read, write, REBALANCE_TIMEOUT};
use crate::{
    Bus, BusError, Consumer, CreateOutcome, Delivered, OutRecord, Producer, SubscribeOptions,
    TopicPartition, TopicSpec,
};

/// The embedded in-memory bus. Clones share the same topics, logs and groups.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl MemoryBus {
    /// An empty bus whose rebalances wait [`REBALANCE_TIMEOUT`] for revoked members.
    pub fn new() -> Self {
        Self::with_rebalance_timeout(REBALANCE_TIMEOUT)
    }

    /// An empty bus whose rebalances wait at most `timeout` for a revoked member's answer.
    pub fn with_rebalance_timeout(timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                topics: RwLock::new(HashMap::new()),
                groups: Mutex::new(HashMap::new()),
                next_member: AtomicU64::new(1),
                rebalance_timeout: timeout,
            }),
        }
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One lock at a time: a guard temporary would live to the end of the whole chain.
        let topics = read(&self.inner.topics).len();
        let groups = lock(&self.inner.groups).len();
        f.debug_struct("MemoryBus")
            .field("topics", &topics)
            .field("groups", &groups)
            .field("rebalance_timeout", &self.inner.rebalance_timeout)
            .finish()
    }
}

struct Inner {
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    next_member: AtomicU64,
    rebalance_timeout: Duration,
}

impl Inner {
    fn topic(&self, name: &str) -> Result<Arc<Topic>, BusError> {
        read(&self.topics)
            .get(name)
            .cloned()
            .ok_or_else(|| BusError::UnknownTopic(name.to_owned()))
    }
}

struct MemoryProducer {
    inner: Arc<Inner>,
}

impl Producer for MemoryProducer {
    fn send(&self, record: OutRecord) -> BoxFuture<'static, Result<Delivered, BusError>> {
        let delivered = self
            .inner
            .topic(&record.topic)
            .and_then(|topic| topic.append(record));
        futures::future::ready(delivered).boxed()
    }

    fn flush(&self, _timeout: Duration) -> BoxFuture<'_, Result<(), BusError>> {
        futures::future::ready(Ok(())).boxed()
    }
}

#[async_trait::async_trait]
impl Bus for MemoryBus {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn create_topics(
        &self,
        topics: &[TopicSpec],
    ) -> Result<Vec<(String, CreateOutcome)>, BusError> {
        for spec in topics {
            check_topic_name(&spec.name)?;
            if spec.partitions < 1 {
                return Err(BusError::Invalid(format!(
                    "topic `{}` needs at least one partition, not {}",
                    spec.name, spec.partitions
                )));
            }
        }
        let mut map = write(&self.inner.topics);
        Ok(topics
            .iter()
            .map(|spec| {
                let outcome = match map.get(&spec.name) {
                    Some(topic) => CreateOutcome::Exists {
                        partitions: topic.partition_count(),
                    },
                    None => {
                        map.insert(
                            spec.name.clone(),
                            Arc::new(Topic::new(&spec.name, spec.partitions, spec.record_limit())),
                        );
                        debug!(topic = %spec.name, partitions = spec.partitions, "topic created");
                        CreateOutcome::Created
                    }
                };
                (spec.name.clone(), outcome)
            })
            .collect())
    }

    async fn partitions(&self, topic: &str) -> Result<i32, BusError> {
        Ok(self.inner.topic(topic)?.partition_count())
    }

    async fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64), BusError> {
        let topic = self.inner.topic(&tp.topic)?;
        let partition = topic
            .partition(tp.partition)
            .ok_or_else(|| BusError::UnknownPartition(tp.clone()))?;
        Ok((0, partition.end()))
    }

    async fn committed(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<Option<i64>>, BusError> {
        let group = lock(&self.inner.groups).get(group).cloned();
        Ok(match group {
            None => vec![None; partitions.len()],
            Some(group) => group.committed(partitions),
        })
    }

    fn producer(&self) -> Result<Arc<dyn Producer>, BusError> {
        Ok(Arc::new(MemoryProducer {
            inner: Arc::clone(&self.inner),
        }))
    }

    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Consumer>, BusError> {
        if options.group.is_empty() {
            return Err(BusError::Invalid("empty consumer group id".into()));
        }
        if options.topics.is_empty() {
            return Err(BusError::Invalid(format!(
                "group `{}` subscribes to no topic",
                options.group
            )));
        }
        let mut topics: Vec<Arc<Topic>> = Vec::with_capacity(options.topics.len());
        for name in &options.topics {
            let topic = self.inner.topic(name)?;
            if !topics.iter().any(|t| Arc::ptr_eq(t, &topic)) {
                topics.push(topic);
            }
        }
        let group = Arc::clone(
            lock(&self.inner.groups)
                .entry(options.group.clone())
                .or_insert_with(|| {
                    Arc::new(Group::new(&options.group, self.inner.rebalance_timeout))
                }),
        );
        let id = self.inner.next_member.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(MemberShared::new());
        group.join(
            id,
            Member {
                topics,
                start_from: options.start_from,
                shared: Arc::clone(&shared),
            },
        );
        Ok(Box::new(MemoryConsumer::new(id, group, shared)))
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::memory::testing::{assigned, bus_with, options, record, spec, tp};
    use crate::memory::MemoryBus;
    use crate::{Bus, BusError, CreateOutcome, OutRecord};

    #[tokio::test]
    async fn create_topics_is_idempotent_and_validates() {
        let bus = MemoryBus::new();
        assert_eq!(bus.kind(), "memory");
        bus.ping().await.unwrap();
        let out = bus
            .create_topics(&[spec("a", 3), spec("b", 1)])
            .await
            .unwrap();
        assert_eq!(
            out,
            vec![
                ("a".to_string(), CreateOutcome::Created),
                ("b".to_string(), CreateOutcome::Created)
            ]
        );
        let out = bus.create_topics(&[spec("a", 5)]).await.unwrap();
        assert_eq!(
            out,
            vec![("a".to_string(), CreateOutcome::Exists { partitions: 3 })]
        );
        assert_eq!(bus.partitions("a").await.unwrap(), 3);
        for bad in [
            spec("c", 0),
            spec("bad name", 1),
            spec("..", 1),
            spec("", 1),
        ] {
            let err = bus.create_topics(&[spec("ok", 1), bad]).await.unwrap_err();
            assert!(matches!(err, BusError::Invalid(_)), "{err:?}");
        }
        // A rejected request creates nothing, not even its valid topics.
        assert!(matches!(
            bus.partitions("ok").await,
            Err(BusError::UnknownTopic(_))
        ));
    }

    #[tokio::test]
    async fn unknown_topics_and_partitions_are_errors() {
        let bus = bus_with("t", 2).await;
        let producer = bus.producer().unwrap();
        let err = producer
            .send(OutRecord::new("nope", "v"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, BusError::UnknownTopic(ref t) if t == "nope"),
            "{err:?}"
        );
        let err = bus
            .subscribe(options("g", &["t", "nope"]))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, BusError::UnknownTopic(ref t) if t == "nope"),
            "{err:?}"
        );
        assert!(matches!(
            bus.partitions("nope").await,
            Err(BusError::UnknownTopic(_))
        ));
        assert!(matches!(
            bus.watermarks(&tp("nope", 0)).await,
            Err(BusError::UnknownTopic(_))
        ));
        assert!(matches!(
            bus.watermarks(&tp("t", 2)).await,
            Err(BusError::UnknownPartition(_))
        ));
        let mut out = OutRecord::new("t", "v");
        out.partition = Some(2);
        assert!(matches!(
            producer.send(out).await,
            Err(BusError::UnknownPartition(ref p)) if *p == tp("t", 2)
        ));
        assert!(matches!(
            bus.subscribe(options("g", &[])).await.err().unwrap(),
            BusError::Invalid(_)
        ));
        // Nothing was appended by the failed sends.
        assert_eq!(bus.watermarks(&tp("t", 0)).await.unwrap(), (0, 0));
        assert_eq!(bus.watermarks(&tp("t", 1)).await.unwrap(), (0, 0));
    }

    /// Run with `cargo test --release -p sluice-bus -- --ignored throughput`.
    #[tokio::test]
    #[ignore = "timing-dependent; for measuring, in release builds"]
    async fn throughput() {
        const COUNT: usize = 500_000;
        let bus = bus_with("t", 4).await;
        let producer = bus.producer().unwrap();
        let mut c = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut c).await;
        let start = std::time::Instant::now();
        let reader = tokio::spawn(async move {
            for _ in 0..COUNT {
                record(&mut c).await;
            }
        });
        for i in 0..COUNT {
            producer
                .send(OutRecord::new("t", [0u8; 16]).with_key((i as u32).to_le_bytes()))
                .await
                .unwrap();
        }
        reader.await.unwrap();
        let rate = COUNT as f64 / start.elapsed().as_secs_f64();
        tracing::info!(rate, "messages/s produced and consumed");
        assert!(rate > 200_000.0, "only {rate:.0} messages/s");
    }
}
