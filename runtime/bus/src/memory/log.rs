//! The partition logs: where records live and how readers learn of new ones.
//!
//! Appends and reads of one partition meet under one short lock, and no other partition's
//! lock: producers of different partitions never wait on each other. Readers are woken per
//! append instead of polling, so an idle pipeline costs nothing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::lock;
use crate::{partition_for_key, BusError, Delivered, Header, OutRecord, Record, TopicPartition};

/// Entries per log segment. Segments never reallocate once full, so a long log grows without
/// copying everything it holds, and a small log wastes at most one partly-filled segment.
pub(super) const SEGMENT: usize = 1024;

/// Kafka's limit on topic name length.
const MAX_TOPIC_NAME: usize = 249;

/// Kafka's topic name rules, checked here so that a name that works in memory works on Kafka.
pub(super) fn check_topic_name(name: &str) -> Result<(), BusError> {
    let legal = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name == "." || name == ".." || name.len() > MAX_TOPIC_NAME || !legal {
        return Err(BusError::Invalid(format!(
            "invalid topic name `{name}`: use 1 to {MAX_TOPIC_NAME} of [a-zA-Z0-9._-], not `.` or `..`"
        )));
    }
    Ok(())
}

pub(super) struct Topic {
    pub(super) partitions: Box<[Arc<Partition>]>,
    /// Round-robin turn of unkeyed records.
    unkeyed: AtomicU32,
    /// Largest record taken, in bytes (key, value and headers), as Kafka's `max.message.bytes`.
    max_record: usize,
}

impl Topic {
    /// A topic of `count` empty partitions taking records up to `max_record` bytes; `count`
    /// is at least 1.
    pub(super) fn new(name: &str, count: i32, max_record: u32) -> Self {
        let name: Arc<str> = name.into();
        Self {
            partitions: (0..count)
                .map(|index| {
                    Arc::new(Partition {
                        topic: Arc::clone(&name),
                        index,
                        log: Mutex::new(Log::default()),
                    })
                })
                .collect(),
            unkeyed: AtomicU32::new(0),
            max_record: max_record as usize,
        }
    }

    pub(super) fn name(&self) -> &str {
        // A topic is never created with zero partitions.
        &self.partitions[0].topic
    }

    pub(super) fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }

    pub(super) fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }

    /// Appends a record to the partition Kafka would choose for it.
    pub(super) fn append(&self, record: OutRecord) -> Result<Delivered, BusError> {
        let OutRecord {
            topic,
            key,
            value,
            headers,
            partition,
        } = record;
        let size = value.len()
            + key.as_ref().map_or(0, Vec::len)
            + headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > self.max_record {
            return Err(BusError::Rejected(format!(
                "a record of {size} bytes is over topic `{topic}`'s max.message.bytes ({})",
                self.max_record
            )));
        }
        let count = self.partition_count();
        let index = match (partition, &key) {
            (Some(p), _) if (0..count).contains(&p) => p,
            (Some(p), _) => return Err(BusError::UnknownPartition(TopicPartition::new(topic, p))),
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => {
                let turn = self.unkeyed.fetch_add(1, Ordering::Relaxed);
                (turn % count as u32) as i32
            }
        };
        let offset = self.partitions[index as usize].append(Entry {
            key: key.map(Vec::into_boxed_slice),
            value: value.into_boxed_slice(),
            headers: headers.into_boxed_slice(),
            timestamp_ms: crate::now_ms(),
        });
        Ok(Delivered {
            partition: index,
            offset,
        })
    }
}

/// One stored record: boxed slices (no spare capacity), the topic and partition implied.
struct Entry {
    key: Option<Box<[u8]>>,
    value: Box<[u8]>,
    headers: Box<[Header]>,
    timestamp_ms: i64,
}

#[derive(Default)]
struct Log {
    segments: Vec<Vec<Entry>>,
    len: usize,
    /// Members reading this partition, woken on every append.
    watchers: Vec<(u64, Arc<Notify>)>,
}

impl Log {
    fn push(&mut self, entry: Entry) {
        match self.segments.last_mut() {
            Some(segment) if segment.len() < SEGMENT => segment.push(entry),
            _ => {
                self.segments.push(vec![entry]);
            }
        }
        self.len += 1;
    }

    fn get(&self, offset: i64) -> Option<&Entry> {
        let offset = usize::try_from(offset).ok()?;
        self.segments.get(offset / SEGMENT)?.get(offset % SEGMENT)
    }
}

pub(super) struct Partition {
    topic: Arc<str>,
    index: i32,
    log: Mutex<Log>,
}

impl Partition {
    pub(super) fn tp(&self) -> TopicPartition {
        TopicPartition::new(&*self.topic, self.index)
    }

    fn append(&self, entry: Entry) -> i64 {
        let mut log = lock(&self.log);
        let offset = log.len as i64;
        log.push(entry);
        for (_, notify) in &log.watchers {
            notify.notify_one();
        }
        offset
    }

    /// The next offset to be written (high watermark).
    pub(super) fn end(&self) -> i64 {
        lock(&self.log).len as i64
    }

    pub(super) fn read(&self, offset: i64) -> Option<Record> {
        let log = lock(&self.log);
        let entry = log.get(offset)?;
        Some(Record {
            topic: self.topic.to_string(),
            partition: self.index,
            offset,
            key: entry.key.as_deref().map(<[u8]>::to_vec),
            value: entry.value.to_vec(),
            headers: entry.headers.to_vec(),
            timestamp_ms: Some(entry.timestamp_ms),
        })
    }

    /// Wakes `notify` on every append until [`Partition::unwatch`].
    pub(super) fn watch(&self, member: u64, notify: &Arc<Notify>) {
        let mut log = lock(&self.log);
        if !log.watchers.iter().any(|(m, _)| *m == member) {
            log.watchers.push((member, Arc::clone(notify)));
        }
    }

    pub(super) fn unwatch(&self, member: u64) {
        lock(&self.log).watchers.retain(|(m, _)| *m != member);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::SEGMENT;
    use crate::memory::testing::{assert_quiet, assigned, bus_with, options, record, tp};
    use crate::now_ms;
    use crate::{partition_for_key, Bus, Delivered, OutRecord, Record};

    #[tokio::test]
    async fn keyed_records_land_where_partition_for_key_says_with_contiguous_offsets() {
        const PARTITIONS: i32 = 6;
        let bus = bus_with("t", PARTITIONS).await;
        let producer = bus.producer().unwrap();
        let before = now_ms();
        let mut sent: HashMap<i32, Vec<(String, String)>> = HashMap::new();
        for i in 0..300 {
            let key = format!("user-{}", i % 41);
            let value = format!("v{i}");
            let d = producer
                .send(
                    OutRecord::new("t", value.clone())
                        .with_key(key.clone())
                        .with_header("n", i.to_string()),
                )
                .await
                .unwrap();
            assert_eq!(d.partition, partition_for_key(key.as_bytes(), PARTITIONS));
            let log = sent.entry(d.partition).or_default();
            assert_eq!(d.offset, log.len() as i64, "offsets are contiguous from 0");
            log.push((key, value));
        }
        producer.flush(Duration::from_secs(1)).await.unwrap();
        let after = now_ms();
        assert!(
            sent.len() > 2,
            "keys spread over partitions: {:?}",
            sent.keys()
        );

        let mut c = bus.subscribe(options("g", &["t"])).await.unwrap();
        assert_eq!(
            assigned(&mut c).await,
            (0..PARTITIONS).map(|p| tp("t", p)).collect::<Vec<_>>()
        );
        let mut got: HashMap<i32, Vec<Record>> = HashMap::new();
        for _ in 0..300 {
            let r = record(&mut c).await;
            got.entry(r.partition).or_default().push(r);
        }
        assert_quiet(&mut c, 50).await;
        for p in 0..PARTITIONS {
            let expected = sent.remove(&p).unwrap_or_default();
            let records = got.remove(&p).unwrap_or_default();
            assert_eq!(records.len(), expected.len());
            for (i, (r, (key, value))) in records.iter().zip(&expected).enumerate() {
                assert_eq!(r.topic, "t");
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
                assert_eq!(r.value, value.as_bytes());
                assert_eq!(r.header("n"), Some(&value.as_bytes()[1..]));
                let ts = r.timestamp_ms.unwrap();
                assert!(
                    (before..=after).contains(&ts),
                    "{ts} not in {before}..={after}"
                );
            }
            assert_eq!(
                bus.watermarks(&tp("t", p)).await.unwrap(),
                (0, expected.len() as i64)
            );
        }
    }

    #[tokio::test]
    async fn unkeyed_records_go_round_robin_and_explicit_partition_wins() {
        let bus = bus_with("t", 4).await;
        let producer = bus.producer().unwrap();
        let mut counts = [0; 4];
        for i in 0..8 {
            let d = producer.send(OutRecord::new("t", vec![i])).await.unwrap();
            counts[d.partition as usize] += 1;
        }
        assert_eq!(counts, [2, 2, 2, 2]);
        let key = b"some key".to_vec();
        let other = (partition_for_key(&key, 4) + 1) % 4;
        let mut out = OutRecord::new("t", "v").with_key(key);
        out.partition = Some(other);
        let d = producer.send(out).await.unwrap();
        assert_eq!(
            d,
            Delivered {
                partition: other,
                offset: 2
            }
        );
    }

    #[tokio::test]
    async fn long_logs_span_segments() {
        let bus = bus_with("t", 1).await;
        let producer = bus.producer().unwrap();
        let total = SEGMENT * 2 + 7;
        for i in 0..total {
            let d = producer
                .send(OutRecord::new("t", i.to_string()))
                .await
                .unwrap();
            assert_eq!(d.offset, i as i64);
        }
        let mut c = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut c).await;
        for i in 0..total {
            let r = record(&mut c).await;
            assert_eq!((r.offset, r.value), (i as i64, i.to_string().into_bytes()));
        }
        assert_quiet(&mut c, 20).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_producers_get_distinct_contiguous_offsets() {
        const TASKS: usize = 4;
        const EACH: usize = 2000;
        let bus = bus_with("t", 1).await;
        let mut c = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut c).await;
        let writers: Vec<_> = (0..TASKS)
            .map(|task| {
                let producer = bus.producer().unwrap();
                tokio::spawn(async move {
                    let mut offsets = Vec::with_capacity(EACH);
                    for i in 0..EACH {
                        let v = format!("{task}:{i}");
                        offsets.push(producer.send(OutRecord::new("t", v)).await.unwrap().offset);
                    }
                    offsets
                })
            })
            .collect();
        let mut last_of_task = [-1i64; TASKS];
        for offset in 0..(TASKS * EACH) as i64 {
            let r = record(&mut c).await;
            assert_eq!(r.offset, offset);
            // Each producer's records keep their order in the log.
            let value = String::from_utf8(r.value).unwrap();
            let (task, i) = value.split_once(':').unwrap();
            let (task, i): (usize, i64) = (task.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, last_of_task[task] + 1);
            last_of_task[task] = i;
        }
        let mut all: Vec<i64> = Vec::new();
        for w in writers {
            all.extend(w.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (0..(TASKS * EACH) as i64).collect::<Vec<_>>());
    }
}
