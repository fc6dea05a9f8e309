//! The embedded in-memory bus (`broker: memory`): every stage of a pipeline in one process, on a
//! laptop or in tests.
//!
//! It keeps the Kafka semantics the stages rely on, so that a stage behaves the same on both
//! buses:
//!
//! - **Topics and logs.** A topic has a fixed number of partitions; each partition is an
//!   append-only log with offsets from 0. Nothing is ever deleted (the low watermark stays 0), so
//!   the process holds every record produced since it started. Topic names follow Kafka's rules,
//!   so that a pipeline that runs here does not fail on Kafka for a name alone.
//! - **Producing.** [`Producer::send`] appends before it returns (the future is already resolved),
//!   so the order of `send` calls is the order in the log, and `flush` has nothing to wait for.
//!   An explicit partition wins, then [`partition_for_key`] for keyed records (the placement
//!   Kafka uses), then round-robin for unkeyed ones. The timestamp is the append time.
//! - **Groups.** Members of a group share the partitions of the topics they subscribe to. The
//!   group keeps, per partition, the committed next offset; a partition handed to a member is
//!   read from there, or per [`StartFrom`] when nothing is committed (or the committed offset lies
//!   past the end of the log, like Kafka's out-of-range reset).
//! - **Reading.** A member reads straight from the logs at its own positions, one record per
//!   assigned partition in turn, so that a busy partition cannot starve the others. Nothing is
//!   prefetched, so [`SubscribeOptions::buffer`] has nothing to bound and is ignored. `next` is
//!   cancel-safe (nothing is consumed until it returns), so it can sit in a `select!`, and it
//!   never returns [`BusError::Closed`]: a member only stops by `close` or drop.
//!
//! # Rebalance protocol: cooperative (incremental)
//!
//! A membership change (a subscribe, a `close`, a consumer dropped) computes a new target
//! assignment with a sticky, balanced assignor: partitions stay with their member while the
//! balance allows it, the others go to the least-loaded eligible member (ties: the oldest
//! member), then partitions move off any member holding two or more than another eligible member
//! until none does. The result depends only on the history of joins and leaves. Only partitions
//! that change owner are revoked; the other members read on through the rebalance:
//!
//! 1. The losing member gets [`ConsumerEvent::Revoked`] before any further event, and no more
//!    records of those partitions.
//! 2. The group waits for its [`RevokeAck`]. The offsets it answers are committed (for partitions
//!    the member still holds); a dropped ack commits nothing. A member that neither answers nor
//!    drops the ack within the rebalance timeout ([`REBALANCE_TIMEOUT`] by default, like Kafka's
//!    `rebalance.timeout.ms`) loses the partitions without its commits.
//! 3. Only then does the new owner get [`ConsumerEvent::Assigned`], then the records from the
//!    committed offset on.
//!
//! A member that leaves (closed or dropped) gives its partitions up at once. An ack it answered
//! just before leaving still counts; anything it read but did not commit is read again by the
//! next owner (at-least-once). A commit for a partition the member does not hold (any more) is
//! ignored, like Kafka's rejected commits from a stale generation.
//!
//! Waiting for an ack takes a task: the bus spawns one per revocation, on the tokio runtime of the
//! call that caused the rebalance (or, when a consumer is dropped outside any runtime, on the
//! runtime of the group's latest subscriber).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::{BoxFuture, FutureExt};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use crate::{
    partition_for_key, Bus, BusError, Consumer, ConsumerEvent, CreateOutcome, Delivered, Header,
    OutRecord, Producer, Record, RevokeAck, StartFrom, SubscribeOptions, TopicPartition, TopicSpec,
};

/// How long a rebalance waits for a member to answer [`ConsumerEvent::Revoked`] before it moves
/// the partitions on without that member's commits (Kafka's `rebalance.timeout.ms`).
pub const REBALANCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Entries per log segment. Segments never reallocate once full, so a long log grows without
/// copying everything it holds, and a small log wastes at most one partly-filled segment.
const SEGMENT: usize = 1024;

/// Kafka's limit on topic name length.
const MAX_TOPIC_NAME: usize = 249;

type Offsets = Vec<(TopicPartition, i64)>;

/// Locks a mutex even if a panicking thread poisoned it: one failing task (a test assertion in a
/// consumer loop, say) must not take the whole bus down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The embedded in-memory bus. Clones share the same topics, logs and groups.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl MemoryBus {
    /// An empty bus whose rebalances wait [`REBALANCE_TIMEOUT`] for revoked members.
    pub fn new() -> Self {
        Self::with_rebalance_timeout(REBALANCE_TIMEOUT)
    }

    /// An empty bus whose rebalances wait at most `timeout` for a revoked member's answer.
    pub fn with_rebalance_timeout(timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                topics: RwLock::new(HashMap::new()),
                groups: Mutex::new(HashMap::new()),
                next_member: AtomicU64::new(1),
                rebalance_timeout: timeout,
            }),
        }
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // One lock at a time: a guard temporary would live to the end of the whole chain.
        let topics = read(&self.inner.topics).len();
        let groups = lock(&self.inner.groups).len();
        f.debug_struct("MemoryBus")
            .field("topics", &topics)
            .field("groups", &groups)
            .field("rebalance_timeout", &self.inner.rebalance_timeout)
            .finish()
    }
}

struct Inner {
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    next_member: AtomicU64,
    rebalance_timeout: Duration,
}

impl Inner {
    fn topic(&self, name: &str) -> Result<Arc<Topic>, BusError> {
        read(&self.topics)
            .get(name)
            .cloned()
            .ok_or_else(|| BusError::UnknownTopic(name.to_owned()))
    }

    fn append(&self, record: OutRecord) -> Result<Delivered, BusError> {
        let OutRecord {
            topic,
            key,
            value,
            headers,
            partition,
        } = record;
        let t = self.topic(&topic)?;
        let count = t.partition_count();
        let index = match (partition, &key) {
            (Some(p), _) if (0..count).contains(&p) => p,
            (Some(p), _) => return Err(BusError::UnknownPartition(TopicPartition::new(topic, p))),
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => {
                let turn = t.unkeyed.fetch_add(1, Ordering::Relaxed);
                (turn % count as u32) as i32
            }
        };
        let offset = t.partitions[index as usize].append(Entry {
            key: key.map(Vec::into_boxed_slice),
            value: value.into_boxed_slice(),
            headers: headers.into_boxed_slice(),
            timestamp_ms: now_ms(),
        });
        Ok(Delivered {
            partition: index,
            offset,
        })
    }
}

/// Kafka's topic name rules, checked here so that a name that works in memory works on Kafka.
fn check_topic_name(name: &str) -> Result<(), BusError> {
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

struct Topic {
    partitions: Box<[Arc<Partition>]>,
    /// Round-robin turn of unkeyed records.
    unkeyed: AtomicU32,
}

impl Topic {
    fn new(name: &str, count: i32) -> Self {
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
        }
    }

    fn name(&self) -> &str {
        // A topic is never created with zero partitions.
        &self.partitions[0].topic
    }

    fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
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

struct Partition {
    topic: Arc<str>,
    index: i32,
    log: Mutex<Log>,
}

impl Partition {
    fn tp(&self) -> TopicPartition {
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
    fn end(&self) -> i64 {
        lock(&self.log).len as i64
    }

    fn read(&self, offset: i64) -> Option<Record> {
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

    fn watch(&self, member: u64, notify: &Arc<Notify>) {
        let mut log = lock(&self.log);
        if !log.watchers.iter().any(|(m, _)| *m == member) {
            log.watchers.push((member, Arc::clone(notify)));
        }
    }

    fn unwatch(&self, member: u64) {
        lock(&self.log).watchers.retain(|(m, _)| *m != member);
    }
}

/// What the group tells a member, delivered by `next` ahead of any record.
enum Control {
    Assigned(Vec<Handover>),
    Revoked(Vec<TopicPartition>, RevokeAck),
}

/// A partition handed to a member, with the offset it starts reading at.
struct Handover {
    tp: TopicPartition,
    partition: Arc<Partition>,
    position: i64,
}

/// The part of a member the group reaches into.
struct MemberShared {
    /// Woken by appends to the member's partitions and by control events.
    notify: Arc<Notify>,
    control: Mutex<VecDeque<Control>>,
}

impl MemberShared {
    fn push(&self, control: Control) {
        lock(&self.control).push_back(control);
        self.notify.notify_one();
    }
}

struct Member {
    topics: Vec<Arc<Topic>>,
    start_from: StartFrom,
    shared: Arc<MemberShared>,
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

/// The answer to one revocation, reachable both by the task waiting for it and by the member's
/// leaving, so that an ack answered just before a `close` is not lost in between.
enum Answer {
    Waiting(oneshot::Receiver<Offsets>),
    Answered(Offsets),
    Settled,
}

impl Answer {
    fn take(&mut self) -> Option<Offsets> {
        match std::mem::replace(self, Answer::Settled) {
            Answer::Waiting(mut rx) => rx.try_recv().ok(),
            Answer::Answered(offsets) => Some(offsets),
            Answer::Settled => None,
        }
    }
}

struct Revocation {
    member: u64,
    partitions: Vec<TopicPartition>,
    answer: Arc<Mutex<Answer>>,
    waiter: AbortHandle,
}

struct Group {
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

    /// Recomputes `target` of every partition: sticky, then balanced (see the module docs).
    fn assign_targets(&mut self) {
        let Self {
            members,
            partitions,
            ..
        } = self;
        // Members iterate in id order, so every list is sorted by age.
        let mut eligible: HashMap<&str, Vec<u64>> = HashMap::new();
        for (id, member) in members.iter() {
            for topic in &member.topics {
                eligible.entry(topic.name()).or_default().push(*id);
            }
        }
        let candidates = |tp: &TopicPartition| -> &[u64] {
            eligible.get(tp.topic.as_str()).map_or(&[], Vec::as_slice)
        };
        let mut load: HashMap<u64, usize> = members.keys().map(|id| (*id, 0)).collect();
        for (tp, slot) in partitions.iter_mut() {
            match slot.target {
                Some(t) if candidates(tp).contains(&t) => *load.entry(t).or_default() += 1,
                _ => slot.target = None,
            }
        }
        for (tp, slot) in partitions.iter_mut() {
            if slot.target.is_none() {
                slot.target = least_loaded(candidates(tp), &load);
                if let Some(t) = slot.target {
                    *load.entry(t).or_default() += 1;
                }
            }
        }
        // Each move lowers the sum of squared loads, so this ends.
        loop {
            let mut moved = false;
            for (tp, slot) in partitions.iter_mut() {
                let (Some(owner), Some(best)) = (slot.target, least_loaded(candidates(tp), &load))
                else {
                    continue;
                };
                if load[&owner] > load[&best] + 1 {
                    *load.entry(owner).or_default() -= 1;
                    *load.entry(best).or_default() += 1;
                    slot.target = Some(best);
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
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

fn least_loaded(candidates: &[u64], load: &HashMap<u64, usize>) -> Option<u64> {
    candidates
        .iter()
        .copied()
        .min_by_key(|id| (load.get(id).copied().unwrap_or(0), *id))
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
    fn join(self: &Arc<Self>, id: u64, member: Member) {
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

    fn leave(self: &Arc<Self>, id: u64) {
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

    fn commit(&self, member: u64, offsets: &[(TopicPartition, i64)]) {
        lock(&self.state).commit_held(&self.name, member, offsets);
    }

    fn finish_revocation(self: &Arc<Self>, rid: u64, timed_out: bool) {
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

/// Waits for a revoked member's answer (or the rebalance timeout), then completes the revocation.
async fn await_answer(group: Arc<Group>, rid: u64, answer: Arc<Mutex<Answer>>) {
    let answered = poll_fn(|cx| {
        let mut answer = lock(&answer);
        let Answer::Waiting(rx) = &mut *answer else {
            return Poll::Ready(());
        };
        match rx.poll_unpin(cx) {
            Poll::Ready(Ok(offsets)) => {
                *answer = Answer::Answered(offsets);
                Poll::Ready(())
            }
            Poll::Ready(Err(_)) => {
                *answer = Answer::Settled;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    });
    let timed_out = tokio::time::timeout(group.rebalance_timeout, answered)
        .await
        .is_err();
    group.finish_revocation(rid, timed_out);
}

/// A member's read position in one assigned partition.
struct Cursor {
    tp: TopicPartition,
    partition: Arc<Partition>,
    position: i64,
}

struct MemoryConsumer {
    id: u64,
    group: Arc<Group>,
    shared: Arc<MemberShared>,
    cursors: Vec<Cursor>,
    /// The cursor to try first, so that partitions take turns.
    turn: usize,
    left: bool,
}

impl MemoryConsumer {
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

struct MemoryProducer {
    inner: Arc<Inner>,
}

impl Producer for MemoryProducer {
    fn send(&self, record: OutRecord) -> BoxFuture<'static, Result<Delivered, BusError>> {
        futures::future::ready(self.inner.append(record)).boxed()
    }

    fn flush(&self, _timeout: Duration) -> BoxFuture<'_, Result<(), BusError>> {
        futures::future::ready(Ok(())).boxed()
    }
}

#[async_trait::async_trait]
impl Bus for MemoryBus {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn create_topics(
        &self,
        topics: &[TopicSpec],
    ) -> Result<Vec<(String, CreateOutcome)>, BusError> {
        for spec in topics {
            check_topic_name(&spec.name)?;
            if spec.partitions < 1 {
                return Err(BusError::Invalid(format!(
                    "topic `{}` needs at least one partition, not {}",
                    spec.name, spec.partitions
                )));
            }
        }
        let mut map = write(&self.inner.topics);
        Ok(topics
            .iter()
            .map(|spec| {
                let outcome = match map.get(&spec.name) {
                    Some(topic) => CreateOutcome::Exists {
                        partitions: topic.partition_count(),
                    },
                    None => {
                        map.insert(
                            spec.name.clone(),
                            Arc::new(Topic::new(&spec.name, spec.partitions)),
                        );
                        debug!(topic = %spec.name, partitions = spec.partitions, "topic created");
                        CreateOutcome::Created
                    }
                };
                (spec.name.clone(), outcome)
            })
            .collect())
    }

    async fn partitions(&self, topic: &str) -> Result<i32, BusError> {
        Ok(self.inner.topic(topic)?.partition_count())
    }

    async fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64), BusError> {
        let topic = self.inner.topic(&tp.topic)?;
        let partition = usize::try_from(tp.partition)
            .ok()
            .and_then(|p| topic.partitions.get(p))
            .ok_or_else(|| BusError::UnknownPartition(tp.clone()))?;
        Ok((0, partition.end()))
    }

    async fn committed(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<Option<i64>>, BusError> {
        let group = lock(&self.inner.groups).get(group).cloned();
        Ok(match group {
            None => vec![None; partitions.len()],
            Some(group) => {
                let state = lock(&group.state);
                partitions
                    .iter()
                    .map(|tp| state.committed.get(tp).copied())
                    .collect()
            }
        })
    }

    fn producer(&self) -> Result<Arc<dyn Producer>, BusError> {
        Ok(Arc::new(MemoryProducer {
            inner: Arc::clone(&self.inner),
        }))
    }

    async fn subscribe(&self, options: SubscribeOptions) -> Result<Box<dyn Consumer>, BusError> {
        if options.group.is_empty() {
            return Err(BusError::Invalid("empty consumer group id".into()));
        }
        if options.topics.is_empty() {
            return Err(BusError::Invalid(format!(
                "group `{}` subscribes to no topic",
                options.group
            )));
        }
        let mut topics: Vec<Arc<Topic>> = Vec::with_capacity(options.topics.len());
        for name in &options.topics {
            let topic = self.inner.topic(name)?;
            if !topics.iter().any(|t| Arc::ptr_eq(t, &topic)) {
                topics.push(topic);
            }
        }
        let group = Arc::clone(
            lock(&self.inner.groups)
                .entry(options.group.clone())
                .or_insert_with(|| {
                    Arc::new(Group {
                        name: options.group.clone(),
                        rebalance_timeout: self.inner.rebalance_timeout,
                        state: Mutex::new(GroupState::default()),
                    })
                }),
        );
        let id = self.inner.next_member.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(MemberShared {
            notify: Arc::new(Notify::new()),
            control: Mutex::new(VecDeque::new()),
        });
        group.join(
            id,
            Member {
                topics,
                start_from: options.start_from,
                shared: Arc::clone(&shared),
            },
        );
        Ok(Box::new(MemoryConsumer {
            id,
            group,
            shared,
            cursors: Vec::new(),
            turn: 0,
            left: false,
        }))
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Long enough for any event that is due; a hang fails instead of blocking the suite.
    const WAIT: Duration = Duration::from_secs(5);

    fn spec(name: &str, partitions: i32) -> TopicSpec {
        TopicSpec {
            name: name.into(),
            partitions,
            replication: 1,
        }
    }

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    fn options(group: &str, topics: &[&str]) -> SubscribeOptions {
        SubscribeOptions {
            group: group.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            start_from: StartFrom::Earliest,
            buffer: 16,
        }
    }

    async fn bus_with(topic: &str, partitions: i32) -> MemoryBus {
        let bus = MemoryBus::new();
        bus.create_topics(&[spec(topic, partitions)]).await.unwrap();
        bus
    }

    /// Appends `count` records to one partition; values are `"<partition>:<offset>"`.
    async fn fill(bus: &MemoryBus, topic: &str, partition: i32, count: usize) {
        let producer = bus.producer().unwrap();
        for _ in 0..count {
            let end = bus.watermarks(&tp(topic, partition)).await.unwrap().1;
            let mut record = OutRecord::new(topic, format!("{partition}:{end}"));
            record.partition = Some(partition);
            producer.send(record).await.unwrap();
        }
    }

    async fn next_event(c: &mut Box<dyn Consumer>) -> ConsumerEvent {
        tokio::time::timeout(WAIT, c.next())
            .await
            .expect("no event in time")
            .expect("next failed")
    }

    async fn assigned(c: &mut Box<dyn Consumer>) -> Vec<TopicPartition> {
        match next_event(c).await {
            ConsumerEvent::Assigned(mut list) => {
                list.sort();
                list
            }
            other => panic!("expected Assigned, got {other:?}"),
        }
    }

    async fn revoked(c: &mut Box<dyn Consumer>) -> (Vec<TopicPartition>, RevokeAck) {
        match next_event(c).await {
            ConsumerEvent::Revoked {
                mut partitions,
                ack,
            } => {
                partitions.sort();
                (partitions, ack)
            }
            other => panic!("expected Revoked, got {other:?}"),
        }
    }

    async fn record(c: &mut Box<dyn Consumer>) -> Record {
        match next_event(c).await {
            ConsumerEvent::Record(r) => r,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    async fn assert_quiet(c: &mut Box<dyn Consumer>, millis: u64) {
        if let Ok(event) = tokio::time::timeout(Duration::from_millis(millis), c.next()).await {
            panic!("expected no event, got {event:?}");
        }
    }

    #[tokio::test]
    async fn create_topics_is_idempotent_and_validates() {
        let bus = MemoryBus::new();
        assert_eq!(bus.kind(), "memory");
        bus.ping().await.unwrap();
        let out = bus
            .create_topics(&[spec("a", 3), spec("b", 1)])
            .await
            .unwrap();
        assert_eq!(
            out,
            vec![
                ("a".to_string(), CreateOutcome::Created),
                ("b".to_string(), CreateOutcome::Created)
            ]
        );
        let out = bus.create_topics(&[spec("a", 5)]).await.unwrap();
        assert_eq!(
            out,
            vec![("a".to_string(), CreateOutcome::Exists { partitions: 3 })]
        );
        assert_eq!(bus.partitions("a").await.unwrap(), 3);
        for bad in [
            spec("c", 0),
            spec("bad name", 1),
            spec("..", 1),
            spec("", 1),
        ] {
            let err = bus.create_topics(&[spec("ok", 1), bad]).await.unwrap_err();
            assert!(matches!(err, BusError::Invalid(_)), "{err:?}");
        }
        // A rejected request creates nothing, not even its valid topics.
        assert!(matches!(
            bus.partitions("ok").await,
            Err(BusError::UnknownTopic(_))
        ));
    }

    #[tokio::test]
    async fn unknown_topics_and_partitions_are_errors() {
        let bus = bus_with("t", 2).await;
        let producer = bus.producer().unwrap();
        let err = producer
            .send(OutRecord::new("nope", "v"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, BusError::UnknownTopic(ref t) if t == "nope"),
            "{err:?}"
        );
        let err = bus
            .subscribe(options("g", &["t", "nope"]))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, BusError::UnknownTopic(ref t) if t == "nope"),
            "{err:?}"
        );
        assert!(matches!(
            bus.partitions("nope").await,
            Err(BusError::UnknownTopic(_))
        ));
        assert!(matches!(
            bus.watermarks(&tp("nope", 0)).await,
            Err(BusError::UnknownTopic(_))
        ));
        assert!(matches!(
            bus.watermarks(&tp("t", 2)).await,
            Err(BusError::UnknownPartition(_))
        ));
        let mut out = OutRecord::new("t", "v");
        out.partition = Some(2);
        assert!(matches!(
            producer.send(out).await,
            Err(BusError::UnknownPartition(ref p)) if *p == tp("t", 2)
        ));
        assert!(matches!(
            bus.subscribe(options("g", &[])).await.err().unwrap(),
            BusError::Invalid(_)
        ));
        // Nothing was appended by the failed sends.
        assert_eq!(bus.watermarks(&tp("t", 0)).await.unwrap(), (0, 0));
        assert_eq!(bus.watermarks(&tp("t", 1)).await.unwrap(), (0, 0));
    }

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
    async fn revocation_waits_for_the_ack() {
        let bus = bus_with("t", 2).await;
        fill(&bus, "t", 0, 3).await;
        let mut a = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut a).await;
        let mut b = bus.subscribe(options("g", &["t"])).await.unwrap();
        // a has not even seen the revocation yet: b gets nothing, though t/0 has records.
        assert_quiet(&mut b, 200).await;
        let (partitions, ack) = revoked(&mut a).await;
        assert_eq!(partitions, vec![tp("t", 0)]);
        fill(&bus, "t", 0, 1).await;
        // Seen but not answered: still nothing for b, and nothing of t/0 for a.
        assert_quiet(&mut b, 200).await;
        assert_quiet(&mut a, 50).await;
        ack.done(vec![(tp("t", 0), 2)]);
        assert_eq!(assigned(&mut b).await, vec![tp("t", 0)]);
        let r = record(&mut b).await;
        assert_eq!((r.partition, r.offset), (0, 2));
        assert_eq!(
            bus.committed("g", &[tp("t", 0)]).await.unwrap(),
            vec![Some(2)]
        );
    }

    #[tokio::test]
    async fn dropped_ack_commits_nothing() {
        let bus = bus_with("t", 2).await;
        fill(&bus, "t", 0, 5).await;
        let mut a = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut a).await;
        a.commit(&[(tp("t", 0), 1)], true).await.unwrap();
        let mut b = bus.subscribe(options("g", &["t"])).await.unwrap();
        let (_, ack) = revoked(&mut a).await;
        drop(ack);
        assert_eq!(assigned(&mut b).await, vec![tp("t", 0)]);
        assert_eq!(record(&mut b).await.offset, 1);
        assert_eq!(
            bus.committed("g", &[tp("t", 0)]).await.unwrap(),
            vec![Some(1)]
        );
    }

    #[tokio::test]
    async fn unanswered_revocation_times_out() {
        let bus = MemoryBus::with_rebalance_timeout(Duration::from_millis(300));
        bus.create_topics(&[spec("t", 2)]).await.unwrap();
        fill(&bus, "t", 0, 3).await;
        let mut a = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut a).await;
        let mut b = bus.subscribe(options("g", &["t"])).await.unwrap();
        // a is stuck and never calls next: the group moves on after the timeout.
        assert_quiet(&mut b, 100).await;
        assert_eq!(assigned(&mut b).await, vec![tp("t", 0)]);
        assert_eq!(record(&mut b).await.offset, 0);
        // a's late answer, and its commits, no longer count.
        let (partitions, ack) = revoked(&mut a).await;
        assert_eq!(partitions, vec![tp("t", 0)]);
        ack.done(vec![(tp("t", 0), 3)]);
        a.commit(&[(tp("t", 0), 3)], true).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(bus.committed("g", &[tp("t", 0)]).await.unwrap(), vec![None]);
    }

    #[tokio::test]
    async fn dropped_member_redelivers_only_uncommitted_records() {
        let bus = bus_with("t", 2).await;
        let mut a = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut a).await;
        let mut b = bus.subscribe(options("g", &["t"])).await.unwrap();
        let (_, ack) = revoked(&mut a).await;
        ack.done(vec![]);
        assert_eq!(assigned(&mut b).await, vec![tp("t", 0)]);

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
        let bus = bus_with("t", 2).await;
        let mut a = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut a).await;
        let mut b = bus.subscribe(options("g", &["t"])).await.unwrap();
        let (_, ack) = revoked(&mut a).await;
        ack.done(vec![]);
        assert_eq!(assigned(&mut b).await, vec![tp("t", 0)]);
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
    async fn ack_answered_right_before_close_still_commits() {
        let bus = bus_with("t", 2).await;
        let mut a = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut a).await;
        let mut b = bus.subscribe(options("g", &["t"])).await.unwrap();
        let (_, ack) = revoked(&mut a).await;
        // No await in between: the task waiting for the answer has not run yet.
        ack.done(vec![(tp("t", 0), 6)]);
        a.close().await.unwrap();
        assert_eq!(
            bus.committed("g", &[tp("t", 0)]).await.unwrap(),
            vec![Some(6)]
        );
        assert_eq!(assigned(&mut b).await, vec![tp("t", 0), tp("t", 1)]);
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

    #[tokio::test]
    async fn commits_for_partitions_not_held_are_ignored() {
        let bus = bus_with("t", 2).await;
        let mut a = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut a).await;
        let mut b = bus.subscribe(options("g", &["t"])).await.unwrap();
        let (_, ack) = revoked(&mut a).await;
        ack.done(vec![]);
        assert_eq!(assigned(&mut b).await, vec![tp("t", 0)]);

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

    /// Lets every member take its events (answering revocations with nothing) until the group is
    /// quiet; returns how many partitions were revoked.
    async fn settle(
        members: &mut [Box<dyn Consumer>],
        owned: &mut [BTreeSet<TopicPartition>],
    ) -> usize {
        let mut revoked = 0;
        loop {
            let mut any = false;
            for (c, set) in members.iter_mut().zip(owned.iter_mut()) {
                while let Ok(event) =
                    tokio::time::timeout(Duration::from_millis(30), c.next()).await
                {
                    any = true;
                    match event.unwrap() {
                        ConsumerEvent::Assigned(list) => {
                            for tp in list {
                                assert!(set.insert(tp), "assigned twice");
                            }
                        }
                        ConsumerEvent::Revoked { partitions, ack } => {
                            revoked += partitions.len();
                            for tp in &partitions {
                                assert!(set.remove(tp), "revoked {tp} it did not own");
                            }
                            ack.done(vec![]);
                        }
                        ConsumerEvent::Record(r) => panic!("unexpected record {r:?}"),
                    }
                }
            }
            if !any {
                return revoked;
            }
        }
    }

    fn assert_partitioned(owned: &[BTreeSet<TopicPartition>], all: &[TopicPartition]) {
        let mut union: Vec<TopicPartition> = owned.iter().flatten().cloned().collect();
        union.sort();
        assert_eq!(union, all, "every partition owned exactly once");
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

    /// Run with `cargo test --release -p sluice-bus -- --ignored throughput`.
    #[tokio::test]
    #[ignore = "timing-dependent; for measuring, in release builds"]
    async fn throughput() {
        const COUNT: usize = 500_000;
        let bus = bus_with("t", 4).await;
        let producer = bus.producer().unwrap();
        let mut c = bus.subscribe(options("g", &["t"])).await.unwrap();
        assigned(&mut c).await;
        let start = std::time::Instant::now();
        let reader = tokio::spawn(async move {
            for _ in 0..COUNT {
                record(&mut c).await;
            }
        });
        for i in 0..COUNT {
            producer
                .send(OutRecord::new("t", [0u8; 16]).with_key((i as u32).to_le_bytes()))
                .await
                .unwrap();
        }
        reader.await.unwrap();
        let rate = COUNT as f64 / start.elapsed().as_secs_f64();
        tracing::info!(rate, "messages/s produced and consumed");
        assert!(rate > 200_000.0, "only {rate:.0} messages/s");
    }
}
