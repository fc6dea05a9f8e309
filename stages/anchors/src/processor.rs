//! One page-batch manifest in, one anchors file and its manifest out.
//!
//! The pages file is read a few rows at a time (only the columns needed), so memory holds a
//! handful of pages, the anchor rows not yet handed to the writer, and the writer's row
//! group. The anchors file is named like the pages file it came from, so a replay rewrites
//! it instead of adding another.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{TimestampMillisecondType, UInt16Type};
use async_trait::async_trait;
use futures::TryStreamExt;
use sluice_bus::{now_ms, Record};
use sluice_runtime::metrics::StageMetrics;
use sluice_runtime::stage::{Emitter, Output, Processor, StageError};
use sluice_tables::{
    anchors_schema, pages_schema, read_columns, table, AnchorRow, AnchorRows, ReadError, Storage,
    TableWriter, ANCHORS_SCHEMA_VERSION,
};
use sluice_topics::{Contract, DerivedFile, TableBatch};
use sluice_web::domain::registrable_domain_of;
use url::Url;

use crate::extract::{extract, Skipped};

/// Pages read per step.
const READ_ROWS: usize = 64;
/// Anchor rows handed to the writer per step.
const CHUNK_BYTES: usize = 4 << 20;

/// Columns of the pages table this stage reads.
const COLUMNS: [&str; 5] = ["final_url", "status", "content_type", "body", "fetched_at"];

/// The anchors processor.
pub struct Anchors {
    storage: Storage,
    output: Output,
    metrics: StageMetrics,
}

fn storage_error(e: impl Into<anyhow::Error>) -> StageError {
    StageError::unavailable("storage", e)
}

/// A pages file that cannot be read is the manifest's fault (gone, or not Parquet): it goes
/// to the dead-letter topic. A store that does not answer is an outage.
fn read_error(e: ReadError) -> StageError {
    match e {
        ReadError::Outage(e) => storage_error(anyhow::anyhow!(e)),
        ReadError::Unreadable(e) => {
            StageError::invalid("unreadable_batch", format!("the pages file: {e}"))
        }
    }
}

impl Anchors {
    /// A processor reading and writing under `storage`, publishing to `output`.
    pub fn new(storage: Storage, output: Output, metrics: StageMetrics) -> Self {
        Self {
            storage,
            output,
            metrics,
        }
    }
}

/// What one batch of page rows yields.
#[derive(Default)]
struct Extracted {
    anchors: Vec<AnchorRow>,
    skipped: Skipped,
    counts: BTreeMap<String, u64>,
    /// Pages that could not be parsed to the end, and why.
    errors: Vec<(String, String)>,
}

/// Extracts the anchors of every HTML page in one batch of rows. CPU work: run it off the
/// async workers.
fn extract_batch(batch: &RecordBatch) -> Extracted {
    let mut out = Extracted::default();
    let col = |name: &str| batch.column_by_name(name).expect("projected column");
    let final_url = col("final_url").as_string::<i32>();
    let status = col("status").as_primitive::<UInt16Type>();
    let content_type = col("content_type").as_string::<i32>();
    let body = col("body").as_string::<i32>();
    let fetched_at = col("fetched_at").as_primitive::<TimestampMillisecondType>();
    for i in 0..batch.num_rows() {
        *out.counts.entry("pages".into()).or_default() += 1;
        let html = !content_type.is_null(i)
            && matches!(content_type.value(i), "text/html" | "application/xhtml+xml");
        let ok = !status.is_null(i) && (200..300).contains(&status.value(i));
        if body.is_null(i) || !html || !ok {
            continue;
        }
        let Ok(page_url) = Url::parse(final_url.value(i)) else {
            *out.counts.entry("page_errors".into()).or_default() += 1;
            out.errors
                .push((final_url.value(i).to_string(), "unparsable URL".into()));
            continue;
        };
        *out.counts.entry("pages_parsed".into()).or_default() += 1;
        let found = extract(body.value(i), &page_url);
        if let Some(err) = found.error {
            // What was found before the error is kept; the page is recorded as failed.
            *out.counts.entry("page_errors".into()).or_default() += 1;
            out.errors.push((page_url.to_string(), err));
        }
        out.skipped.add(&found.skipped);
        let source_domain = registrable_domain_of(&page_url).unwrap_or_default();
        let source_url = page_url.to_string();
        for a in found.anchors {
            let target_domain = registrable_domain_of(&a.target).unwrap_or_default();
            let nofollow = a.nofollow();
            out.anchors.push(AnchorRow {
                source_url: source_url.clone(),
                target_url: a.target.into(),
                fragment: a.fragment,
                text: a.text,
                from_alt: a.from_alt,
                title: a.title,
                rel: a.rel,
                nofollow,
                internal: source_domain == target_domain,
                source_domain: source_domain.clone(),
                target_domain,
                position: a.position,
                crawled_at_ms: fetched_at.value(i),
            });
        }
    }
    out
}

#[async_trait]
impl Processor for Anchors {
    async fn process(&self, record: &Record, emit: &mut Emitter) -> Result<(), StageError> {
        let manifest = TableBatch::decode_of(&record.value, table::PAGES)
            .map_err(|(code, reason)| StageError::invalid(code, reason))?;
        let source = self.storage.resolve(&manifest.path);
        let mut stream = read_columns(&self.storage, &source, &pages_schema(), &COLUMNS, READ_ROWS)
            .await
            .map_err(read_error)?;

        let file_name = source.filename().unwrap_or("batch.parquet").to_string();
        let tmp_name = sluice_tables::tmp_name(&file_name);
        let mut writer =
            TableWriter::create(&self.storage, table::ANCHORS, &tmp_name, anchors_schema())
                .map_err(storage_error)?;
        let mut rows = AnchorRows::new();
        let mut skipped = Skipped::default();
        let mut counts = BTreeMap::new();
        let result: Result<(), StageError> = async {
            while let Some(batch) = stream.try_next().await.map_err(read_error)? {
                let found = tokio::task::spawn_blocking(move || extract_batch(&batch))
                    .await
                    .map_err(|e| StageError::Transient(anyhow::anyhow!("extraction task: {e}")))?;
                for (url, error) in &found.errors {
                    self.metrics.event("page_error");
                    tracing::warn!(%url, %error, "page could not be parsed to the end");
                }
                for (k, v) in found.counts {
                    *counts.entry(k).or_default() += v;
                }
                skipped.add(&found.skipped);
                for a in &found.anchors {
                    rows.push(a);
                }
                if rows.bytes() >= CHUNK_BYTES {
                    writer.write(&rows.finish()).await.map_err(storage_error)?;
                }
            }
            if rows.rows() > 0 {
                writer.write(&rows.finish()).await.map_err(storage_error)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            writer.abort().await;
            return Err(e);
        }
        let dest = self.storage.table_file(table::ANCHORS, &file_name);
        let written = writer.finish(dest).await.map_err(storage_error)?;
        for (k, v) in [
            ("skipped_javascript", skipped.javascript),
            ("skipped_mailto", skipped.mailto),
            ("skipped_data", skipped.data),
            ("skipped_empty", skipped.empty),
            ("skipped_other", skipped.other),
        ] {
            counts.insert(k.to_string(), v);
        }
        let out = manifest.derived(DerivedFile {
            table: table::ANCHORS.into(),
            path: self.storage.relative(&written.path),
            rows: written.rows,
            bytes: written.bytes,
            schema_version: ANCHORS_SCHEMA_VERSION,
            created_at_ms: now_ms(),
            counts,
        });
        tracing::info!(path = %out.path, rows = out.rows, "anchors file written");
        self.metrics.event("anchors_file");
        emit.send(&self.output, out.encode()).await
    }
}
