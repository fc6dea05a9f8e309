//! What gets embedded: anchor rows and page chunks become [`EmbeddingRow`]s with
//! deterministic ids, and the Chroma metadata for each.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{TimestampMillisecondType, UInt16Type};
use serde_json::{json, Map, Value};
use sluice_tables::{kind, EmbeddingRow};
use xxhash_rust::xxh3::xxh3_128;

/// Columns of the anchors table read.
pub const ANCHOR_COLUMNS: [&str; 6] = [
    "source_url",
    "target_url",
    "text",
    "source_domain",
    "target_domain",
    "crawled_at",
];

/// Columns of the pages table read when pages are embedded.
pub const PAGE_COLUMNS: [&str; 6] = [
    "final_url",
    "domain",
    "status",
    "content_type",
    "body",
    "fetched_at",
];

/// The id of a point: a hash of what makes it distinct, so a replay upserts the same point.
pub fn point_id(kind: &str, source_url: &str, target: &str, text: &str) -> String {
    let mut key = Vec::with_capacity(kind.len() + source_url.len() + target.len() + text.len() + 3);
    for part in [kind, source_url, target, text] {
        key.extend_from_slice(part.as_bytes());
        key.push(0);
    }
    format!("{:032x}", xxh3_128(&key))
}

/// Why rows were not embedded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Texts shorter than `min_chars` (empty ones included).
    pub short: u64,
    /// The same (source, target, text) again in the same batch.
    pub duplicate: u64,
}

/// The anchor rows of one batch worth embedding, deduplicated against `seen` (ids of the
/// file so far).
pub fn anchor_rows(
    batch: &RecordBatch,
    min_chars: usize,
    seen: &mut std::collections::HashSet<u128>,
    skipped: &mut Skipped,
) -> Vec<EmbeddingRow> {
    let col = |name: &str| batch.column_by_name(name).expect("projected column");
    let source_url = col("source_url").as_string::<i32>();
    let target_url = col("target_url").as_string::<i32>();
    let text = col("text").as_string::<i32>();
    let source_domain = col("source_domain").as_string::<i32>();
    let target_domain = col("target_domain").as_string::<i32>();
    let crawled_at = col("crawled_at").as_primitive::<TimestampMillisecondType>();
    let mut out = Vec::new();
    for i in 0..batch.num_rows() {
        let t = if text.is_null(i) { "" } else { text.value(i) };
        if t.trim().chars().count() < min_chars.max(1) {
            skipped.short += 1;
            continue;
        }
        let id = point_id(kind::ANCHOR, source_url.value(i), target_url.value(i), t);
        if !seen.insert(u128::from_str_radix(&id, 16).expect("hex id")) {
            skipped.duplicate += 1;
            continue;
        }
        out.push(EmbeddingRow {
            id,
            kind: kind::ANCHOR,
            text: t.to_string(),
            source_url: source_url.value(i).to_string(),
            target_url: Some(target_url.value(i).to_string()),
            source_domain: source_domain.value(i).to_string(),
            target_domain: Some(target_domain.value(i).to_string()),
            chunk: None,
            crawled_at_ms: crawled_at.value(i),
        });
    }
    out
}

/// One HTML page of a pages batch: its URL, domain, fetch time and body.
pub struct PageText {
    /// Final URL.
    pub url: String,
    /// Registrable domain.
    pub domain: String,
    /// Fetch time (ms).
    pub fetched_at_ms: i64,
    /// The HTML.
    pub body: String,
}

/// The successfully fetched HTML pages of a pages batch.
pub fn html_pages(batch: &RecordBatch) -> Vec<PageText> {
    let col = |name: &str| batch.column_by_name(name).expect("projected column");
    let url = col("final_url").as_string::<i32>();
    let domain = col("domain").as_string::<i32>();
    let status = col("status").as_primitive::<UInt16Type>();
    let content_type = col("content_type").as_string::<i32>();
    let body = col("body").as_string::<i32>();
    let fetched_at = col("fetched_at").as_primitive::<TimestampMillisecondType>();
    (0..batch.num_rows())
        .filter(|&i| {
            !body.is_null(i)
                && !status.is_null(i)
                && (200..300).contains(&status.value(i))
                && !content_type.is_null(i)
                && matches!(content_type.value(i), "text/html" | "application/xhtml+xml")
        })
        .map(|i| PageText {
            url: url.value(i).to_string(),
            domain: if domain.is_null(i) {
                String::new()
            } else {
                domain.value(i).to_string()
            },
            fetched_at_ms: fetched_at.value(i),
            body: body.value(i).to_string(),
        })
        .collect()
}

/// The row for chunk `index` of a page.
pub fn page_chunk_row(page: &PageText, index: u32, text: &str) -> EmbeddingRow {
    EmbeddingRow {
        id: point_id(kind::PAGE, &page.url, &index.to_string(), text),
        kind: kind::PAGE,
        text: text.to_string(),
        source_url: page.url.clone(),
        target_url: None,
        source_domain: page.domain.clone(),
        target_domain: None,
        chunk: Some(index),
        crawled_at_ms: page.fetched_at_ms,
    }
}

/// Chroma metadata for a row (absent fields are left out: Chroma stores no nulls).
pub fn metadata(r: &EmbeddingRow) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("kind".into(), json!(r.kind));
    m.insert("source_url".into(), json!(r.source_url));
    m.insert("source_domain".into(), json!(r.source_domain));
    if let Some(t) = &r.target_url {
        m.insert("target_url".into(), json!(t));
    }
    if let Some(t) = &r.target_domain {
        m.insert("target_domain".into(), json!(t));
    }
    if let Some(c) = r.chunk {
        m.insert("chunk".into(), json!(c));
    }
    m.insert("crawled_at".into(), json!(r.crawled_at_ms));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_separate_their_parts() {
        let a = point_id("anchor", "http://a/", "http://b/", "text");
        assert_eq!(a, point_id("anchor", "http://a/", "http://b/", "text"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, point_id("anchor", "http://a/", "http://b/t", "ext"));
        assert_ne!(a, point_id("page", "http://a/", "http://b/", "text"));
    }
}
