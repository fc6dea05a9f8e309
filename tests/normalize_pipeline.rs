//! normalize/dedup end to end: 10,000 URLs (30% duplicates after normalization, 5% malformed)
//! through two normalize instances in one consumer group, on the real broker and memcached,
//! and on the embedded bus — each also with one instance killed mid-run.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::dataset::{dataset, Dataset};
use common::{read_all, read_topic, servers, unique, wait_caught_up, write_pipeline, StageProcess};
use sluice_bus::kafka::KafkaBus;
use sluice_bus::{Bus, OutRecord, Record};
use sluice_topics::{Contract, CrawlUrl};

struct Names {
    stage: String,
    url_in: String,
    urls: String,
    dlq: String,
}

fn names() -> Names {
    let id = unique("n");
    Names {
        stage: format!("normalize-{id}"),
        url_in: format!("url-in-{id}"),
        urls: format!("urls-{id}"),
        dlq: format!("dlq-{id}"),
    }
}

fn pipeline_yaml(n: &Names, broker: &str, memcached: &str) -> String {
    format!(
        r#"name: normalize-test
broker: {broker}
broker_options:
  # A killed member's partitions move after this, instead of librdkafka's 45 s default.
  session.timeout.ms: 10000
  # Also the rebalance timeout: how long a rebalance waits for a member that died in it.
  max.poll.interval.ms: 20000
  # Static membership: a restarted process replaces its dead self at once.
  group.instance.id: ${{SLUICE_TEST_INSTANCE:-none}}
  heartbeat.interval.ms: 1000
services:
  memcached: {memcached}
dead_letter: {dlq}
topics:
  {url_in}: {{ partitions: 4 }}
  {urls}: {{ partitions: 4 }}
  {dlq}: {{ partitions: 1 }}
stages:
  {stage}:
    kind: normalize-dedup
    input: {url_in}
    output: {urls}
    key_prefix: "{stage}:"
    recrawl_after: 1h
    # Below the default: the tests share one single-threaded sqlite broker and two cores.
    concurrency: 256
"#,
        dlq = n.dlq,
        url_in = n.url_in,
        urls = n.urls,
        stage = n.stage,
    )
}

async fn produce_all(bus: &Arc<dyn Bus>, topic: &str, inputs: &[String]) {
    let p = bus.producer().unwrap();
    let sends: Vec<_> = inputs
        .iter()
        .map(|u| p.send(OutRecord::new(topic, u.as_bytes().to_vec())))
        .collect();
    for r in futures::future::join_all(sends).await {
        r.expect("produce");
    }
}

/// The urls topic holds every unique normalized URL — exactly once when `exactly_once`, at
/// least once otherwise — keyed by registrable domain; the dead-letter topic holds every
/// malformed input with its reason.
async fn check_outputs(bus: &Arc<dyn Bus>, n: &Names, data: &Dataset, exactly_once: bool) {
    let want = data.unique.len();
    let urls = read_all(bus, &n.urls, Duration::from_secs(60)).await;
    let decoded: Vec<CrawlUrl> = urls
        .iter()
        .map(|r| CrawlUrl::decode(&r.value).expect("urls holds CrawlUrl JSON"))
        .collect();
    let got: HashSet<String> = decoded.iter().map(|u| u.url.clone()).collect();
    let missing: Vec<_> = data.unique.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&data.unique).take(5).collect();
    assert!(missing.is_empty(), "lost URLs (first 5): {missing:?}");
    assert!(extra.is_empty(), "unexpected URLs (first 5): {extra:?}");
    if exactly_once {
        assert_eq!(urls.len(), want, "every unique URL exactly once");
    } else {
        eprintln!(
            "after the crash: {} records for {want} unique URLs ({} replayed duplicates)",
            urls.len(),
            urls.len() - want
        );
    }
    for (r, u) in urls.iter().zip(&decoded) {
        assert_eq!(
            r.key.as_deref(),
            Some(u.domain.as_bytes()),
            "keyed by registrable domain"
        );
        assert!(u.url.contains(&u.domain));
    }
    let dlq: Vec<Record> = read_all(bus, &n.dlq, Duration::from_secs(60)).await;
    let sources: HashSet<(Vec<u8>, Vec<u8>)> = dlq
        .iter()
        .map(|r| {
            let h = |k| r.header(k).unwrap_or_default().to_vec();
            (h("sluice.source.partition"), h("sluice.source.offset"))
        })
        .collect();
    assert_eq!(
        sources.len(),
        data.malformed,
        "every malformed input dead-lettered"
    );
    if exactly_once {
        assert_eq!(dlq.len(), data.malformed, "each once");
    }
    for r in &dlq {
        for h in [
            "sluice.stage",
            "sluice.error",
            "sluice.error_code",
            "sluice.attempts",
            "sluice.source.topic",
            "sluice.source.partition",
            "sluice.source.offset",
        ] {
            assert!(r.header(h).is_some(), "dead letter lacks header {h}");
        }
        assert_eq!(r.header("sluice.stage"), Some(n.stage.as_bytes()));
        assert_eq!(r.header("sluice.source.topic"), Some(n.url_in.as_bytes()));
        let code = std::str::from_utf8(r.header("sluice.error_code").unwrap()).unwrap();
        assert!(
            ["unparsable", "unsupported_scheme", "no_host", "too_long"].contains(&code),
            "unexpected code {code}"
        );
    }
}

fn kafka_bus() -> Arc<dyn Bus> {
    Arc::new(KafkaBus::new(&servers().broker, Default::default()))
}

/// One Kafka scenario at a time: each runs two stage processes against the one test broker.
static KAFKA: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn kafka_scenario(kill_midway: bool) {
    let _one_at_a_time = KAFKA.lock().await;
    let s = servers();
    let n = names();
    let dir = tempfile::tempdir().unwrap();
    let file = write_pipeline(dir.path(), &pipeline_yaml(&n, &s.broker, &s.memcached));
    let status = common::sluice()
        .args(["topics", "create", "-f"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "sluice topics create failed on:\n{}",
        std::fs::read_to_string(&file).unwrap()
    );
    let bus = kafka_bus();
    let data = dataset(10_000, if kill_midway { 7 } else { 3 });

    let mut a = StageProcess::spawn_as(&file, &n.stage, &dir.path().join("a.log"), "a");
    let mut b = StageProcess::spawn_as(&file, &n.stage, &dir.path().join("b.log"), "b");
    if kill_midway {
        // Kill one member while output is flowing, feed more while it is dead, restart it.
        let (first, second) = data.inputs.split_at(data.inputs.len() / 2);
        produce_all(&bus, &n.url_in, first).await;
        let some = data.unique.len() / 6;
        read_topic(&bus, &n.urls, Duration::from_secs(60), |r| r.len() >= some).await;
        a.kill9();
        produce_all(&bus, &n.url_in, second).await;
        // The restarted member takes the dead one's place (same group.instance.id, as a
        // Kubernetes StatefulSet pod would) and resumes from its last commit.
        a = StageProcess::spawn_as(&file, &n.stage, &dir.path().join("a2.log"), "a");
    } else {
        produce_all(&bus, &n.url_in, &data.inputs).await;
    }
    wait_caught_up(&bus, &n.stage, &n.url_in, Duration::from_secs(180)).await;
    check_outputs(&bus, &n, &data, !kill_midway).await;
    assert!(a.terminate().success(), "clean exit on SIGTERM");
    assert!(b.terminate().success(), "clean exit on SIGTERM");
    let log = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_two_replicas_pass_each_url_once_and_dead_letter_the_malformed() {
    kafka_scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_replica_killed_mid_run_loses_nothing() {
    kafka_scenario(true).await;
}

mod embedded {
    use super::*;
    use sluice_runtime::registry::Registry;
    use sluice_runtime::runner::{start_on, RunOptions};
    use sluice_runtime::services::Services;
    use tokio_util::sync::CancellationToken;

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register(sluice_stage_normalize::Kind);
        r
    }

    async fn scenario(kill_midway: bool) {
        let n = names();
        let (p, _) = sluice_config::load_str_validated(
            &pipeline_yaml(&n, "memory", "memory"),
            "embedded.yaml",
            &[],
            &|_| None,
            &registry(),
        )
        .expect("valid pipeline");
        let p = Arc::new(p);
        let bus: Arc<dyn Bus> = Arc::new(sluice_bus::memory::MemoryBus::new());
        // Both instances share the process's in-memory cache, as stages of one process do.
        let services = Services::in_memory(&p);
        let opts = RunOptions {
            stages: vec![n.stage.clone()],
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
        };
        let reg = registry();
        let start = |token: CancellationToken| {
            start_on(
                bus.clone(),
                services.clone(),
                p.clone(),
                &reg,
                opts.clone(),
                token,
            )
        };
        let (ta, tb) = (CancellationToken::new(), CancellationToken::new());
        let mut a = start(ta.clone()).await.unwrap();
        let b = start(tb.clone()).await.unwrap();
        let data = dataset(10_000, if kill_midway { 11 } else { 5 });
        if kill_midway {
            let (first, second) = data.inputs.split_at(data.inputs.len() / 2);
            produce_all(&bus, &n.url_in, first).await;
            let some = data.unique.len() / 6;
            read_topic(&bus, &n.urls, Duration::from_secs(60), |r| r.len() >= some).await;
            a.abort();
            produce_all(&bus, &n.url_in, second).await;
            a = start(CancellationToken::new()).await.unwrap();
        } else {
            produce_all(&bus, &n.url_in, &data.inputs).await;
        }
        wait_caught_up(&bus, &n.stage, &n.url_in, Duration::from_secs(120)).await;
        check_outputs(&bus, &n, &data, !kill_midway).await;
        a.shutdown.cancel();
        tb.cancel();
        a.wait().await.unwrap();
        b.wait().await.unwrap();
    }

    /// The links the crawler found on a page come as one url-in message: the new ones go on
    /// as one crawl-url message per domain, duplicates and unusable links left out, nothing
    /// dead-lettered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pages_links_go_on_as_one_record_per_domain() {
        let n = names();
        let (p, _) = sluice_config::load_str_validated(
            &pipeline_yaml(&n, "memory", "memory"),
            "embedded.yaml",
            &[],
            &|_| None,
            &registry(),
        )
        .expect("valid pipeline");
        let p = Arc::new(p);
        let bus: Arc<dyn Bus> = Arc::new(sluice_bus::memory::MemoryBus::new());
        let token = CancellationToken::new();
        let running = start_on(
            bus.clone(),
            Services::in_memory(&p),
            p.clone(),
            &registry(),
            RunOptions {
                stages: vec![n.stage.clone()],
                metrics_addr: "127.0.0.1:0".parse().unwrap(),
            },
            token.clone(),
        )
        .await
        .unwrap();
        // Seen before, alone: a duplicate when the page links to it.
        produce_all(&bus, &n.url_in, &["http://a.test/seen".to_string()]).await;
        read_topic(&bus, &n.urls, Duration::from_secs(30), |r| !r.is_empty()).await;
        let link = |url: &str| sluice_topics::UrlIn {
            url: url.into(),
            depth: 2,
            source: Some("http://a.test/".into()),
            sitemap: false,
        };
        let links: Vec<_> = [
            "http://a.test/1",
            "http://b.test/x",
            "HTTP://A.TEST/1",
            "http://a.test/2?utm_source=feed",
            "http://a.test/seen",
            "ftp://a.test/file",
            "http://www.b.test/y",
            "http://a.test/3#part",
        ]
        .map(link)
        .to_vec();
        bus.producer()
            .unwrap()
            .send(OutRecord::new(
                &n.url_in,
                sluice_topics::UrlIn::encode_all(&links),
            ))
            .await
            .unwrap();
        wait_caught_up(&bus, &n.stage, &n.url_in, Duration::from_secs(30)).await;
        let urls = read_all(&bus, &n.urls, Duration::from_secs(10)).await;
        let by_key: Vec<(String, Vec<String>)> = urls
            .iter()
            // The one passed on alone before.
            .filter(|r| CrawlUrl::decode_all(&r.value).unwrap()[0].depth == 2)
            .map(|r| {
                let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
                let urls = CrawlUrl::decode_all(&r.value)
                    .unwrap()
                    .into_iter()
                    .map(|u| {
                        assert_eq!((u.depth, u.domain.as_str()), (2, key.as_str()));
                        u.url
                    })
                    .collect();
                (key, urls)
            })
            .collect();
        let mut by_key = by_key;
        by_key.sort();
        assert_eq!(
            by_key,
            vec![
                (
                    "a.test".to_string(),
                    ["http://a.test/1", "http://a.test/2", "http://a.test/3"]
                        .map(String::from)
                        .to_vec()
                ),
                (
                    "b.test".to_string(),
                    ["http://b.test/x", "http://www.b.test/y"]
                        .map(String::from)
                        .to_vec()
                ),
            ]
        );
        assert!(read_all(&bus, &n.dlq, Duration::from_secs(1))
            .await
            .is_empty());
        token.cancel();
        running.wait().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_two_instances_pass_each_url_once() {
        scenario(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_instance_crash_loses_nothing() {
        scenario(true).await;
    }
}
