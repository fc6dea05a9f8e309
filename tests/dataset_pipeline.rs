//! The crawl ending as a queryable dataset, on the real broker, memcached and etcd: Debian's
//! python3.11-doc (nginx on 127.0.0.1) through url-in → normalize → crawl → parquet-batch →
//! anchors, then `sluice query`:
//! - the pages table has exactly the pages fetched, each once;
//! - every HTML page's anchors are in the anchors table (as many as its body has);
//! - the README's example queries run.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::pipeline::{crawl_stages, create_topics, Head};
use common::{kafka_bus, query, read_all, unique, wait_idle, write_pipeline, StageProcess};
use sluice_bus::OutRecord;
use sluice_topics::{Contract, Page};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doc_site_crawl_becomes_queryable_pages_and_anchors() {
    let site = std::env::var("SLUICE_TEST_DOCSITE").expect("SLUICE_TEST_DOCSITE: run tests/run.sh");
    let id = unique("ds");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let yaml = Head::new(&id)
        .memcached()
        .etcd()
        .storage(&data)
        .topic("url-in", "partitions: 2")
        .topic("urls", "partitions: 2")
        .topic("pages", "partitions: 2")
        .topic("page-batches", "partitions: 1")
        .topic("anchor-batches", "partitions: 1")
        .stages(&format!(
            r#"{crawl}  batch:
    kind: parquet-batch
    input: pages-{id}
    output: page-batches-{id}
    max_rows: 200
    max_age: 2s
  anchors:
    kind: anchors
    input: page-batches-{id}
    output: anchor-batches-{id}
"#,
            crawl = crawl_stages(&id, ""),
        ));
    let file = write_pipeline(dir.path(), &yaml);
    create_topics(&file);
    let bus = kafka_bus();
    let mut all = StageProcess::spawn(&file, "", &dir.path().join("run.log"));
    let seed = format!("{site}index.html");
    bus.producer()
        .unwrap()
        .send(OutRecord::new(format!("url-in-{id}"), seed.into_bytes()))
        .await
        .unwrap();

    let groups = [
        ("normalize".to_string(), format!("url-in-{id}")),
        ("crawl".to_string(), format!("urls-{id}")),
        ("batch".to_string(), format!("pages-{id}")),
        ("anchors".to_string(), format!("page-batches-{id}")),
    ];
    let groups: Vec<(&str, &str)> = groups
        .iter()
        .map(|(g, t)| (g.as_str(), t.as_str()))
        .collect();
    wait_idle(&bus, &groups, Duration::from_secs(600)).await;
    assert!(all.terminate().success());

    // What the crawl produced, straight from the topic.
    let records = read_all(&bus, &format!("pages-{id}"), Duration::from_secs(60)).await;
    let pages: Vec<Page> = records
        .iter()
        .map(|r| Page::decode(&r.value).unwrap())
        .collect();
    assert!(pages.len() > 400, "{} pages crawled", pages.len());

    // The pages table holds each of them once.
    let rows = query(
        &file,
        "SELECT count(*) AS n, count(DISTINCT url) AS u FROM pages",
    );
    assert_eq!(rows[0]["n"].as_u64(), Some(pages.len() as u64));
    assert_eq!(rows[0]["u"].as_u64(), Some(pages.len() as u64));

    // Every HTML page's anchors are in the anchors table.
    let mut expected: HashMap<String, u64> = HashMap::new();
    for p in &pages {
        let (Some(body), Some(200)) = (&p.body, p.status) else {
            continue;
        };
        let url: url::Url = p.final_url.parse().unwrap();
        let n = sluice_stage_anchors::extract(body, &url).anchors.len() as u64;
        if n > 0 {
            expected.insert(p.final_url.clone(), n);
        }
    }
    let got: HashMap<String, u64> = query(
        &file,
        "SELECT source_url, count(*) AS n FROM anchors GROUP BY source_url",
    )
    .into_iter()
    .map(|r| {
        (
            r["source_url"].as_str().unwrap().to_string(),
            r["n"].as_u64().unwrap(),
        )
    })
    .collect();
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(u, n)| got.get(*u) != Some(n))
        .take(10)
        .map(|(u, n)| format!("{u}: {n} expected, {:?} in the table", got.get(u)))
        .collect();
    assert!(wrong.is_empty(), "anchors missing or extra: {wrong:?}");
    assert_eq!(got.len(), expected.len());

    // The README's examples run and answer sensibly.
    let top = query(
        &file,
        "SELECT target_domain, count(*) AS links FROM anchors GROUP BY target_domain ORDER BY links DESC LIMIT 5",
    );
    assert_eq!(top[0]["target_domain"].as_str(), Some("127.0.0.1"));
    let inbound = query(
        &file,
        &format!(
            "SELECT text, count(*) AS n FROM anchors WHERE target_url = '{site}library/functions.html' GROUP BY text ORDER BY n DESC"
        ),
    );
    assert!(
        !inbound.is_empty(),
        "library/functions.html has inbound anchors"
    );
    let failed = query(
        &file,
        "SELECT url, status, error_code, error FROM pages WHERE error_code IS NOT NULL",
    );
    let failed_in_topic = pages.iter().filter(|p| p.error.is_some()).count();
    assert_eq!(failed.len(), failed_in_topic);
    eprintln!(
        "dataset: {} pages, {} pages with anchors, {} anchors",
        pages.len(),
        got.len(),
        got.values().sum::<u64>()
    );
}
