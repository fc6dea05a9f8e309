//! The embeddings stage at the end of the whole pipeline, on the real broker, memcached, etcd
//! and Chroma (all started by tests/run.sh), with the model from fetch-model.sh:
//! - a small generated site crawled url-in → … → anchors → embeddings ends with Chroma's
//!   collection holding exactly the distinct embedded texts (anchor texts, counted from the
//!   anchors table independently, plus one chunk per short page);
//! - the stage run again over the same manifests (a new consumer group) leaves the count as is;
//! - `sluice search` for a phrase from one page returns that page's anchors first, and the
//!   exact search over the Parquet table returns the same top result;
//! - Chroma killed mid-run and restarted: the stage waits (not ready), then nothing is lost and
//!   nothing is duplicated.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::pipeline::{crawl_stages, create_topics, Head};
use common::{kafka_bus, query, sluice_json, unique, wait_idle, write_pipeline, StageProcess};
use sluice_bus::OutRecord;
use sluice_stage_embeddings::Chroma;
use sluice_tables::{anchors_schema, table, AnchorRow, AnchorRows, Storage, TableWriter};
use sluice_topics::{Contract, TableBatch};

/// Topics of the generated site: each page's title, a sentence of its text, and its links.
const TOPICS: &[(&str, &str, &[&str])] = &[
    (
        "Baking at home",
        "Knead the dough, let it rise overnight and bake the loaf until the crust is golden.",
        &[
            "sourdough bread starter guide",
            "chocolate cake with ganache",
            "oven temperatures for pastry",
        ],
    ),
    (
        "Observing the night sky",
        "Point the telescope at Jupiter to see its moons and the great red spot.",
        &[
            "rings of Saturn through a small telescope",
            "finding the Andromeda galaxy",
            "meteor shower calendar",
        ],
    ),
    (
        "Maintaining a bicycle",
        "Oil the chain, check tyre pressure and adjust the brake pads before a long ride.",
        &[
            "fixing a flat tyre",
            "derailleur gear adjustment",
            "choosing a bike lock",
        ],
    ),
    (
        "Learning to play the piano",
        "Practise scales slowly with both hands, then play simple pieces by Bach.",
        &[
            "beginner piano chord chart",
            "reading sheet music",
            "metronome practice routine",
        ],
    ),
    (
        "Growing tomatoes in the garden",
        "Plant seedlings in full sun, water them deeply and stake the vines as they grow.",
        &[
            "composting kitchen scraps",
            "pruning tomato suckers",
            "watering vegetables in summer",
        ],
    ),
];

fn slug(s: &str) -> String {
    s.to_lowercase().replace(' ', "-")
}

/// The site: `/` links to one page per topic; each topic page links to a page per link text
/// (plus a navigation link home, which repeats on every page).
fn page_html(path: &str) -> Option<String> {
    let nav = r#"<nav><a href="/">Home</a> <a href="/">x</a></nav>"#;
    if path == "/" {
        let links: String = TOPICS
            .iter()
            .map(|(t, _, _)| format!(r#"<li><a href="/{}.html">{t}</a></li>"#, slug(t)))
            .collect();
        return Some(format!(
            "<html><head><title>Hobbies</title></head><body>{nav}<h1>Hobbies</h1><ul>{links}</ul></body></html>"
        ));
    }
    let name = path.strip_prefix('/')?.strip_suffix(".html")?;
    for (title, text, links) in TOPICS {
        if slug(title) == name {
            let links: String = links
                .iter()
                .map(|l| format!(r#"<p><a href="/{}.html">{l}</a></p>"#, slug(l)))
                .collect();
            return Some(format!(
                "<html><head><title>{title}</title><script>var hidden = 1;</script></head>\
                 <body>{nav}<h1>{title}</h1><p>{text}</p>{links}</body></html>"
            ));
        }
        if let Some(l) = links.iter().find(|l| slug(l) == name) {
            return Some(format!(
                "<html><head><title>{l}</title></head><body>{nav}<h1>{l}</h1><p>About {l}.</p></body></html>"
            ));
        }
    }
    None
}

async fn serve_site() -> SocketAddr {
    use axum::http::{header, StatusCode, Uri};
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(|uri: Uri| async move {
        match uri.path() {
            "/robots.txt" => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                String::new(),
            )
                .into_response(),
            p => match page_html(p) {
                Some(html) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    html,
                )
                    .into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            },
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn chroma_url() -> String {
    std::env::var("SLUICE_TEST_CHROMA")
        .expect("SLUICE_TEST_CHROMA is not set: run tests/run.sh, which starts Chroma")
}

fn search(file: &Path, text: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "search",
        "-f",
        file.to_str().unwrap(),
        "--format",
        "json",
        "-k",
        "5",
        text,
    ];
    args.extend_from_slice(extra);
    sluice_json(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crawl_ends_in_chroma_once_and_search_finds_the_page() {
    let site = serve_site().await;
    let id = unique("emb");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stages = format!(
        r#"{crawl}  batch:
    kind: parquet-batch
    input: pages-{id}
    output: page-batches-{id}
    max_rows: 8
    max_age: 1s
  anchors:
    kind: anchors
    input: page-batches-{id}
    output: anchor-batches-{id}
  embeddings:
    kind: embeddings
    input: anchor-batches-{id}
    output: embedding-batches-{id}
    collection: {id}
    embed_pages: true
"#,
        crawl = crawl_stages(&id, ""),
    );
    let head = || {
        Head::new(&id)
            .memcached()
            .etcd()
            .chroma(&chroma_url())
            .storage(&data)
            .topic("url-in", "partitions: 2")
            .topic("urls", "partitions: 2")
            .topic("pages", "partitions: 2")
            .topic("page-batches", "partitions: 2")
            .topic("anchor-batches", "partitions: 2")
            .topic("embedding-batches", "partitions: 1")
    };
    let file = write_pipeline(dir.path(), &head().stages(&stages));
    create_topics(&file);
    let bus = kafka_bus();
    let mut all = StageProcess::spawn(&file, "", &dir.path().join("run.log"));
    bus.producer()
        .unwrap()
        .send(OutRecord::new(
            format!("url-in-{id}"),
            format!("http://{site}/").into_bytes(),
        ))
        .await
        .unwrap();
    let topics = [
        ("normalize", format!("url-in-{id}")),
        ("crawl", format!("urls-{id}")),
        ("batch", format!("pages-{id}")),
        ("anchors", format!("page-batches-{id}")),
        ("embeddings", format!("anchor-batches-{id}")),
    ];
    let groups: Vec<(&str, &str)> = topics.iter().map(|(g, t)| (*g, t.as_str())).collect();
    wait_idle(&bus, &groups, Duration::from_secs(300)).await;
    assert!(all.terminate().success());

    // What should be embedded, computed from the anchors and pages tables, not the stage.
    let pages = 1 + TOPICS.len() + TOPICS.iter().map(|t| t.2.len()).sum::<usize>();
    let crawled = query(&file, "SELECT count(*) AS n FROM pages WHERE status = 200");
    assert_eq!(
        crawled[0]["n"].as_u64(),
        Some(pages as u64),
        "the whole site was crawled"
    );
    let anchors = query(
        &file,
        "SELECT count(*) AS n FROM (SELECT DISTINCT source_url, target_url, text FROM anchors WHERE char_length(trim(text)) >= 2)",
    )[0]["n"]
        .as_u64()
        .unwrap();
    let short = query(
        &file,
        "SELECT count(*) AS n FROM anchors WHERE char_length(trim(text)) < 2",
    )[0]["n"]
        .as_u64()
        .unwrap();
    assert_eq!(
        short, pages as u64,
        "the one-letter nav link on every page is skipped"
    );
    // Every page is short: one chunk each.
    let expected = anchors + pages as u64;

    let chroma = Chroma::new(&chroma_url(), &id);
    assert_eq!(chroma.count().await.unwrap() as u64, expected);
    let table = query(&file, "SELECT count(*) AS n, count(DISTINCT id) AS d, count(*) FILTER (WHERE kind = 'page') AS p FROM embeddings");
    assert_eq!(table[0]["n"].as_u64(), Some(expected));
    assert_eq!(table[0]["d"].as_u64(), Some(expected));
    assert_eq!(table[0]["p"].as_u64(), Some(pages as u64));
    let hidden = query(
        &file,
        "SELECT count(*) AS n FROM embeddings WHERE text LIKE '%hidden%'",
    );
    assert_eq!(
        hidden[0]["n"].as_u64(),
        Some(0),
        "script text is not page text"
    );

    // Search: a phrase from the astronomy page finds its anchors first, both ways.
    let astronomy = format!("http://{site}/observing-the-night-sky.html");
    let hits = search(
        &file,
        "rings of Saturn seen through a telescope",
        &["--kind", "anchor"],
    );
    assert_eq!(hits.len(), 5);
    assert_eq!(
        hits[0]["source_url"].as_str(),
        Some(astronomy.as_str()),
        "{hits:#?}"
    );
    assert_eq!(hits[0]["kind"].as_str(), Some("anchor"));
    let exact = search(
        &file,
        "rings of Saturn seen through a telescope",
        &["--kind", "anchor", "--exact"],
    );
    assert_eq!(
        exact[0]["id"], hits[0]["id"],
        "exact search agrees with chroma"
    );
    assert!(
        (exact[0]["score"].as_f64().unwrap() - hits[0]["score"].as_f64().unwrap()).abs() < 1e-3
    );
    let pages_hits = search(&file, "how to bake bread", &["--kind", "page"]);
    assert_eq!(
        pages_hits[0]["source_url"].as_str(),
        Some(format!("http://{site}/baking-at-home.html").as_str())
    );
    let domain_miss = search(&file, "telescope", &["--domain", "elsewhere.test"]);
    assert!(domain_miss.is_empty(), "{domain_miss:?}");

    // The stage again over the same manifests (a new group from the start): same points.
    let replay = write_pipeline(
        dir.path(),
        &head().stages(&format!(
            "  embeddings-replay:\n    kind: embeddings\n    input: anchor-batches-{id}\n    collection: {id}\n    embed_pages: true\n"
        )),
    );
    let mut again =
        StageProcess::spawn(&replay, "embeddings-replay", &dir.path().join("replay.log"));
    wait_idle(
        &bus,
        &[("embeddings-replay", &format!("anchor-batches-{id}"))],
        Duration::from_secs(120),
    )
    .await;
    assert!(again.terminate().success());
    assert_eq!(
        chroma.count().await.unwrap() as u64,
        expected,
        "a replay upserts the same points"
    );
}

/// Writes an anchors file of `n` rows whose texts are distinct across files.
async fn write_anchors(storage: &Storage, name: &str, file: usize, n: usize) -> String {
    let mut rows = AnchorRows::new();
    for i in 0..n {
        rows.push(&AnchorRow {
            source_url: format!("http://a.test/{file}"),
            target_url: format!("http://b.test/{file}/{i}"),
            fragment: None,
            text: format!(
                "document {file} section {i} about topic {}",
                (file * 31 + i) % 17
            ),
            from_alt: false,
            title: None,
            rel: None,
            nofollow: false,
            internal: false,
            source_domain: "a.test".into(),
            target_domain: "b.test".into(),
            position: i as u32,
            crawled_at_ms: 1_700_000_000_000,
        });
    }
    let mut w = TableWriter::create(storage, table::ANCHORS, name, anchors_schema()).unwrap();
    w.write(&rows.finish()).await.unwrap();
    let written = w
        .finish(storage.table_file(table::ANCHORS, name))
        .await
        .unwrap();
    storage.relative(&written.path)
}

/// The manifest of an anchors file at `path` covering offsets `first..=last` of `pages`.
fn anchors_manifest(path: String, first: i64, last: i64) -> Vec<u8> {
    TableBatch {
        table: "anchors".into(),
        path,
        rows: 0,
        bytes: 0,
        source_topic: "pages".into(),
        partition: 0,
        first_offset: first,
        last_offset: last,
        schema_version: 1,
        created_at_ms: 0,
        counts: Default::default(),
    }
    .encode()
}

fn start_chroma(port: u16, data: &Path) -> std::process::Child {
    let bin =
        std::env::var("SLUICE_TEST_CHROMA_BIN").expect("SLUICE_TEST_CHROMA_BIN: run tests/run.sh");
    std::process::Command::new(bin)
        .args(["run", "--path"])
        .arg(data)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .env("ANONYMIZED_TELEMETRY", "False")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_heartbeat(chroma: &Chroma) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while chroma.heartbeat().await.is_err() {
        assert!(Instant::now() < deadline, "chroma did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chroma_killed_mid_run_loses_nothing_and_duplicates_nothing() {
    let id = unique("embout");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = common::free_port();
    let chroma_url = format!("http://127.0.0.1:{port}");
    let chroma_data = dir.path().join("chroma");
    let mut server = start_chroma(port, &chroma_data);
    let chroma = Chroma::new(&chroma_url, &id);
    wait_heartbeat(&chroma).await;

    let yaml = Head::new(&id)
        .chroma(&chroma_url)
        .storage(&data)
        .topic("anchor-batches", "partitions: 1, type: table-batch")
        .stages(&format!(
            r#"  # A stage (and so consumer group) name of its own: the tests of this file run at once.
  embeddings-outage:
    kind: embeddings
    input: anchor-batches-{id}
    collection: {id}
    upsert_batch: 50
    retry: {{ backoff: 200ms }}
"#
        ));
    let file = write_pipeline(dir.path(), &yaml);
    create_topics(&file);
    let storage = Storage::open(data.to_str().unwrap()).unwrap();
    let (files, per_file) = (8usize, 120usize);
    let bus = kafka_bus();
    let producer = bus.producer().unwrap();
    for f in 0..files {
        let name = format!("anchors-p0-{f:020}-{f:020}.parquet");
        let path = write_anchors(&storage, &name, f, per_file).await;
        let m = anchors_manifest(path, f as i64, f as i64);
        producer
            .send(OutRecord::new(format!("anchor-batches-{id}"), m))
            .await
            .unwrap();
    }
    let log = dir.path().join("run.log");
    let mut stage = StageProcess::spawn(&file, "embeddings-outage", &log);

    // Kill Chroma as soon as the first points arrive.
    let deadline = Instant::now() + Duration::from_secs(120);
    while chroma.count().await.unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "no upsert reached chroma; stage log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = server.kill();
    let _ = server.wait();
    let before = std::fs::read_dir(data.join("embeddings"))
        .map(|d| d.count())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("not ready") && text.contains("chroma"),
        "the outage shows: {text}"
    );
    let after = std::fs::read_dir(data.join("embeddings"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(before, after, "no batch completes while chroma is down");
    assert!(
        after < files,
        "the outage came mid-run ({after} files done)"
    );

    let mut server = start_chroma(port, &chroma_data);
    common::wait_caught_up(
        &bus,
        "embeddings-outage",
        &format!("anchor-batches-{id}"),
        Duration::from_secs(300),
    )
    .await;
    assert!(stage.terminate().success());
    assert_eq!(
        chroma.count().await.unwrap(),
        files * per_file,
        "every text once"
    );
    let embedded: Vec<_> = std::fs::read_dir(data.join("embeddings"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .collect();
    assert_eq!(embedded.len(), files);
    let dead = common::read_all(&bus, &format!("dlq-{id}"), Duration::from_secs(2)).await;
    assert!(dead.is_empty(), "nothing dead-lettered");
    let _ = server.kill();
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_model_is_a_clear_error_and_a_live_not_ready_stage() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-model");
    std::fs::create_dir(&empty).unwrap();
    let yaml = format!(
        "name: nomodel\nbroker: memory\nservices:\n  storage: {}\ndead_letter: dlq\ntopics:\n  anchor-batches: {{ partitions: 1, type: table-batch }}\n  dlq: {{ partitions: 1 }}\nstages:\n  embeddings:\n    kind: embeddings\n    input: anchor-batches\n    model_dir: {}\n",
        dir.path().join("data").display(),
        empty.display()
    );
    let file = write_pipeline(dir.path(), &yaml);
    let port = common::free_port();
    let log = dir.path().join("run.log");
    let mut child = common::sluice()
        .args(["run", "-f"])
        .arg(&file)
        .args([
            "--stage",
            "embeddings",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            if body.contains("model") && !body.contains("starting") {
                assert_eq!(status, 503, "{body}");
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no readiness report: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        body.contains("model.onnx") && body.contains("missing"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the stage stays up, no crash loop"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cannot be loaded") && text.contains("fetch-model.sh"),
        "{text}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_twice_in_a_batch_and_a_missing_pages_file_neither_stall_nor_dead_letter() {
    let id = unique("embdup");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let yaml = Head::new(&id)
        .chroma(&chroma_url())
        .storage(&data)
        .topic("anchor-batches", "partitions: 1, type: table-batch")
        .stages(&format!(
            r#"  embeddings-dup:
    kind: embeddings
    input: anchor-batches-{id}
    collection: {id}
    embed_pages: true
"#
        ));
    let file = write_pipeline(dir.path(), &yaml);
    create_topics(&file);
    let storage = Storage::open(data.to_str().unwrap()).unwrap();
    // Batch 0: the same page twice (two URLs that redirected to it), with its anchors file.
    let name0 = "pages-p0-00000000000000000000-00000000000000000001.parquet";
    let page = common::page(
        "http://a.test/same",
        "text/html",
        "<html><title>Same</title><p>Identical text on both records.</p></html>",
    );
    let mut rows = sluice_tables::PageRows::new();
    rows.push(&page, 0, 0);
    rows.push(&page, 0, 1);
    let mut w =
        TableWriter::create(&storage, table::PAGES, name0, sluice_tables::pages_schema()).unwrap();
    w.write(&rows.finish()).await.unwrap();
    w.finish(storage.table_file(table::PAGES, name0))
        .await
        .unwrap();
    let anchors0 = write_anchors(&storage, name0, 0, 5).await;
    // Batch 1: an anchors file whose pages file is gone.
    let name1 = "pages-p0-00000000000000000002-00000000000000000003.parquet";
    let anchors1 = write_anchors(&storage, name1, 1, 7).await;
    let bus = kafka_bus();
    let producer = bus.producer().unwrap();
    for (i, path) in [anchors0, anchors1].into_iter().enumerate() {
        let m = anchors_manifest(path, 2 * i as i64, 2 * i as i64 + 1);
        producer
            .send(OutRecord::new(format!("anchor-batches-{id}"), m))
            .await
            .unwrap();
    }
    let mut stage = StageProcess::spawn(&file, "embeddings-dup", &dir.path().join("run.log"));
    common::wait_caught_up(
        &bus,
        "embeddings-dup",
        &format!("anchor-batches-{id}"),
        Duration::from_secs(120),
    )
    .await;
    assert!(stage.terminate().success());
    let chroma = Chroma::new(&chroma_url(), &id);
    // 5 + 7 anchors, and the page's one chunk once.
    assert_eq!(chroma.count().await.unwrap(), 13);
    let dead = common::read_all(&bus, &format!("dlq-{id}"), Duration::from_secs(2)).await;
    assert!(dead.is_empty(), "nothing dead-lettered");
    let pages = query(
        &file,
        "SELECT count(*) AS n FROM embeddings WHERE kind = 'page'",
    );
    assert_eq!(pages[0]["n"].as_u64(), Some(1));
}
