//! Benchmark: a broad crawl. 1,000 registrable domains of 20 pages each on one local server
//! (by Host header), at `min_delay` 1 s and 2 requests per domain, plus 10 slow domains
//! (Crawl-delay 10, 3,000 links each) that must not hold the others back. Normalize-dedup,
//! crawl and delay run as their own processes on the real broker, memcached and etcd, as in
//! production; Scrapy (ROBOTSTXT_OBEY, DOWNLOAD_DELAY 1, 2 per domain) crawls the same
//! fixture in the same run.
//!
//! Run with `benches/run.sh --bench broad`. Settings: SLUICE_BENCH_DOMAINS (default 1000),
//! SLUICE_BENCH_SLOW (default 10), SLUICE_BENCH_LIMIT (seconds a crawler gets, default 240),
//! SLUICE_BENCH_SCRAPY (0 skips Scrapy), SLUICE_BENCH_CRAWL (lines added to the crawl stage's
//! settings), SLUICE_BENCH_BROKER_OPTIONS (`key=value,…` librdkafka settings),
//! SLUICE_BENCH_KEEP (keep the stages' logs; SLUICE_BENCH_LOG sets their RUST_LOG).
//!
//! What it prints, for each crawler, from the server's own log of requests:
//! - pages/s over the ideal time (20 pages at 1 s each) against the politeness bound, the
//!   sum over domains of 1 / delay (a domain with work can take one page per delay);
//! - the time until the last normal domain had all its pages, against that ideal time;
//! - pages fetched more than once, and requests to a slow domain closer than its Crawl-delay;
//! - peak RSS (VmHWM) of each process;
//! - the broker's round trip (produce, then consume), the slowest in each second: when the
//!   crawl stalls, whether the broker was the cause.
//!
//! Goals (issue 12): ≥ 90% of the bound, the last normal domain within 1.5× the ideal time,
//! peak RSS ≤ 256 MiB per process.

#[path = "../tests/common/mod.rs"]
mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use sluice_bus::OutRecord;

/// Pages of a normal domain: a home page linking to the others.
const PAGES: usize = 20;
/// Links of a slow domain's home page.
const SLOW_LINKS: usize = 3000;
/// A slow domain's Crawl-delay, seconds.
const SLOW_DELAY: u64 = 10;
/// The crawl's `min_delay`, and Scrapy's DOWNLOAD_DELAY.
const DELAY: Duration = Duration::from_secs(1);

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// The fixture: `n<i>.test` are normal domains, `slow<i>.test` slow ones. It answers absolute-form
// requests too, so Scrapy reaches it as its HTTP proxy.

#[derive(Default)]
struct Log {
    /// Per host: when each page (not robots.txt) was asked, and how often each path was.
    hits: HashMap<String, Vec<Instant>>,
    paths: HashMap<String, usize>,
}

#[derive(Clone, Default)]
struct Fixture {
    log: Arc<Mutex<Log>>,
}

fn text(body: String, content_type: &str) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

/// A page of about 2 KB: some text and `links`.
fn page(title: &str, links: impl Iterator<Item = String>) -> String {
    let mut html =
        format!("<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1>\n");
    for _ in 0..12 {
        html.push_str("<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.</p>\n");
    }
    for l in links {
        html.push_str(&format!("<a href=\"{l}\">{l}</a>\n"));
    }
    html.push_str("</body></html>");
    html
}

async fn handle(State(f): State<Fixture>, req: Request) -> Result<Response, Infallible> {
    let host = req
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| {
            let h = req.headers().get(header::HOST)?.to_str().ok()?;
            Some(h.split(':').next()?.to_string())
        })
        .unwrap_or_default()
        .to_ascii_lowercase();
    let path = req.uri().path().to_string();
    let slow = host.starts_with("slow");
    if path == "/robots.txt" {
        let rules = if slow {
            format!("User-agent: *\nCrawl-delay: {SLOW_DELAY}\n")
        } else {
            "User-agent: *\nAllow: /\n".to_string()
        };
        return Ok(text(rules, "text/plain"));
    }
    {
        let mut log = f.log.lock().unwrap();
        log.hits
            .entry(host.clone())
            .or_default()
            .push(Instant::now());
        *log.paths.entry(format!("{host}{path}")).or_default() += 1;
    }
    let body = match (slow, path.as_str()) {
        (false, "/") => page(&host, (1..PAGES).map(|i| format!("/p{i}.html"))),
        (true, "/") => page(&host, (1..=SLOW_LINKS).map(|i| format!("/s{i}.html"))),
        _ => page(&format!("{host}{path}"), std::iter::empty()),
    };
    Ok(text(body, "text/html; charset=utf-8"))
}

impl Fixture {
    async fn start() -> (Self, SocketAddr) {
        let fixture = Fixture::default();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(fixture.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fixture, addr)
    }

    fn reset(&self) {
        *self.log.lock().unwrap() = Log::default();
    }

    /// When the first page was fetched.
    fn first_hit(&self) -> Option<Instant> {
        self.log
            .lock()
            .unwrap()
            .hits
            .values()
            .flatten()
            .min()
            .copied()
    }

    /// Normal domains with all their pages fetched.
    fn complete(&self, normal: &[String]) -> usize {
        let log = self.log.lock().unwrap();
        normal
            .iter()
            .filter(|h| log.hits.get(*h).is_some_and(|v| v.len() >= PAGES))
            .count()
    }

    fn report(&self, name: &str, normal: &[String], slow: &[String], rss: &[(&str, u64)]) {
        let log = self.log.lock().unwrap();
        let Some(start) = log.hits.values().flatten().min().copied() else {
            println!("{name}: fetched nothing");
            return;
        };
        let ideal = DELAY * PAGES as u32;
        let in_ideal = log
            .hits
            .values()
            .flatten()
            .filter(|t| **t <= start + ideal)
            .count();
        let bound =
            normal.len() as f64 / DELAY.as_secs_f64() + slow.len() as f64 / SLOW_DELAY as f64;
        let rate = in_ideal as f64 / ideal.as_secs_f64();
        let done: Vec<Duration> = normal
            .iter()
            .filter_map(|h| {
                let v = log.hits.get(h)?;
                (v.len() >= PAGES).then(|| *v.iter().max().unwrap() - start)
            })
            .collect();
        let last = done.iter().max().copied();
        let twice = log.paths.values().filter(|n| **n > 1).count();
        let slow_pages: usize = slow
            .iter()
            .map(|h| log.hits.get(h).map_or(0, Vec::len))
            .sum();
        let too_close = slow
            .iter()
            .filter_map(|h| log.hits.get(h))
            .flat_map(|v| {
                let mut v = v.clone();
                v.sort();
                v.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
            })
            .filter(|gap| *gap < Duration::from_millis(SLOW_DELAY * 1000 * 95 / 100))
            .count();
        println!("{name}:");
        // Pages fetched in each second of the first 40, to see ramp-up and stalls.
        let mut per_second = [0usize; 40];
        for t in log.hits.values().flatten() {
            if let Some(n) = per_second.get_mut((*t - start).as_secs() as usize) {
                *n += 1;
            }
        }
        println!("  pages per second: {per_second:?}");
        println!(
            "  pages/s in the first {}s: {rate:7.1} of a politeness bound of {bound:.1} ({:.0}%)",
            ideal.as_secs(),
            100.0 * rate / bound
        );
        match last {
            Some(last) if done.len() == normal.len() => println!(
                "  last normal domain complete after {:.1}s, {:.2}× the ideal {}s",
                last.as_secs_f64(),
                last.as_secs_f64() / ideal.as_secs_f64(),
                ideal.as_secs()
            ),
            _ => println!(
                "  only {} of {} normal domains complete",
                done.len(),
                normal.len()
            ),
        }
        println!(
            "  slow domains: {slow_pages} pages, {too_close} requests closer than their Crawl-delay; pages fetched twice: {twice}"
        );
        for (process, kib) in rss {
            println!("  peak RSS {process}: {:.0} MiB", *kib as f64 / 1024.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sluice: normalize, crawl and delay, each its own process.

/// The shipped frontier (normalize → crawl ⇄ delay) on the test servers, at pipeline.yaml's
/// politeness (`min_delay` 1 s, 2 per domain, depth 3); SLUICE_BENCH_CRAWL adds crawl settings.
fn pipeline_yaml(id: &str, hosts: &[String], web: SocketAddr) -> String {
    let resolve: String = hosts
        .iter()
        .map(|h| format!("      {h}: {web}\n"))
        .collect();
    let crawl = format!(
        "    per_domain_concurrency: 2\n    min_delay: {}s\n    max_depth: 3\n{}",
        DELAY.as_secs(),
        std::env::var("SLUICE_BENCH_CRAWL").unwrap_or_default()
    );
    let mut yaml = support::crawl::real_frontier_pipeline(id, &crawl, &resolve);
    let options = support::bench_broker_options();
    if !options.is_empty() {
        yaml.push_str("broker_options:\n");
        yaml.push_str(&options);
    }
    yaml
}

/// Stops a process with `signal` and waits for it.
fn stop(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let _ = child.wait();
}

async fn sluice(
    fixture: &Fixture,
    web: SocketAddr,
    normal: &[String],
    slow: &[String],
    limit: Duration,
) {
    let id = support::unique("broad");
    let hosts: Vec<String> = normal.iter().chain(slow).cloned().collect();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // SLUICE_BENCH_KEEP keeps the stages' logs for a look.
    let _tmp = if std::env::var_os("SLUICE_BENCH_KEEP").is_some() {
        println!("stage logs in {}", tmp.keep().display());
        None
    } else {
        Some(tmp)
    };
    let file = support::write_pipeline(&dir, &pipeline_yaml(&id, &hosts, web));
    support::pipeline::create_topics(&file);
    let probe = Probe::start(&id).await;
    let mut children: Vec<(&str, Child)> = ["normalize", "crawl", "delay"]
        .into_iter()
        .map(|stage| {
            let log = std::fs::File::create(dir.join(format!("{stage}.log"))).unwrap();
            let child = support::run_stage(&file, stage)
                .env(
                    "RUST_LOG",
                    std::env::var("SLUICE_BENCH_LOG").unwrap_or("warn".into()),
                )
                .stderr(log)
                .spawn()
                .unwrap();
            (stage, child)
        })
        .collect();
    // Seeds once the stages are up: their group joins are not the crawl's time.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let bus = support::kafka_bus();
    let producer = bus.producer().unwrap();
    let topic = format!("url-in-{id}");
    let sends = slow
        .iter()
        .chain(normal)
        .map(|host| producer.send(OutRecord::new(&topic, format!("http://{host}/"))));
    for sent in futures::future::join_all(sends).await {
        sent.unwrap();
    }
    wait_complete(fixture, normal, limit).await;
    let rss: Vec<(&str, u64)> = children
        .iter()
        .map(|(stage, c)| (*stage, support::peak_rss_kib(c.id())))
        .collect();
    for (_, c) in &mut children {
        stop(c, "-TERM");
    }
    fixture.report(
        "sluice (normalize, crawl, delay processes)",
        normal,
        slow,
        &rss,
    );
    probe.report(fixture.first_hit());
}

/// Samples the broker's round trip (produce, then consume) every 100 ms during the crawl:
/// a stall of the crawl that the broker shares shows here.
struct Probe {
    samples: Arc<Mutex<Vec<(Instant, Duration)>>>,
    flows: Arc<Mutex<Vec<(Instant, Flows)>>>,
}

/// Per topic of the frontier ([`FLOWS`]): records written, records its reader committed.
type Flows = [(i64, i64); 3];

/// The frontier's topics, with the stage reading each (its consumer group).
const FLOWS: [(&str, &str); 3] = [
    ("url-in", "normalize"),
    ("urls", "crawl"),
    ("deferred", "delay"),
];

impl Probe {
    async fn start(id: &str) -> Self {
        let bus = support::kafka_bus();
        let topic = format!("probe-{id}");
        support::create_topics_on(&bus, &[&topic], 1).await;
        let mut consumer = bus
            .subscribe(sluice_bus::SubscribeOptions {
                group: format!("probe-{id}"),
                topics: vec![topic.clone()],
                start_from: sluice_bus::StartFrom::Latest,
                buffer: 100,
            })
            .await
            .unwrap();
        let producer = bus.producer().unwrap();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Default::default();
        let sent = sent_at.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                sent.lock().unwrap().insert(n, Instant::now());
                let _ = producer.send(OutRecord::new(&topic, n.to_string())).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let flows = Arc::new(Mutex::new(Vec::new()));
        let (kept_flows, id_owned) = (flows.clone(), id.to_string());
        let meta = support::kafka_bus();
        tokio::spawn(async move {
            loop {
                let mut row = [(0, 0); 3];
                for (i, (topic, group)) in FLOWS.iter().enumerate() {
                    let topic = format!("{topic}-{id_owned}");
                    let tps: Vec<_> = (0..4)
                        .map(|p| sluice_bus::TopicPartition::new(&topic, p))
                        .collect();
                    let committed = meta.committed(group, &tps).await.unwrap_or_default();
                    for (tp, c) in tps
                        .iter()
                        .zip(committed.iter().chain(std::iter::repeat(&None)))
                    {
                        let high = meta.watermarks(tp).await.map_or(0, |w| w.1);
                        row[i].0 += high;
                        row[i].1 += c.unwrap_or(0);
                    }
                }
                kept_flows.lock().unwrap().push((Instant::now(), row));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let kept = samples.clone();
        tokio::spawn(async move {
            while let Ok(event) = consumer.next().await {
                if let sluice_bus::ConsumerEvent::Record(r) = event {
                    let n: u64 = std::str::from_utf8(&r.value).unwrap().parse().unwrap();
                    if let Some(at) = sent_at.lock().unwrap().remove(&n) {
                        kept.lock().unwrap().push((at, at.elapsed()));
                    }
                }
            }
        });
        Self { samples, flows }
    }

    /// The slowest round trip in each second since `start`.
    fn report(&self, start: Option<Instant>) {
        let Some(start) = start else { return };
        let mut worst = [0u128; 40];
        for (at, took) in self.samples.lock().unwrap().iter() {
            if let Some(w) = at
                .checked_duration_since(start)
                .and_then(|d| worst.get_mut(d.as_secs() as usize))
            {
                *w = (*w).max(took.as_millis());
            }
        }
        println!("  broker round trip, slowest per second (ms): {worst:?}");
        // Records written to each frontier topic in each second, and how many its reader had
        // not committed at the second's end.
        let flows = self.flows.lock().unwrap();
        for (i, (topic, _)) in FLOWS.iter().enumerate() {
            let mut written = [0i64; 40];
            let mut behind = [0i64; 40];
            let mut last_high = None;
            for (at, row) in flows.iter() {
                let Some(second) = at
                    .checked_duration_since(start)
                    .map(|d| d.as_secs() as usize)
                else {
                    last_high = Some(row[i].0);
                    continue;
                };
                if second >= 40 {
                    break;
                }
                written[second] += row[i].0 - last_high.unwrap_or(row[i].0);
                behind[second] = row[i].0 - row[i].1;
                last_high = Some(row[i].0);
            }
            println!("  {topic}: written per second {written:?}");
            println!("  {topic}: not yet committed {behind:?}");
        }
    }
}

async fn wait_complete(fixture: &Fixture, normal: &[String], limit: Duration) {
    let deadline = Instant::now() + limit;
    while fixture.complete(normal) < normal.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Scrapy, through the fixture as its HTTP proxy.

async fn scrapy(
    fixture: &Fixture,
    web: SocketAddr,
    normal: &[String],
    slow: &[String],
    limit: Duration,
) {
    let dir = tempfile::tempdir().unwrap();
    let seeds = dir.path().join("seeds.txt");
    let urls: Vec<String> = slow
        .iter()
        .chain(normal)
        .map(|h| format!("http://{h}/"))
        .collect();
    std::fs::write(&seeds, urls.join("\n")).unwrap();
    let spider = support::manifest_dir().join("benches/scrapy_broad.py");
    let mut child = Command::new("python3")
        .args(["-m", "scrapy", "runspider"])
        .arg(&spider)
        .arg("-a")
        .arg(format!("seeds={}", seeds.display()))
        .env("http_proxy", format!("http://{web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with scrapy (benches/run.sh installs it)");
    wait_complete(fixture, normal, limit).await;
    let rss = support::peak_rss_kib(child.id());
    // Scrapy's own shutdown would wait for its whole queue.
    stop(&mut child, "-KILL");
    fixture.report(
        "scrapy (ROBOTSTXT_OBEY, DOWNLOAD_DELAY 1, 2 per domain)",
        normal,
        slow,
        &[("scrapy", rss)],
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("broad: bench");
        return;
    }
    let domains = setting("SLUICE_BENCH_DOMAINS", 1000) as usize;
    let slow_count = setting("SLUICE_BENCH_SLOW", 10) as usize;
    let limit = Duration::from_secs(setting("SLUICE_BENCH_LIMIT", 240));
    let normal: Vec<String> = (0..domains).map(|i| format!("n{i}.test")).collect();
    let slow: Vec<String> = (0..slow_count).map(|i| format!("slow{i}.test")).collect();
    let (fixture, web) = Fixture::start().await;
    println!(
        "broad crawl: {domains} domains × {PAGES} pages at {}s, {slow_count} slow domains (Crawl-delay {SLOW_DELAY}, {SLOW_LINKS} links); server {web}",
        DELAY.as_secs()
    );
    sluice(&fixture, web, &normal, &slow, limit).await;
    if setting("SLUICE_BENCH_SCRAPY", 1) == 1 {
        fixture.reset();
        scrapy(&fixture, web, &normal, &slow, limit).await;
    }
}
