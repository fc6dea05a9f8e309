//! One anchor-batch manifest in: its texts embedded into one `embeddings` file (named like
//! the anchors file, so a replay rewrites it) and upserted into Chroma; a manifest out.
//!
//! The input is committed only after both the file is published and every upsert succeeded.
//! Chroma is checked before the model runs, so an outage costs no embedding work; vectors of
//! recent texts are cached, so a batch retried after an outage mid-way runs the model little.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use futures::TryStreamExt;
use sluice_bus::{now_ms, Record};
use sluice_runtime::health::Health;
use sluice_runtime::metrics::StageMetrics;
use sluice_runtime::services::chroma::{Chroma, ChromaError, Point};
use sluice_runtime::stage::{Emitter, Output, Processor, StageError};
use sluice_tables::{
    anchors_schema, embeddings_schema, pages_schema, read_columns, table, EmbeddingRow,
    EmbeddingRows, ReadError, Storage, TableWriter, EMBEDDINGS_SCHEMA_VERSION,
};
use sluice_topics::{Contract, DerivedFile, TableBatch};

use crate::cache::VectorCache;
use crate::items::{self, Skipped, ANCHOR_COLUMNS, PAGE_COLUMNS};
use crate::model::{Embedder, ModelSpec};
use crate::settings::Settings;
use crate::text;

/// Anchor rows read per step.
const READ_ROWS: usize = 1024;
/// Pages read per step when pages are embedded.
const READ_PAGES: usize = 16;
/// Embedding rows handed to the writer per step.
const CHUNK_BYTES: usize = 4 << 20;

/// Health component of the model.
pub const MODEL: &str = "model";
/// Health component of Chroma.
pub const CHROMA: &str = "chroma";

fn storage_error(e: impl Into<anyhow::Error>) -> StageError {
    StageError::unavailable("storage", e)
}

fn read_error(what: &'static str) -> impl Fn(ReadError) -> StageError {
    move |e| match e {
        ReadError::Outage(e) => storage_error(anyhow::anyhow!(e)),
        ReadError::Unreadable(e) => StageError::invalid("unreadable_batch", format!("{what}: {e}")),
    }
}

fn chroma_error(e: ChromaError) -> StageError {
    match e {
        ChromaError::Unavailable { .. } => StageError::unavailable(CHROMA, e),
        ChromaError::Rejected { .. } => StageError::Transient(e.into()),
    }
}

fn task_error(e: tokio::task::JoinError) -> StageError {
    StageError::Transient(anyhow::anyhow!("embedding task: {e}"))
}

/// The model, loaded on first need; a failure is reported (log and `/readyz`) and tried again
/// with the next record rather than ending the process.
pub struct ModelSlot {
    spec: ModelSpec,
    loaded: tokio::sync::Mutex<Option<Arc<Embedder>>>,
    health: Health,
}

impl ModelSlot {
    /// A slot for `spec`, reporting on `health`.
    pub fn new(spec: ModelSpec, health: Health) -> Self {
        health.register(MODEL);
        Self {
            spec,
            loaded: tokio::sync::Mutex::new(None),
            health,
        }
    }

    /// The model, loading it if needed.
    pub async fn get(&self) -> Result<Arc<Embedder>, StageError> {
        let mut loaded = self.loaded.lock().await;
        if let Some(m) = loaded.as_ref() {
            return Ok(m.clone());
        }
        let spec = self.spec.clone();
        match tokio::task::spawn_blocking(move || Embedder::shared(&spec))
            .await
            .map_err(task_error)?
        {
            Ok(m) => {
                tracing::info!(dir = %self.spec.dir.display(), "embedding model loaded");
                self.health.ready(MODEL);
                *loaded = Some(m.clone());
                Ok(m)
            }
            Err(e) => {
                tracing::error!(error = %e, "the embedding model cannot be loaded");
                self.health.not_ready(MODEL, &e);
                Err(StageError::unavailable(MODEL, e))
            }
        }
    }
}

/// The embeddings processor.
pub struct Embeddings {
    storage: Storage,
    output: Option<Output>,
    settings: Settings,
    model: ModelSlot,
    chroma: Option<Arc<Chroma>>,
    cache: Mutex<VectorCache>,
    metrics: StageMetrics,
    upserts: UpsertStats,
}

/// Points upserted and the time spent waiting for Chroma, since start.
#[derive(Default)]
struct UpsertStats {
    points: AtomicU64,
    nanos: AtomicU64,
}

/// Counts for the manifest.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<String, u64>,
    skipped: Skipped,
}

impl Tally {
    fn add(&mut self, key: &str, n: u64) {
        *self.counts.entry(key.to_string()).or_default() += n;
    }
}

/// Where finished rows go: the file, and the points not yet upserted.
struct Sinks {
    writer: TableWriter,
    rows: EmbeddingRows,
    points: Vec<Point>,
}

impl Embeddings {
    /// A processor reading and writing under `storage`, publishing manifests to `output` (if
    /// any), upserting into `chroma` (if configured).
    pub fn new(
        storage: Storage,
        output: Option<Output>,
        settings: Settings,
        model: ModelSlot,
        chroma: Option<Arc<Chroma>>,
        metrics: StageMetrics,
    ) -> Self {
        let cache = Mutex::new(VectorCache::new(settings.vector_cache));
        Self {
            storage,
            output,
            settings,
            model,
            chroma,
            cache,
            metrics,
            upserts: UpsertStats::default(),
        }
    }

    /// Points upserted into Chroma so far, and the time spent on those upserts (for the
    /// benchmark's upsert rate).
    pub fn upsert_stats(&self) -> (u64, std::time::Duration) {
        (
            self.upserts.points.load(Ordering::Relaxed),
            std::time::Duration::from_nanos(self.upserts.nanos.load(Ordering::Relaxed)),
        )
    }

    /// Vectors for `rows` (cached ones reused, the rest embedded in one call), then rows and
    /// points into the sinks.
    async fn embed_rows(
        &self,
        model: &Arc<Embedder>,
        rows: Vec<EmbeddingRow>,
        sinks: &mut Sinks,
        tally: &mut Tally,
    ) -> Result<(), StageError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut vectors: HashMap<String, Arc<[f32]>> = HashMap::new();
        let mut missing: Vec<String> = Vec::new();
        {
            let mut asked: HashSet<&str> = HashSet::new();
            let mut cache = self.cache.lock().expect("cache poisoned");
            for r in &rows {
                if !asked.insert(&r.text) {
                    continue;
                }
                match cache.get(&r.text) {
                    Some(v) => {
                        vectors.insert(r.text.clone(), v);
                    }
                    None => missing.push(r.text.clone()),
                }
            }
        }
        tally.add("texts_cached", vectors.len() as u64);
        if !missing.is_empty() {
            let model = model.clone();
            let batch = self.settings.batch_size;
            let texts = missing.clone();
            let embedded = tokio::task::spawn_blocking(move || {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                model.embed(&refs, batch)
            })
            .await
            .map_err(task_error)?
            .map_err(|e| StageError::Transient(anyhow::anyhow!("embedding: {e}")))?;
            tally.add("texts_embedded", missing.len() as u64);
            self.metrics.event("texts_embedded");
            let mut cache = self.cache.lock().expect("cache poisoned");
            for (text, v) in missing.into_iter().zip(embedded) {
                let v: Arc<[f32]> = Arc::from(v);
                cache.put(&text, v.clone());
                vectors.insert(text, v);
            }
        }
        for r in rows {
            let v = vectors.get(&r.text).expect("every text has a vector");
            sinks.rows.push(&r, v);
            if self.chroma.is_some() {
                sinks.points.push(Point {
                    id: r.id.clone(),
                    vector: v.clone(),
                    metadata: items::metadata(&r),
                    text: r.text,
                });
            }
        }
        if sinks.rows.bytes() >= CHUNK_BYTES {
            sinks
                .writer
                .write(&sinks.rows.finish())
                .await
                .map_err(storage_error)?;
        }
        // Whole batches go now; the rest waits for more (or the end of the file).
        let full = sinks.points.len() / self.settings.upsert_batch * self.settings.upsert_batch;
        if full > 0 {
            self.flush_points(sinks, full).await?;
        }
        Ok(())
    }

    /// Upserts the first `n` pending points.
    async fn flush_points(&self, sinks: &mut Sinks, n: usize) -> Result<(), StageError> {
        if let Some(chroma) = &self.chroma {
            let started = Instant::now();
            chroma
                .upsert(&sinks.points[..n], self.settings.upsert_batch)
                .await
                .map_err(chroma_error)?;
            self.upserts.points.fetch_add(n as u64, Ordering::Relaxed);
            self.upserts
                .nanos
                .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.metrics.event("points_upserted");
        }
        sinks.points.drain(..n);
        Ok(())
    }

    async fn embed_anchors(
        &self,
        model: &Arc<Embedder>,
        manifest: &TableBatch,
        seen: &mut HashSet<u128>,
        sinks: &mut Sinks,
        tally: &mut Tally,
    ) -> Result<(), StageError> {
        let source = self.storage.resolve(&manifest.path);
        let mut stream = read_columns(
            &self.storage,
            &source,
            &anchors_schema(),
            &ANCHOR_COLUMNS,
            READ_ROWS,
        )
        .await
        .map_err(read_error("the anchors file"))?;
        while let Some(batch) = stream
            .try_next()
            .await
            .map_err(read_error("the anchors file"))?
        {
            tally.add("anchors", batch.num_rows() as u64);
            let rows =
                items::anchor_rows(&batch, self.settings.min_chars, seen, &mut tally.skipped);
            self.embed_rows(model, rows, sinks, tally).await?;
        }
        Ok(())
    }

    async fn embed_pages(
        &self,
        model: &Arc<Embedder>,
        file_name: &str,
        seen: &mut HashSet<u128>,
        sinks: &mut Sinks,
        tally: &mut Tally,
    ) -> Result<(), StageError> {
        let source = self.storage.table_file(table::PAGES, file_name);
        let opened = read_columns(
            &self.storage,
            &source,
            &pages_schema(),
            &PAGE_COLUMNS,
            READ_PAGES,
        )
        .await;
        // The anchors are worth keeping without the pages (the pages file may have been
        // removed or replaced): skipped and counted, not dead-lettered.
        let mut stream = match opened {
            Ok(s) => s,
            Err(ReadError::Outage(e)) => return Err(storage_error(anyhow::anyhow!(e))),
            Err(ReadError::Unreadable(e)) => {
                tracing::warn!(file = %source, error = %e, "pages file not embedded");
                tally.add("pages_unreadable", 1);
                return Ok(());
            }
        };
        while let Some(batch) = stream
            .try_next()
            .await
            .map_err(read_error("the pages file"))?
        {
            let m = model.clone();
            let (window, overlap, max) = (
                // The model adds [CLS] and [SEP]; a chunk starting inside a word may take a
                // token more when tokenized on its own: a little room for that.
                self.settings.chunk_tokens - 4,
                self.settings.chunk_overlap,
                self.settings.max_chunks_per_page,
            );
            let (rows, pages, capped) = tokio::task::spawn_blocking(move || {
                let mut rows = Vec::new();
                let mut capped = 0u64;
                let pages = items::html_pages(&batch);
                for page in &pages {
                    let mut visible = text::visible_text(&page.body);
                    // Only the first chunks are embedded: tokenize no more text than they can
                    // hold (a token is rarely more than 16 bytes), so a huge page costs little.
                    let keep = max * window * 16;
                    let cut_short = visible.len() > keep;
                    if cut_short {
                        let mut cut = keep;
                        while !visible.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        visible.truncate(cut);
                    }
                    let offsets = m.token_offsets(&visible);
                    let pieces = text::chunks(&visible, &offsets, window, overlap, max);
                    let step = window.saturating_sub(overlap).max(1);
                    if cut_short || (max > 0 && offsets.len() > (max - 1) * step + window) {
                        capped += 1;
                    }
                    for (i, piece) in pieces.into_iter().enumerate() {
                        rows.push(items::page_chunk_row(page, i as u32, piece));
                    }
                }
                (rows, pages.len() as u64, capped)
            })
            .await
            .map_err(task_error)?;
            // The same page twice in a pages file (two URLs redirecting to it, a replayed
            // record) gives the same chunk ids: embedded once.
            let before = rows.len();
            let rows: Vec<EmbeddingRow> = rows
                .into_iter()
                .filter(|r| seen.insert(u128::from_str_radix(&r.id, 16).expect("hex id")))
                .collect();
            tally.skipped.duplicate += (before - rows.len()) as u64;
            tally.add("pages", pages);
            tally.add("page_chunks", rows.len() as u64);
            tally.add("pages_capped", capped);
            self.embed_rows(model, rows, sinks, tally).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Processor for Embeddings {
    async fn process(&self, record: &Record, emit: &mut Emitter) -> Result<(), StageError> {
        let manifest = TableBatch::decode_of(&record.value, table::ANCHORS)
            .map_err(|(code, reason)| StageError::invalid(code, reason))?;
        let model = self.model.get().await?;
        // An outage is found before any embedding work is done.
        if let Some(chroma) = &self.chroma {
            chroma.ensure().await.map_err(chroma_error)?;
        }
        let source = self.storage.resolve(&manifest.path);
        let file_name = source.filename().unwrap_or("batch.parquet").to_string();
        let writer = TableWriter::create(
            &self.storage,
            table::EMBEDDINGS,
            &sluice_tables::tmp_name(&file_name),
            embeddings_schema(),
        )
        .map_err(storage_error)?;
        let mut sinks = Sinks {
            writer,
            rows: EmbeddingRows::new(),
            points: Vec::new(),
        };
        let mut tally = Tally::default();
        let result: Result<(), StageError> = async {
            // Ids already taken in this file (anchors and page chunks).
            let mut seen = HashSet::new();
            self.embed_anchors(&model, &manifest, &mut seen, &mut sinks, &mut tally)
                .await?;
            if self.settings.embed_pages {
                self.embed_pages(&model, &file_name, &mut seen, &mut sinks, &mut tally)
                    .await?;
            }
            if sinks.rows.rows() > 0 {
                let batch = sinks.rows.finish();
                sinks.writer.write(&batch).await.map_err(storage_error)?;
            }
            let n = sinks.points.len();
            self.flush_points(&mut sinks, n).await
        }
        .await;
        if let Err(e) = result {
            sinks.writer.abort().await;
            return Err(e);
        }
        let dest = self.storage.table_file(table::EMBEDDINGS, &file_name);
        let written = sinks.writer.finish(dest).await.map_err(storage_error)?;
        tally.add("skipped_short", tally.skipped.short);
        tally.add("skipped_duplicate", tally.skipped.duplicate);
        tracing::info!(path = %self.storage.relative(&written.path), rows = written.rows,
            embedded = tally.counts.get("texts_embedded").copied().unwrap_or(0), "embeddings file written");
        self.metrics.event("embeddings_file");
        let Some(output) = &self.output else {
            return Ok(());
        };
        let out = manifest.derived(DerivedFile {
            table: table::EMBEDDINGS.into(),
            path: self.storage.relative(&written.path),
            rows: written.rows,
            bytes: written.bytes,
            schema_version: EMBEDDINGS_SCHEMA_VERSION,
            created_at_ms: now_ms(),
            counts: tally.counts,
        });
        emit.send(output, out.encode()).await
    }
}
