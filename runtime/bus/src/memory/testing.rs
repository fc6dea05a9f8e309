//! Helpers of the memory bus tests: topics, members and the events they should see.

use std::collections::BTreeSet;
use std::time::Duration;

use super::MemoryBus;
use crate::{
    Bus, Consumer, ConsumerEvent, OutRecord, Record, RevokeAck, StartFrom, SubscribeOptions,
    TopicPartition, TopicSpec,
};

/// Long enough for any event that is due; a hang fails instead of blocking the suite.
pub(super) const WAIT: Duration = Duration::from_secs(5);

pub(super) fn spec(name: &str, partitions: i32) -> TopicSpec {
    TopicSpec::new(name, partitions)
}

pub(super) fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

pub(super) fn options(group: &str, topics: &[&str]) -> SubscribeOptions {
    SubscribeOptions {
        group: group.into(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        start_from: StartFrom::Earliest,
        buffer: 16,
    }
}

pub(super) async fn bus_with(topic: &str, partitions: i32) -> MemoryBus {
    let bus = MemoryBus::new();
    bus.create_topics(&[spec(topic, partitions)]).await.unwrap();
    bus
}

/// Topic `t` of two partitions read by group `g`: member `a` joined first, then `b`, to which
/// `a` gave partition 0.
pub(super) async fn two_members() -> (MemoryBus, Box<dyn Consumer>, Box<dyn Consumer>) {
    let bus = bus_with("t", 2).await;
    let mut a = bus.subscribe(options("g", &["t"])).await.unwrap();
    assigned(&mut a).await;
    let mut b = bus.subscribe(options("g", &["t"])).await.unwrap();
    let (_, ack) = revoked(&mut a).await;
    ack.done(vec![]);
    assert_eq!(assigned(&mut b).await, vec![tp("t", 0)]);
    (bus, a, b)
}

/// Appends `count` records to one partition; values are `"<partition>:<offset>"`.
pub(super) async fn fill(bus: &MemoryBus, topic: &str, partition: i32, count: usize) {
    let producer = bus.producer().unwrap();
    for _ in 0..count {
        let end = bus.watermarks(&tp(topic, partition)).await.unwrap().1;
        let mut record = OutRecord::new(topic, format!("{partition}:{end}"));
        record.partition = Some(partition);
        producer.send(record).await.unwrap();
    }
}

pub(super) async fn next_event(c: &mut Box<dyn Consumer>) -> ConsumerEvent {
    tokio::time::timeout(WAIT, c.next())
        .await
        .expect("no event in time")
        .expect("next failed")
}

pub(super) async fn assigned(c: &mut Box<dyn Consumer>) -> Vec<TopicPartition> {
    match next_event(c).await {
        ConsumerEvent::Assigned(mut list) => {
            list.sort();
            list
        }
        other => panic!("expected Assigned, got {other:?}"),
    }
}

pub(super) async fn revoked(c: &mut Box<dyn Consumer>) -> (Vec<TopicPartition>, RevokeAck) {
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

pub(super) async fn record(c: &mut Box<dyn Consumer>) -> Record {
    match next_event(c).await {
        ConsumerEvent::Record(r) => r,
        other => panic!("expected a record, got {other:?}"),
    }
}

pub(super) async fn assert_quiet(c: &mut Box<dyn Consumer>, millis: u64) {
    if let Ok(event) = tokio::time::timeout(Duration::from_millis(millis), c.next()).await {
        panic!("expected no event, got {event:?}");
    }
}

/// Lets every member take its events (answering revocations with nothing) until the group is
/// quiet; returns how many partitions were revoked.
pub(super) async fn settle(
    members: &mut [Box<dyn Consumer>],
    owned: &mut [BTreeSet<TopicPartition>],
) -> usize {
    let mut revoked = 0;
    loop {
        let mut any = false;
        for (c, set) in members.iter_mut().zip(owned.iter_mut()) {
            while let Ok(event) = tokio::time::timeout(Duration::from_millis(30), c.next()).await {
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

pub(super) fn assert_partitioned(owned: &[BTreeSet<TopicPartition>], all: &[TopicPartition]) {
    let mut union: Vec<TopicPartition> = owned.iter().flatten().cloned().collect();
    union.sort();
    assert_eq!(union, all, "every partition owned exactly once");
}
