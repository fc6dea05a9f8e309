//! The `embeddings` table: one row per embedded text (an anchor text, or a chunk of a page's
//! text) with its vector, so search works from storage alone and `sluice query` sees it.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, FixedSizeListBuilder, Float32Builder, StringBuilder, TimestampMillisecondBuilder,
    UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

/// Version of the `embeddings` schema, written into manifests.
pub const EMBEDDINGS_SCHEMA_VERSION: u32 = 1;

/// Dimensions of the vectors (all-MiniLM-L6-v2).
pub const EMBEDDING_DIMS: usize = 384;

/// What an embedded text is.
pub mod kind {
    /// The text of a link.
    pub const ANCHOR: &str = "anchor";
    /// A chunk of a page's visible text.
    pub const PAGE: &str = "page";
}

fn vector_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, false))
}

/// The `embeddings` schema.
pub fn embeddings_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("kind", DataType::Utf8, false),
                Field::new("text", DataType::Utf8, false),
                Field::new("source_url", DataType::Utf8, false),
                Field::new("target_url", DataType::Utf8, true),
                Field::new("source_domain", DataType::Utf8, false),
                Field::new("target_domain", DataType::Utf8, true),
                Field::new("chunk", DataType::UInt32, true),
                Field::new(
                    "crawled_at",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ),
                Field::new(
                    "vector",
                    DataType::FixedSizeList(vector_item(), EMBEDDING_DIMS as i32),
                    false,
                ),
            ]))
        })
        .clone()
}

/// One embedded text.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRow {
    /// Content hash of (kind, source url, target url or chunk index, text): the Chroma id.
    pub id: String,
    /// [`kind::ANCHOR`] or [`kind::PAGE`].
    pub kind: &'static str,
    /// The text that was embedded.
    pub text: String,
    /// The page the text is on.
    pub source_url: String,
    /// The link's target (anchors only).
    pub target_url: Option<String>,
    /// Registrable domain of the source.
    pub source_domain: String,
    /// Registrable domain of the target (anchors only).
    pub target_domain: Option<String>,
    /// Index of the chunk within the page (page chunks only).
    pub chunk: Option<u32>,
    /// When the page was fetched, in milliseconds since the Unix epoch.
    pub crawled_at_ms: i64,
}

/// Accumulates embedding rows into an Arrow batch.
pub struct EmbeddingRows {
    id: StringBuilder,
    kind: StringBuilder,
    text: StringBuilder,
    source_url: StringBuilder,
    target_url: StringBuilder,
    source_domain: StringBuilder,
    target_domain: StringBuilder,
    chunk: UInt32Builder,
    crawled_at: TimestampMillisecondBuilder,
    vector: FixedSizeListBuilder<Float32Builder>,
    rows: usize,
    bytes: usize,
}

impl Default for EmbeddingRows {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddingRows {
    /// An empty builder.
    pub fn new() -> Self {
        Self {
            id: StringBuilder::new(),
            kind: StringBuilder::new(),
            text: StringBuilder::new(),
            source_url: StringBuilder::new(),
            target_url: StringBuilder::new(),
            source_domain: StringBuilder::new(),
            target_domain: StringBuilder::new(),
            chunk: UInt32Builder::new(),
            crawled_at: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            vector: FixedSizeListBuilder::new(Float32Builder::new(), EMBEDDING_DIMS as i32)
                .with_field(vector_item()),
            rows: 0,
            bytes: 0,
        }
    }

    /// Adds one row. `vector` must have [`EMBEDDING_DIMS`] values.
    pub fn push(&mut self, r: &EmbeddingRow, vector: &[f32]) {
        assert_eq!(vector.len(), EMBEDDING_DIMS, "vector dimensions");
        self.id.append_value(&r.id);
        self.kind.append_value(r.kind);
        self.text.append_value(&r.text);
        self.source_url.append_value(&r.source_url);
        self.target_url.append_option(r.target_url.as_deref());
        self.source_domain.append_value(&r.source_domain);
        self.target_domain.append_option(r.target_domain.as_deref());
        self.chunk.append_option(r.chunk);
        self.crawled_at.append_value(r.crawled_at_ms);
        self.vector.values().append_slice(vector);
        self.vector.append(true);
        self.rows += 1;
        self.bytes += r.id.len()
            + r.text.len()
            + r.source_url.len()
            + r.target_url.as_ref().map_or(0, String::len)
            + EMBEDDING_DIMS * 4
            + 48;
    }

    /// Rows added since the last [`EmbeddingRows::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The rows as a batch; the builder starts over empty.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.text.finish()),
            Arc::new(self.source_url.finish()),
            Arc::new(self.target_url.finish()),
            Arc::new(self.source_domain.finish()),
            Arc::new(self.target_domain.finish()),
            Arc::new(self.chunk.finish()),
            Arc::new(self.crawled_at.finish()),
            Arc::new(self.vector.finish()),
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(embeddings_schema(), columns)
            .expect("columns match the embeddings schema")
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float32Type;

    use super::*;

    #[test]
    fn rows_become_a_batch_of_the_schema_with_their_vectors() {
        let mut rows = EmbeddingRows::new();
        assert_eq!(rows.finish().num_rows(), 0);
        let row = EmbeddingRow {
            id: "x".into(),
            kind: kind::ANCHOR,
            text: "the docs".into(),
            source_url: "http://a.test/".into(),
            target_url: Some("http://a.test/docs".into()),
            source_domain: "a.test".into(),
            target_domain: Some("a.test".into()),
            chunk: None,
            crawled_at_ms: 1,
        };
        let v1: Vec<f32> = (0..EMBEDDING_DIMS).map(|i| i as f32).collect();
        let v2: Vec<f32> = (0..EMBEDDING_DIMS).map(|i| -(i as f32)).collect();
        rows.push(&row, &v1);
        rows.push(&row, &v2);
        let b = rows.finish();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema(), embeddings_schema());
        let vectors = b.column_by_name("vector").unwrap().as_fixed_size_list();
        let second = vectors.value(1);
        let second = second.as_primitive::<Float32Type>();
        assert_eq!(second.len(), EMBEDDING_DIMS);
        assert_eq!(second.value(5), -5.0);
        assert!(b.column_by_name("chunk").unwrap().is_null(0));
    }
}
