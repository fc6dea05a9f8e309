//! The anchors stage on its own (embedded bus, local storage): a good pages file becomes an
//! anchors file and a manifest with the skipped links counted; bad HTML does not fail the
//! batch; a pages file that is missing or not Parquet goes to the dead-letter topic with the
//! reason; a replayed manifest rewrites the same anchors file.

mod common;

use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use sluice_bus::OutRecord;
use sluice_runtime::registry::Registry;
use sluice_tables::{pages_schema, table, PageRows, Storage, TableWriter};
use sluice_topics::{Contract, Page, TableBatch};

async fn write_pages(storage: &Storage, name: &str, pages: &[Page]) -> String {
    let mut rows = PageRows::new();
    for (i, p) in pages.iter().enumerate() {
        rows.push(p, 0, i as i64);
    }
    let mut w = TableWriter::create(storage, table::PAGES, name, pages_schema()).unwrap();
    w.write(&rows.finish()).await.unwrap();
    let written = w
        .finish(storage.table_file(table::PAGES, name))
        .await
        .unwrap();
    storage.relative(&written.path)
}

fn manifest(path: &str) -> Vec<u8> {
    TableBatch {
        table: "pages".into(),
        path: path.into(),
        rows: 3,
        bytes: 0,
        source_topic: "pages".into(),
        partition: 0,
        first_offset: 0,
        last_offset: 2,
        schema_version: 1,
        created_at_ms: 0,
        counts: Default::default(),
    }
    .encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_bad_and_unreadable_batches() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let storage = Storage::open(data.to_str().unwrap()).unwrap();
    let good = write_pages(
        &storage,
        "pages-p0-00000000000000000000-00000000000000000002.parquet",
        &[
            common::page(
                "http://a.test/",
                "text/html",
                r#"<a href="/x">X &amp; Y</a><a href="javascript:go()">js</a><a href="mailto:a@a.test">m</a>
                   <a href="https://b.test/y#frag"><img alt="B logo"></a><a href="">e</a>"#,
            ),
            common::page(
                "http://a.test/bad",
                "text/html",
                "<a href='/ok'>fine</a>\u{0}\u{1}<<<<div <a <a href=\"/after\">after garbage<table><a href=/unclosed>",
            ),
            common::page("http://a.test/file.pdf", "application/pdf", "%PDF <a href='/no'>no</a>"),
        ],
    )
    .await;
    std::fs::write(
        data.join("pages/corrupt.parquet"),
        b"this is not parquet at all",
    )
    .unwrap();

    let yaml = format!(
        r#"name: anchors-test
broker: memory
services:
  storage: {}
dead_letter: dead-letter
topics:
  page-batches: {{ partitions: 1, type: table-batch }}
  anchor-batches: {{ partitions: 1 }}
  dead-letter: {{ partitions: 1 }}
stages:
  anchors:
    kind: anchors
    input: page-batches
    output: anchor-batches
    retry: {{ attempts: 2, backoff: 50ms }}
"#,
        data.display()
    );
    let mut registry = Registry::new();
    registry.register(sluice_stage_anchors::Kind);
    let (p, _) = sluice_config::load_str_validated(&yaml, "t.yaml", &[], &|_| None, &registry)
        .unwrap_or_else(|d| panic!("{d}"));
    let running = common::start_embedded(p, &registry, None).await;
    let (bus, token) = (running.bus.clone(), running.shutdown.clone());
    let producer = bus.producer().unwrap();
    for path in [
        good.as_str(),
        "pages/missing.parquet",
        "pages/corrupt.parquet",
        good.as_str(),
    ] {
        producer
            .send(OutRecord::new("page-batches", manifest(path)))
            .await
            .unwrap();
    }
    let started = Instant::now();
    let (out, dlq) = loop {
        let out = common::read_topic(&bus, "anchor-batches", Duration::from_millis(300), |_| {
            false
        })
        .await;
        let dlq =
            common::read_topic(&bus, "dead-letter", Duration::from_millis(300), |_| false).await;
        if out.len() >= 2 && dlq.len() >= 2 {
            break (out, dlq);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} outputs, {} dead letters",
            out.len(),
            dlq.len()
        );
    };
    token.cancel();
    running.wait().await.unwrap();

    // Unreadable files: dead-lettered with the reason.
    assert_eq!(dlq.len(), 2);
    for r in &dlq {
        assert_eq!(
            r.header("sluice.error_code"),
            Some(&b"unreadable_batch"[..])
        );
    }

    // The good file, twice (a replay): the same anchors file, same manifest content.
    assert_eq!(out.len(), 2);
    let m = TableBatch::decode(&out[0].value).unwrap();
    let again = TableBatch::decode(&out[1].value).unwrap();
    assert_eq!(
        m.path,
        "anchors/pages-p0-00000000000000000000-00000000000000000002.parquet"
    );
    assert_eq!(again.path, m.path);
    assert_eq!(again.rows, m.rows);
    assert_eq!(m.table, "anchors");
    assert_eq!(m.counts.get("skipped_javascript"), Some(&1));
    assert_eq!(m.counts.get("skipped_mailto"), Some(&1));
    assert_eq!(m.counts.get("skipped_empty"), Some(&1));
    assert_eq!(m.counts.get("pages"), Some(&3));
    assert_eq!(
        m.counts.get("pages_parsed"),
        Some(&2),
        "the PDF is not parsed"
    );
    let files = std::fs::read_dir(data.join("anchors")).unwrap().count();
    assert_eq!(files, 1, "a replay rewrites the same file");

    let batches = sluice_query::query(
        &storage,
        "SELECT source_url, target_url, fragment, text, from_alt, internal FROM anchors ORDER BY source_url, position",
    )
    .await
    .unwrap();
    let mut rows = Vec::new();
    for b in &batches {
        let col = |i: usize| b.column(i).as_string::<i32>().clone();
        let (s, t, f, x) = (col(0), col(1), col(2), col(3));
        let alt = b.column(4).as_boolean().clone();
        let internal = b.column(5).as_boolean().clone();
        for i in 0..b.num_rows() {
            rows.push((
                s.value(i).to_string(),
                t.value(i).to_string(),
                (!f.is_null(i)).then(|| f.value(i).to_string()),
                x.value(i).to_string(),
                alt.value(i),
                internal.value(i),
            ));
        }
    }
    assert_eq!(
        rows[..2],
        [
            (
                "http://a.test/".into(),
                "http://a.test/x".into(),
                None,
                "X & Y".into(),
                false,
                true
            ),
            (
                "http://a.test/".into(),
                "https://b.test/y".into(),
                Some("frag".into()),
                "B logo".into(),
                true,
                false
            ),
        ]
    );
    let from_bad: Vec<_> = rows
        .iter()
        .filter(|r| r.0 == "http://a.test/bad")
        .map(|r| r.1.as_str())
        .collect();
    assert!(from_bad.contains(&"http://a.test/ok"), "{from_bad:?}");
    assert!(from_bad.contains(&"http://a.test/unclosed"), "{from_bad:?}");
    assert!(rows.iter().all(|r| r.0 != "http://a.test/file.pdf"));
}
