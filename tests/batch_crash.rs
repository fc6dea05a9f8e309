//! parquet-batch killed with SIGKILL mid-batch and restarted, on the real broker: every page
//! record ends in exactly one Parquet row set — no partial file is ever visible, no page is
//! lost, none is kept twice, and files of one partition never overlap.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use common::pipeline::{create_topics, Head, RESTARTABLE};
use common::{kafka_bus, unique, write_pipeline, StageProcess};
use sluice_bus::{Bus, OutRecord, TopicPartition};
use sluice_tables::{FileName, Storage};
use sluice_topics::{Contract, Page};

const PAGES: usize = 3000;
const PARTITIONS: i32 = 2;

fn page(i: usize) -> Page {
    Page {
        url: format!("http://site{}.test/page/{i}", i % 7),
        final_url: format!("http://site{}.test/page/{i}", i % 7),
        redirects: vec![],
        status: Some(200),
        content_type: Some("text/html".into()),
        charset: Some("UTF-8".into()),
        fetched_at_ms: 1_700_000_000_000 + i as i64,
        fetch_ms: 5,
        headers: Default::default(),
        body: Some(format!(
            "<html><body><h1>Page {i}</h1>{}<a href=\"/page/{}\">next</a></body></html>",
            "<p>lorem ipsum dolor sit amet</p>".repeat(100),
            i + 1
        )),
        body_bytes: 3300,
        truncated: false,
        error: None,
        depth: 1,
        domain: format!("site{}.test", i % 7),
        source: None,
        links_out: 1,
    }
}

fn files(dir: &Path) -> Vec<FileName> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| FileName::parse(&e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default()
}

async fn committed(bus: &Arc<dyn Bus>, group: &str, topic: &str) -> i64 {
    let tps: Vec<_> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    bus.committed(group, &tps)
        .await
        .map(|c| c.into_iter().map(|o| o.unwrap_or(0)).sum())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_batch_every_page_is_in_exactly_one_file() {
    let id = unique("crash");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stage = format!("batch-{id}");
    let (input, output) = (format!("pages-{id}"), format!("batches-{id}"));
    let yaml = Head::new(&id)
        .broker_options(RESTARTABLE)
        .storage(&data)
        .topic("pages", &format!("partitions: {PARTITIONS}, type: page"))
        .topic("batches", "partitions: 1")
        .stages(&format!(
            r#"  {stage}:
    kind: parquet-batch
    input: {input}
    output: {output}
    max_rows: 250
    max_age: 60s
"#
        ));
    let file = write_pipeline(dir.path(), &yaml);
    create_topics(&file);
    let bus = kafka_bus();
    let producer = bus.producer().unwrap();
    let sends: Vec<_> = (0..PAGES)
        .map(|i| {
            let mut r = OutRecord::new(input.clone(), page(i).encode());
            r.partition = Some(i as i32 % PARTITIONS);
            producer.send(r)
        })
        .collect();
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }

    let log = |n: &str| dir.path().join(format!("{n}.log"));
    let mut a = StageProcess::spawn_as(&file, &stage, &log("a"), "a");
    let pages_dir = data.join("pages");
    let started = Instant::now();
    while files(&pages_dir).len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no files written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill9();
    let before = files(&pages_dir).len();
    let _a = StageProcess::spawn_as(&file, &stage, &log("a2"), "a");
    let started = Instant::now();
    while committed(&bus, &stage, &input).await < PAGES as i64 {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "not all offsets committed; log:\n{}",
            std::fs::read_to_string(log("a2")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Files of one partition cover disjoint offset ranges that add up to the partition.
    let mut by_partition: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for f in files(&pages_dir) {
        by_partition
            .entry(f.partition)
            .or_default()
            .push((f.first, f.last));
    }
    for (p, ranges) in &mut by_partition {
        ranges.sort();
        let mut next = 0;
        for (first, last) in ranges.iter() {
            assert_eq!(
                *first, next,
                "partition {p}: files {ranges:?} overlap or leave a gap"
            );
            next = last + 1;
        }
        assert_eq!(next, (PAGES as i64) / PARTITIONS as i64, "partition {p}");
    }

    // And the table says the same: each (partition, offset) exactly once.
    let storage = Storage::open(data.to_str().unwrap()).unwrap();
    let batches: Vec<RecordBatch> = sluice_query::query(
        &storage,
        "SELECT kafka_partition, kafka_offset, url FROM pages",
    )
    .await
    .unwrap();
    let mut seen = HashSet::new();
    for b in &batches {
        let p = b.column(0).as_primitive::<Int32Type>();
        let o = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            assert!(
                seen.insert((p.value(i), o.value(i))),
                "row ({}, {}) twice",
                p.value(i),
                o.value(i)
            );
        }
    }
    assert_eq!(seen.len(), PAGES, "every page once");
    eprintln!(
        "crash test: {before} files before the kill, {} after; {} rows",
        files(&pages_dir).len(),
        seen.len()
    );
}
