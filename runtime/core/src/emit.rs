//! Stage outputs, owned by the runtime: every record a stage writes goes through an
//! [`Emitter`], which produces it, retries what the broker refuses, counts it, and holds it
//! against its port's byte budget until the broker acknowledges it.
//!
//! A stage never sees the producer. For a [`Processor`](crate::stage::Processor) the driver
//! hands one emitter to each input record and commits the record's offset only once the
//! emitter's records are all acknowledged; a [`BatchWriter`](crate::stage::BatchWriter) gets
//! one when its batch closes; a [`Source`](crate::stage::Source) asks its context for one per
//! unit of work (an HTTP request).
//!
//! The budget is what bounds memory when the broker is slower than the stage: a send waits
//! while its port has more unacknowledged bytes than the budget allows. While it waits, the
//! emitter keeps its own earlier sends moving, so a record never waits for itself.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use sluice_bus::{OutRecord, Producer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::StageMetrics;
use crate::retry::Backoff;
use crate::stage::StageError;

/// Unacknowledged bytes a port may hold per process unless its stage says otherwise.
pub const DEFAULT_BUDGET: u64 = 64 << 20;

/// An output port of a stage (`output`, `discovered`, ...), bound to its topic when the stage
/// is built. Cheap to clone; clones share the budget.
#[derive(Clone, Debug)]
pub struct Output {
    port: Arc<str>,
    topic: Arc<str>,
    /// KiB of records sent through this port and not yet acknowledged, across the process.
    budget: Arc<Semaphore>,
    budget_kib: usize,
    /// The topic's record size limit, in bytes.
    record_limit: usize,
}

impl Output {
    /// Port `port` writing to `topic`, with the default budget.
    pub fn new(port: &str, topic: &str) -> Self {
        Self::with_budget_kib(port, topic, (DEFAULT_BUDGET / 1024) as usize)
    }

    fn with_budget_kib(port: &str, topic: &str, kib: usize) -> Self {
        let kib = kib.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        Self {
            port: port.into(),
            topic: topic.into(),
            budget: Arc::new(Semaphore::new(kib)),
            budget_kib: kib,
            record_limit: sluice_bus::DEFAULT_MAX_MESSAGE_BYTES as usize,
        }
    }

    /// The same port with a budget of `bytes` unacknowledged bytes (at least 1 KiB; a record
    /// bigger than the whole budget still goes, alone).
    pub fn with_budget(self, bytes: u64) -> Self {
        let record_limit = self.record_limit;
        Self {
            record_limit,
            ..Self::with_budget_kib(&self.port, &self.topic, (bytes / 1024) as usize)
        }
    }

    /// The same port for a topic that takes records up to `bytes` (its `max_message_bytes`).
    pub fn with_record_limit(mut self, bytes: usize) -> Self {
        self.record_limit = bytes;
        self
    }

    /// The largest record its topic takes (key, value and headers), in bytes: a stage that
    /// can shorten a record (crawl cuts a page's body) does so to fit, rather than have it
    /// refused.
    pub fn record_limit(&self) -> usize {
        self.record_limit
    }

    /// The port's name in pipeline.yaml.
    pub fn port(&self) -> &str {
        &self.port
    }

    /// The topic it writes.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Bytes currently sent and not acknowledged (for tests and metrics).
    pub fn pending_bytes(&self) -> u64 {
        (self.budget_kib - self.budget.available_permits()) as u64 * 1024
    }

    fn kib_of(&self, bytes: usize) -> u32 {
        (bytes / 1024).clamp(1, self.budget_kib) as u32
    }
}

/// How a stage's records reach the broker; one per stage, shared by its emitters. Cloned per
/// record, so its parts sit behind one `Arc`.
#[derive(Clone)]
pub struct Delivery(Arc<DeliveryParts>);

#[derive(Clone)]
struct DeliveryParts {
    producer: Arc<dyn Producer>,
    metrics: StageMetrics,
    backoff: Backoff,
    /// Rounds of sending before giving up; `None`: until `abandon`.
    rounds: Option<u32>,
    abandon: CancellationToken,
}

impl Delivery {
    /// Deliveries that retry until acknowledged, or until `abandon` is cancelled (then the
    /// input is left uncommitted and replayed).
    pub fn new(
        producer: Arc<dyn Producer>,
        metrics: StageMetrics,
        backoff: Backoff,
        abandon: CancellationToken,
    ) -> Self {
        Self(Arc::new(DeliveryParts {
            producer,
            metrics,
            backoff,
            rounds: None,
            abandon,
        }))
    }

    /// The same deliveries, giving up after `backoff.attempts` rounds: for sources, whose
    /// caller (an HTTP client) is waiting and can resubmit.
    pub fn bounded(mut self) -> Self {
        let parts = Arc::make_mut(&mut self.0);
        parts.rounds = Some(parts.backoff.attempts.max(1));
        self
    }

    /// Cancelled when in-flight deliveries should give up.
    pub fn abandon_token(&self) -> &CancellationToken {
        &self.0.abandon
    }

    /// A new emitter.
    pub fn emitter(&self) -> Emitter {
        self.emitter_recalled_by(CancellationToken::new())
    }

    /// A new emitter for a record that `recall` recalls (see [`Recall`]).
    pub fn emitter_recalled_by(&self, recall: CancellationToken) -> Emitter {
        Emitter {
            delivery: self.clone(),
            in_flight: FuturesUnordered::new(),
            acknowledged: 0,
            recall,
        }
    }

    /// Sends `records` until each is acknowledged (see [`produce_all`]).
    pub async fn produce(&self, records: &[OutRecord]) -> Result<(), StageError> {
        produce_all(
            &*self.0.producer,
            records,
            &self.0.metrics,
            &self.0.backoff,
            self.0.rounds,
            &self.0.abandon,
        )
        .await
    }
}

/// Says when the runtime wants a record back: its partition is being handed to another
/// member, or the stage is draining. A processor that is only *waiting* (for a domain's turn,
/// for a time) should then return [`StageError::Abandoned`]: the record is left uncommitted and
/// replayed by the partition's next owner. Work in progress (a fetch, a write) should finish
/// instead. Never fires for a source's records.
#[derive(Clone, Debug)]
pub struct Recall(CancellationToken);

impl Recall {
    /// Resolves once the record is recalled.
    pub async fn recalled(&self) {
        self.0.cancelled().await
    }

    /// Whether the record is recalled.
    pub fn is_recalled(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// Collects one unit of work's outputs and waits for their acknowledgements.
pub struct Emitter {
    delivery: Delivery,
    in_flight: FuturesUnordered<BoxFuture<'static, Result<(), StageError>>>,
    /// Records acknowledged so far.
    acknowledged: usize,
    /// Cancelled when the runtime wants the record back (see [`Emitter::recalled`]).
    recall: CancellationToken,
}

impl Emitter {
    /// When the runtime wants this record back: see [`Recall`]. (A handle of its own, since an
    /// emitter may not be shared across an await.)
    pub fn recall(&self) -> Recall {
        Recall(self.recall.clone())
    }

    /// Another emitter for the same record, for a processor that does several pieces of work
    /// at once (an emitter is not shared across an await). The runtime waits only for the
    /// emitter it passed in: flush every fork before `process` returns.
    pub fn fork(&self) -> Emitter {
        self.delivery.emitter_recalled_by(self.recall.clone())
    }

    /// Sends `value` to `to` (unkeyed: the producer spreads records over partitions).
    pub async fn send(&mut self, to: &Output, value: Vec<u8>) -> Result<(), StageError> {
        self.send_record(to, OutRecord::new(&*to.topic, value))
            .await
    }

    /// Sends `value` to `to` with `key`, which picks the partition.
    pub async fn send_keyed(
        &mut self,
        to: &Output,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<(), StageError> {
        self.send_record(to, OutRecord::new(&*to.topic, value).with_key(key))
            .await
    }

    /// Sends a record with headers or an explicit partition; its topic is set to the port's.
    pub async fn send_record(
        &mut self,
        to: &Output,
        mut record: OutRecord,
    ) -> Result<(), StageError> {
        if *record.topic != *to.topic {
            record.topic = to.topic.to_string();
        }
        let kib = to.kib_of(record.value.len());
        let budget = to.budget.clone();
        let abandon = self.delivery.0.abandon.clone();
        // Wait for budget while driving this emitter's own earlier sends: with a lazy
        // producer future they make no progress unless polled, and they may be what holds it.
        let permit = match budget.clone().try_acquire_many_owned(kib) {
            Ok(permit) => permit,
            Err(_) => loop {
                tokio::select! {
                    biased;
                    permit = budget.clone().acquire_many_owned(kib) => {
                        break permit.expect("a port's budget is never closed");
                    }
                    Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                        done?;
                        self.acknowledged += 1;
                    }
                    _ = abandon.cancelled() => return Err(StageError::Abandoned),
                }
            },
        };
        let delivery = self.delivery.clone();
        self.in_flight.push(Box::pin(async move {
            let result = delivery.produce(std::slice::from_ref(&record)).await;
            drop(permit);
            result
        }));
        Ok(())
    }

    /// Number of records sent and not yet known to be acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Number of records known to be acknowledged.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged
    }

    /// Waits until every record sent so far is acknowledged. After an error the remaining
    /// records are given up (the input is replayed, so they will be sent again).
    pub async fn flush(&mut self) -> Result<(), StageError> {
        while let Some(done) = self.in_flight.next().await {
            if let Err(e) = done {
                self.in_flight.clear();
                return Err(e);
            }
            self.acknowledged += 1;
        }
        Ok(())
    }
}

/// Sends `records` until each is acknowledged, sending the refused ones again with backoff:
/// `Err(Abandoned)` when `abandon` is cancelled first, `Err(Transient)` when `rounds` run out,
/// `Err(Invalid)` with code `rejected_by_broker` when the broker refuses one for good (too
/// large, not authorized): the input is then dead-lettered with the broker's reason.
pub async fn produce_all(
    producer: &dyn Producer,
    records: &[OutRecord],
    metrics: &StageMetrics,
    backoff: &Backoff,
    rounds: Option<u32>,
    abandon: &CancellationToken,
) -> Result<(), StageError> {
    let mut pending: Vec<&OutRecord> = records.iter().collect();
    let mut round: u32 = 0;
    while !pending.is_empty() {
        // Not raced against `abandon`: that would add a waiter on a token every record shares
        // (a lock per send). A send stuck past shutdown (a full local queue) is stopped with
        // its task, `ABANDON_GRACE` after the drain timeout (see the driver).
        let results = if let [one] = pending[..] {
            vec![producer.send(one.clone()).await]
        } else {
            futures::future::join_all(pending.iter().map(|o| producer.send((*o).clone()))).await
        };
        let mut failed = Vec::new();
        let mut last_error = None;
        for (out, r) in pending.into_iter().zip(results) {
            match r {
                Ok(_) => metrics.sent(&out.topic),
                Err(e) if e.is_permanent() => {
                    metrics.failed("produce_rejected");
                    return Err(StageError::invalid(
                        "rejected_by_broker",
                        format!(
                            "a record for `{}` ({} bytes): {e}",
                            out.topic,
                            out.value.len()
                        ),
                    ));
                }
                Err(e) => {
                    tracing::warn!(topic = %out.topic, error = %e, "produce failed; retrying");
                    metrics.failed("produce");
                    failed.push(out);
                    last_error = Some(e);
                }
            }
        }
        pending = failed;
        if let Some(e) = last_error {
            round += 1;
            if rounds.is_some_and(|max| round >= max) {
                return Err(StageError::Transient(
                    anyhow::Error::new(e).context(format!("producing after {round} attempts")),
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.delay(round.min(8))) => {}
                _ = abandon.cancelled() => return Err(StageError::Abandoned),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use futures::FutureExt;
    use sluice_bus::{BusError, Delivered};
    use tokio::sync::oneshot;

    use super::*;
    use crate::metrics::Metrics;

    /// A producer whose acknowledgements the test releases one by one, as a slow broker
    /// would send them; optionally refusing the first sends.
    #[derive(Default)]
    struct SlowBroker {
        waiting: Mutex<Vec<(OutRecord, oneshot::Sender<()>)>>,
        refuse_first: Mutex<u32>,
        sent: Mutex<Vec<OutRecord>>,
    }

    impl SlowBroker {
        fn waiting(&self) -> usize {
            self.waiting.lock().unwrap().len()
        }
        fn ack_all(&self) {
            for (r, tx) in self.waiting.lock().unwrap().drain(..) {
                self.sent.lock().unwrap().push(r);
                let _ = tx.send(());
            }
        }
    }

    impl Producer for SlowBroker {
        fn send(&self, record: OutRecord) -> BoxFuture<'static, Result<Delivered, BusError>> {
            {
                let mut refuse = self.refuse_first.lock().unwrap();
                if *refuse > 0 {
                    *refuse -= 1;
                    return futures::future::ready(Err(BusError::Broker("refused".into()))).boxed();
                }
            }
            let (tx, rx) = oneshot::channel();
            self.waiting.lock().unwrap().push((record, tx));
            async move {
                rx.await.map_err(|_| BusError::Closed)?;
                Ok(Delivered {
                    partition: 0,
                    offset: 0,
                })
            }
            .boxed()
        }

        fn flush(&self, _timeout: Duration) -> BoxFuture<'_, Result<(), BusError>> {
            futures::future::ready(Ok(())).boxed()
        }
    }

    fn delivery(broker: &Arc<SlowBroker>, abandon: &CancellationToken) -> Delivery {
        let backoff = Backoff {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        };
        Delivery::new(
            broker.clone() as Arc<dyn Producer>,
            Metrics::new().stage("t"),
            backoff,
            abandon.clone(),
        )
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_send_waits_while_its_port_budget_is_taken_by_unacknowledged_records() {
        let broker = Arc::new(SlowBroker::default());
        let d = delivery(&broker, &CancellationToken::new());
        let port = Output::new("output", "pages").with_budget(4 << 10);
        let mut first = d.emitter();
        first.send(&port, vec![0; 3 << 10]).await.unwrap();
        // Polled once by flush's first step so the lazy send reaches the broker.
        assert!(first.flush().now_or_never().is_none());
        assert_eq!(broker.waiting(), 1);
        assert_eq!(port.pending_bytes(), 3 << 10);

        let mut second = d.emitter();
        let port2 = port.clone();
        let blocked = tokio::spawn(async move {
            second.send(&port2, vec![1; 2 << 10]).await.unwrap();
            second.flush().await
        });
        settle().await;
        assert!(
            !blocked.is_finished(),
            "3 KiB + 2 KiB exceed a 4 KiB budget"
        );
        assert_eq!(
            broker.waiting(),
            1,
            "only the first record is at the broker"
        );
        broker.ack_all();
        first.flush().await.unwrap();
        assert_eq!(first.acknowledged(), 1);
        settle().await;
        assert_eq!(
            broker.waiting(),
            1,
            "the second record went once the first was acked"
        );
        broker.ack_all();
        blocked.await.unwrap().unwrap();
        assert_eq!(port.pending_bytes(), 0);
        assert_eq!(broker.sent.lock().unwrap().len(), 2);
        assert!(broker
            .sent
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.topic == "pages"));
    }

    #[tokio::test]
    async fn a_record_bigger_than_the_budget_goes_alone() {
        let broker = Arc::new(SlowBroker::default());
        let d = delivery(&broker, &CancellationToken::new());
        let port = Output::new("output", "pages").with_budget(1 << 10);
        let mut out = d.emitter();
        out.send_keyed(&port, b"k", vec![0; 64 << 10])
            .await
            .unwrap();
        let flushing = tokio::spawn(async move { out.flush().await });
        settle().await;
        broker.ack_all();
        flushing.await.unwrap().unwrap();
        assert_eq!(
            broker.sent.lock().unwrap()[0].key.as_deref(),
            Some(&b"k"[..])
        );
    }

    #[tokio::test]
    async fn refused_sends_are_retried_and_abandon_gives_up() {
        let broker = Arc::new(SlowBroker::default());
        *broker.refuse_first.lock().unwrap() = 2;
        let abandon = CancellationToken::new();
        let d = delivery(&broker, &abandon);
        let port = Output::new("output", "t");
        let mut out = d.emitter();
        out.send(&port, b"x".to_vec()).await.unwrap();
        let flushing = tokio::spawn(async move { out.flush().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(broker.waiting(), 1, "sent a third time after two refusals");
        broker.ack_all();
        flushing.await.unwrap().unwrap();

        // Never acknowledged: only abandoning ends the wait, and says so.
        let mut out = d.emitter();
        out.send(&port, b"y".to_vec()).await.unwrap();
        let flushing = tokio::spawn(async move { out.flush().await });
        settle().await;
        abandon.cancel();
        broker.waiting.lock().unwrap().clear();
        assert!(matches!(
            flushing.await.unwrap(),
            Err(StageError::Abandoned)
        ));
    }

    #[tokio::test]
    async fn bounded_delivery_fails_after_its_rounds() {
        let broker = Arc::new(SlowBroker::default());
        *broker.refuse_first.lock().unwrap() = 10;
        let d = delivery(&broker, &CancellationToken::new()).bounded();
        let mut out = d.emitter();
        out.send(&Output::new("output", "t"), b"x".to_vec())
            .await
            .unwrap();
        let err = out.flush().await.unwrap_err();
        assert!(matches!(err, StageError::Transient(_)), "{err}");
        assert!(format!("{err}").contains("3 attempts"), "{err}");
        assert_eq!(out.acknowledged(), 0);
    }
}
