//! Benchmark: the crawl stage (one replica, its own process, politeness limits lifted for the
//! local host) against Scrapy (a CrawlSpider following the same links with the same
//! concurrency), on the same real documentation site served by nginx, in one run.
//!
//! Run with `benches/run.sh --bench crawl` (starts tansu, memcached, etcd and nginx with
//! Debian's python3.11-doc, as the tests do); on a site of small pages, where per-page costs
//! weigh more: `SLUICE_DOCSITE_PACKAGE=postgresql-doc-15 benches/run.sh --bench crawl`. Scrapy must be importable (`pip install scrapy`;
//! benches/run.sh installs it). Settings: SLUICE_BENCH_CONCURRENCY (default 32),
//! SLUICE_BENCH_REPEAT (the site's pages are fed this many times, default 4),
//! SLUICE_BENCH_IDEMPOTENCE (the stage's producer, default true as in production),
//! SLUICE_BENCH_MAX_PENDING (the stage's `max_pending`, default 2MiB),
//! SLUICE_BENCH_BROKER_OPTIONS (`key=value,…` librdkafka settings).
//!
//! Four runs: the stage as its own process on tansu with etcd slots (production shape), the
//! same with in-process slots (what etcd costs), the crawl loop (normalize and crawl
//! processes) discovering the site from its index like Scrapy does, and the stage in this
//! process on the embedded bus (the stage alone, no broker in the way). On a 2-core machine the process runs share the
//! CPU with tansu, whose single sqlite writer bounds the rate at a few tens of MB/s of page
//! records.
//!
//! The stage is fed every HTML file of the site (×REPEAT) on its input topic and extracts and
//! emits links like in production; its rate is pages recorded per second from its first page
//! record to its last. Scrapy discovers the same pages by following links from the index; its
//! rate is responses per second from its first response to its last.

#[path = "../tests/common/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use sluice_bus::kafka::KafkaBus;
use sluice_bus::{Bus, OutRecord, TopicPartition};
use sluice_topics::{Contract, CrawlUrl};

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run benches/run.sh --bench crawl"))
}

/// Partitions of the benchmark's topics.
const PARTITIONS: i32 = 4;

/// The feed as crawl-url records on `topic`, spread over the partitions (production keys by
/// domain, and one domain would sit on one partition).
fn feed_records<'a>(topic: &'a str, feed: &'a [String]) -> impl Iterator<Item = OutRecord> + 'a {
    feed.iter().enumerate().map(move |(i, url)| {
        let c = CrawlUrl {
            url: url.clone(),
            domain: "127.0.0.1".into(),
            depth: 0,
            source: None,
            queued_at_ms: 0,
            validators: None,
            sitemap: false,
            deferred: false,
        };
        let mut r = OutRecord::new(topic, c.encode());
        r.partition = Some(i as i32 % PARTITIONS);
        r
    })
}

async fn pages_written(bus: &Arc<dyn Bus>, topic: &str, partitions: i32) -> i64 {
    let mut sum = 0;
    for p in 0..partitions {
        if let Ok((_, high)) = bus.watermarks(&TopicPartition::new(topic, p)).await {
            sum += high;
        }
    }
    sum
}

struct StageResult {
    rate: f64,
    pages: usize,
    peak_rss_mib: f64,
}

/// Runs the crawl stage as its own process over `feed`; `etcd` is the slot store.
async fn crawl_stage(feed: &[String], concurrency: usize, etcd: &str) -> StageResult {
    let broker = env("SLUICE_TEST_BROKER");
    let memcached = env("SLUICE_TEST_MEMCACHED");
    let id = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000
    );
    let (input, pages, links, stage) = (
        format!("bench-urls-{id}"),
        format!("bench-pages-{id}"),
        format!("bench-links-{id}"),
        format!("crawl-{id}"),
    );
    let options = support::bench_broker_options();
    let yaml = format!(
        r#"name: bench-{id}
broker: {broker}
broker_options:
  enable.idempotence: "${{SLUICE_BENCH_IDEMPOTENCE:-true}}"
{options}services:
  memcached: {memcached}
  etcd: {etcd}
dead_letter: dlq-{id}
topics:
  {input}: {{ partitions: {PARTITIONS}, type: crawl-url }}
  {pages}: {{ partitions: {PARTITIONS} }}
  {links}: {{ partitions: {PARTITIONS} }}
  dlq-{id}: {{ partitions: 1 }}
stages:
  {stage}:
    kind: crawl
    input: {input}
    output: {pages}
    discovered: {links}
    key_prefix: "{id}:"
    allow_private_addresses: true
    fetch_concurrency: {concurrency}
    per_domain_concurrency: {concurrency}
    max_pending: ${{SLUICE_BENCH_MAX_PENDING:-2MiB}}
    min_delay: 0s
    max_depth: 100
    max_body: 4MiB
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.yaml");
    std::fs::write(&file, yaml).unwrap();
    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::new(&broker, Default::default()));
    support::create_topics_on(
        &bus,
        &[&input, &pages, &links, &format!("dlq-{id}")],
        PARTITIONS,
    )
    .await;
    // The whole feed is on the topic before the stage starts, so the stage is never starved.
    let p = bus.producer().unwrap();
    let mut sends: FuturesUnordered<_> = feed_records(&input, feed).map(|r| p.send(r)).collect();
    while let Some(r) = sends.next().await {
        r.unwrap();
    }
    let mut child = support::run_stage(&file, &stage)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let total = feed.len() as i64;
    let mut first: Option<(Instant, i64)> = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    let end = loop {
        let n = pages_written(&bus, &pages, PARTITIONS).await;
        let now = Instant::now();
        if n > 0 && first.is_none() {
            first = Some((now, n));
        }
        if n >= total {
            break now;
        }
        assert!(now < deadline, "crawl stage wrote {n} of {total} pages");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let rss = support::peak_rss_kib(child.id());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let (start, already) = first.unwrap();
    StageResult {
        rate: (total - already) as f64 / (end - start).as_secs_f64(),
        pages: feed.len(),
        peak_rss_mib: rss as f64 / 1024.0,
    }
}

/// The crawl loop from the site's index, as production runs it: normalize and crawl as their
/// own processes on tansu, each level of links found going crawl → url-in → normalize → urls
/// → crawl, like Scrapy discovering the site from its index. Its rate is pages recorded per
/// second from the first page record to the last, the crawl ending when no new page has been
/// recorded for 3 s (or all `site_pages` are).
async fn crawl_loop(start: &str, site_pages: usize, concurrency: usize, etcd: &str) -> StageResult {
    let broker = env("SLUICE_TEST_BROKER");
    let memcached = env("SLUICE_TEST_MEMCACHED");
    let id = support::unique("loop");
    let options = support::bench_broker_options();
    let yaml = format!(
        r#"name: {id}
broker: {broker}
broker_options:
  enable.idempotence: "${{SLUICE_BENCH_IDEMPOTENCE:-true}}"
{options}services:
  memcached: {memcached}
  etcd: {etcd}
dead_letter: dlq-{id}
topics:
  url-in-{id}: {{ partitions: {PARTITIONS} }}
  urls-{id}: {{ partitions: {PARTITIONS} }}
  pages-{id}: {{ partitions: {PARTITIONS} }}
  dlq-{id}: {{ partitions: 1 }}
stages:
  normalize:
    kind: normalize-dedup
    input: url-in-{id}
    output: urls-{id}
    key_prefix: "{id}:"
  crawl:
    kind: crawl
    input: urls-{id}
    output: pages-{id}
    discovered: url-in-{id}
    feedback: [url-in-{id}]
    key_prefix: "{id}:"
    allow_private_addresses: true
    fetch_concurrency: {concurrency}
    per_domain_concurrency: {concurrency}
    max_pending: ${{SLUICE_BENCH_MAX_PENDING:-2MiB}}
    min_delay: 0s
    max_depth: 100
    max_body: 4MiB
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let file = support::write_pipeline(dir.path(), &yaml);
    support::pipeline::create_topics(&file);
    let mut children: Vec<_> = ["normalize", "crawl"]
        .into_iter()
        .map(|stage| {
            support::run_stage(&file, stage)
                .env("RUST_LOG", "warn")
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    // Seeded once both have joined their groups: the joins are not the crawl's time.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let bus: Arc<dyn Bus> = Arc::new(KafkaBus::new(&broker, Default::default()));
    let pages = format!("pages-{id}");
    bus.producer()
        .unwrap()
        .send(OutRecord::new(format!("url-in-{id}"), start.to_string()))
        .await
        .unwrap();
    let mut first: Option<Instant> = None;
    let mut last = (Instant::now(), 0);
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let n = pages_written(&bus, &pages, PARTITIONS).await;
        let now = Instant::now();
        if n > 0 && first.is_none() {
            first = Some(now);
        }
        if n > last.1 {
            last = (now, n);
        }
        if n as usize >= site_pages || (first.is_some() && now - last.0 > Duration::from_secs(3)) {
            break;
        }
        assert!(now < deadline, "the crawl loop recorded {n} pages");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss = children
        .iter()
        .map(|c| support::peak_rss_kib(c.id()))
        .max()
        .unwrap_or(0);
    for child in &mut children {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    let (end, n) = last;
    StageResult {
        // The first page (the index) starts the clock, as Scrapy's first response does.
        rate: (n - 1) as f64 / (end - first.unwrap()).as_secs_f64(),
        pages: n as usize,
        peak_rss_mib: rss as f64 / 1024.0,
    }
}

/// The crawl stage in this process on the embedded bus: the stage's own speed, without a
/// broker in the way (the memory bus keeps every record, so this run's RSS is not the
/// stage's; the process runs above give that).
async fn crawl_stage_embedded(feed: &[String], concurrency: usize) -> f64 {
    use sluice_runtime::registry::Registry;
    use sluice_runtime::runner::{start_on, RunOptions};
    use sluice_runtime::services::Services;
    let yaml = format!(
        r#"name: bench-embedded
broker: memory
dead_letter: dlq
topics:
  urls: {{ partitions: {PARTITIONS}, type: crawl-url }}
  pages: {{ partitions: {PARTITIONS} }}
  links: {{ partitions: {PARTITIONS} }}
  dlq: {{ partitions: 1 }}
stages:
  crawl:
    kind: crawl
    input: urls
    output: pages
    discovered: links
    allow_private_addresses: true
    fetch_concurrency: {concurrency}
    per_domain_concurrency: {concurrency}
    min_delay: 0s
    max_depth: 100
    max_body: 4MiB
"#
    );
    let mut registry = Registry::new();
    registry.register(sluice_stage_crawl::Kind);
    let (p, _) = sluice_config::load_str_validated(&yaml, "bench.yaml", &[], &|_| None, &registry)
        .unwrap_or_else(|d| panic!("{d}"));
    let bus: Arc<dyn Bus> = Arc::new(sluice_bus::memory::MemoryBus::new());
    support::create_topics_on(&bus, &["urls", "pages", "links", "dlq"], PARTITIONS).await;
    let producer = bus.producer().unwrap();
    for r in feed_records("urls", feed) {
        producer.send(r).await.unwrap();
    }
    let token = tokio_util::sync::CancellationToken::new();
    let p = Arc::new(p);
    let running = start_on(
        bus.clone(),
        Services::in_memory(&p),
        p.clone(),
        &registry,
        RunOptions {
            stages: vec![],
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
        },
        token.clone(),
    )
    .await
    .unwrap();
    let total = feed.len() as i64;
    let mut first: Option<(Instant, i64)> = None;
    let end = loop {
        let n = pages_written(&bus, "pages", PARTITIONS).await;
        let now = Instant::now();
        if n > 0 && first.is_none() {
            first = Some((now, n));
        }
        if n >= total {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    token.cancel();
    running.wait().await.unwrap();
    let (start, already) = first.unwrap();
    (total - already) as f64 / (end - start).as_secs_f64()
}

struct ScrapyResult {
    rate: f64,
    pages: u64,
}

fn scrapy(start: &str, concurrency: usize) -> ScrapyResult {
    let out = tempfile::NamedTempFile::new().unwrap();
    let spider = support::manifest_dir().join("benches/scrapy_baseline.py");
    let status = Command::new("python3")
        .args(["-m", "scrapy", "runspider"])
        .arg(&spider)
        .args(["-a", &format!("start={start}"), "-a"])
        .arg(format!("out={}", out.path().display()))
        .args(["-s", &format!("CONCURRENT_REQUESTS={concurrency}")])
        .args([
            "-s",
            &format!("CONCURRENT_REQUESTS_PER_DOMAIN={concurrency}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("python3 with scrapy (pip install scrapy)");
    assert!(status.success(), "scrapy failed");
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path()).unwrap()).unwrap();
    let pages = result["pages"].as_u64().unwrap();
    let secs = result["seconds"].as_f64().unwrap();
    ScrapyResult {
        rate: (pages - 1) as f64 / secs,
        pages,
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("crawl: bench");
        return;
    }
    let site = env("SLUICE_TEST_DOCSITE");
    let root = PathBuf::from(env("SLUICE_TEST_DOCSITE_ROOT"));
    let etcd = env("SLUICE_TEST_ETCD");
    let concurrency: usize = std::env::var("SLUICE_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let repeat: usize = std::env::var("SLUICE_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let base: url::Url = site.parse().unwrap();
    let pages: Vec<String> = support::site_pages(&root, &base)
        .into_iter()
        .map(|(_, url)| url.to_string())
        .collect();
    let bytes: u64 = support::html_files(&root)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let feed: Vec<String> = (0..repeat).flat_map(|_| pages.iter().cloned()).collect();
    println!(
        "site: {site} ({} HTML pages, {:.1} MB); concurrency {concurrency}; stage fed {repeat}× the pages",
        pages.len(),
        bytes as f64 / 1e6
    );

    let sc = scrapy(base.join("index.html").unwrap().as_str(), concurrency);
    println!(
        "scrapy CrawlSpider:          {:8.1} pages/s ({} pages)",
        sc.rate, sc.pages
    );
    let with_etcd = crawl_stage(&feed, concurrency, &etcd).await;
    println!(
        "crawl stage, etcd slots:     {:8.1} pages/s ({} pages), peak RSS {:.0} MiB, {:.1}× scrapy",
        with_etcd.rate,
        with_etcd.pages,
        with_etcd.peak_rss_mib,
        with_etcd.rate / sc.rate
    );
    let local = crawl_stage(&feed, concurrency, "memory").await;
    println!(
        "crawl stage, in-process slots: {:6.1} pages/s ({} pages), peak RSS {:.0} MiB, {:.1}× scrapy",
        local.rate,
        local.pages,
        local.peak_rss_mib,
        local.rate / sc.rate
    );
    let looped = crawl_loop(
        base.join("index.html").unwrap().as_str(),
        pages.len(),
        concurrency,
        &etcd,
    )
    .await;
    println!(
        "crawl loop from the index:   {:8.1} pages/s ({} pages), peak RSS {:.0} MiB, {:.1}× scrapy",
        looped.rate,
        looped.pages,
        looped.peak_rss_mib,
        looped.rate / sc.rate
    );
    let embedded = crawl_stage_embedded(&feed, concurrency).await;
    println!(
        "crawl stage, embedded bus:   {:8.1} pages/s ({} pages), {:.1}× scrapy",
        embedded,
        feed.len(),
        embedded / sc.rate
    );
    println!(
        "ratio, crawl stage alone (embedded bus) / scrapy: {:.1}× (goal ≥ 10×); through tansu with etcd slots: {:.1}×; the crawl loop from the index: {:.1}× (goal ≥ 5×)",
        embedded / sc.rate,
        with_etcd.rate / sc.rate,
        looped.rate / sc.rate
    );
}
