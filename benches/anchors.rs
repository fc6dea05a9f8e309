//! Benchmark, in one run on the same HTML files (every page of Debian's python3.11-doc):
//! - the anchors stage's extractor (lol_html, one thread) in MB/s of HTML, against
//!   BeautifulSoup with `html.parser` doing the same extraction (benches/bs4_anchors.py);
//! - a DataFusion query over 1,000,000 generated anchor rows in Parquet, with its latency.
//!
//! Run with `benches/run.sh --bench anchors` (it fetches the site and installs
//! beautifulsoup4), or set SLUICE_TEST_DOCSITE_ROOT and run `cargo bench --bench anchors`.

#[path = "../tests/common/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_tables::{anchors_schema, table, AnchorRow, AnchorRows, Storage, TableWriter};

fn ours(docs: &[(String, url::Url)]) -> (f64, usize) {
    let bytes: usize = docs.iter().map(|(d, _)| d.len()).sum();
    // Repeat until the run is long enough to time well.
    let started = Instant::now();
    let mut rounds = 0;
    let mut anchors = 0;
    while rounds < 3 || started.elapsed() < Duration::from_secs(3) {
        anchors = 0;
        for (html, url) in docs {
            anchors += sluice_stage_anchors::extract(html, url).anchors.len();
        }
        rounds += 1;
    }
    let secs = started.elapsed().as_secs_f64() / rounds as f64;
    (bytes as f64 / 1e6 / secs, anchors)
}

/// The same over every core, files split between threads — as the stage runs, one file per
/// core (`concurrency` 2 by default).
fn ours_parallel(docs: &[(String, url::Url)]) -> f64 {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let bytes: usize = docs.iter().map(|(d, _)| d.len()).sum();
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < 3 || started.elapsed() < Duration::from_secs(3) {
        std::thread::scope(|scope| {
            for t in 0..threads {
                scope.spawn(move || {
                    for (html, url) in docs.iter().skip(t).step_by(threads) {
                        std::hint::black_box(sluice_stage_anchors::extract(html, url));
                    }
                });
            }
        });
        rounds += 1;
    }
    bytes as f64 / 1e6 / (started.elapsed().as_secs_f64() / rounds as f64)
}

fn beautifulsoup(files: &[PathBuf]) -> (f64, u64) {
    let list = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        list.path(),
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let script = support::manifest_dir().join("benches/bs4_anchors.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(list.path())
        .output()
        .expect("python3 with beautifulsoup4 (pip install beautifulsoup4)");
    assert!(
        out.status.success(),
        "bs4 baseline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mb = v["bytes"].as_f64().unwrap() / 1e6;
    (
        mb / v["seconds"].as_f64().unwrap(),
        v["anchors"].as_u64().unwrap(),
    )
}

/// Writes `n` anchor rows over `files` Parquet files and returns the storage.
async fn generate(dir: &Path, n: usize, files: usize) -> Storage {
    let storage = Storage::open(dir.to_str().unwrap()).unwrap();
    let per_file = n / files;
    for f in 0..files {
        let mut w = TableWriter::create(
            &storage,
            table::ANCHORS,
            &format!("gen-{f}.parquet"),
            anchors_schema(),
        )
        .unwrap();
        let mut rows = AnchorRows::new();
        for i in 0..per_file {
            let k = f * per_file + i;
            // A skewed link graph: a few popular targets, a long tail.
            let target = (k * 7919) % (1 + k % 5000);
            rows.push(&AnchorRow {
                source_url: format!("https://site{}.example/page/{}", k % 2000, k % 97),
                target_url: format!("https://site{}.example/page/{}", target % 3000, target % 53),
                fragment: (k % 9 == 0).then(|| "section".to_string()),
                text: format!("anchor text number {}", k % 10_000),
                from_alt: false,
                title: None,
                rel: (k % 13 == 0).then(|| "nofollow".to_string()),
                nofollow: k % 13 == 0,
                internal: k % 3 == 0,
                source_domain: format!("site{}.example", k % 2000),
                target_domain: format!("site{}.example", target % 3000),
                position: (k % 200) as u32,
                crawled_at_ms: 1_700_000_000_000 + k as i64,
            });
            if rows.rows() == 8192 {
                w.write(&rows.finish()).await.unwrap();
            }
        }
        if rows.rows() > 0 {
            w.write(&rows.finish()).await.unwrap();
        }
        w.finish(storage.table_file(table::ANCHORS, &format!("gen-{f}.parquet")))
            .await
            .unwrap();
    }
    storage
}

async fn timed(storage: &Storage, sql: &str) -> (Duration, usize) {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let batches = sluice_query::query(storage, sql).await.unwrap();
        times.push(started.elapsed());
        rows = sluice_query::row_count(&batches);
    }
    times.sort();
    (times[times.len() / 2], rows)
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("anchors: bench");
        return;
    }
    let root = PathBuf::from(
        std::env::var("SLUICE_TEST_DOCSITE_ROOT")
            .expect("SLUICE_TEST_DOCSITE_ROOT is not set: run benches/run.sh --bench anchors"),
    );
    let files = support::html_files(&root);
    let base: url::Url = "http://docs.test/".parse().unwrap();
    let docs: Vec<(String, url::Url)> = support::site_pages(&root, &base)
        .into_iter()
        .map(|(f, url)| {
            let html = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
            (html, url)
        })
        .collect();
    let mb: f64 = docs.iter().map(|(d, _)| d.len()).sum::<usize>() as f64 / 1e6;
    println!("{} HTML files, {mb:.1} MB", files.len());
    let (bs_rate, bs_anchors) = beautifulsoup(&files);
    println!("BeautifulSoup (html.parser): {bs_rate:8.2} MB/s ({bs_anchors} anchors)");
    let (our_rate, our_anchors) = ours(&docs);
    println!(
        "anchors extractor (lol_html), one thread: {our_rate:8.2} MB/s ({our_anchors} anchors)"
    );
    let parallel = ours_parallel(&docs);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("anchors extractor, {cores} threads:           {parallel:8.2} MB/s");
    println!(
        "ratio one thread / BeautifulSoup: {:.0}×; all cores / BeautifulSoup: {:.0}× (goal ≥ 100×)",
        our_rate / bs_rate,
        parallel / bs_rate
    );

    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let storage = generate(dir.path(), 1_000_000, 10).await;
    println!(
        "generated 1,000,000 anchor rows in 10 files in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (what, sql) in [
        ("most linked-to domains", "SELECT target_domain, count(*) AS links FROM anchors GROUP BY target_domain ORDER BY links DESC LIMIT 10"),
        ("inbound anchor texts of one URL", "SELECT text, count(*) AS n FROM anchors WHERE target_url = 'https://site1.example/page/1' GROUP BY text ORDER BY n DESC"),
        ("count", "SELECT count(*) FROM anchors"),
    ] {
        let (t, rows) = timed(&storage, sql).await;
        println!("DataFusion, {what}: {:.1} ms median of 5 ({rows} result rows)", t.as_secs_f64() * 1000.0);
    }
}
