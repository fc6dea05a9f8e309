//! Runs a [`BatchSink`] stage (the contract is in `stage.rs`): a stage that writes its input
//! in batches (files) instead of record by record.
//!
//! Each assigned partition has at most one open batch. Records are pushed into it as they
//! arrive — the sink encodes them right away, so the driver keeps no record — and the batch
//! is closed when it reaches the sink's row or byte limit, when it gets old, or when all open
//! batches together hold too much. Closing means: the sink completes its file, the driver
//! produces what the sink returns (a manifest), and only then commits the partition's offset.
//! Revoked partitions close their batches before they are handed over; shutdown closes all.
//!
//! A batch that replays a file written before a crash ([`BatchWriter::end_at`]) closes only at
//! that file's last offset, whatever the limits say, so it rewrites the same file; if it must
//! stop earlier (revocation, shutdown) it is dropped uncommitted instead, and whoever replays
//! it next ends it at the same offset.
//!
//! If the sink fails (its storage is down), every open batch is dropped and the consumer
//! rejoins the group, so it starts again from the committed offsets: nothing is committed that
//! is not in a finished file, and nothing is kept twice in memory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_bus::{
    Bus, Consumer, ConsumerEvent, OutRecord, Producer, Record, SubscribeOptions, TopicPartition,
};
use tokio_util::sync::CancellationToken;

use crate::dead_letter;
use crate::emit::Delivery;
use crate::health::Health;
use crate::metrics::StageMetrics;
use crate::retry::Backoff;
use crate::stage::{BatchLimits, BatchSink, BatchWriter, StageError};

/// Everything the batch driver needs.
pub struct BatchDriver {
    /// Stage name (metrics, logs, dead-letter header, consumer group).
    pub stage: String,
    /// The sink.
    pub sink: Arc<dyn BatchSink>,
    /// The bus (to rejoin the group after a failure).
    pub bus: Arc<dyn Bus>,
    /// How to subscribe.
    pub subscribe: SubscribeOptions,
    /// Producer for outputs and dead letters.
    pub producer: Arc<dyn Producer>,
    /// Dead-letter topic.
    pub dead_letter: String,
    /// Backoff between attempts after failures.
    pub backoff: Backoff,
    /// Stage metrics.
    pub metrics: StageMetrics,
    /// Readiness.
    pub health: Health,
    /// Cancelled to stop.
    pub shutdown: CancellationToken,
}

struct Open {
    writer: Box<dyn BatchWriter>,
    last: i64,
    rows: usize,
    bytes: usize,
    opened: Instant,
}

/// The sink failed: drop everything uncommitted and start again from the broker's offsets.
struct Rewind(StageError);

impl BatchDriver {
    /// The readiness component: the stage's sink (its storage).
    fn readiness(&self) -> String {
        format!("{} sink", self.stage)
    }

    /// Runs until shutdown (closing every open batch first) or until the consumer closes.
    pub async fn run(self) -> anyhow::Result<()> {
        self.health.register(&self.readiness());
        self.health.ready(&self.readiness());
        let limits = self.sink.limits();
        let mut failures: u32 = 0;
        'rejoin: loop {
            let mut consumer = self.bus.subscribe(self.subscribe.clone()).await?;
            let mut open: HashMap<TopicPartition, Open> = HashMap::new();
            let mut assigned: HashSet<TopicPartition> = HashSet::new();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let outcome: Result<(), Rewind> = async {
                loop {
                    self.metrics.set_in_flight(open.values().map(|o| o.rows).sum());
                    tokio::select! {
                        biased;
                        _ = self.shutdown.cancelled() => {
                            let tps: Vec<_> = open.keys().cloned().collect();
                            for tp in tps {
                                self.close_or_drop(&*consumer, &mut open, &tp).await?;
                            }
                            return Ok(());
                        }
                        _ = tick.tick() => {
                            let old: Vec<_> = open
                                .iter()
                                .filter(|(_, o)| o.writer.end_at().is_none() && o.opened.elapsed() >= limits.max_age)
                                .map(|(tp, _)| tp.clone())
                                .collect();
                            for tp in old {
                                self.close(&*consumer, &mut open, &tp).await?;
                            }
                        }
                        ev = consumer.next() => match ev {
                            Ok(ConsumerEvent::Record(r)) => {
                                let tp = r.topic_partition();
                                if !assigned.contains(&tp) {
                                    continue;
                                }
                                self.take(&*consumer, &mut open, &limits, tp, r).await?;
                            }
                            Ok(ConsumerEvent::Assigned(tps)) => assigned.extend(tps),
                            Ok(ConsumerEvent::Revoked { partitions, ack }) => {
                                let mut offsets = Vec::new();
                                for tp in partitions {
                                    assigned.remove(&tp);
                                    if let Some(next) = self.close_or_drop(&*consumer, &mut open, &tp).await? {
                                        offsets.push((tp.clone(), next));
                                    }
                                    self.metrics.clear_lag(&tp.topic, tp.partition);
                                }
                                ack.done(offsets);
                            }
                            Err(e) => {
                                tracing::warn!(stage = %self.stage, error = %e, "consumer closed");
                                return Ok(());
                            }
                        }
                    }
                }
            }
            .await;
            match outcome {
                Ok(()) => {
                    consumer.close().await.ok();
                    tracing::info!(stage = %self.stage, "stopped");
                    return Ok(());
                }
                Err(Rewind(e)) => {
                    failures += 1;
                    tracing::warn!(stage = %self.stage, error = %e, "batch failed; dropping open batches and rejoining from the committed offsets");
                    self.health.not_ready(&self.readiness(), &e);
                    for (_, o) in open.drain() {
                        o.writer.abort().await;
                    }
                    consumer.close().await.ok();
                    tokio::select! {
                        _ = tokio::time::sleep(self.backoff.delay(failures.min(8))) => {}
                        _ = self.shutdown.cancelled() => return Ok(()),
                    }
                    continue 'rejoin;
                }
            }
        }
    }

    /// Adds one record to its partition's batch, closing batches as the limits say.
    async fn take(
        &self,
        consumer: &dyn Consumer,
        open: &mut HashMap<TopicPartition, Open>,
        limits: &BatchLimits,
        tp: TopicPartition,
        r: Record,
    ) -> Result<(), Rewind> {
        self.metrics.received();
        if let Some(o) = open.get(&tp) {
            if o.writer.end_at().is_some_and(|end| r.offset > end) {
                // The offset a replayed batch should end at is gone (compaction): end here.
                self.close(consumer, open, &tp).await?;
            }
        }
        if !open.contains_key(&tp) {
            let writer = self.sink.open(&tp, r.offset).await.map_err(Rewind)?;
            open.insert(
                tp.clone(),
                Open {
                    writer,
                    last: r.offset,
                    rows: 0,
                    bytes: 0,
                    opened: Instant::now(),
                },
            );
        }
        let o = open.get_mut(&tp).expect("opened above");
        match o.writer.push(&r).await {
            Ok(n) => {
                o.rows += 1;
                o.bytes += n;
            }
            Err(StageError::Invalid { code, reason }) => {
                self.metrics.failed(code);
                let out = dead_letter::record(&self.dead_letter, &self.stage, &r, code, &reason, 1);
                self.deliver(vec![out]).await?;
                self.metrics.dead_lettered(code);
            }
            Err(e) => return Err(Rewind(e)),
        }
        o.last = r.offset;
        let full = match o.writer.end_at() {
            Some(end) => r.offset >= end,
            None => o.rows >= limits.max_rows || o.bytes >= limits.max_bytes,
        };
        if full {
            self.close(consumer, open, &tp).await?;
        }
        let buffered: usize = open.values().map(|o| o.bytes).sum();
        if buffered >= limits.max_buffered {
            if let Some(biggest) = open
                .iter()
                .max_by_key(|(_, o)| o.bytes)
                .map(|(tp, _)| tp.clone())
            {
                self.close(consumer, open, &biggest).await?;
            }
        }
        Ok(())
    }

    /// Closes `tp`'s batch early (revocation, shutdown) — or drops it when it replays an
    /// earlier file, which must end where that file ended.
    async fn close_or_drop(
        &self,
        consumer: &dyn Consumer,
        open: &mut HashMap<TopicPartition, Open>,
        tp: &TopicPartition,
    ) -> Result<Option<i64>, Rewind> {
        if open.get(tp).is_some_and(|o| o.writer.end_at().is_some()) {
            if let Some(o) = open.remove(tp) {
                o.writer.abort().await;
            }
            return Ok(None);
        }
        self.close(consumer, open, tp).await
    }

    /// Closes `tp`'s batch, publishes its outputs and commits; returns the committed offset.
    async fn close(
        &self,
        consumer: &dyn Consumer,
        open: &mut HashMap<TopicPartition, Open>,
        tp: &TopicPartition,
    ) -> Result<Option<i64>, Rewind> {
        let Some(o) = open.remove(tp) else {
            return Ok(None);
        };
        let started = Instant::now();
        let rows = o.rows;
        let mut out = self.delivery().emitter();
        o.writer.finish(o.last, &mut out).await.map_err(Rewind)?;
        out.flush().await.map_err(Rewind)?;
        self.health.ready(&self.readiness());
        let next = o.last + 1;
        let sync = self.shutdown.is_cancelled();
        if let Err(e) = consumer.commit(&[(tp.clone(), next)], sync).await {
            // Only a longer replay after a crash; the replay rewrites the same file.
            tracing::warn!(stage = %self.stage, %tp, error = %e, "offset commit failed");
        }
        self.metrics.event("batch_closed");
        self.metrics
            .observe_latency(started.elapsed().as_secs_f64());
        tracing::debug!(stage = %self.stage, %tp, rows, last = o.last, "batch closed");
        Ok(Some(next))
    }

    /// How outputs and dead letters reach the broker: retried until acknowledged, or given up
    /// at shutdown (the batch is then rewound, uncommitted).
    fn delivery(&self) -> Delivery {
        Delivery::new(
            self.producer.clone(),
            self.metrics.clone(),
            self.backoff,
            self.shutdown.clone(),
        )
    }

    /// Produces records, retrying until the broker takes them (or shutdown).
    async fn deliver(&self, records: Vec<OutRecord>) -> Result<(), Rewind> {
        self.delivery().produce(&records).await.map_err(Rewind)
    }
}
