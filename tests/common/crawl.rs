//! Crawls against the fixture web server, on the embedded bus or on the test servers (tansu,
//! memcached, etcd): the stage kinds they need, the frontier pipeline (normalize → crawl ⇄
//! delay), and a run until every group is idle.

use std::collections::HashMap;
use std::time::Duration;

use sluice_bus::OutRecord;
use sluice_runtime::registry::Registry;
use sluice_topics::{Contract, CrawlUrl, Page};

/// normalize-dedup, crawl and delay.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(sluice_stage_normalize::Kind);
    r.register(sluice_stage_crawl::Kind);
    r.register(sluice_stage_delay::Kind);
    r
}

/// A pipeline named `name` with the crawl frontier wired (crawl defers to `deferred`, a delay
/// stage passes back to `urls`): `crawl` holds crawl's settings beyond its topics, each line
/// indented by four spaces; `resolve` its `resolve:` entries, indented by six (crawl settings
/// may follow them, indented by four).
pub fn frontier_pipeline(name: &str, crawl: &str, resolve: &str) -> String {
    pipeline(name, crawl, resolve, true)
}

/// [`frontier_pipeline`], or without the frontier (no `deferred` topic, no delay stage).
pub fn pipeline(name: &str, crawl: &str, resolve: &str, frontier: bool) -> String {
    let (deferred_topic, deferred_port, delay) = if frontier {
        (
            "  deferred: { partitions: 2 }\n",
            "    deferred: deferred\n",
            "  delay:\n    kind: delay\n    input: deferred\n    output: urls\n    feedback: [urls]\n",
        )
    } else {
        ("", "", "")
    };
    format!(
        r#"name: {name}
broker: memory
topics:
  url-in: {{ partitions: 4 }}
  urls: {{ partitions: 4 }}
{deferred_topic}  pages: {{ partitions: 4 }}
  dead-letter: {{ partitions: 1 }}
dead_letter: dead-letter
stages:
  normalize:
    kind: normalize-dedup
    input: url-in
    output: urls
  crawl:
    kind: crawl
    input: urls
    output: pages
    discovered: url-in
{deferred_port}    feedback: [url-in]
    allow_private_addresses: true
{crawl}    resolve:
{resolve}{delay}"#
    )
}

/// [`frontier_pipeline`] on the test servers: tansu, memcached and etcd, with topics (and the
/// recrawl clock's keys) named after `id`.
pub fn real_frontier_pipeline(id: &str, crawl: &str, resolve: &str) -> String {
    let stages = format!(
        r#"  normalize:
    kind: normalize-dedup
    input: url-in-{id}
    output: urls-{id}
    key_prefix: "{id}:"
  crawl:
    kind: crawl
    input: urls-{id}
    output: pages-{id}
    discovered: url-in-{id}
    deferred: deferred-{id}
    feedback: [url-in-{id}]
    allow_private_addresses: true
{crawl}    resolve:
{resolve}  delay:
    kind: delay
    input: deferred-{id}
    output: urls-{id}
    feedback: [urls-{id}]
"#
    );
    super::pipeline::Head::new(id)
        .memcached()
        .etcd()
        .topic("url-in", "partitions: 4")
        .topic("urls", "partitions: 4")
        .topic("deferred", "partitions: 2")
        .topic("pages", "partitions: 4")
        .stages(&stages)
}

/// Starts `p`: on the embedded bus with in-memory services for `broker: memory`, else on the
/// broker and services it names, its topics created first.
async fn start(p: sluice_config::Pipeline) -> sluice_runtime::runner::Running {
    use sluice_runtime::connect;
    if p.broker.value == sluice_config::Broker::Memory {
        return super::start_embedded(p, &registry(), None).await;
    }
    let p = std::sync::Arc::new(p);
    let bus = connect::bus(&p).expect("the pipeline's broker");
    bus.create_topics(&connect::topic_specs(&p))
        .await
        .expect("create topics");
    let services = sluice_runtime::services::Services::from_pipeline(&p)
        .await
        .expect("the pipeline's services");
    let options = sluice_runtime::runner::RunOptions {
        stages: vec![],
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    sluice_runtime::runner::start_on(bus, services, p, &registry(), options, shutdown)
        .await
        .expect("stages start")
}

/// The topic of stage `stage`'s input, or of its output port `port`.
fn topic_of(p: &sluice_config::Pipeline, stage: &str, port: Option<&str>) -> String {
    let s = &p.stages[stage];
    let t = match port {
        None => s.input.as_ref().expect("the stage has an input"),
        Some(port) => &s.outputs[port],
    };
    t.value.clone()
}

/// Runs `yaml` from `seeds` (sent to normalize's input) until every group has been idle for
/// 2 s, or fails after `limit`. Returns the page records by URL, checking that each URL has
/// one and that pages are keyed by domain, and every record crawl took in from its input.
pub async fn crawl_until_idle(
    yaml: &str,
    seeds: &[&str],
    limit: Duration,
) -> (HashMap<String, Page>, Vec<CrawlUrl>) {
    let crawled = crawl_until_idle_deferring(yaml, seeds, limit).await;
    (crawled.pages, crawled.urls)
}

/// What [`crawl_until_idle_deferring`] saw.
pub struct Crawled {
    /// Page records by URL.
    pub pages: HashMap<String, Page>,
    /// The URLs on crawl's input, bundles unpacked.
    pub urls: Vec<CrawlUrl>,
    /// The URLs of each record on the `deferred` topic, if crawl has one.
    pub deferred: Vec<Vec<CrawlUrl>>,
}

/// [`crawl_until_idle`], also reading what crawl deferred.
pub async fn crawl_until_idle_deferring(yaml: &str, seeds: &[&str], limit: Duration) -> Crawled {
    let (p, _) =
        sluice_config::load_str_validated(yaml, "fixture.yaml", &[], &|_| None, &registry())
            .unwrap_or_else(|d| panic!("{d}"));
    let url_in = topic_of(&p, "normalize", None);
    let urls_topic = topic_of(&p, "crawl", None);
    let pages_topic = topic_of(&p, "crawl", Some("output"));
    let deferred_topic = p.stages["crawl"]
        .outputs
        .contains_key("deferred")
        .then(|| topic_of(&p, "crawl", Some("deferred")));
    let running = start(p).await;
    let (bus, token) = (running.bus.clone(), running.shutdown.clone());
    let producer = bus.producer().unwrap();
    for s in seeds {
        producer
            .send(OutRecord::new(&url_in, s.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    // Idle = every group caught up, for long enough that retries (≤ a few s) are over.
    let tick = Duration::from_millis(100);
    let mut idle_for = 0;
    for _ in 0..(limit.as_millis() / tick.as_millis()) {
        tokio::time::sleep(tick).await;
        if running.is_idle().await.unwrap() {
            idle_for += 1;
            if idle_for >= 20 {
                break;
            }
        } else {
            idle_for = 0;
        }
    }
    assert!(idle_for >= 20, "the crawl did not finish within {limit:?}");
    let pages = super::read_all(&bus, &pages_topic, Duration::from_secs(5)).await;
    let urls = super::read_all(&bus, &urls_topic, Duration::from_secs(5)).await;
    let mut deferred = Vec::new();
    if let Some(topic) = deferred_topic {
        for r in super::read_all(&bus, &topic, Duration::from_secs(5)).await {
            let value = sluice_runtime::deferral::passed_on(&r, &topic).value;
            deferred.push(CrawlUrl::decode_all(&value).unwrap());
        }
    }
    token.cancel();
    running.wait().await.unwrap();
    let mut by_url = HashMap::new();
    for r in &pages {
        let page = Page::decode(&r.value).unwrap();
        assert_eq!(
            r.key.as_deref(),
            Some(page.domain.as_bytes()),
            "pages are keyed by domain"
        );
        assert!(
            by_url.insert(page.url.clone(), page).is_none(),
            "a URL was crawled twice"
        );
    }
    let urls = urls
        .iter()
        .flat_map(|r| CrawlUrl::decode_all(&r.value).unwrap())
        .collect();
    Crawled {
        pages: by_url,
        urls,
        deferred,
    }
}
