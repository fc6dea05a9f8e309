//! The rebalance callback: the group's decisions, turned into the bus's consumer events.
//!
//! The consumer asks for the `cooperative-sticky` assignor, so that both buses speak the
//! protocol the crate docs describe: librdkafka reports only the partitions that leave this
//! member (`REVOKE`) or arrive (`ASSIGN`), and the rest keep being read through the rebalance.
//! rdkafka's default callback would apply those increments too, but it cannot wait for the
//! stage, so this one does the whole job itself: a revocation is handed to the stage, which
//! drains what it has in flight for those partitions and answers with their final offsets; they
//! are committed synchronously, and only then does librdkafka let the partitions go. Eager
//! strategies set through `broker_options` still work (the protocol is asked, never assumed),
//! at the price of every rebalance revoking everything.
//!
//! The callback runs inside `poll` on the consumer's own thread (see [`super::consumer`]), which
//! is why it may block.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol,
};
use rdkafka::error::KafkaResult;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::broker_err;
use crate::{BusError, ConsumerEvent, Record, RevokeAck, TopicPartition};

/// How long a revocation waits for the stage to drain; Kafka's own rebalance timeout
/// (max.poll.interval.ms) bounds it anyway.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the poll thread and the rebalance callback share.
pub(super) struct GroupContext {
    pub(super) events: mpsc::Sender<ConsumerEvent>,
    /// Records polled but not yet handed to the stage.
    pub(super) pending: Mutex<VecDeque<Record>>,
    /// Next offset expected per assigned partition. librdkafka re-delivers records after a
    /// pause/resume (seen on tansu); handing them out again would process them twice.
    pub(super) next_offset: Mutex<HashMap<TopicPartition, i64>>,
    /// The partitions the stage was told are its own: what a failed rebalance takes back.
    held: Mutex<BTreeSet<TopicPartition>>,
}

impl GroupContext {
    pub(super) fn new(events: mpsc::Sender<ConsumerEvent>) -> Self {
        Self {
            events,
            pending: Mutex::new(VecDeque::new()),
            next_offset: Mutex::new(HashMap::new()),
            held: Mutex::new(BTreeSet::new()),
        }
    }

    /// New partitions: librdkafka starts them at their committed offsets, whatever this member
    /// read of them in an earlier generation.
    fn assigned(&self, partitions: Vec<TopicPartition>) {
        if partitions.is_empty() {
            // librdkafka reports every rebalance, also those that bring nothing new.
            return;
        }
        {
            let mut next = self.next_offset.lock().expect("positions poisoned");
            for tp in &partitions {
                next.remove(tp);
            }
        }
        self.held
            .lock()
            .expect("held poisoned")
            .extend(partitions.iter().cloned());
        info!(?partitions, "partitions assigned");
        let _ = self
            .events
            .blocking_send(ConsumerEvent::Assigned(partitions));
    }

    /// Partitions leaving: the stage drains them and answers with the offsets to commit, which
    /// are committed before the partitions move on (unless the group already took them away).
    fn revoked(&self, consumer: &BaseConsumer<Self>, partitions: Vec<TopicPartition>) {
        if partitions.is_empty() {
            return;
        }
        {
            let mut next = self.next_offset.lock().expect("positions poisoned");
            let mut held = self.held.lock().expect("held poisoned");
            for tp in &partitions {
                next.remove(tp);
                held.remove(tp);
            }
        }
        // Records not yet handed out are simply re-read by the next owner.
        self.pending
            .lock()
            .expect("pending poisoned")
            .retain(|r| !partitions.contains(&r.topic_partition()));
        info!(?partitions, "partitions revoked");
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
                        warn!(?partitions, "stage did not drain in time; not committing");
                        break Vec::new();
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        if offsets.is_empty() {
            return;
        }
        if consumer.assignment_lost() {
            // The group moved them on already (this member missed its session): a commit now
            // could only be refused, and the new owner replays from the last commit.
            warn!(
                ?partitions,
                "assignment lost; the final offsets are not committed"
            );
            return;
        }
        match offsets_tpl(&offsets) {
            Ok(tpl) => {
                if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                    warn!(error = %e, "commit on revoke failed");
                }
            }
            Err(e) => warn!(error = %e, "bad offsets on revoke"),
        }
    }
}

impl ClientContext for GroupContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        warn!(%error, reason, "kafka consumer error");
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Assign first: the stage may ask for records as soon as it hears of them.
                let applied = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                report("assign", applied);
                self.assigned(tpl_to_vec(tpl));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Under the eager protocol this is everything held; under cooperative, only
                // what moves elsewhere.
                self.revoked(consumer, tpl_to_vec(tpl));
                let applied = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                report("unassign", applied);
            }
            other => {
                // librdkafka wants the assignment cleared to get back in step with the group
                // (rdkafka.h, rd_kafka_conf_set_rebalance_cb); the stage must let go too.
                warn!(error = ?other, "rebalance failed; giving every partition back");
                let held: Vec<TopicPartition> =
                    std::mem::take(&mut *self.held.lock().expect("held poisoned"))
                        .into_iter()
                        .collect();
                self.revoked(consumer, held);
                report("unassign", consumer.unassign());
            }
        }
    }
}

/// A failed (un)assign leaves librdkafka's assignment out of step with the group until the
/// next rebalance; nothing here can repair it, but it must not go unnoticed.
fn report(what: &str, result: KafkaResult<()>) {
    if let Err(e) = result {
        warn!(error = %e, "rebalance {what} failed");
    }
}

pub(super) fn tpl_to_vec(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

pub(super) fn offsets_tpl(
    offsets: &[(TopicPartition, i64)],
) -> Result<TopicPartitionList, BusError> {
    let mut tpl = TopicPartitionList::new();
    for (tp, o) in offsets {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*o))
            .map_err(broker_err)?;
    }
    Ok(tpl)
}
