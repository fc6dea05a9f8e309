//! Benchmark, in one run on the same 2,000 texts of about 30 words (windows of the visible
//! text of Debian's python3.11-doc pages):
//! - the embeddings stage's throughput in texts/s — the stage's own processor reading an
//!   anchors file, embedding, writing the embeddings table — against onnxruntime-python with
//!   the same ONNX file, batched as sentence-transformers does (benches/embed_baseline.py);
//! - its Chroma upsert rate inside the stage (points over time spent upserting) against a plain
//!   loop upserting the same points in batches of 1,000.
//!
//! Run with `benches/run.sh --bench embeddings` (it starts Chroma and fetches the model), or
//! set SLUICE_TEST_DOCSITE_ROOT, SLUICE_MODEL_DIR and SLUICE_TEST_CHROMA and run
//! `cargo bench --bench embeddings`.

#[path = "../tests/common/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use sluice_bus::Record;
use sluice_runtime::health::Health;
use sluice_runtime::metrics::Metrics;
use sluice_runtime::stage::Processor;
use sluice_stage_embeddings::{Chroma, Embeddings, ModelSlot, Point, Settings};
use sluice_tables::{anchors_schema, table, AnchorRow, AnchorRows, Storage, TableWriter};
use sluice_topics::{Contract, TableBatch};

const TEXTS: usize = 2000;
const WORDS: usize = 30;

fn env(k: &str) -> String {
    std::env::var(k)
        .unwrap_or_else(|_| panic!("{k} is not set: run benches/run.sh --bench embeddings"))
}

/// 2,000 distinct windows of 30 words from the doc site's pages.
fn texts(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for f in support::html_files(root) {
        let html = std::fs::read_to_string(&f).unwrap_or_default();
        let text = sluice_stage_embeddings::visible_text(&html);
        let words: Vec<&str> = text.split_whitespace().collect();
        // A few windows per page, so the texts cover many pages.
        for w in words.chunks(WORDS).skip(2).take(4) {
            if w.len() == WORDS && seen.insert(w.join(" ")) {
                out.push(w.join(" "));
            }
        }
        if out.len() >= TEXTS {
            break;
        }
    }
    assert!(out.len() >= TEXTS, "the site yields enough text");
    out.truncate(TEXTS);
    out
}

async fn write_anchors(storage: &Storage, texts: &[String]) -> String {
    let mut rows = AnchorRows::new();
    for (i, t) in texts.iter().enumerate() {
        rows.push(&AnchorRow {
            source_url: format!("http://bench.test/{}", i / 20),
            target_url: format!("http://bench.test/t/{i}"),
            fragment: None,
            text: t.clone(),
            from_alt: false,
            title: None,
            rel: None,
            nofollow: false,
            internal: true,
            source_domain: "bench.test".into(),
            target_domain: "bench.test".into(),
            position: i as u32,
            crawled_at_ms: 1_700_000_000_000,
        });
    }
    let name = "pages-p0-00000000000000000000-00000000000000001999.parquet";
    let mut w = TableWriter::create(storage, table::ANCHORS, name, anchors_schema()).unwrap();
    w.write(&rows.finish()).await.unwrap();
    let written = w
        .finish(storage.table_file(table::ANCHORS, name))
        .await
        .unwrap();
    storage.relative(&written.path)
}

fn record(path: &str) -> Record {
    let m = TableBatch {
        table: "anchors".into(),
        path: path.into(),
        rows: TEXTS as u64,
        bytes: 0,
        source_topic: "pages".into(),
        partition: 0,
        first_offset: 0,
        last_offset: TEXTS as i64 - 1,
        schema_version: 1,
        created_at_ms: 0,
        counts: Default::default(),
    };
    Record {
        topic: "anchor-batches".into(),
        partition: 0,
        offset: 0,
        key: None,
        value: m.encode(),
        headers: vec![],
        timestamp_ms: None,
    }
}

/// The stage's processor over the anchors file: (seconds, processor).
async fn stage_run(
    storage: &Storage,
    path: &str,
    chroma: Option<Arc<Chroma>>,
) -> (f64, Embeddings) {
    let defaults = Settings::default();
    // The shipped defaults, unless overridden to explore (SLUICE_BENCH_BATCH_SIZE, _SESSIONS).
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
    let settings = Settings {
        model_dir: Some(env("SLUICE_MODEL_DIR")),
        batch_size: var("SLUICE_BENCH_BATCH_SIZE").unwrap_or(defaults.batch_size),
        sessions: var("SLUICE_BENCH_SESSIONS").or(defaults.sessions),
        // Every run embeds every text: no vectors carried over.
        vector_cache: 0,
        ..defaults
    };
    let model = ModelSlot::new(settings.model(), Health::new());
    model.get().await.expect("model loads");
    let p = Embeddings::new(
        storage.clone(),
        None,
        settings,
        model,
        chroma,
        Metrics::new().stage("embeddings"),
    );
    // No output port: the emitter stays empty, but the contract wants one.
    let bus = sluice_bus::memory::MemoryBus::new();
    let mut out = sluice_runtime::emit::Delivery::new(
        sluice_bus::Bus::producer(&bus).unwrap(),
        Metrics::new().stage("embeddings"),
        Default::default(),
        tokio_util::sync::CancellationToken::new(),
    )
    .emitter();
    let started = Instant::now();
    p.process(&record(path), &mut out)
        .await
        .expect("the batch is processed");
    (started.elapsed().as_secs_f64(), p)
}

fn python_baseline(texts: &[String]) -> f64 {
    let file = tempfile::NamedTempFile::new().unwrap();
    let lines: String = texts
        .iter()
        .map(|t| serde_json::to_string(t).unwrap() + "\n")
        .collect();
    std::fs::write(file.path(), lines).unwrap();
    let python = std::env::var("SLUICE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(support::manifest_dir().join("benches/embed_baseline.py"))
        .arg(env("SLUICE_MODEL_DIR"))
        .arg(file.path())
        .arg("32")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "baseline failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["texts"].as_f64().unwrap() / v["seconds"].as_f64().unwrap()
}

/// The points the stage wrote, read back from its table.
async fn points(storage: &Storage) -> Vec<Point> {
    let files = storage.list(table::EMBEDDINGS, "").await.unwrap();
    let mut out = Vec::new();
    for (name, _) in files {
        let path = storage.table_file(table::EMBEDDINGS, &name);
        let columns = [
            "id",
            "text",
            "vector",
            "source_url",
            "target_url",
            "source_domain",
            "target_domain",
            "crawled_at",
        ];
        let mut s = sluice_tables::read_columns(
            storage,
            &path,
            &sluice_tables::embeddings_schema(),
            &columns,
            4096,
        )
        .await
        .unwrap();
        while let Some(b) = s.try_next().await.unwrap() {
            use arrow::array::AsArray;
            // Columns come in the file's order, so by name.
            let col = |c: &str| b.column_by_name(c).expect("projected column");
            let ids = col("id").as_string::<i32>();
            let texts = col("text").as_string::<i32>();
            let vectors = col("vector").as_fixed_size_list();
            let s = |c: &str, i: usize| col(c).as_string::<i32>().value(i).to_string();
            let at = col("crawled_at").as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            for i in 0..b.num_rows() {
                let v = vectors.value(i);
                let v = v.as_primitive::<arrow::datatypes::Float32Type>();
                // The same metadata the stage sends, so both upload the same bytes.
                let row = sluice_tables::EmbeddingRow {
                    id: ids.value(i).to_string(),
                    kind: sluice_tables::kind::ANCHOR,
                    text: texts.value(i).to_string(),
                    source_url: s("source_url", i),
                    target_url: Some(s("target_url", i)),
                    source_domain: s("source_domain", i),
                    target_domain: Some(s("target_domain", i)),
                    chunk: None,
                    crawled_at_ms: at.value(i),
                };
                out.push(Point {
                    id: row.id.clone(),
                    vector: v.values().to_vec().into(),
                    metadata: sluice_stage_embeddings::point_metadata(&row),
                    text: row.text,
                });
            }
        }
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let root = env("SLUICE_TEST_DOCSITE_ROOT");
    let chroma_url = env("SLUICE_TEST_CHROMA");
    let texts = texts(Path::new(&root));
    let words: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
    println!(
        "embeddings benchmark: {TEXTS} texts, {:.1} words each",
        words as f64 / TEXTS as f64
    );

    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(dir.path().to_str().unwrap()).unwrap();
    let path = write_anchors(&storage, &texts).await;

    // Interleaved, so both see the same machine state; the best of two each.
    let mut py = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..2 {
        py.push(python_baseline(&texts));
        let (secs, _) = stage_run(&storage, &path, None).await;
        ours.push(TEXTS as f64 / secs);
    }
    let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let (py, ours) = (best(&py), best(&ours));
    println!("  onnxruntime-python (sorted batches of 32): {py:>8.1} texts/s");
    println!("  embeddings stage (Parquet only):           {ours:>8.1} texts/s");
    println!("  ratio: {:.2}x (goal >= 1.5x)", ours / py);

    // Chroma: the stage with upserts and a plain loop over the same points, interleaved, each
    // into a fresh collection; the best of two each (a few seconds of upserts is noisy).
    let pts = points(&storage).await;
    let mut in_stage: f64 = 0.0;
    let mut loop_rate: f64 = 0.0;
    for round in 0..2 {
        let name = format!("bench-{}-{round}", std::process::id());
        let plain = Chroma::new(&chroma_url, &format!("{name}-plain"));
        plain.ensure().await.unwrap();
        let started = Instant::now();
        for batch in pts.chunks(1000) {
            plain.upsert(batch, 1000).await.unwrap();
        }
        loop_rate = loop_rate.max(pts.len() as f64 / started.elapsed().as_secs_f64());
        assert_eq!(plain.count().await.unwrap(), TEXTS);

        let chroma = Arc::new(Chroma::new(&chroma_url, &name));
        let (secs, p) = stage_run(&storage, &path, Some(chroma.clone())).await;
        let (n, spent) = p.upsert_stats();
        assert_eq!(n as usize, TEXTS);
        assert_eq!(chroma.count().await.unwrap(), TEXTS);
        in_stage = in_stage.max(n as f64 / spent.as_secs_f64());
        println!(
            "  stage with chroma: {:>8.1} texts/s end to end",
            TEXTS as f64 / secs
        );
    }
    println!("  chroma upserts inside the stage:  {in_stage:>8.1} points/s");
    println!("  plain batch-1000 upsert loop:     {loop_rate:>8.1} points/s");
    println!(
        "  ratio: {:.0}% (goal >= 90%)",
        100.0 * in_stage / loop_rate
    );
}
