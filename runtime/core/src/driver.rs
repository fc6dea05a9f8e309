//! Runs a [`Processor`] stage on its input topic with at-least-once delivery.
//!
//! Records are processed concurrently (up to the stage's `concurrency`). A record is done when
//! every output is acknowledged by the broker — or it was dead-lettered and that was
//! acknowledged. Per partition only the contiguous prefix of done offsets is committed
//! ([`OffsetTracker`]). On revocation and on shutdown the driver stops taking records, waits for
//! those in flight, and commits before letting go.
//!
//! Shutdown is bounded: `drain_timeout` after it starts, in-flight records are told to give
//! up (their sends and retries return [`StageError::Abandoned`]), and [`ABANDON_GRACE`] later
//! the driver stops whatever still runs — a processor that never returns included. Records
//! given up are left uncommitted and replayed by the next owner of their partition.
//!
//! A processor that panics costs one record: it is dead-lettered with code `panic`.
//!
//! Each partition has a recall token, cancelled when the partition is revoked and when the
//! stage starts draining: records that are only waiting (see [`Recall`]) give up at once, so a
//! rebalance or a shutdown never waits on a queue.
//!
//! [`Recall`]: crate::emit::Recall

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use sluice_bus::{Bus, Consumer, ConsumerEvent, Producer, Record, TopicPartition};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant as Clock;
use tokio_util::sync::CancellationToken;

use crate::dead_letter;
use crate::emit::Delivery;
use crate::health::Health;
use crate::metrics::StageMetrics;
use crate::offsets::OffsetTracker;
use crate::retry::Backoff;
use crate::stage::{Processor, StageError};

/// How often finished offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// How often consumer lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// How long records told to give up (after the drain timeout) may take to do so before the
/// driver stops them.
pub const ABANDON_GRACE: Duration = Duration::from_secs(2);

/// Everything a driver needs.
pub struct Driver {
    /// Stage name (metrics, logs, dead-letter header).
    pub stage: String,
    /// The stage's processor.
    pub processor: Arc<dyn Processor>,
    /// The group member reading the input topic.
    pub consumer: Box<dyn Consumer>,
    /// Producer for outputs and dead letters.
    pub producer: Arc<dyn Producer>,
    /// The bus (for lag measurement).
    pub bus: Arc<dyn Bus>,
    /// Dead-letter topic.
    pub dead_letter: String,
    /// Retry policy for transient failures.
    pub backoff: Backoff,
    /// Records in flight at most.
    pub concurrency: usize,
    /// Longest wait for in-flight records on shutdown before leaving them to a replay.
    pub drain_timeout: Duration,
    /// Stage metrics.
    pub metrics: StageMetrics,
    /// Readiness.
    pub health: Health,
    /// Cancelled to stop.
    pub shutdown: CancellationToken,
}

/// How a record's processing ended.
enum Outcome {
    /// Outputs (or the dead letter) acknowledged: the offset may be committed.
    Done,
    /// Given up because of shutdown; the record will be replayed.
    Abandoned,
}

struct Finished {
    /// The task's key in the driver's abort handles.
    task: u64,
    tp: TopicPartition,
    offset: i64,
    outcome: Outcome,
}

/// What a record task shares.
struct Shared {
    stage: Arc<str>,
    processor: Arc<dyn Processor>,
    /// Outputs and dead letters; gives up when the drain timeout passed.
    delivery: Delivery,
    dead_letter: Arc<str>,
    backoff: Backoff,
    metrics: StageMetrics,
    health: Health,
    /// Cancelled when in-flight work should give up (drain timeout passed).
    abandon: CancellationToken,
}

impl Driver {
    /// Runs until shutdown (then drains and commits) or until the consumer closes.
    pub async fn run(self) -> anyhow::Result<()> {
        let Driver {
            stage,
            processor,
            mut consumer,
            producer,
            bus,
            dead_letter,
            backoff,
            concurrency,
            drain_timeout,
            metrics,
            health,
            shutdown,
        } = self;
        // One allocation shared by every record task, not a clone of each handle per record.
        let abandon = CancellationToken::new();
        let shared = Arc::new(Shared {
            stage: stage.as_str().into(),
            processor,
            delivery: Delivery::new(producer, metrics.clone(), backoff, abandon.clone()),
            dead_letter: dead_letter.as_str().into(),
            backoff,
            metrics: metrics.clone(),
            health,
            abandon,
        });
        // Record tasks report through a channel and are kept by abort handle only, so that
        // neither spawning nor finishing takes a lock shared by every task (a JoinSet does).
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Finished>();
        let mut tasks: HashMap<u64, AbortHandle> = HashMap::new();
        let mut next_task: u64 = 0;
        let mut tracker = OffsetTracker::new();
        let mut revoked_pending: Vec<(HashSet<TopicPartition>, sluice_bus::RevokeAck)> = Vec::new();
        let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lag_tick = tokio::time::interval(LAG_INTERVAL);
        lag_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Lag needs broker round trips per partition: measured off the record path.
        let lag_in_progress = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut draining_since: Option<Clock> = None;
        // Recall tokens: one per partition, children of `draining`.
        let draining = CancellationToken::new();
        let mut recalls: HashMap<TopicPartition, CancellationToken> = HashMap::new();
        let mut abandoned_at: Option<Clock> = None;
        let concurrency = concurrency.max(1);

        loop {
            let in_flight = tracker.total_in_flight();
            metrics.set_in_flight(in_flight);
            if draining_since.is_some() && in_flight == 0 {
                break;
            }
            let can_take =
                draining_since.is_none() && revoked_pending.is_empty() && in_flight < concurrency;
            // Deadlines, not fresh sleeps: the other arms fire far more often than these.
            let far = Clock::now() + Duration::from_secs(86_400);
            let abandon_at = draining_since.map_or(far, |t| t + drain_timeout);
            let stop_at = abandoned_at.map_or(far, |t| t + ABANDON_GRACE);
            tokio::select! {
                biased;
                Some(f) = done_rx.recv() => {
                    tasks.remove(&f.task);
                    if matches!(f.outcome, Outcome::Done) {
                        tracker.finish(&f.tp, f.offset);
                    } else {
                        // Leave the offset in flight forever: nothing past it gets committed.
                        tracker.abandon(&f.tp, f.offset);
                    }
                    settle_revocations(&mut tracker, &mut revoked_pending, &*consumer, &metrics).await;
                }
                _ = shutdown.cancelled(), if draining_since.is_none() => {
                    tracing::info!(stage = %stage, in_flight, "draining");
                    draining_since = Some(Clock::now());
                    draining.cancel();
                }
                _ = tokio::time::sleep_until(abandon_at), if draining_since.is_some() && abandoned_at.is_none() => {
                    tracing::warn!(stage = %stage, in_flight, "drain timeout; in-flight records will be replayed");
                    shared.abandon.cancel();
                    abandoned_at = Some(Clock::now());
                }
                _ = tokio::time::sleep_until(stop_at), if abandoned_at.is_some() => {
                    tracing::warn!(stage = %stage, in_flight, "records still running after the drain timeout; stopped, they will be replayed");
                    break;
                }
                _ = commit_tick.tick() => {
                    commit(&*consumer, &mut tracker, false).await;
                }
                _ = lag_tick.tick() => {
                    if !lag_in_progress.swap(true, std::sync::atomic::Ordering::AcqRel) {
                        let (bus, metrics, busy) = (bus.clone(), metrics.clone(), lag_in_progress.clone());
                        let committed = tracker.committed();
                        tokio::spawn(async move {
                            measure_lag(&*bus, committed, &metrics).await;
                            busy.store(false, std::sync::atomic::Ordering::Release);
                        });
                    }
                }
                ev = consumer.next(), if can_take => match ev {
                    Ok(ConsumerEvent::Record(r)) => {
                        let tp = r.topic_partition();
                        if !tracker.start(&tp, r.offset) {
                            tracing::debug!(%tp, offset = r.offset, "record of a partition not assigned here; skipped");
                            continue;
                        }
                        metrics.received();
                        let shared = shared.clone();
                        // Assigned partitions have their token already: no key clone per record.
                        let recall = match recalls.get(&tp) {
                            Some(recall) => recall.clone(),
                            None => {
                                let recall = draining.child_token();
                                recalls.insert(tp.clone(), recall.clone());
                                recall
                            }
                        };
                        let (done_tx, task) = (done_tx.clone(), next_task);
                        next_task += 1;
                        let handle = tokio::spawn(async move {
                            let outcome = handle_guarded(&shared, &r, &recall).await;
                            let _ = done_tx.send(Finished { task, tp, offset: r.offset, outcome });
                        });
                        tasks.insert(task, handle.abort_handle());
                    }
                    Ok(ConsumerEvent::Assigned(tps)) => {
                        for tp in tps {
                            recalls.insert(tp.clone(), draining.child_token());
                            tracker.assign(tp);
                        }
                    }
                    Ok(ConsumerEvent::Revoked { partitions, ack }) => {
                        for tp in &partitions {
                            if let Some(recall) = recalls.remove(tp) {
                                recall.cancel();
                            }
                        }
                        revoked_pending.push((partitions.into_iter().collect(), ack));
                        settle_revocations(&mut tracker, &mut revoked_pending, &*consumer, &metrics).await;
                    }
                    Err(e) => {
                        tracing::warn!(stage = %stage, error = %e, "consumer closed");
                        draining_since.get_or_insert_with(Clock::now);
                    }
                }
            }
        }
        // Whatever still runs was given up: its offsets stay uncommitted.
        for (_, task) in tasks.drain() {
            task.abort();
        }
        commit(&*consumer, &mut tracker, true).await;
        consumer.close().await.ok();
        tracing::info!(stage = %stage, "stopped");
        Ok(())
    }
}

/// Answers revocations whose partitions have nothing in flight any more.
async fn settle_revocations(
    tracker: &mut OffsetTracker,
    pending: &mut Vec<(HashSet<TopicPartition>, sluice_bus::RevokeAck)>,
    consumer: &dyn Consumer,
    metrics: &StageMetrics,
) {
    let mut i = 0;
    while i < pending.len() {
        if pending[i].0.iter().all(|tp| tracker.in_flight(tp) == 0) {
            let (tps, ack) = pending.swap_remove(i);
            // Commit everything else too while at it; then hand over the final offsets.
            commit(consumer, tracker, false).await;
            let offsets: Vec<(TopicPartition, i64)> = tps
                .iter()
                .filter_map(|tp| {
                    metrics.clear_lag(&tp.topic, tp.partition);
                    tracker.remove(tp).map(|w| (tp.clone(), w))
                })
                .collect();
            tracing::info!(?offsets, "partitions revoked");
            ack.done(offsets);
        } else {
            i += 1;
        }
    }
}

async fn commit(consumer: &dyn Consumer, tracker: &mut OffsetTracker, sync: bool) {
    let offsets = tracker.take_commits();
    if offsets.is_empty() {
        return;
    }
    if let Err(e) = consumer.commit(&offsets, sync).await {
        // A failed commit only means a longer replay after a crash; the next tick retries.
        tracing::warn!(error = %e, "offset commit failed");
        tracker.uncommit(&offsets);
    }
}

async fn measure_lag(
    bus: &dyn Bus,
    committed: Vec<(TopicPartition, Option<i64>)>,
    metrics: &StageMetrics,
) {
    for (tp, committed) in committed {
        if let Ok((low, high)) = bus.watermarks(&tp).await {
            let lag = high - committed.unwrap_or(low);
            metrics.set_lag(&tp.topic, tp.partition, lag.max(0));
        }
    }
}

/// [`handle`], with a panic of the processor costing this record only: it is dead-lettered
/// with code `panic` and the panic's message.
async fn handle_guarded(s: &Shared, record: &Record, recall: &CancellationToken) -> Outcome {
    match AssertUnwindSafe(handle(s, record, recall))
        .catch_unwind()
        .await
    {
        Ok(outcome) => outcome,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|m| m.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the processor panicked".to_string());
            tracing::error!(stage = %s.stage, topic = %record.topic, partition = record.partition,
                offset = record.offset, reason = %reason, "processor panicked; dead-lettering the record");
            s.metrics.failed("panic");
            dead_letter_it(s, record, "panic", &format!("panic: {reason}"), 1).await
        }
    }
}

/// Processes one record to completion: outputs acknowledged, or dead-lettered.
async fn handle(s: &Shared, record: &Record, recall: &CancellationToken) -> Outcome {
    let started = Instant::now();
    let mut attempt: u32 = 0;
    let mut outage_waits: u32 = 0;
    let mut outage: Option<&'static str> = None;
    loop {
        attempt += 1;
        let mut out = s.delivery.emitter_recalled_by(recall.clone());
        let result = match s.processor.process(record, &mut out).await {
            Ok(()) => out.flush().await,
            Err(e) => Err(e),
        };
        let failure = match result {
            Ok(()) => {
                if let Some(dep) = outage {
                    s.health.ready(dep);
                }
                s.metrics.observe_latency(started.elapsed().as_secs_f64());
                return Outcome::Done;
            }
            Err(StageError::Abandoned) => return Outcome::Abandoned,
            Err(e) => e,
        };
        s.metrics.failed(failure.code());
        match failure {
            StageError::Abandoned => return Outcome::Abandoned,
            StageError::Invalid { code, reason } => {
                return dead_letter_it(s, record, code, &reason, attempt).await;
            }
            StageError::Transient(e) if attempt >= s.backoff.attempts => {
                let reason = format!("{e:#}");
                tracing::warn!(stage = %s.stage, topic = %record.topic, partition = record.partition,
                    offset = record.offset, attempts = attempt, error = %reason, "giving up");
                return dead_letter_it(s, record, "failed_after_retries", &reason, attempt).await;
            }
            StageError::Transient(e) => {
                tracing::debug!(stage = %s.stage, attempt, error = %format!("{e:#}"), "retrying");
                if !pause(s, s.backoff.delay(attempt), recall).await {
                    return Outcome::Abandoned;
                }
            }
            StageError::Unavailable { dependency, error } => {
                // Not the record's fault: wait for the dependency without using up attempts.
                attempt -= 1;
                outage_waits += 1;
                outage = Some(dependency);
                s.health.not_ready(dependency, format!("{error:#}"));
                if !pause(s, s.backoff.delay(outage_waits.min(8)), recall).await {
                    return Outcome::Abandoned;
                }
                continue;
            }
        }
    }
}

/// Sleeps unless work is being abandoned or the record recalled; false when it is.
async fn pause(s: &Shared, d: Duration, recall: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = s.abandon.cancelled() => false,
        _ = recall.cancelled() => false,
    }
}

async fn dead_letter_it(
    s: &Shared,
    record: &Record,
    code: &str,
    reason: &str,
    attempts: u32,
) -> Outcome {
    let out = dead_letter::record(&s.dead_letter, &s.stage, record, code, reason, attempts);
    let delivered = match s.delivery.produce(std::slice::from_ref(&out)).await {
        Err(StageError::Invalid { .. }) if !out.value.is_empty() => {
            // The dead-letter topic refuses it (too large): the reason is what matters; the
            // value stays at its source offset, which the headers name.
            let out = dead_letter::without_value(out);
            s.delivery.produce(std::slice::from_ref(&out)).await
        }
        other => other,
    };
    if delivered.is_err() {
        return Outcome::Abandoned;
    }
    s.metrics.dead_lettered(code);
    Outcome::Done
}
