//! Benchmark: the normalize/dedup stage (memcached on) against a raw rdkafka
//! consume→produce passthrough loop, on the same broker and the same input, in one run.
//!
//! Run with `benches/run.sh` (starts tansu and memcached like the tests do), or set
//! SLUICE_BENCH_BROKER and SLUICE_BENCH_MEMCACHED and run `cargo bench --bench normalize`.
//! SLUICE_BENCH_MESSAGES sets the workload size (default 200,000). Both rates are timed from
//! the first record taken to the last input offset committed, so consumer-group joins (which
//! take seconds on some brokers) do not count.

#[path = "../tests/common/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sluice_bus::kafka::KafkaBus;
use sluice_bus::{Bus, OutRecord, TopicPartition};
use sluice_runtime::registry::Registry;
use sluice_runtime::runner::{start_on, RunOptions};
use sluice_runtime::services::{MemcachedCache, Services};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 8;

fn env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok())
}

fn workload(n: usize) -> Vec<String> {
    // 30% repeats of earlier URLs in other spellings, like a real url-in topic.
    (0..n)
        .map(|i| {
            if i % 10 < 3 && i > 10 {
                let j = i / 2;
                format!(
                    "HTTP://Host{}.Example{}.com:80/a/./p/{j}?utm_source=x#f",
                    j % 500,
                    j % 37
                )
            } else {
                format!("http://host{}.example{}.com/a/p/{i}", i % 500, i % 37)
            }
        })
        .collect()
}

async fn fill(bus: &Arc<dyn Bus>, topic: &str, urls: &[String]) {
    let p = bus.producer().unwrap();
    let mut inflight = FuturesUnordered::new();
    for u in urls {
        inflight.push(p.send(OutRecord::new(topic, u.as_bytes().to_vec())));
        if inflight.len() >= 20_000 {
            inflight.next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = inflight.next().await {
        r.unwrap();
    }
}

async fn wait_committed(bus: &Arc<dyn Bus>, group: &str, topic: &str, total: i64) {
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    loop {
        let c = bus.committed(group, &tps).await.unwrap_or_default();
        let sum: i64 = c.iter().map(|o| o.unwrap_or(0)).sum();
        if sum >= total {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The baseline: what a minimal hand-written rdkafka app does — consume, produce each value,
/// commit consumed offsets every 500 ms.
async fn raw_passthrough(
    broker: &str,
    input: &str,
    output: &str,
    group: &str,
    total: usize,
) -> f64 {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[input]).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("acks", "all")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let mut started = None;
    let mut deliveries = FuturesUnordered::new();
    let mut consumed = 0usize;
    let mut delivered = 0usize;
    let mut next_offsets: std::collections::HashMap<i32, i64> = Default::default();
    let mut last_commit = Instant::now();
    let mut stream = consumer.stream();
    while delivered < total {
        tokio::select! {
            Some(m) = stream.next(), if consumed < total => {
                let m = m.unwrap();
                started.get_or_insert_with(Instant::now);
                let f = producer
                    .send_result(FutureRecord::<(), [u8]>::to(output).payload(m.payload().unwrap_or_default()))
                    .map_err(|(e, _)| e)
                    .unwrap();
                next_offsets.insert(m.partition(), m.offset() + 1);
                deliveries.push(f);
                consumed += 1;
            }
            Some(d) = deliveries.next() => {
                d.unwrap().map_err(|(e, _)| e).unwrap();
                delivered += 1;
            }
        }
        if last_commit.elapsed() > Duration::from_millis(500) {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &next_offsets {
                tpl.add_partition_offset(input, *p, Offset::Offset(*o))
                    .unwrap();
            }
            consumer.commit(&tpl, CommitMode::Async).ok();
            last_commit = Instant::now();
        }
    }
    drop(stream);
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &next_offsets {
        tpl.add_partition_offset(input, *p, Offset::Offset(*o))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
    total as f64 / started.expect("consumed records").elapsed().as_secs_f64()
}

async fn stage_run(
    bus: Arc<dyn Bus>,
    broker: &str,
    memcached: &str,
    input: &str,
    output: &str,
    id: &str,
    total: usize,
) -> f64 {
    let stage = format!("bench-normalize-{id}");
    let yaml = format!(
        "name: bench\nbroker: {broker}\nbroker_options:\n  enable.idempotence: \"false\"\nservices:\n  memcached: {memcached}\ndead_letter: dlq-{id}\ntopics:\n  {input}: {{ partitions: {PARTITIONS} }}\n  {output}: {{ partitions: {PARTITIONS} }}\n  dlq-{id}: {{ partitions: 1 }}\nstages:\n  {stage}:\n    kind: normalize-dedup\n    input: {input}\n    output: {output}\n    key_prefix: \"{id}:\"\n"
    );
    let mut registry = Registry::new();
    registry.register(sluice_stage_normalize::Kind);
    let (p, _) = sluice_config::load_str_validated(&yaml, "bench.yaml", &[], &|_| None, &registry)
        .unwrap_or_else(|d| panic!("{d}"));
    let services = Services::with(
        &p,
        Arc::new(MemcachedCache::new(&[memcached.to_string()]).unwrap()),
        sluice_runtime::services::Slots::in_memory(),
    );
    let token = CancellationToken::new();
    let running = start_on(
        bus.clone(),
        services,
        Arc::new(p),
        &registry,
        RunOptions {
            stages: vec![stage.clone()],
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
        },
        token.clone(),
    )
    .await
    .unwrap();
    // Like the baseline, the clock starts with the first record (group joins are not timed)
    // and stops once every record's outputs are acknowledged — read from the stage's own
    // metrics, since polling the broker for committed offsets would load it during the run.
    let m = &running.metrics;
    while m.received_total(&stage) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    while m.received_total(&stage) < total as u64 || m.in_flight(&stage) > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    // Not timed: the offsets must then be committed too.
    wait_committed(&bus, &stage, input, total as i64).await;
    token.cancel();
    running.wait().await.unwrap();
    rate
}

fn main() {
    let (Some(broker), Some(memcached)) = (
        env(&["SLUICE_BENCH_BROKER", "SLUICE_TEST_BROKER"]),
        env(&["SLUICE_BENCH_MEMCACHED", "SLUICE_TEST_MEMCACHED"]),
    ) else {
        eprintln!("normalize bench: set SLUICE_BENCH_BROKER and SLUICE_BENCH_MEMCACHED, or run benches/run.sh");
        return;
    };
    let total: usize = env(&["SLUICE_BENCH_MESSAGES"])
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let id = format!(
            "{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ 0x5eed
        );
        let id = id.replace(' ', "");
        let bus: Arc<dyn Bus> = Arc::new(KafkaBus::new(&broker, Default::default()));
        let input = format!("bench-in-{id}");
        let (raw_out, stage_out) = (format!("bench-raw-{id}"), format!("bench-urls-{id}"));
        support::create_topics_on(&bus, &[&input, &raw_out, &stage_out], PARTITIONS).await;
        let urls = workload(total);
        let t = Instant::now();
        fill(&bus, &input, &urls).await;
        println!(
            "input: {total} URLs in {input} ({:.1} s to produce)",
            t.elapsed().as_secs_f64()
        );
        // Same input topic, separate consumer groups: both read exactly the same records.
        let raw =
            raw_passthrough(&broker, &input, &raw_out, &format!("bench-raw-{id}"), total).await;
        println!("raw rdkafka passthrough:           {raw:>10.0} msg/s");
        let stage = stage_run(
            bus.clone(),
            &broker,
            &memcached,
            &input,
            &stage_out,
            &id,
            total,
        )
        .await;
        println!("normalize/dedup stage (memcached): {stage:>10.0} msg/s");
        println!("ratio stage/raw: {:.2} (goal >= 0.80)", stage / raw);
    });
}
