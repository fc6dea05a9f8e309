//! The crawl stage on the real broker, memcached and etcd, as separate processes:
//!
//! - a real documentation site nobody here wrote (Debian's python3.11-doc, served by nginx on
//!   127.0.0.1) crawled from its index through url-in → normalize → crawl with link discovery:
//!   every page reachable by `<a href>` links fetched exactly once, compared with a link walk
//!   over the site's files that shares no code with the crawler;
//! - politeness measured at the server: three crawl processes share a feed in which every
//!   domain's URLs are spread over all partitions, per-domain limit 2; the server never sees
//!   more than 2 concurrent requests per domain nor a request for a disallowed path, and when
//!   one crawler is killed with SIGKILL mid-crawl its slots come back after the lease TTL and
//!   no URL is lost.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use common::pipeline::{crawl_stages, create_topics, Head, RESTARTABLE};
use common::web::{grid_urls, FixtureWeb};
use common::{kafka_bus, read_all, unique, wait_idle, write_pipeline, StageProcess};
use sluice_bus::OutRecord;
use sluice_topics::{Contract, CrawlUrl, Page};

/// One scenario at a time: each runs several stage processes against the one test broker.
static KAFKA: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The pages a browser could reach from `index.html` by following `<a href>` links within the
/// site, found by walking the files. Deliberately naive and independent of the crawler (a
/// regular expression, not an HTML parser). Keys are URL paths; values: whether it is a file.
fn reachable(root: &Path, base: &url::Url) -> HashMap<String, bool> {
    let anchor = regex::Regex::new(r#"(?is)<a\s[^>]*?href\s*=\s*["']([^"']*)["']"#).unwrap();
    let mut seen: HashMap<String, bool> = HashMap::new();
    let start = base.join("index.html").unwrap();
    let mut queue = VecDeque::from([start.clone()]);
    seen.insert(start.path().to_string(), true);
    while let Some(page) = queue.pop_front() {
        let rel = page.path().trim_start_matches('/');
        let file = root.join(percent_decode(rel));
        let Ok(html) = std::fs::read(&file) else {
            continue;
        };
        if !rel.ends_with(".html") && !rel.ends_with('/') {
            continue;
        }
        let html = String::from_utf8_lossy(&html);
        for cap in anchor.captures_iter(&html) {
            let href = cap[1].replace("&amp;", "&");
            let Ok(mut target) = page.join(href.trim()) else {
                continue;
            };
            if target.host_str() != base.host_str() || target.port() != base.port() {
                continue;
            }
            target.set_fragment(None);
            if target.query().is_some() {
                continue; // none in this site's links; keep the walk simple
            }
            let path = target.path().to_string();
            if seen.contains_key(&path) {
                continue;
            }
            let exists = root
                .join(percent_decode(path.trim_start_matches('/')))
                .is_file();
            seen.insert(path, exists);
            if exists && target.path().ends_with(".html") {
                queue.push_back(target);
            }
        }
    }
    seen
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_doc_site_is_crawled_completely_and_each_page_once() {
    let _one = KAFKA.lock().await;
    let site = std::env::var("SLUICE_TEST_DOCSITE").expect("SLUICE_TEST_DOCSITE: run tests/run.sh");
    let root = std::env::var("SLUICE_TEST_DOCSITE_ROOT").unwrap();
    let base: url::Url = site.parse().unwrap();
    let id = unique("docs");
    let dir = tempfile::tempdir().unwrap();
    let yaml = Head::new(&id)
        .broker_options(RESTARTABLE)
        .memcached()
        .etcd()
        .topic("url-in", "partitions: 4")
        .topic("urls", "partitions: 4")
        .topic("pages", "partitions: 4")
        .stages(&crawl_stages(&id, &format!("-{id}")));
    let file = write_pipeline(dir.path(), &yaml);
    create_topics(&file);
    let bus = kafka_bus();
    let _normalize =
        StageProcess::spawn(&file, &format!("normalize-{id}"), &dir.path().join("n.log"));
    let mut crawl = StageProcess::spawn(&file, &format!("crawl-{id}"), &dir.path().join("c.log"));
    let seed = base.join("index.html").unwrap();
    bus.producer()
        .unwrap()
        .send(OutRecord::new(
            format!("url-in-{id}"),
            seed.as_str().as_bytes().to_vec(),
        ))
        .await
        .unwrap();
    let url_in = format!("url-in-{id}");
    let urls = format!("urls-{id}");
    wait_idle(
        &bus,
        &[
            (&format!("normalize-{id}"), &url_in),
            (&format!("crawl-{id}"), &urls),
        ],
        Duration::from_secs(600),
    )
    .await;
    assert!(crawl.terminate().success());

    let records = read_all(&bus, &format!("pages-{id}"), Duration::from_secs(60)).await;
    // A page's new links come as one message per domain.
    let taken: usize = read_all(&bus, &urls, Duration::from_secs(60))
        .await
        .iter()
        .map(|r| CrawlUrl::decode_all(&r.value).unwrap().len())
        .sum();
    assert_eq!(records.len(), taken, "one page record per URL taken in");
    let mut pages: HashMap<String, Page> = HashMap::new();
    for r in &records {
        let p = Page::decode(&r.value).unwrap();
        let url = p.url.clone();
        assert!(
            pages.insert(url.clone(), p).is_none(),
            "{url} fetched twice"
        );
    }
    let expected = reachable(Path::new(&root), &base);
    let fetched_ok: HashSet<String> = pages
        .values()
        .filter(|p| p.status == Some(200))
        .map(|p| url::Url::parse(&p.url).unwrap().path().to_string())
        .collect();
    let want: HashSet<String> = expected
        .iter()
        .filter(|(_, exists)| **exists)
        .map(|(p, _)| p.clone())
        .collect();
    let missing: Vec<_> = want.difference(&fetched_ok).take(10).collect();
    assert!(
        missing.is_empty(),
        "{} reachable pages not fetched, e.g. {missing:?}",
        want.difference(&fetched_ok).count()
    );
    // Every fetched page is one the walk found too (the crawler follows nothing else).
    let unexpected: Vec<_> = pages
        .values()
        .map(|p| url::Url::parse(&p.url).unwrap().path().to_string())
        .filter(|p| !expected.contains_key(p))
        .take(10)
        .collect();
    assert!(
        unexpected.is_empty(),
        "crawled pages the walk did not reach: {unexpected:?}"
    );
    assert!(
        want.len() > 400,
        "the site has {} reachable pages",
        want.len()
    );
    let html_pages = pages
        .values()
        .filter(|p| p.content_type.as_deref() == Some("text/html"))
        .count();
    for p in pages
        .values()
        .filter(|p| p.content_type.as_deref() == Some("text/html"))
    {
        assert!(
            p.body.as_ref().is_some_and(|b| !b.is_empty()),
            "{} has no body",
            p.url
        );
        assert_eq!(p.charset.as_deref(), Some("UTF-8"), "{}", p.url);
    }
    eprintln!(
        "doc site: {} URLs, {} HTML pages, {} reachable files",
        pages.len(),
        html_pages,
        want.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_crawlers_respect_the_domain_limit_and_survive_a_kill() {
    let _one = KAFKA.lock().await;
    let web = FixtureWeb::start().await;
    web.set_grid_delay(Duration::from_millis(250));
    let id = unique("polite");
    let hosts: Vec<String> = (0..6)
        .flat_map(|d| [format!("a.grid{d}.test"), format!("b.grid{d}.test")])
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let stage = format!("crawl-{id}");
    let yaml = Head::new(&id)
        .broker_options(RESTARTABLE)
        .memcached()
        .etcd()
        .topic("urls", "partitions: 6, type: crawl-url")
        .topic("pages", "partitions: 3")
        .stages(&format!(
            r#"  {stage}:
    kind: crawl
    input: urls-{id}
    output: pages-{id}
    key_prefix: "{id}:"
    allow_private_addresses: true
    per_domain_concurrency: 2
    min_delay: 0s
    slot_lease_ttl: 3s
    resolve:
{resolve}"#,
            resolve = web.resolve_yaml(&hosts, 6),
        ));
    let file = write_pipeline(dir.path(), &yaml);
    create_topics(&file);
    let bus = kafka_bus();
    // Every domain's URLs on every partition, so all three crawlers work on every domain at
    // once and only the etcd slots keep them to the limit.
    let mut feed: Vec<CrawlUrl> = Vec::new();
    for h in &hosts {
        let domain = h.split_once('.').unwrap().1.to_string();
        let mut urls = grid_urls(h);
        urls.push(format!("http://{h}/private/p1.html"));
        for u in urls {
            feed.push(CrawlUrl {
                url: u,
                domain: domain.clone(),
                depth: 0,
                source: None,
                queued_at_ms: 0,
                validators: None,
                sitemap: false,
                deferred: false,
            });
        }
    }
    let producer = bus.producer().unwrap();
    for (i, c) in feed.iter().enumerate() {
        let mut r = OutRecord::new(format!("urls-{id}"), c.encode());
        r.partition = Some((i % 6) as i32);
        producer.send(r).await.unwrap();
    }
    let log = |n: &str| dir.path().join(format!("{n}.log"));
    let mut a = StageProcess::spawn_as(&file, &stage, &log("a"), "a");
    let _b = StageProcess::spawn_as(&file, &stage, &log("b"), "b");
    let _c = StageProcess::spawn_as(&file, &stage, &log("c"), "c");

    // Kill one crawler once the crawl is well under way, and restart it.
    let pages_topic = format!("pages-{id}");
    let started = Instant::now();
    loop {
        let served = web
            .hits()
            .iter()
            .filter(|h| h.path != "/robots.txt")
            .count();
        if served >= feed.len() / 4 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "crawl did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.kill9();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _a2 = StageProcess::spawn_as(&file, &stage, &log("a2"), "a");

    wait_idle(
        &bus,
        &[(&stage, &format!("urls-{id}"))],
        Duration::from_secs(300),
    )
    .await;
    let records = read_all(&bus, &pages_topic, Duration::from_secs(60)).await;
    let pages: Vec<Page> = records
        .iter()
        .map(|r| Page::decode(&r.value).unwrap())
        .collect();
    let got: HashSet<&str> = pages.iter().map(|p| p.url.as_str()).collect();
    let lost: Vec<_> = feed
        .iter()
        .filter(|c| !got.contains(c.url.as_str()))
        .collect();
    assert!(lost.is_empty(), "URLs without a page record: {lost:?}");

    // At the server: never more than 2 at once per domain, and the limit was reached.
    let peaks = web.peaks();
    for d in 0..6 {
        let domain = format!("grid{d}.test");
        assert_eq!(
            peaks.get(&domain),
            Some(&2),
            "peak concurrency of {domain}: {peaks:?}"
        );
    }
    let hits = web.hits();
    assert!(
        hits.iter().all(|h| !h.path.starts_with("/private/")),
        "a disallowed path was fetched"
    );
    for p in pages.iter().filter(|p| p.url.contains("/private/")) {
        assert_eq!(
            p.error.as_ref().map(|e| e.code.as_str()),
            Some("robots_disallowed")
        );
    }
    for p in pages.iter().filter(|p| !p.url.contains("/private/")) {
        assert_eq!(p.status, Some(200), "{p:?}");
    }
    eprintln!(
        "politeness: {} pages ({} records) in {:?}; killed after {:?}",
        got.len(),
        pages.len(),
        started.elapsed(),
        killed_at - started
    );

    // Every slot is given back (the killed crawler's by lease expiry).
    let mut etcd = etcd_client::Client::connect([common::servers().etcd], None)
        .await
        .unwrap();
    let prefix = format!("/sluice/{id}/slots/");
    let held = etcd
        .get(
            prefix.as_str(),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .unwrap()
        .count();
    assert_eq!(held, 0, "slots left in etcd");
}
