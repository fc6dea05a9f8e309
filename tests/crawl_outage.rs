//! etcd down: the crawl stage fetches nothing (never without a domain slot), reports
//! not-ready on /readyz and loses nothing; once etcd is up, every URL is fetched. The etcd is
//! a real one, started by the test on a port of its own.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::web::FixtureWeb;
use sluice_bus::{Bus, OutRecord};
use sluice_runtime::registry::Registry;
use sluice_runtime::services::{EtcdSlots, MemoryCache, Services, Slots};
use sluice_topics::{Contract, CrawlUrl};

struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_etcd(port: u16, dir: &std::path::Path) -> Etcd {
    let peer = common::free_port();
    let child = Command::new("etcd")
        .args(["--name", "outage", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{port}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{port}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("outage=http://127.0.0.1:{peer}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd on PATH (tests/run.sh installs it)");
    Etcd(child)
}

async fn readyz(base: &str) -> (u16, String) {
    match reqwest::get(format!("{base}/readyz")).await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

async fn count(bus: &Arc<dyn Bus>, topic: &str) -> usize {
    common::read_topic(bus, topic, Duration::from_millis(300), |_| false)
        .await
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_stops_fetching_and_loses_nothing() {
    let web = FixtureWeb::start().await;
    let etcd_port = common::free_port();
    let yaml = format!(
        r#"name: crawl-outage
broker: memory
dead_letter: dead-letter
topics:
  urls: {{ partitions: 2, type: crawl-url }}
  pages: {{ partitions: 2 }}
  dead-letter: {{ partitions: 1 }}
stages:
  crawl:
    kind: crawl
    input: urls
    output: pages
    allow_private_addresses: true
    min_delay: 0s
    retry: {{ attempts: 2, backoff: 100ms, max_backoff: 1s }}
    resolve:
{}"#,
        web.resolve_yaml(&["edge.test".into()], 6)
    );
    let mut registry = Registry::new();
    registry.register(sluice_stage_crawl::Kind);
    let (p, _) = sluice_config::load_str_validated(&yaml, "outage.yaml", &[], &|_| None, &registry)
        .unwrap_or_else(|d| panic!("{d}"));
    let services = Services::with(
        &p,
        Arc::new(MemoryCache::new()),
        Slots::new(Arc::new(
            EtcdSlots::connect(&[format!("http://127.0.0.1:{etcd_port}")], "/outage")
                .await
                .unwrap(),
        )),
    );
    let running = common::start_embedded(p, &registry, Some(services)).await;
    let (bus, token) = (running.bus.clone(), running.shutdown.clone());
    let base = format!("http://{}", running.metrics_addr);
    let producer = bus.producer().unwrap();
    let paths = [
        "/rel.html",
        "/abs.html",
        "/proto.html",
        "/up.html",
        "/final.html",
    ];
    for path in paths {
        let c = CrawlUrl {
            url: format!("http://edge.test{path}"),
            domain: "edge.test".into(),
            depth: 0,
            source: None,
            queued_at_ms: 0,
            validators: None,
            sitemap: false,
            deferred: false,
        };
        producer
            .send(OutRecord::new("urls", c.encode()).with_key(b"edge.test".to_vec()))
            .await
            .unwrap();
    }

    // etcd down: not ready, nothing fetched, nothing recorded or dead-lettered.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = readyz(&base).await;
        if status == 503 && body.contains("etcd") {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        web.hits().is_empty(),
        "fetched without a slot: {:?}",
        web.hits()
    );
    assert_eq!(count(&bus, "pages").await, 0);
    assert_eq!(count(&bus, "dead-letter").await, 0);

    // etcd back: every URL fetched and recorded, ready again.
    let dir = tempfile::tempdir().unwrap();
    let _etcd = start_etcd(etcd_port, dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&bus, "pages").await < paths.len() {
        assert!(
            Instant::now() < deadline,
            "pages not recorded after etcd came back"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = readyz(&base).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fetched: Vec<_> = web.hits().into_iter().map(|h| h.path).collect();
    for path in paths {
        assert!(
            fetched.iter().any(|p| p == path),
            "{path} not fetched: {fetched:?}"
        );
    }
    assert_eq!(count(&bus, "dead-letter").await, 0);
    token.cancel();
    running.wait().await.unwrap();
}
