//! A group member driven by a dedicated poll thread.
//!
//! librdkafka runs rebalance callbacks inside `poll`, and ours blocks until the stage has
//! drained the partitions it is giving up (see [`super::rebalance`]) — which would stall an
//! async executor thread. So polling happens on a thread of its own, which forwards records into
//! a bounded channel and throttles by polling less when the stage falls behind (never by pausing
//! partitions), so that polling, and with it group membership, goes on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::message::{Headers, Message};
use tokio::sync::mpsc;

use super::broker_err;
use super::rebalance::{offsets_tpl, GroupContext};
use crate::{
    BusError, Consumer, ConsumerEvent, Record, StartFrom, SubscribeOptions, TopicPartition,
};

/// Records polled ahead of the stage before polling waits for it.
const LOCAL_QUEUE: usize = 1_000;
/// A stage that took nothing for this long is stalled: poll once to serve group events.
const STALLED_AFTER: Duration = Duration::from_secs(2);

/// A member of a Kafka consumer group.
pub struct KafkaConsumer {
    consumer: Arc<BaseConsumer<GroupContext>>,
    events: mpsc::Receiver<ConsumerEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The default `fetch.wait.max.ms` (see [`KafkaConsumer::start`]); `broker_options` may set
/// another.
const FETCH_WAIT_MS: &str = "50";

impl KafkaConsumer {
    /// Joins the group and starts polling.
    pub fn start(mut config: ClientConfig, opts: SubscribeOptions) -> Result<Self, BusError> {
        let (tx, rx) = mpsc::channel(opts.buffer.max(1));
        config
            .set("group.id", &opts.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match opts.start_from {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            );
        // Incremental rebalancing, like the memory bus: a member joining or leaving moves only
        // the partitions it must, and nobody else stops reading (see `super::rebalance`).
        if config.get("partition.assignment.strategy").is_none() {
            config.set("partition.assignment.strategy", "cooperative-sticky");
        }
        // If the group leader cannot read a topic's metadata while assigning (a busy or
        // starting broker), every member gets nothing, and only a metadata change triggers a
        // new assignment: refresh often enough that the group recovers in seconds, not after
        // librdkafka's default 5 minutes (seen on a loaded broker in the kill test).
        if config.get("topic.metadata.refresh.interval.ms").is_none() {
            config.set("topic.metadata.refresh.interval.ms", "10000");
        }
        // A record's latency through a hop is the broker's fetch wait on brokers that answer a
        // fetch only when the wait is over, data or not (tansu sleeps it out; Kafka answers
        // as soon as `fetch.min.bytes` are there). librdkafka's 500 ms then cost the crawl a
        // second per link-discovery level (url-in → normalize → urls → crawl); on Kafka a
        // shorter wait only means more idle fetches, a few per second per consumer.
        if config.get("fetch.wait.max.ms").is_none() {
            config.set("fetch.wait.max.ms", FETCH_WAIT_MS);
        }
        let ctx = GroupContext::new(tx.clone());
        let consumer: BaseConsumer<GroupContext> =
            config.create_with_context(ctx).map_err(broker_err)?;
        let topics: Vec<&str> = opts.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(broker_err)?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (consumer, stop) = (consumer.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("poll-{}", opts.group))
                .spawn(move || poll_loop(&consumer, &tx, &stop))
                .map_err(|e| BusError::Broker(format!("cannot start poll thread: {e}")))?
        };
        Ok(Self {
            consumer,
            events: rx,
            stop,
            thread: Some(thread),
        })
    }
}

fn to_record(m: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
        timestamp_ms: m.timestamp().to_millis(),
    }
}

fn poll_loop(
    consumer: &BaseConsumer<GroupContext>,
    tx: &mpsc::Sender<ConsumerEvent>,
    stop: &AtomicBool,
) {
    let mut last_error: Option<Instant> = None;
    let mut last_progress = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Hand over what is waiting, as far as the stage has room.
        let backlog = {
            let mut pending = consumer.context().pending.lock().expect("pending poisoned");
            while let Some(r) = pending.pop_front() {
                match tx.try_send(ConsumerEvent::Record(r)) {
                    Ok(()) => last_progress = Instant::now(),
                    Err(mpsc::error::TrySendError::Full(ConsumerEvent::Record(r))) => {
                        pending.push_front(r);
                        break;
                    }
                    Err(_) => return,
                }
            }
            pending.len()
        };
        // Throttling is by polling less, never by pausing partitions: a pause drops what
        // librdkafka prefetched, the broker must serve it again (which halved the stage's
        // throughput), and on tansu records came back twice after a resume. A stage that
        // is merely behind is not polled for a moment (librdkafka bounds its own prefetch); a
        // stalled one (a dependency outage) is still polled now and then, so rebalances and
        // group membership go on, at the cost of a slowly growing local queue.
        let timeout = if backlog == 0 {
            Duration::from_millis(100)
        } else if backlog < LOCAL_QUEUE {
            Duration::from_millis(5)
        } else if last_progress.elapsed() >= STALLED_AFTER {
            last_progress = Instant::now();
            Duration::from_millis(100)
        } else {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        };
        match consumer.poll(timeout) {
            Some(Ok(m)) => {
                let ctx = consumer.context();
                let tp = TopicPartition::new(m.topic(), m.partition());
                let fresh = {
                    let mut next = ctx.next_offset.lock().expect("positions poisoned");
                    let expected = next.entry(tp).or_insert(i64::MIN);
                    let fresh = m.offset() >= *expected;
                    if fresh {
                        *expected = m.offset() + 1;
                    }
                    fresh
                };
                if fresh {
                    let r = to_record(&m);
                    ctx.pending.lock().expect("pending poisoned").push_back(r);
                } else {
                    tracing::trace!(
                        partition = m.partition(),
                        offset = m.offset(),
                        "skipping a re-delivered record"
                    );
                }
            }
            Some(Err(e)) if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) => {
                tracing::warn!(error = %e, "kafka poll error");
                last_error = Some(Instant::now());
            }
            Some(Err(_)) => {}
            None => {}
        }
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn next(&mut self) -> Result<ConsumerEvent, BusError> {
        self.events.recv().await.ok_or(BusError::Closed)
    }

    async fn commit(&self, offsets: &[(TopicPartition, i64)], sync: bool) -> Result<(), BusError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let tpl = offsets_tpl(offsets)?;
        if sync {
            let c = self.consumer.clone();
            tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
                .await
                .map_err(|e| BusError::Broker(e.to_string()))?
                .map_err(broker_err)
        } else {
            self.consumer
                .commit(&tpl, CommitMode::Async)
                .map_err(broker_err)
        }
    }

    async fn close(mut self: Box<Self>) -> Result<(), BusError> {
        self.stop.store(true, Ordering::Relaxed);
        // Closing the channel first makes the revoke callback of the final leave return at
        // once: the stage has committed everything before calling close.
        self.events.close();
        let thread = self.thread.take();
        let consumer = self.consumer.clone();
        drop(self);
        tokio::task::spawn_blocking(move || {
            if let Some(t) = thread {
                let _ = t.join();
            }
            consumer.unsubscribe();
            drop(consumer);
        })
        .await
        .map_err(|e| BusError::Broker(e.to_string()))
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
