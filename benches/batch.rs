//! Benchmark: parquet-batch (its own process, default settings) writing 160,000 page records
//! to Parquet, against a raw rdkafka consumer that only reads the same topic, in one run —
//! and the stage's peak RSS (goal: ≤ 256 MiB while writing 100k+ pages).
//!
//! The records are spread evenly over the 8 partitions, 20,000 each, so every batch closes by
//! `max_rows` (10,000) and none waits for `max_age`: the rate is the stage's, not the clock's.
//!
//! Run with `benches/run.sh --bench batch`. SLUICE_BENCH_PAGES sets the record count (rounded
//! to whole batches).

#[path = "../tests/common/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use sluice_bus::kafka::KafkaBus;
use sluice_bus::{Bus, OutRecord, TopicPartition};
use sluice_topics::{Contract, Page};

const PARTITIONS: i32 = 8;

fn page(i: usize) -> Page {
    let paragraphs = 4 + (i * 7919) % 40; // 0.3–3.5 KB of text, varied
    Page {
        url: format!("https://site{}.example/articles/{i}", i % 100),
        final_url: format!("https://site{}.example/articles/{i}", i % 100),
        redirects: vec![],
        status: Some(200),
        content_type: Some("text/html".into()),
        charset: Some("UTF-8".into()),
        fetched_at_ms: 1_700_000_000_000 + i as i64,
        fetch_ms: 40,
        headers: Default::default(),
        body: Some(format!(
            "<html><head><title>Article {i}</title></head><body>{}</body></html>",
            (0..paragraphs)
                .map(|p| format!("<p>Paragraph {p} of article {i}: the quick brown fox jumps over the lazy dog.</p><a href=\"/articles/{}\">more</a>", i + p))
                .collect::<String>()
        )),
        body_bytes: 0,
        truncated: false,
        error: None,
        depth: 1,
        domain: format!("site{}.example", i % 100),
        source: None,
        links_out: paragraphs as u32,
    }
}

async fn raw_consume(broker: &str, topic: &str, total: usize) -> f64 {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", format!("raw-{topic}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut stream = c.stream();
    let mut n = 0;
    let mut started = None;
    while n < total {
        stream.next().await.unwrap().unwrap();
        started.get_or_insert_with(Instant::now);
        n += 1;
    }
    total as f64 / started.unwrap().elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("batch: bench");
        return;
    }
    let broker = std::env::var("SLUICE_TEST_BROKER")
        .expect("SLUICE_TEST_BROKER is not set: run benches/run.sh --bench batch");
    let whole = PARTITIONS as usize * 10_000;
    let total: usize = std::env::var("SLUICE_BENCH_PAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(160_000usize)
        .div_ceil(whole)
        * whole;
    let id = std::process::id();
    let (input, output) = (format!("bench-pages-{id}"), format!("bench-batches-{id}"));
    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::new(&broker, Default::default()));
    support::create_topics_on(&bus, &[&input], PARTITIONS).await;
    support::create_topics_on(&bus, &[&output, &format!("dlq-{id}")], 1).await;
    let producer = bus.producer().unwrap();
    let mut sends = FuturesUnordered::new();
    let mut bytes = 0usize;
    for i in 0..total {
        let p = page(i);
        let value = p.encode();
        bytes += value.len();
        let mut r = OutRecord::new(input.clone(), value).with_key(p.domain.into_bytes());
        r.partition = Some(i as i32 % PARTITIONS);
        sends.push(producer.send(r));
        if sends.len() >= 10_000 {
            sends.next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = sends.next().await {
        r.unwrap();
    }
    println!(
        "{total} page records, {:.0} MB, {PARTITIONS} partitions",
        bytes as f64 / 1e6
    );

    let raw = raw_consume(&broker, &input, total).await;
    println!("raw rdkafka consumer (read only): {raw:9.0} records/s");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stage = format!("batch-{id}");
    let yaml = format!(
        "name: bench-{id}\nbroker: {broker}\nservices:\n  storage: {}\ndead_letter: dlq-{id}\ntopics:\n  {input}: {{ partitions: {PARTITIONS}, type: page }}\n  {output}: {{ partitions: 1 }}\n  dlq-{id}: {{ partitions: 1 }}\nstages:\n  {stage}:\n    kind: parquet-batch\n    input: {input}\n    output: {output}\n",
        data.display()
    );
    let file = dir.path().join("bench.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut child = support::run_stage(&file, &stage)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let tps: Vec<_> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(&input, p))
        .collect();
    let started = Instant::now();
    let mut first_file: Option<Instant> = None;
    loop {
        if first_file.is_none()
            && std::fs::read_dir(data.join("pages"))
                .map(|d| d.count() > 0)
                .unwrap_or(false)
        {
            first_file = Some(Instant::now());
        }
        let done: i64 = bus
            .committed(&stage, &tps)
            .await
            .map(|c| c.into_iter().map(|o| o.unwrap_or(0)).sum())
            .unwrap_or(0);
        if done >= total as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "stage too slow: {done} of {total}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let rss = support::peak_rss_kib(child.id());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let files = std::fs::read_dir(data.join("pages"))
        .map(|d| d.count())
        .unwrap_or(0);
    let on_disk: u64 = std::fs::read_dir(data.join("pages"))
        .map(|d| {
            d.flatten()
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "parquet-batch stage (default settings): {rate:9.0} records/s (start to last commit, group join included), {files} files, {:.0} MB of Parquet",
        on_disk as f64 / 1e6
    );
    println!("ratio stage / raw read: {:.2}", rate / raw);
    println!(
        "parquet-batch peak RSS: {:.0} MiB (goal ≤ 256 MiB)",
        rss as f64 / 1024.0
    );
}
