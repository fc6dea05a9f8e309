//! One group member reading: the group's events first, then records, partitions taking turns.
//!
//! The group never calls into a member; it leaves events in the member's inbox and wakes it.
//! That keeps the group's lock out of `next`, so a member that is slow to read (or not reading
//! at all) cannot stall the group, and `next` stays cancel-safe: nothing is taken from the inbox
//! or the logs until it returns.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::group::Group;
use super::lock;
use super::log::Partition;
use crate::{BusError, Consumer, ConsumerEvent, Record, RevokeAck, TopicPartition};

/// What the group tells a member, delivered by `next` ahead of any record.
pub(super) enum Control {
    Assigned(Vec<Handover>),
    Revoked(Vec<TopicPartition>, RevokeAck),
}

/// A partition handed to a member, with the offset it starts reading at.
pub(super) struct Handover {
    pub(super) tp: TopicPartition,
    pub(super) partition: Arc<Partition>,
    pub(super) position: i64,
}

/// The part of a member the group reaches into: its inbox.
pub(super) struct MemberShared {
    /// Woken by appends to the member's partitions and by control events.
    notify: Arc<Notify>,
    control: Mutex<VecDeque<Control>>,
}

impl MemberShared {
    pub(super) fn new() -> Self {
        Self {
            notify: Arc::new(Notify::new()),
            control: Mutex::new(VecDeque::new()),
        }
    }

    pub(super) fn push(&self, control: Control) {
        lock(&self.control).push_back(control);
        self.notify.notify_one();
    }
}

/// A member's read position in one assigned partition.
struct Cursor {
    tp: TopicPartition,
    partition: Arc<Partition>,
    position: i64,
}

/// A member of a group on the memory bus.
pub(super) struct MemoryConsumer {
    id: u64,
    group: Arc<Group>,
    shared: Arc<MemberShared>,
    cursors: Vec<Cursor>,
    /// The cursor to try first, so that partitions take turns.
    turn: usize,
    left: bool,
}

impl MemoryConsumer {
    /// The member `id` of `group`, which has joined already with `shared` as its inbox.
    pub(super) fn new(id: u64, group: Arc<Group>, shared: Arc<MemberShared>) -> Self {
        Self {
            id,
            group,
            shared,
            cursors: Vec::new(),
            turn: 0,
            left: false,
        }
    }

    fn control_event(&mut self) -> Option<ConsumerEvent> {
        let control = lock(&self.shared.control).pop_front()?;
        let id = self.id;
        Some(match control {
            Control::Assigned(handovers) => {
                let mut tps = Vec::with_capacity(handovers.len());
                for h in handovers {
                    h.partition.watch(id, &self.shared.notify);
                    self.cursors.retain(|c| c.tp != h.tp);
                    tps.push(h.tp.clone());
                    self.cursors.push(Cursor {
                        tp: h.tp,
                        partition: h.partition,
                        position: h.position,
                    });
                }
                ConsumerEvent::Assigned(tps)
            }
            Control::Revoked(partitions, ack) => {
                self.cursors.retain(|c| {
                    let keep = !partitions.contains(&c.tp);
                    if !keep {
                        c.partition.unwatch(id);
                    }
                    keep
                });
                ConsumerEvent::Revoked { partitions, ack }
            }
        })
    }

    fn record(&mut self) -> Option<Record> {
        let count = self.cursors.len();
        for step in 0..count {
            let index = (self.turn + step) % count;
            let cursor = &mut self.cursors[index];
            if let Some(record) = cursor.partition.read(cursor.position) {
                cursor.position += 1;
                self.turn = index + 1;
                return Some(record);
            }
        }
        None
    }

    fn leave(&mut self) {
        if std::mem::replace(&mut self.left, true) {
            return;
        }
        for cursor in self.cursors.drain(..) {
            cursor.partition.unwatch(self.id);
        }
        self.group.leave(self.id);
        // Pending events (and their acks) mean nothing once the member is out of the group.
        lock(&self.shared.control).clear();
    }
}

#[async_trait::async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Result<ConsumerEvent, BusError> {
        loop {
            if let Some(event) = self.control_event() {
                return Ok(event);
            }
            if let Some(record) = self.record() {
                return Ok(ConsumerEvent::Record(record));
            }
            // `notify_one` leaves a permit when nobody waits, so an append or event landing
            // between the checks above and this wait still wakes us.
            self.shared.notify.notified().await;
        }
    }

    async fn commit(&self, offsets: &[(TopicPartition, i64)], _sync: bool) -> Result<(), BusError> {
        if let Some((tp, offset)) = offsets.iter().find(|(_, o)| *o < 0) {
            return Err(BusError::Invalid(format!(
                "negative offset {offset} for {tp}"
            )));
        }
        self.group.commit(self.id, offsets);
        Ok(())
    }

    async fn close(mut self: Box<Self>) -> Result<(), BusError> {
        self.leave();
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        // A consumer dropped without `close` (a crashed stage) must free its partitions.
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use crate::memory::testing::{
        assert_quiet, assigned, bus_with, fill, options, record, tp, WAIT,
    };
    use crate::{Bus, Consumer, ConsumerEvent, OutRecord, StartFrom, TopicPartition};

    #[tokio::test]
    async fn partitions_take_turns() {
        let bus = bus_with("t", 3).await;
        fill(&bus, "t", 0, 100).await;
        fill(&bus, "t", 1, 100).await;
        fill(&bus, "t", 2, 3).await;
        let mut c = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut c).await;
        let mut counts = [0usize; 3];
        for _ in 0..30 {
            counts[record(&mut c).await.partition as usize] += 1;
        }
        // Partition 2 ran dry after 3; the two busy ones share the rest evenly.
        assert_eq!(counts[2], 3);
        assert!(counts[0].abs_diff(counts[1]) <= 1, "{counts:?}");
    }

    #[tokio::test]
    async fn next_waits_for_records_produced_later() {
        let bus = bus_with("t", 2).await;
        let mut c = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut c).await;
        let producer = bus.producer().unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            producer
                .send(OutRecord::new("t", "late").with_key("k"))
                .await
                .unwrap()
        });
        let r = record(&mut c).await;
        let d = writer.await.unwrap();
        assert_eq!(
            (r.partition, r.offset, r.value),
            (d.partition, d.offset, b"late".to_vec())
        );
    }

    /// Drives a member until `seen` reaches `total`: records must come from assigned partitions
    /// only, and revocations are answered with the exact progress.
    async fn run_member(
        mut c: Box<dyn Consumer>,
        seen: Arc<AtomicUsize>,
        total: usize,
    ) -> Vec<(TopicPartition, i64)> {
        let mut owned: HashSet<TopicPartition> = HashSet::new();
        let mut next: HashMap<TopicPartition, i64> = HashMap::new();
        let mut got = Vec::new();
        while seen.load(Ordering::SeqCst) < total {
            let Ok(event) = tokio::time::timeout(Duration::from_millis(20), c.next()).await else {
                continue;
            };
            match event.unwrap() {
                ConsumerEvent::Assigned(list) => owned.extend(list),
                ConsumerEvent::Revoked { partitions, ack } => {
                    let offsets = partitions
                        .iter()
                        .filter_map(|tp| {
                            assert!(owned.remove(tp), "revoked {tp} it did not own");
                            next.remove(tp).map(|o| (tp.clone(), o))
                        })
                        .collect();
                    ack.done(offsets);
                }
                ConsumerEvent::Record(r) => {
                    let tp = r.topic_partition();
                    assert!(owned.contains(&tp), "record of {tp}, not assigned here");
                    if let Some(expected) = next.get(&tp) {
                        assert_eq!(r.offset, *expected, "gap or repeat in {tp}");
                    }
                    next.insert(tp.clone(), r.offset + 1);
                    got.push((tp, r.offset));
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        let progress: Vec<_> = owned
            .iter()
            .filter_map(|tp| Some((tp.clone(), *next.get(tp)?)))
            .collect();
        c.commit(&progress, true).await.unwrap();
        c.close().await.unwrap();
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_members_split_the_partitions_and_read_everything_once() {
        const HALF: usize = 1000;
        let bus = bus_with("t", 4).await;
        let producer = bus.producer().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let mut delivered = Vec::new();

        let a = bus.subscribe(options("g", &["t"])).await.unwrap();
        let a = tokio::spawn(run_member(a, Arc::clone(&seen), 2 * HALF));
        for i in 0..HALF {
            let d = producer
                .send(OutRecord::new("t", "x").with_key(format!("k{i}")))
                .await
                .unwrap();
            delivered.push((tp("t", d.partition), d.offset));
        }
        // B joins while A is mid-way through the first half.
        tokio::time::timeout(WAIT, async {
            while seen.load(Ordering::SeqCst) < HALF / 4 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap();
        let b = bus.subscribe(options("g", &["t"])).await.unwrap();
        let b = tokio::spawn(run_member(b, Arc::clone(&seen), 2 * HALF));
        for i in HALF..2 * HALF {
            let d = producer
                .send(OutRecord::new("t", "x").with_key(format!("k{i}")))
                .await
                .unwrap();
            delivered.push((tp("t", d.partition), d.offset));
        }

        let got_a = tokio::time::timeout(WAIT * 4, a).await.unwrap().unwrap();
        let got_b = tokio::time::timeout(WAIT * 4, b).await.unwrap().unwrap();
        assert!(!got_b.is_empty(), "the second member got nothing");
        let mut all: Vec<_> = got_a.iter().chain(&got_b).cloned().collect();
        all.sort();
        let before_dedup = all.len();
        all.dedup();
        assert_eq!(before_dedup, all.len(), "some records were read twice");
        delivered.sort();
        assert_eq!(all, delivered);
        // The final owners committed their progress: nothing would be replayed.
        let tps: Vec<_> = (0..4).map(|p| tp("t", p)).collect();
        let committed = bus.committed("g", &tps).await.unwrap();
        for (tp, c) in tps.iter().zip(committed) {
            assert_eq!(c, Some(bus.watermarks(tp).await.unwrap().1), "{tp}");
        }
    }

    #[tokio::test]
    async fn start_from_latest_skips_existing_records_unless_committed() {
        let bus = bus_with("t", 1).await;
        fill(&bus, "t", 0, 5).await;
        let mut latest = options("g", &["t"]);
        latest.start_from = StartFrom::Latest;
        let mut c = bus.subscribe(latest.clone()).await.unwrap();
        assigned(&mut c).await;
        assert_quiet(&mut c, 50).await;
        fill(&bus, "t", 0, 3).await;
        for offset in 5..8 {
            assert_eq!(record(&mut c).await.offset, offset);
        }
        c.commit(&[(tp("t", 0), 6)], true).await.unwrap();
        c.close().await.unwrap();

        // With a committed offset, `Latest` does not apply.
        let mut c = bus.subscribe(latest).await.unwrap();
        assigned(&mut c).await;
        assert_eq!(record(&mut c).await.offset, 6);
        // Another group starting from `Earliest` reads everything.
        let mut e = bus.subscribe(options("other", &["t"])).await.unwrap();
        assigned(&mut e).await;
        assert_eq!(record(&mut e).await.offset, 0);
    }
}
