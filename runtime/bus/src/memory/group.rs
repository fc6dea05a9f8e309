//! The group coordinator: membership, committed offsets, and moving partitions between members.
//!
//! The assignor says who *should* own a partition; this module gets there without two members
//! ever reading one partition at once. A partition has a holder (the member it was handed to)
//! and a target (the member it should go to); a holder that is not the target is asked to give
//! it back and keeps it until it answers, and only a partition nobody holds is handed on. So a
//! membership change revokes only the partitions that move, and everyone else reads on.
//!
//! A member that leaves (closed or dropped) gives its partitions up at once: nobody is left to
//! drain them. An answer it gave just before leaving still counts; whatever it read but did not
//! commit is read again by the next owner (at-least-once). A commit for a partition the member
//! does not hold (any more) is ignored, as Kafka refuses commits from a stale generation: an
//! old owner's late progress must not overwrite the new owner's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::assignor;
use super::consumer::{Control, Handover, MemberShared};
use super::lock;
use super::log::{Partition, Topic};
use super::revocation::{await_answer, Answer, Revocation};
use crate::{RevokeAck, StartFrom, TopicPartition};

/// What the group knows of a member.
pub(super) struct Member {
    pub(super) topics: Vec<Arc<Topic>>,
    pub(super) start_from: StartFrom,
    pub(super) shared: Arc<MemberShared>,
}

/// The group's view of one partition.
struct Slot {
    partition: Arc<Partition>,
    /// The member it was handed to and that has not given it back yet.
    holder: Option<u64>,
    /// The holder was asked to give it back and has not answered yet.
    revoking: bool,
    /// The member the current assignment gives it to.
    target: Option<u64>,
}

/// A consumer group.
pub(super) struct Group {
    name: String,
    rebalance_timeout: Duration,
    state: Mutex<GroupState>,
}

#[derive(Default)]
struct GroupState {
    /// Live members by id; ids grow with join order, which the assignor uses to break ties.
    members: BTreeMap<u64, Member>,
    /// Every partition of the topics some member subscribes to.
    partitions: BTreeMap<TopicPartition, Slot>,
    committed: HashMap<TopicPartition, i64>,
    revocations: HashMap<u64, Revocation>,
    next_revocation: u64,
    generation: u64,
    /// Runtime of the latest subscriber, for revocations started outside any runtime.
    runtime: Option<Handle>,
}

impl GroupState {
    fn commit_held(&mut self, group: &str, member: u64, offsets: &[(TopicPartition, i64)]) {
        for (tp, offset) in offsets {
            let held = self
                .partitions
                .get(tp)
                .is_some_and(|slot| slot.holder == Some(member));
            if held && *offset >= 0 {
                self.committed.insert(tp.clone(), *offset);
            } else {
                debug!(group, member, %tp, offset, "commit ignored: partition not held by this member");
            }
        }
    }

    /// Recomputes `target` of every partition (see [`assignor`]).
    fn assign_targets(&mut self) {
        // Members iterate in id order, so every list is sorted by age.
        let mut subscribers: HashMap<&str, Vec<u64>> = HashMap::new();
        for (id, member) in &self.members {
            for topic in &member.topics {
                subscribers.entry(topic.name()).or_default().push(*id);
            }
        }
        let mut targets: Vec<(&str, &mut Option<u64>)> = self
            .partitions
            .iter_mut()
            .map(|(tp, slot)| (tp.topic.as_str(), &mut slot.target))
            .collect();
        assignor::assign(&subscribers, &mut targets);
    }

    fn release(&mut self, member: u64, partitions: &[TopicPartition]) {
        for tp in partitions {
            if let Some(slot) = self.partitions.get_mut(tp) {
                if slot.holder == Some(member) {
                    slot.holder = None;
                    slot.revoking = false;
                }
            }
        }
    }
}

/// Where a member starts reading a partition handed to it.
fn start_position(committed: Option<i64>, end: i64, start_from: StartFrom) -> i64 {
    match committed {
        Some(offset) if offset <= end => offset,
        _ => match start_from {
            StartFrom::Earliest => 0,
            StartFrom::Latest => end,
        },
    }
}

impl Group {
    /// An empty group.
    pub(super) fn new(name: &str, rebalance_timeout: Duration) -> Self {
        Self {
            name: name.to_owned(),
            rebalance_timeout,
            state: Mutex::new(GroupState::default()),
        }
    }

    pub(super) fn rebalance_timeout(&self) -> Duration {
        self.rebalance_timeout
    }

    /// The committed next offset of each partition (None: nothing committed).
    pub(super) fn committed(&self, partitions: &[TopicPartition]) -> Vec<Option<i64>> {
        let state = lock(&self.state);
        partitions
            .iter()
            .map(|tp| state.committed.get(tp).copied())
            .collect()
    }

    pub(super) fn join(self: &Arc<Self>, id: u64, member: Member) {
        let mut state = lock(&self.state);
        if let Ok(runtime) = Handle::try_current() {
            state.runtime = Some(runtime);
        }
        for topic in &member.topics {
            for partition in topic.partitions.iter() {
                state
                    .partitions
                    .entry(partition.tp())
                    .or_insert_with(|| Slot {
                        partition: Arc::clone(partition),
                        holder: None,
                        revoking: false,
                        target: None,
                    });
            }
        }
        state.members.insert(id, member);
        state.generation += 1;
        debug!(group = %self.name, member = id, generation = state.generation, "member joined");
        state.assign_targets();
        self.reconcile(&mut state);
    }

    pub(super) fn leave(self: &Arc<Self>, id: u64) {
        let mut state = lock(&self.state);
        if state.members.remove(&id).is_none() {
            return;
        }
        let pending: Vec<u64> = state
            .revocations
            .iter()
            .filter(|(_, r)| r.member == id)
            .map(|(rid, _)| *rid)
            .collect();
        for rid in pending {
            if let Some(revocation) = state.revocations.remove(&rid) {
                revocation.waiter.abort();
                // A stage typically answers the ack and closes right away, before the waiting
                // task had a chance to run: its answer still counts.
                let answer = lock(&revocation.answer).take();
                if let Some(offsets) = answer {
                    state.commit_held(&self.name, id, &offsets);
                }
            }
        }
        for slot in state.partitions.values_mut() {
            if slot.holder == Some(id) {
                slot.holder = None;
                slot.revoking = false;
            }
        }
        let subscribed: HashSet<&str> = state
            .members
            .values()
            .flat_map(|m| m.topics.iter().map(|t| t.name()))
            .collect();
        let gone: Vec<TopicPartition> = state
            .partitions
            .keys()
            .filter(|tp| !subscribed.contains(tp.topic.as_str()))
            .cloned()
            .collect();
        for tp in gone {
            state.partitions.remove(&tp);
        }
        state.generation += 1;
        debug!(group = %self.name, member = id, generation = state.generation, "member left");
        state.assign_targets();
        self.reconcile(&mut state);
    }

    pub(super) fn commit(&self, member: u64, offsets: &[(TopicPartition, i64)]) {
        lock(&self.state).commit_held(&self.name, member, offsets);
    }

    pub(super) fn finish_revocation(self: &Arc<Self>, rid: u64, timed_out: bool) {
        let mut state = lock(&self.state);
        let Some(revocation) = state.revocations.remove(&rid) else {
            // Settled already by the member leaving.
            return;
        };
        let answer = lock(&revocation.answer).take();
        match answer {
            Some(offsets) => state.commit_held(&self.name, revocation.member, &offsets),
            None if timed_out => warn!(
                group = %self.name,
                member = revocation.member,
                partitions = ?revocation.partitions,
                timeout = ?self.rebalance_timeout,
                "revocation not answered in time; partitions move on without its commits"
            ),
            None => debug!(
                group = %self.name,
                member = revocation.member,
                "revocation ack dropped; nothing committed"
            ),
        }
        state.release(revocation.member, &revocation.partitions);
        self.reconcile(&mut state);
    }

    /// Moves the group towards the target assignment: asks holders to give back what is no
    /// longer theirs, and hands free partitions to their targets.
    fn reconcile(self: &Arc<Self>, state: &mut GroupState) {
        // Revocations first, so that partitions released on the spot are handed over below.
        let mut revoked: BTreeMap<u64, Vec<TopicPartition>> = BTreeMap::new();
        for (tp, slot) in state.partitions.iter_mut() {
            if let Some(holder) = slot.holder {
                if slot.target != Some(holder) && !slot.revoking {
                    slot.revoking = true;
                    revoked.entry(holder).or_default().push(tp.clone());
                }
            }
        }
        for (member, partitions) in revoked {
            self.revoke(state, member, partitions);
        }

        let mut assigned: BTreeMap<u64, Vec<Handover>> = BTreeMap::new();
        let GroupState {
            members,
            partitions,
            committed,
            ..
        } = state;
        for (tp, slot) in partitions.iter_mut() {
            let (None, Some(target)) = (slot.holder, slot.target) else {
                continue;
            };
            let Some(member) = members.get(&target) else {
                continue;
            };
            let end = slot.partition.end();
            let committed = committed.get(tp).copied();
            let position = start_position(committed, end, member.start_from);
            if committed.is_some_and(|c| c != position) {
                debug!(group = %self.name, %tp, ?committed, end, position, "committed offset out of range; reset");
            }
            slot.holder = Some(target);
            assigned.entry(target).or_default().push(Handover {
                tp: tp.clone(),
                partition: Arc::clone(&slot.partition),
                position,
            });
        }
        for (id, handovers) in assigned {
            debug!(
                group = %self.name,
                member = id,
                partitions = ?handovers.iter().map(|h| &h.tp).collect::<Vec<_>>(),
                "assigned"
            );
            if let Some(member) = members.get(&id) {
                member.shared.push(Control::Assigned(handovers));
            }
        }
    }

    fn revoke(
        self: &Arc<Self>,
        state: &mut GroupState,
        member: u64,
        partitions: Vec<TopicPartition>,
    ) {
        let Some(shared) = state.members.get(&member).map(|m| Arc::clone(&m.shared)) else {
            // Leaving releases everything a member holds, so this is unreachable; stay live anyway.
            state.release(member, &partitions);
            return;
        };
        debug!(group = %self.name, member, ?partitions, "revoking");
        let (tx, rx) = oneshot::channel();
        let runtime = Handle::try_current().ok().or_else(|| state.runtime.clone());
        match runtime {
            Some(runtime) => {
                let rid = state.next_revocation;
                state.next_revocation += 1;
                let answer = Arc::new(Mutex::new(Answer::Waiting(rx)));
                let waiter = runtime
                    .spawn(await_answer(Arc::clone(self), rid, Arc::clone(&answer)))
                    .abort_handle();
                state.revocations.insert(
                    rid,
                    Revocation {
                        member,
                        partitions: partitions.clone(),
                        answer,
                        waiter,
                    },
                );
            }
            None => {
                // Nothing could wait for the answer: treat it as a dropped ack rather than
                // stalling the group.
                warn!(group = %self.name, member, "no tokio runtime to await a revocation; partitions move on without commits");
                state.release(member, &partitions);
            }
        }
        shared.push(Control::Revoked(partitions, RevokeAck(tx)));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::memory::testing::{
        assert_partitioned, assert_quiet, assigned, bus_with, fill, options, record, revoked,
        settle, spec, tp, two_members,
    };
    use crate::memory::MemoryBus;
    use crate::{Bus, BusError};

    #[tokio::test]
    async fn late_joiner_resumes_from_the_committed_offset_and_others_keep_theirs() {
        let bus = bus_with("t", 2).await;
        fill(&bus, "t", 0, 10).await;
        fill(&bus, "t", 1, 10).await;
        let mut a = bus.subscribe(options("g", &["t"])).await.unwrap();
        assert_eq!(assigned(&mut a).await, vec![tp("t", 0), tp("t", 1)]);
        for _ in 0..20 {
            record(&mut a).await;
        }
        a.commit(&[(tp("t", 0), 3), (tp("t", 1), 7)], true)
            .await
            .unwrap();

        let mut b = bus.subscribe(options("g", &["t"])).await.unwrap();
        // Cooperative: only the partition that moves is revoked.
        let (partitions, ack) = revoked(&mut a).await;
        assert_eq!(partitions, vec![tp("t", 0)]);
        ack.done(vec![(tp("t", 0), 5)]);
        assert_eq!(assigned(&mut b).await, vec![tp("t", 0)]);
        for offset in 5..10 {
            let r = record(&mut b).await;
            assert_eq!((r.partition, r.offset), (0, offset));
        }
        assert_eq!(
            bus.committed("g", &[tp("t", 0), tp("t", 1)]).await.unwrap(),
            vec![Some(5), Some(7)]
        );

        // From now on records of t/0 go to b only, and a keeps t/1.
        fill(&bus, "t", 0, 2).await;
        fill(&bus, "t", 1, 2).await;
        for offset in 10..12 {
            let r = record(&mut a).await;
            assert_eq!((r.partition, r.offset), (1, offset));
            let r = record(&mut b).await;
            assert_eq!((r.partition, r.offset), (0, offset));
        }
        assert_quiet(&mut a, 50).await;
        assert_quiet(&mut b, 50).await;
    }

    #[tokio::test]
    async fn dropped_member_redelivers_only_uncommitted_records() {
        let (bus, mut a, mut b) = two_members().await;

        fill(&bus, "t", 1, 10).await;
        for offset in 0..10 {
            assert_eq!(record(&mut a).await.offset, offset);
        }
        a.commit(&[(tp("t", 1), 4)], true).await.unwrap();
        drop(a); // crashed: no close, offsets 4..10 were read but not committed

        assert_eq!(assigned(&mut b).await, vec![tp("t", 1)]);
        for offset in 4..10 {
            let r = record(&mut b).await;
            assert_eq!((r.partition, r.offset), (1, offset));
        }
        assert_quiet(&mut b, 50).await;
    }

    #[tokio::test]
    async fn closed_member_hands_over_and_the_others_read_on() {
        let (bus, mut a, mut b) = two_members().await;
        fill(&bus, "t", 0, 3).await;
        for _ in 0..3 {
            record(&mut b).await;
        }
        b.commit(&[(tp("t", 0), 3)], true).await.unwrap();
        b.close().await.unwrap();

        assert_eq!(assigned(&mut a).await, vec![tp("t", 0)]);
        fill(&bus, "t", 0, 1).await;
        fill(&bus, "t", 1, 1).await;
        let mut got: Vec<(i32, i64)> = Vec::new();
        for _ in 0..2 {
            let r = record(&mut a).await;
            got.push((r.partition, r.offset));
        }
        got.sort_unstable();
        assert_eq!(got, vec![(0, 3), (1, 0)]);
    }

    #[tokio::test]
    async fn commits_for_partitions_not_held_are_ignored() {
        let (bus, a, b) = two_members().await;

        a.commit(&[(tp("t", 0), 7), (tp("t", 1), 4)], true)
            .await
            .unwrap();
        b.commit(&[(tp("t", 1), 9)], false).await.unwrap();
        let tps = [tp("t", 0), tp("t", 1)];
        assert_eq!(bus.committed("g", &tps).await.unwrap(), vec![None, Some(4)]);
        b.commit(&[(tp("t", 0), 2)], false).await.unwrap();
        assert_eq!(
            bus.committed("g", &tps).await.unwrap(),
            vec![Some(2), Some(4)]
        );
        assert!(matches!(
            b.commit(&[(tp("t", 0), -1)], true).await,
            Err(BusError::Invalid(_))
        ));
        assert_eq!(
            bus.committed("nobody", &tps).await.unwrap(),
            vec![None, None]
        );
    }

    #[tokio::test]
    async fn assignment_is_balanced_sticky_and_cooperative() {
        let bus = bus_with("t", 4).await;
        let all: Vec<_> = (0..4).map(|p| tp("t", p)).collect();
        let mut members = vec![bus.subscribe(options("g", &["t"])).await.unwrap()];
        let mut owned = vec![BTreeSet::new()];
        assert_eq!(settle(&mut members, &mut owned).await, 0);
        assert_eq!(owned[0].len(), 4);

        members.push(bus.subscribe(options("g", &["t"])).await.unwrap());
        owned.push(BTreeSet::new());
        assert_eq!(settle(&mut members, &mut owned).await, 2);
        assert_partitioned(&owned, &all);
        assert_eq!((owned[0].len(), owned[1].len()), (2, 2));

        members.push(bus.subscribe(options("g", &["t"])).await.unwrap());
        owned.push(BTreeSet::new());
        let before = owned.clone();
        // Only one partition has to move for 2/1/1.
        assert_eq!(settle(&mut members, &mut owned).await, 1);
        assert_partitioned(&owned, &all);
        let mut loads: Vec<usize> = owned.iter().map(BTreeSet::len).collect();
        loads.sort_unstable();
        assert_eq!(loads, vec![1, 1, 2]);
        for (b, a) in before.iter().zip(&owned).take(2) {
            assert!(a.is_subset(b), "a member lost more than it had to");
        }

        // The third leaves: the survivors take its partition without losing any.
        drop(members.pop());
        let lost = owned.pop().unwrap();
        assert_eq!(settle(&mut members, &mut owned).await, 0);
        assert_partitioned(&owned, &all);
        assert_eq!((owned[0].len(), owned[1].len()), (2, 2));
        assert!(lost.iter().all(|tp| owned.iter().any(|o| o.contains(tp))));
    }

    #[tokio::test]
    async fn members_with_different_topics_get_only_their_own() {
        let bus = MemoryBus::new();
        bus.create_topics(&[spec("t", 4), spec("u", 2)])
            .await
            .unwrap();
        let mut members = vec![
            bus.subscribe(options("g", &["t"])).await.unwrap(),
            bus.subscribe(options("g", &["t", "u", "t"])).await.unwrap(),
        ];
        let mut owned = vec![BTreeSet::new(), BTreeSet::new()];
        settle(&mut members, &mut owned).await;
        let mut all: Vec<_> = (0..4).map(|p| tp("t", p)).collect();
        all.extend((0..2).map(|p| tp("u", p)));
        assert_partitioned(&owned, &all);
        assert!(owned[0].iter().all(|tp| tp.topic == "t"));
        assert_eq!((owned[0].len(), owned[1].len()), (3, 3));
        // The only member reading `u` leaves: `u` is no longer the group's.
        drop(members.pop());
        owned.pop();
        settle(&mut members, &mut owned).await;
        assert_eq!(owned[0].len(), 4);
        assert!(owned[0].iter().all(|tp| tp.topic == "t"));
    }
}
