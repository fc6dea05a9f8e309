//! The record driver under faults, on the embedded bus: a processor that panics costs one
//! record (dead-lettered with code `panic`), a processor that never returns cannot hold up
//! shutdown past the drain timeout (its record stays uncommitted), and an output the topic
//! refuses for good (too large) dead-letters its input with the broker's reason instead of
//! being retried forever.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sluice_bus::memory::MemoryBus;
use sluice_bus::{Bus, OutRecord, Record, StartFrom, SubscribeOptions, TopicPartition, TopicSpec};
use sluice_runtime::dead_letter;
use sluice_runtime::driver::{Driver, ABANDON_GRACE};
use sluice_runtime::health::Health;
use sluice_runtime::metrics::Metrics;
use sluice_runtime::retry::Backoff;
use sluice_runtime::stage::{Emitter, Output, Processor, StageError};
use tokio_util::sync::CancellationToken;

/// Does what each record's value says: `panic`, `hang` (never returns), `big` (an output over
/// the output topic's limit), anything else is copied to the output.
struct Scripted {
    output: Output,
}

#[async_trait]
impl Processor for Scripted {
    async fn process(&self, record: &Record, out: &mut Emitter) -> Result<(), StageError> {
        match record.value.as_slice() {
            b"panic" => panic!("scripted panic at offset {}", record.offset),
            b"hang" => std::future::pending().await,
            b"big" => out.send(&self.output, vec![b'x'; 64 << 10]).await,
            value => out.send(&self.output, value.to_vec()).await,
        }
    }
}

const DRAIN: Duration = Duration::from_millis(300);

struct Run {
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(values: &[&str]) -> Run {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let mut out = TopicSpec::new("out", 1);
    out.max_message_bytes = Some(16 << 10);
    bus.create_topics(&[TopicSpec::new("in", 1), out, TopicSpec::new("dlq", 1)])
        .await
        .unwrap();
    let producer = bus.producer().unwrap();
    for v in values {
        producer.send(OutRecord::new("in", *v)).await.unwrap();
    }
    let consumer = bus
        .subscribe(SubscribeOptions {
            group: "stage".into(),
            topics: vec!["in".into()],
            start_from: StartFrom::Earliest,
            buffer: 16,
        })
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let driver = Driver {
        stage: "stage".into(),
        processor: Arc::new(Scripted {
            output: Output::new("output", "out"),
        }),
        consumer,
        producer,
        bus: bus.clone(),
        dead_letter: "dlq".into(),
        backoff: Backoff {
            attempts: 2,
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
        concurrency: 8,
        drain_timeout: DRAIN,
        metrics: Metrics::new().stage("stage"),
        health: Health::new(),
        shutdown: shutdown.clone(),
    };
    Run {
        bus,
        shutdown,
        task: tokio::spawn(driver.run()),
    }
}

async fn records(bus: &Arc<dyn Bus>, topic: &str, count: usize) -> Vec<Record> {
    let mut c = bus
        .subscribe(SubscribeOptions {
            group: format!("reader-{topic}"),
            topics: vec![topic.into()],
            start_from: StartFrom::Earliest,
            buffer: 16,
        })
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < count {
        match tokio::time::timeout(Duration::from_secs(5), c.next()).await {
            Ok(Ok(sluice_bus::ConsumerEvent::Record(r))) => got.push(r),
            Ok(Ok(_)) => {}
            other => panic!("{topic}: {} of {count} records, then {other:?}", got.len()),
        }
    }
    got
}

async fn committed(bus: &Arc<dyn Bus>) -> Option<i64> {
    bus.committed("stage", &[TopicPartition::new("in", 0)])
        .await
        .unwrap()[0]
}

fn header<'a>(r: &'a Record, name: &str) -> &'a str {
    std::str::from_utf8(r.header(name).unwrap_or_default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_costs_one_record_and_a_refused_output_dead_letters_its_input() {
    let run = start(&["a", "panic", "b", "big", "c"]).await;
    let out = records(&run.bus, "out", 3).await;
    // Records run concurrently: outputs come in any order.
    let mut values: Vec<&[u8]> = out.iter().map(|r| r.value.as_slice()).collect();
    values.sort();
    assert_eq!(values, [&b"a"[..], b"b", b"c"]);
    let dlq = records(&run.bus, "dlq", 2).await;
    let by_offset = |o: i64| {
        dlq.iter()
            .find(|r| header(r, dead_letter::SOURCE_OFFSET) == o.to_string())
            .unwrap()
    };
    let panicked = by_offset(1);
    assert_eq!(header(panicked, dead_letter::ERROR_CODE), "panic");
    assert!(header(panicked, dead_letter::ERROR).contains("scripted panic at offset 1"));
    let refused = by_offset(3);
    assert_eq!(
        header(refused, dead_letter::ERROR_CODE),
        "rejected_by_broker"
    );
    assert!(
        header(refused, dead_letter::ERROR).contains("max.message.bytes"),
        "{}",
        header(refused, dead_letter::ERROR)
    );
    assert_eq!(refused.value, b"big", "the dead letter carries the input");
    run.shutdown.cancel();
    run.task.await.unwrap().unwrap();
    assert_eq!(committed(&run.bus).await, Some(5), "every record is done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_that_never_returns_cannot_hold_up_shutdown() {
    let run = start(&["a", "hang", "b"]).await;
    records(&run.bus, "out", 2).await;
    let started = Instant::now();
    run.shutdown.cancel();
    tokio::time::timeout(DRAIN + ABANDON_GRACE + Duration::from_secs(3), run.task)
        .await
        .expect("the driver stopped within the drain timeout and the grace")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= DRAIN,
        "it waited for the drain timeout first"
    );
    assert_eq!(
        committed(&run.bus).await,
        Some(1),
        "the hung record stays uncommitted, and so does what follows it"
    );
}
