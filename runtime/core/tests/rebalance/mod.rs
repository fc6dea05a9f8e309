//! A rebalance under load, on any bus: a consumer group of real record drivers
//! ([`sluice_runtime::driver::Driver`]) reads a topic of many partitions while records are
//! produced continuously; one member joins and another leaves mid-run.
//!
//! What is checked, from what the members saw rather than from what the bus says of itself:
//! - every produced record was processed at least once;
//! - no offset was committed (by a commit or by a revocation's answer) past a record that had
//!   not been processed yet;
//! - a member was only ever asked to give back partitions it held;
//! - with [`Scenario::exclusive_handover`], a partition was never handed to a member while
//!   another still held it;
//! - with [`Protocol::Cooperative`], every member that stays keeps reading some of its partitions
//!   through each rebalance (eager rebalancing revokes everything from everyone, and fails);
//! - with [`Scenario::sticky`] too, partitions that did not have to move were never revoked: a
//!   join only takes from the others, a leave only gives to them, and no partition is revoked
//!   and handed back to the same member.
//!
//! Shared by the memory-bus test (runtime/core/tests/driver_rebalance.rs) and the Kafka one
//! (tests/kafka_rebalance.rs, which includes this file by path).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sluice_bus::{
    Bus, BusError, Consumer, ConsumerEvent, OutRecord, Record, RevokeAck, StartFrom,
    SubscribeOptions, TopicPartition, TopicSpec,
};
use sluice_runtime::driver::Driver;
use sluice_runtime::emit::{Emitter, Output};
use sluice_runtime::health::Health;
use sluice_runtime::metrics::Metrics;
use sluice_runtime::retry::Backoff;
use sluice_runtime::stage::{Processor, StageError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The protocol the bus is expected to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Only partitions that change owner are revoked.
    Cooperative,
    /// Every rebalance revokes everything (no protocol check beyond exclusivity).
    Eager,
}

/// The topics and group of one run: the topics are created by [`run`], the group must be new.
#[derive(Debug, Clone)]
pub struct Names {
    pub input: String,
    pub output: String,
    pub dead_letter: String,
    pub group: String,
}

/// The shape of one run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Partitions of the input topic (as created by the caller).
    pub partitions: i32,
    /// Records produced in all.
    pub records: usize,
    /// Records produced per tick.
    pub burst: usize,
    /// Time between ticks.
    pub tick: Duration,
    /// The third member joins once this many records have been processed.
    pub join_after: usize,
    /// The first member leaves once this many have been processed (and the joiner has
    /// partitions).
    pub leave_after: usize,
    /// Records in flight per member.
    pub concurrency: usize,
    /// Longest a record takes to process; records take 0 to this, varying by offset, so that
    /// they finish out of order.
    pub max_work: Duration,
    /// How long any phase may take before the run fails.
    pub patience: Duration,
    /// The protocol the consumers are expected to speak.
    pub protocol: Protocol,
    /// The broker hands a partition on only once its previous holder let go (Kafka's JoinGroup
    /// barrier), so no two members ever hold one partition.
    pub exclusive_handover: bool,
    /// With [`Protocol::Cooperative`]: partitions move only as the membership change requires
    /// (a join takes from the others, a leave gives to them, nothing is revoked and handed
    /// back). This needs the broker to give the assignor every member's current partitions.
    pub sticky: bool,
}

/// What happened, by member.
#[derive(Debug, Clone)]
enum Event {
    /// The member is about to subscribe (marks the start of the join's rebalance).
    Joining,
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
    /// The member was told to stop (marks the start of the leave's rebalance).
    Leaving,
    Left,
}

/// Everything the members, the processor and the producer share.
#[derive(Default)]
struct Observed {
    /// Processed offsets per partition (the processor returned).
    processed: Mutex<HashMap<i32, BTreeSet<i64>>>,
    processed_count: AtomicUsize,
    processed_by: Mutex<BTreeMap<usize, usize>>,
    produced: AtomicUsize,
    /// Every group event, in the order the members took them from their consumers.
    events: Mutex<Vec<(usize, Event)>>,
    /// What went wrong, to be reported at the end.
    violations: Mutex<Vec<String>>,
}

impl Observed {
    fn violation(&self, v: String) {
        eprintln!("violation: {v}");
        self.violations.lock().unwrap().push(v);
    }

    /// Checks that committing `offsets` would not skip a record not processed yet.
    fn check_commit(&self, member: usize, what: &str, offsets: &[(TopicPartition, i64)]) {
        let processed = self.processed.lock().unwrap();
        for (tp, next) in offsets {
            let done = processed.get(&tp.partition);
            let first_gap = (0..*next).find(|o| !done.is_some_and(|d| d.contains(o)));
            if let Some(gap) = first_gap {
                self.violation(format!(
                    "member {member} {what} {tp} at {next}, but offset {gap} was not processed"
                ));
            }
        }
    }

    fn log(&self, member: usize, event: Event) {
        self.events.lock().unwrap().push((member, event));
    }

    fn dump(&self) {
        for (m, e) in self.events.lock().unwrap().iter() {
            eprintln!("member {m}: {e:?}");
        }
        eprintln!(
            "produced {}, processed {} (by member: {:?})",
            self.produced.load(Ordering::SeqCst),
            self.processed_count.load(Ordering::SeqCst),
            self.processed_by.lock().unwrap()
        );
    }
}

/// The stage: records what it processed, after a delay that varies by record.
struct Recorder {
    observed: Arc<Observed>,
    member: usize,
    output: Output,
    max_work: Duration,
}

#[async_trait]
impl Processor for Recorder {
    async fn process(&self, record: &Record, out: &mut Emitter) -> Result<(), StageError> {
        let spread = (record.offset as u64 * 7919 + record.partition as u64 * 31) % 16;
        tokio::time::sleep(self.max_work.mul_f64(spread as f64 / 15.0)).await;
        let o = &self.observed;
        o.processed
            .lock()
            .unwrap()
            .entry(record.partition)
            .or_default()
            .insert(record.offset);
        o.processed_count.fetch_add(1, Ordering::SeqCst);
        *o.processed_by
            .lock()
            .unwrap()
            .entry(self.member)
            .or_default() += 1;
        out.send(&self.output, record.value.clone()).await
    }
}

/// A member's consumer, watched: group events are logged in the order the driver takes them,
/// and every offset it commits, or answers a revocation with, is checked against what was
/// processed.
struct Watched {
    inner: Box<dyn Consumer>,
    member: usize,
    observed: Arc<Observed>,
    /// Forwarded revocation answers, finished before the member leaves so none is lost.
    answers: Vec<JoinHandle<()>>,
}

#[async_trait]
impl Consumer for Watched {
    async fn next(&mut self) -> Result<ConsumerEvent, BusError> {
        // Nothing awaits after the inner `next`, so this stays cancel-safe.
        match self.inner.next().await? {
            ConsumerEvent::Assigned(partitions) => {
                self.observed
                    .log(self.member, Event::Assigned(partitions.clone()));
                Ok(ConsumerEvent::Assigned(partitions))
            }
            ConsumerEvent::Revoked { partitions, ack } => {
                self.observed
                    .log(self.member, Event::Revoked(partitions.clone()));
                let (tx, rx) = tokio::sync::oneshot::channel::<Vec<(TopicPartition, i64)>>();
                let (observed, member) = (self.observed.clone(), self.member);
                self.answers.push(tokio::spawn(async move {
                    // A dropped answer is passed on as dropped.
                    if let Ok(offsets) = rx.await {
                        observed.check_commit(member, "answered a revocation of", &offsets);
                        ack.done(offsets);
                    }
                }));
                Ok(ConsumerEvent::Revoked {
                    partitions,
                    ack: RevokeAck(tx),
                })
            }
            record => Ok(record),
        }
    }

    async fn commit(&self, offsets: &[(TopicPartition, i64)], sync: bool) -> Result<(), BusError> {
        self.observed
            .check_commit(self.member, "committed", offsets);
        self.inner.commit(offsets, sync).await
    }

    async fn close(mut self: Box<Self>) -> Result<(), BusError> {
        // An answer given just before closing must reach the bus first. One the driver still
        // holds (it drops pending acks only after closing) never comes: do not wait for it.
        for answer in self.answers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
        }
        self.observed.log(self.member, Event::Left);
        self.inner.close().await
    }
}

struct Member {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start_member(
    bus: &Arc<dyn Bus>,
    names: &Names,
    scenario: &Scenario,
    observed: &Arc<Observed>,
    member: usize,
) -> Member {
    observed.log(member, Event::Joining);
    let consumer = bus
        .subscribe(SubscribeOptions {
            group: names.group.clone(),
            topics: vec![names.input.clone()],
            start_from: StartFrom::Earliest,
            buffer: 256,
        })
        .await
        .expect("subscribe");
    let shutdown = CancellationToken::new();
    let stage = format!("{}-{member}", names.group);
    let driver = Driver {
        stage: stage.clone(),
        processor: Arc::new(Recorder {
            observed: observed.clone(),
            member,
            output: Output::new("output", &names.output),
            max_work: scenario.max_work,
        }),
        consumer: Box::new(Watched {
            inner: consumer,
            member,
            observed: observed.clone(),
            answers: Vec::new(),
        }),
        producer: bus.producer().expect("producer"),
        bus: bus.clone(),
        dead_letter: names.dead_letter.clone(),
        backoff: Backoff::default(),
        concurrency: scenario.concurrency,
        drain_timeout: scenario.patience,
        metrics: Metrics::new().stage(&stage),
        health: Health::new(),
        shutdown: shutdown.clone(),
    };
    Member {
        shutdown,
        task: tokio::spawn(driver.run()),
    }
}

async fn stop(member: Member, id: usize, observed: &Observed, patience: Duration) {
    observed.log(id, Event::Leaving);
    member.shutdown.cancel();
    tokio::time::timeout(patience, member.task)
        .await
        .expect("a member did not stop in time")
        .expect("member task panicked")
        .expect("member failed");
}

/// Waits until `done` holds, or fails the run with `what` (showing what the members saw).
async fn wait_for(
    observed: &Observed,
    what: &str,
    patience: Duration,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + patience;
    while !done() {
        if Instant::now() >= deadline {
            observed.dump();
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Who holds each partition after replaying the event log, and the protocol breaches found on
/// the way. Several holders at once are tracked (not just flagged), so that the replay stays
/// true to what the members saw when a broker breaks exclusivity.
#[derive(Default)]
struct Replay {
    holders: BTreeMap<TopicPartition, BTreeSet<usize>>,
    /// Exclusive handover broken: a partition handed to a member while another held it.
    overlaps: Vec<String>,
    /// A partition revoked from a member and handed straight back to it: it did not move.
    not_moved: Vec<String>,
    /// Revocations of partitions the member did not hold.
    bogus: Vec<String>,
}

fn replay(events: &[(usize, Event)]) -> Replay {
    let mut r = Replay::default();
    let mut revoked_from: HashMap<TopicPartition, usize> = HashMap::new();
    for (member, event) in events {
        match event {
            Event::Assigned(partitions) => {
                for tp in partitions {
                    let holders = r.holders.entry(tp.clone()).or_default();
                    if !holders.is_empty() {
                        r.overlaps.push(format!(
                            "{tp} assigned to member {member} while {holders:?} held it"
                        ));
                    }
                    if revoked_from.remove(tp) == Some(*member) {
                        r.not_moved.push(format!(
                            "{tp} was revoked from member {member} and handed back to it"
                        ));
                    }
                    holders.insert(*member);
                }
            }
            Event::Revoked(partitions) => {
                for tp in partitions {
                    let held = r.holders.get_mut(tp).is_some_and(|h| h.remove(member));
                    if !held {
                        r.bogus.push(format!(
                            "{tp} revoked from member {member}, which did not hold it"
                        ));
                    }
                    revoked_from.insert(tp.clone(), *member);
                }
            }
            Event::Left => {
                for holders in r.holders.values_mut() {
                    holders.remove(member);
                }
            }
            Event::Joining | Event::Leaving => {}
        }
    }
    r
}

/// True once every partition has exactly one holder and each of `members` holds one. Fails the
/// run at once on a breach the scenario does not tolerate (waiting would only time out).
fn settled(observed: &Observed, scenario: &Scenario, members: &[usize]) -> bool {
    let events = observed.events.lock().unwrap().clone();
    let r = replay(&events);
    let mut fatal = r.bogus.clone();
    if scenario.exclusive_handover {
        fatal.extend(r.overlaps.iter().cloned());
    }
    if !fatal.is_empty() {
        observed.dump();
        panic!("rebalance protocol broken: {fatal:#?}");
    }
    let single = r.holders.values().filter(|h| h.len() == 1).count();
    single == scenario.partitions as usize
        && members
            .iter()
            .all(|m| r.holders.values().any(|h| h.contains(m)))
}

/// The rebalances the scenario causes: `start..join` forms the group of members 0 and 1, the
/// join runs from member 2's `Joining` to member 0's `Leaving`, and the leave from there to the
/// final shutdown.
fn phase_of(events: &[(usize, Event)]) -> Vec<&'static str> {
    let mut phase = "start";
    events
        .iter()
        .map(|(member, event)| {
            match (event, *member) {
                (Event::Joining, 2) => phase = "join",
                (Event::Leaving, 0) => phase = "leave",
                (Event::Leaving, _) => phase = "end",
                _ => {}
            }
            phase
        })
        .collect()
}

/// Incremental: through each rebalance, every member that stays keeps reading at least one of
/// its partitions (nothing revoked from it). Eager rebalancing revokes everything from everyone.
fn incremental_problems(events: &[(usize, Event)]) -> Vec<String> {
    let phases = phase_of(events);
    let mut problems = Vec::new();
    for (phase, stayers) in [("join", [0, 1]), ("leave", [1, 2])] {
        let Some(start) = phases.iter().position(|p| *p == phase) else {
            continue;
        };
        let held = replay(&events[..start]).holders;
        for member in stayers {
            let had: BTreeSet<&TopicPartition> = held
                .iter()
                .filter(|(_, h)| h.contains(&member))
                .map(|(tp, _)| tp)
                .collect();
            let revoked: BTreeSet<&TopicPartition> = events
                .iter()
                .zip(&phases)
                .filter(|((m, _), p)| *m == member && **p == phase)
                .flat_map(|((_, e), _)| match e {
                    Event::Revoked(tps) => tps.iter().collect(),
                    _ => Vec::new(),
                })
                .collect();
            if !had.is_empty() && had.is_subset(&revoked) {
                problems.push(format!(
                    "member {member} had everything revoked during the {phase}: {had:?}"
                ));
            }
        }
    }
    problems
}

/// Sticky: while a member joins, the others only give partitions up; while one leaves, the
/// others only take. (Nothing else changes membership during either.)
fn sticky_problems(events: &[(usize, Event)]) -> Vec<String> {
    let mut problems = Vec::new();
    for ((member, event), phase) in events.iter().zip(phase_of(events)) {
        match (event, *member, phase) {
            (Event::Assigned(p), 0 | 1, "join") if !p.is_empty() => {
                problems.push(format!("member {member} took {p:?} while member 2 joined"))
            }
            (Event::Revoked(p), 1 | 2, "leave") => {
                problems.push(format!("member {member} gave up {p:?} while member 0 left"))
            }
            _ => {}
        }
    }
    problems
}

/// Runs the scenario on `bus`, whose topics `names` exist, and checks it (panics on failure).
pub async fn run(bus: Arc<dyn Bus>, names: Names, scenario: Scenario) {
    let topic = |name: &str, partitions| TopicSpec::new(name, partitions);
    bus.create_topics(&[
        topic(&names.input, scenario.partitions),
        topic(&names.output, 4),
        topic(&names.dead_letter, 1),
    ])
    .await
    .expect("create the run's topics");
    let observed = Arc::new(Observed::default());
    let all: Vec<TopicPartition> = (0..scenario.partitions)
        .map(|p| TopicPartition::new(&names.input, p))
        .collect();

    let producer = {
        let (bus, observed, input, s) = (
            bus.clone(),
            observed.clone(),
            names.input.clone(),
            scenario.clone(),
        );
        tokio::spawn(async move {
            let producer = bus.producer().expect("producer");
            let mut sent = 0;
            while sent < s.records {
                for _ in 0..s.burst.min(s.records - sent) {
                    let record =
                        OutRecord::new(&input, sent.to_string()).with_key(format!("k{sent}"));
                    producer.send(record).await.expect("produce");
                    sent += 1;
                    observed.produced.store(sent, Ordering::SeqCst);
                }
                tokio::time::sleep(s.tick).await;
            }
            producer
                .flush(Duration::from_secs(30))
                .await
                .expect("flush");
        })
    };

    let first = start_member(&bus, &names, &scenario, &observed, 0).await;
    let second = start_member(&bus, &names, &scenario, &observed, 1).await;
    let processed = |n: usize| {
        let observed = observed.clone();
        move || observed.processed_count.load(Ordering::SeqCst) >= n
    };
    let settled = |members: &'static [usize]| {
        let (observed, scenario) = (observed.clone(), scenario.clone());
        move || settled(&observed, &scenario, members)
    };

    let patience = scenario.patience;
    wait_for(
        &observed,
        "records before the join",
        patience,
        processed(scenario.join_after),
    )
    .await;
    wait_for(
        &observed,
        "the first two members to share the topic",
        patience,
        settled(&[0, 1]),
    )
    .await;
    let joined_at = observed.produced.load(Ordering::SeqCst);
    let third = start_member(&bus, &names, &scenario, &observed, 2).await;
    wait_for(
        &observed,
        "the join to settle",
        patience,
        settled(&[0, 1, 2]),
    )
    .await;
    wait_for(
        &observed,
        "records before the leave",
        patience,
        processed(scenario.leave_after),
    )
    .await;
    let left_at = observed.produced.load(Ordering::SeqCst);
    stop(first, 0, &observed, patience).await;

    tokio::time::timeout(scenario.patience, producer)
        .await
        .expect("producing took too long")
        .expect("producer panicked");
    assert!(
        joined_at < scenario.records && left_at < scenario.records,
        "the join (at {joined_at} produced) and the leave (at {left_at}) must happen while \
         records are still being produced ({} in all): make the scenario slower",
        scenario.records
    );

    // Everything produced gets committed by the two members left.
    let deadline = Instant::now() + scenario.patience;
    loop {
        let committed = bus.committed(&names.group, &all).await;
        let mut behind = 0;
        if let Ok(committed) = &committed {
            for (tp, c) in all.iter().zip(committed) {
                let (_, high) = bus.watermarks(tp).await.expect("watermarks");
                behind += high - c.unwrap_or(0);
            }
        }
        if committed.is_ok() && behind == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group is still {behind} records behind ({:?}); processed {} of {}",
            committed.err(),
            observed.processed_count.load(Ordering::SeqCst),
            scenario.records
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(second, 1, &observed, scenario.patience).await;
    stop(third, 2, &observed, scenario.patience).await;

    // At least once: every produced record was processed.
    let processed = observed.processed.lock().unwrap().clone();
    let mut missing = Vec::new();
    for tp in &all {
        let (_, high) = bus.watermarks(tp).await.expect("watermarks");
        let done = processed.get(&tp.partition);
        missing.extend(
            (0..high)
                .filter(|o| !done.is_some_and(|d| d.contains(o)))
                .map(|o| format!("{tp}@{o}")),
        );
    }
    let total: i64 = {
        let mut t = 0;
        for tp in &all {
            t += bus.watermarks(tp).await.expect("watermarks").1;
        }
        t
    };
    assert_eq!(total as usize, scenario.records, "records produced");
    assert!(
        missing.is_empty(),
        "records never processed (first 10): {:?}",
        &missing[..missing.len().min(10)]
    );

    let events = observed.events.lock().unwrap().clone();
    for (m, e) in &events {
        eprintln!("member {m}: {e:?}");
    }
    let violations = observed.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "commits past unprocessed records: {violations:#?}"
    );
    let r = replay(&events);
    assert!(
        r.bogus.is_empty(),
        "revocations of partitions not held: {:#?}",
        r.bogus
    );
    if scenario.exclusive_handover {
        assert!(
            r.overlaps.is_empty(),
            "partitions held twice: {:#?}",
            r.overlaps
        );
    } else if !r.overlaps.is_empty() {
        eprintln!(
            "partitions held twice (tolerated on this broker): {:#?}",
            r.overlaps
        );
    }
    if scenario.protocol == Protocol::Cooperative {
        let problems = incremental_problems(&events);
        assert!(problems.is_empty(), "not incremental: {problems:#?}");
        let mut problems = sticky_problems(&events);
        problems.extend(r.not_moved.iter().cloned());
        if scenario.sticky {
            assert!(problems.is_empty(), "not sticky: {problems:#?}");
        } else if !problems.is_empty() {
            eprintln!("moves beyond need (tolerated on this broker): {problems:#?}");
        }
    }

    // Each member really took part.
    let by = observed.processed_by.lock().unwrap().clone();
    eprintln!(
        "processed by member: {by:?} (duplicates: {})",
        observed.processed_count.load(Ordering::SeqCst) - scenario.records
    );
    for member in 0..3 {
        assert!(
            by.get(&member).copied().unwrap_or(0) > 0,
            "member {member} processed nothing: {by:?}"
        );
    }
    let leaver_had = events
        .iter()
        .any(|(m, e)| *m == 0 && matches!(e, Event::Assigned(p) if !p.is_empty()));
    assert!(leaver_had, "the leaving member never had partitions");
}
