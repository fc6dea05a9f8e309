//! The message-bus contract that every Sluice stage runs on.
//!
//! Two implementations exist: the embedded [`memory::MemoryBus`] (one process, a laptop, tests)
//! and, with the `kafka` feature, `kafka::KafkaBus` (rdkafka; any Kafka-protocol broker). The
//! feature is off by default so that a crate needing only the contract (a stage kind) does not
//! build and link librdkafka. Both give the same delivery semantics:
//! topics split into partitions, each an append-only log with offsets; consumers join a group
//! and the group's partitions are spread over its members; a member commits the *next* offset
//! to read per partition, and a member that joins later (or after a crash) resumes there.
//!
//! # Rebalancing: cooperative and sticky, on both buses
//!
//! When members join or leave a group, its partitions are redistributed with Kafka's
//! incremental cooperative protocol (KIP-429) and a sticky assignor: the memory bus models it,
//! and the Kafka bus asks librdkafka for it (`partition.assignment.strategy=cooperative-sticky`).
//! It suits stages that hold work in flight, since a rebalance interrupts only the partitions
//! that move. What a [`Consumer`] reports, on either bus:
//!
//! - **Sticky.** A partition stays with its member unless balance needs it elsewhere: a join takes
//!   only what the joiner needs, a leave moves only the leaver's partitions.
//! - **Incremental.** [`ConsumerEvent::Revoked`] names only the partitions leaving this member,
//!   and [`ConsumerEvent::Assigned`] only those arriving. Partitions it does not name keep being
//!   read, without a pause, through the rebalance.
//! - **Handover after the answer.** A revoked member gets no more records of those partitions.
//!   The group waits for its [`RevokeAck`] (at most the rebalance timeout), commits the offsets it
//!   answers with, and only then hands the partitions to their new owner, which reads on from the
//!   committed offsets. Unless a member overruns the rebalance timeout (or, on Kafka, its
//!   session), no partition is worked on by two members at once.
//! - **Leaving.** A member that closes, is dropped or dies gives its partitions up without a
//!   `Revoked` event (it commits before closing); whatever it did not commit is read again by the
//!   next owner (at-least-once). A member that is still running but lost its partitions to the
//!   group (Kafka: a missed session) gets `Revoked`, and its answer is not committed.
//!
//! An eager strategy set through Kafka `broker_options` (`roundrobin`, `range`) keeps this
//! contract, except that every rebalance then revokes everything and hands most of it back.

#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;

use std::time::Duration;

use futures::future::BoxFuture;

/// A topic and one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index, from 0.
    pub partition: i32,
}

impl TopicPartition {
    /// Builds a topic-partition pair.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// One message header: name and raw value.
pub type Header = (String, Vec<u8>);

/// A message read from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic it was read from.
    pub topic: String,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Message key, if any.
    pub key: Option<Vec<u8>>,
    /// Message value (payload).
    pub value: Vec<u8>,
    /// Headers, in the order they were produced.
    pub headers: Vec<Header>,
    /// Producer or broker timestamp in milliseconds since the Unix epoch, when known.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// The record's topic-partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }

    /// The first header with this name, if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// A message to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Destination topic.
    pub topic: String,
    /// Message key; keyed messages go to the partition chosen by [`partition_for_key`].
    pub key: Option<Vec<u8>>,
    /// Message value.
    pub value: Vec<u8>,
    /// Headers. Keep them for low-volume topics (dead-letter): some brokers index them poorly.
    pub headers: Vec<Header>,
    /// Explicit partition, overriding the key.
    pub partition: Option<i32>,
}

impl OutRecord {
    /// A record with a value only.
    pub fn new(topic: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: topic.into(),
            key: None,
            value: value.into(),
            headers: Vec::new(),
            partition: None,
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition written.
    pub partition: i32,
    /// Offset assigned by the broker.
    pub offset: i64,
}

/// A topic's record size limit when it sets none: room for the crawl's largest page record (a
/// `max_body` of 2 MiB, JSON-escaped) many times over, and what the Kafka producer allows.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = 16 << 20;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Replication factor (ignored by the memory bus).
    pub replication: i16,
    /// Largest record the topic takes (Kafka's `max.message.bytes`); `None`:
    /// [`DEFAULT_MAX_MESSAGE_BYTES`].
    pub max_message_bytes: Option<u32>,
}

impl TopicSpec {
    /// A topic of `partitions` partitions, the broker's replication and the default limit.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            replication: -1,
            max_message_bytes: None,
        }
    }

    /// The record size limit, the default resolved.
    pub fn record_limit(&self) -> u32 {
        self.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES)
    }
}

/// What `create_topics` did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The topic did not exist and was created.
    Created,
    /// The topic existed already (with this many partitions).
    Exists {
        /// Partition count of the existing topic.
        partitions: i32,
    },
}

/// Where a new consumer group starts reading a partition that has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// The oldest message still in the partition (Kafka's `auto.offset.reset=earliest`).
    #[default]
    Earliest,
    /// Only messages produced after the assignment (`latest`).
    Latest,
}

/// Settings of one consumer.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// Consumer group id. Members of a group share the partitions.
    pub group: String,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Where to start without a committed offset.
    pub start_from: StartFrom,
    /// How many records may wait in the consumer's buffer before it pauses fetching.
    pub buffer: usize,
}

/// Something the consumer reports, in order.
#[derive(Debug)]
pub enum ConsumerEvent {
    /// These partitions are now this member's, in addition to those it holds already (only the
    /// new ones are named); their records follow.
    Assigned(Vec<TopicPartition>),
    /// These partitions are being taken away; the member keeps the others it holds (only the
    /// leaving ones are named). The consumer delivers no more of their records
    /// and waits until the receiver answers through `ack` with the offsets to commit (possibly
    /// none), commits them, and only then lets the group move the partitions on. Dropping the
    /// ack without answering commits nothing.
    Revoked {
        /// Partitions leaving this member.
        partitions: Vec<TopicPartition>,
        /// Answer with the next offset to read for each partition whose progress is final.
        ack: RevokeAck,
    },
    /// A message from an assigned partition.
    Record(Record),
}

/// The reply channel of [`ConsumerEvent::Revoked`].
#[derive(Debug)]
pub struct RevokeAck(pub tokio::sync::oneshot::Sender<Vec<(TopicPartition, i64)>>);

impl RevokeAck {
    /// Answers the revocation with the offsets to commit before the partitions move.
    pub fn done(self, offsets: Vec<(TopicPartition, i64)>) {
        let _ = self.0.send(offsets);
    }
}

/// Errors of a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The topic is not known to the bus.
    #[error("unknown topic `{0}`")]
    UnknownTopic(String),
    /// The partition does not exist.
    #[error("unknown partition {0}")]
    UnknownPartition(TopicPartition),
    /// Broker unreachable, timed out or refused; worth retrying.
    #[error("broker: {0}")]
    Broker(String),
    /// The consumer or bus has been closed.
    #[error("closed")]
    Closed,
    /// Invalid request (bad configuration, invalid name, ...).
    #[error("{0}")]
    Invalid(String),
    /// The broker refused this record for good: too large for its topic, not authorized,
    /// invalid. Sending it again cannot succeed.
    #[error("rejected by the broker: {0}")]
    Rejected(String),
}

impl BusError {
    /// Whether sending the same record again cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, BusError::Rejected(_) | BusError::UnknownTopic(_))
    }
}

/// A producer. Cloneable handles are cheap; share one per process.
pub trait Producer: Send + Sync {
    /// Queues a record; the future resolves once the broker acknowledged it (or failed for good).
    fn send(&self, record: OutRecord) -> BoxFuture<'static, Result<Delivered, BusError>>;
    /// Waits until every queued record is acknowledged or `timeout` passes.
    fn flush(&self, timeout: Duration) -> BoxFuture<'_, Result<(), BusError>>;
}

/// A group member reading records. One task drives it; `next()` must be cancel-safe (a
/// dropped `next()` future loses nothing), since the driver polls it inside `select!`.
///
/// Its group events follow the cooperative rebalance protocol of the crate docs: assignments and
/// revocations name only the partitions that change hands, and a revocation completes only once
/// it is answered (or its timeout passes).
#[async_trait::async_trait]
pub trait Consumer: Send + Sync {
    /// The next event. Waits while nothing is available; only `Err(Closed)` ends the stream.
    async fn next(&mut self) -> Result<ConsumerEvent, BusError>;
    /// Commits, for each partition, the next offset to read. With `sync` it waits for the
    /// broker; otherwise it may return before the commit is stored.
    async fn commit(&self, offsets: &[(TopicPartition, i64)], sync: bool) -> Result<(), BusError>;
    /// Leaves the group (its partitions move to the other members) and stops.
    async fn close(self: Box<Self>) -> Result<(), BusError>;
}

/// A message bus: topic admin, producers and group consumers.
#[async_trait::async_trait]
pub trait Bus: Send + Sync {
    /// A short name for logs and metrics (`memory`, `kafka`).
    fn kind(&self) -> &'static str;
    /// Creates the topics that do not exist yet. Idempotent.
    async fn create_topics(
        &self,
        topics: &[TopicSpec],
    ) -> Result<Vec<(String, CreateOutcome)>, BusError>;
    /// Number of partitions of a topic.
    async fn partitions(&self, topic: &str) -> Result<i32, BusError>;
    /// Low and high watermark of a partition (first offset kept, next offset to be written).
    async fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64), BusError>;
    /// The committed next offset of a group for each partition (None: nothing committed).
    async fn committed(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<Option<i64>>, BusError>;
    /// A producer.
    fn producer(&self) -> Result<std::sync::Arc<dyn Producer>, BusError>;
    /// A new member of `options.group` reading `options.topics`.
    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Consumer>, BusError>;
    /// Checks that the broker answers (readiness).
    async fn ping(&self) -> Result<(), BusError>;
}

/// Milliseconds since the Unix epoch: the clock records and messages are stamped with
/// (`timestamp_ms`, the contracts' `*_at_ms` fields). 0 if the system clock is before 1970.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The partition a keyed record goes to: Kafka's default partitioner (murmur2 of the key,
/// positive, modulo the partition count), so that the memory bus and Kafka place keys alike.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

/// Kafka's murmur2 variant (seed 0x9747b28c), as used by its Java client.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_java_client() {
        // Reference values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }
}
