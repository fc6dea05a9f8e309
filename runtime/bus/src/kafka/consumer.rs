//! A group consumer driven by a dedicated poll thread.
//!
//! librdkafka runs rebalance callbacks inside `poll`. To drain in-flight work before giving
//! partitions away, the revoke callback must block until the stage has finished and committed
//! — which would stall an async executor thread. So polling happens on a thread of its own:
//! it forwards records into a bounded channel (pausing the partitions when the stage falls
//! behind, so polling — and group membership — continues), and in the revoke callback it
//! hands a [`ConsumerEvent::Revoked`] to the stage, waits for the offsets, and commits them
//! synchronously before librdkafka lets the partitions go.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{
    BusError, Consumer, ConsumerEvent, Record, RevokeAck, StartFrom, SubscribeOptions,
    TopicPartition,
};
use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::broker_err;

/// How long a revocation waits for the stage to drain; Kafka's own rebalance timeout
/// (max.poll.interval.ms) bounds it anyway.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Records polled ahead of the stage before polling waits for it.
const LOCAL_QUEUE: usize = 1_000;
/// A stage that took nothing for this long is stalled: poll once to serve group events.
const STALLED_AFTER: Duration = Duration::from_secs(2);

struct Ctx {
    events: mpsc::Sender<ConsumerEvent>,
    /// Records polled but not yet handed to the stage.
    pending: Mutex<VecDeque<Record>>,
    /// Next offset expected per assigned partition. librdkafka re-delivers records after a
    /// pause/resume (seen on tansu); handing them out again would process them twice.
    next_offset: Mutex<HashMap<TopicPartition, i64>>,
}

impl ClientContext for Ctx {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka consumer error");
    }
}

fn tpl_to_vec(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

fn offsets_tpl(offsets: &[(TopicPartition, i64)]) -> Result<TopicPartitionList, BusError> {
    let mut tpl = TopicPartitionList::new();
    for (tp, o) in offsets {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*o))
            .map_err(broker_err)?;
    }
    Ok(tpl)
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions = tpl_to_vec(tpl);
        if partitions.is_empty() {
            return;
        }
        {
            let mut next = self.next_offset.lock().expect("positions poisoned");
            for tp in &partitions {
                next.remove(tp);
            }
        }
        // Records not yet handed out are simply re-read by the next owner.
        self.pending
            .lock()
            .expect("pending poisoned")
            .retain(|r| !partitions.contains(&r.topic_partition()));
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let event = ConsumerEvent::Revoked {
            partitions: partitions.clone(),
            ack: RevokeAck(tx),
        };
        if self.events.blocking_send(event).is_err() {
            return; // the stage is gone (closing): it committed already.
        }
        let deadline = Instant::now() + REVOKE_TIMEOUT;
        let offsets = loop {
            match rx.try_recv() {
                Ok(o) => break o,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => break Vec::new(),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                    if Instant::now() > deadline {
                        tracing::warn!(?partitions, "stage did not drain in time; not committing");
                        break Vec::new();
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        if offsets.is_empty() {
            return;
        }
        match offsets_tpl(&offsets) {
            Ok(tpl) => {
                if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                    tracing::warn!(error = %e, "commit on revoke failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "bad offsets on revoke"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions = tpl_to_vec(tpl);
            {
                // A new assignment starts at the committed offsets, whatever came before.
                let mut next = self.next_offset.lock().expect("positions poisoned");
                for tp in &partitions {
                    next.remove(tp);
                }
            }
            tracing::info!(?partitions, "partitions assigned");
            let _ = self
                .events
                .blocking_send(ConsumerEvent::Assigned(partitions));
        }
    }
}

/// A member of a Kafka consumer group.
pub struct KafkaConsumer {
    consumer: Arc<BaseConsumer<Ctx>>,
    events: mpsc::Receiver<ConsumerEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

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
        if config.get("partition.assignment.strategy").is_none() {
            config.set("partition.assignment.strategy", "roundrobin");
        }
        // If the group leader cannot read a topic's metadata while assigning (a busy or
        // starting broker), every member gets nothing, and only a metadata change triggers a
        // new assignment: refresh often enough that the group recovers in seconds, not after
        // librdkafka's default 5 minutes (seen on a loaded broker in the kill test).
        if config.get("topic.metadata.refresh.interval.ms").is_none() {
            config.set("topic.metadata.refresh.interval.ms", "10000");
        }
        let ctx = Ctx {
            events: tx.clone(),
            pending: Mutex::new(VecDeque::new()),
            next_offset: Mutex::new(HashMap::new()),
        };
        let consumer: BaseConsumer<Ctx> = config.create_with_context(ctx).map_err(broker_err)?;
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

fn poll_loop(consumer: &BaseConsumer<Ctx>, tx: &mpsc::Sender<ConsumerEvent>, stop: &AtomicBool) {
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
