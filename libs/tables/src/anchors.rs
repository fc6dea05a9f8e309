//! The `anchors` table: one row per `<a href>` found on a crawled page.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, StringBuilder, TimestampMillisecondBuilder, UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

/// Version of the `anchors` schema, written into manifests.
pub const ANCHORS_SCHEMA_VERSION: u32 = 1;

/// The `anchors` schema.
pub fn anchors_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("source_url", DataType::Utf8, false),
                Field::new("target_url", DataType::Utf8, false),
                Field::new("fragment", DataType::Utf8, true),
                Field::new("text", DataType::Utf8, false),
                Field::new("from_alt", DataType::Boolean, false),
                Field::new("title", DataType::Utf8, true),
                Field::new("rel", DataType::Utf8, true),
                Field::new("nofollow", DataType::Boolean, false),
                Field::new("internal", DataType::Boolean, false),
                Field::new("source_domain", DataType::Utf8, false),
                Field::new("target_domain", DataType::Utf8, false),
                Field::new("position", DataType::UInt32, false),
                Field::new(
                    "crawled_at",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ),
            ]))
        })
        .clone()
}

/// One anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorRow {
    /// The page the link is on (its final URL).
    pub source_url: String,
    /// The resolved target, without fragment.
    pub target_url: String,
    /// The fragment, without `#`.
    pub fragment: Option<String>,
    /// Anchor text, whitespace collapsed (image alt text when the link holds only images).
    pub text: String,
    /// `text` came from image alt text.
    pub from_alt: bool,
    /// The `title` attribute.
    pub title: Option<String>,
    /// The `rel` attribute.
    pub rel: Option<String>,
    /// `rel` contains nofollow, ugc or sponsored.
    pub nofollow: bool,
    /// Source and target share a registrable domain.
    pub internal: bool,
    /// Registrable domain of the source.
    pub source_domain: String,
    /// Registrable domain of the target.
    pub target_domain: String,
    /// Index of the link among the page's links (0-based, document order).
    pub position: u32,
    /// When the page was fetched, in milliseconds since the Unix epoch.
    pub crawled_at_ms: i64,
}

/// Accumulates anchor rows into an Arrow batch.
#[derive(Default)]
pub struct AnchorRows {
    source_url: StringBuilder,
    target_url: StringBuilder,
    fragment: StringBuilder,
    text: StringBuilder,
    from_alt: BooleanBuilder,
    title: StringBuilder,
    rel: StringBuilder,
    nofollow: BooleanBuilder,
    internal: BooleanBuilder,
    source_domain: StringBuilder,
    target_domain: StringBuilder,
    position: UInt32Builder,
    crawled_at: Option<TimestampMillisecondBuilder>,
    rows: usize,
    bytes: usize,
}

impl AnchorRows {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one anchor.
    pub fn push(&mut self, a: &AnchorRow) {
        self.source_url.append_value(&a.source_url);
        self.target_url.append_value(&a.target_url);
        self.fragment.append_option(a.fragment.as_deref());
        self.text.append_value(&a.text);
        self.from_alt.append_value(a.from_alt);
        self.title.append_option(a.title.as_deref());
        self.rel.append_option(a.rel.as_deref());
        self.nofollow.append_value(a.nofollow);
        self.internal.append_value(a.internal);
        self.source_domain.append_value(&a.source_domain);
        self.target_domain.append_value(&a.target_domain);
        self.position.append_value(a.position);
        self.crawled_at
            .get_or_insert_with(|| TimestampMillisecondBuilder::new().with_timezone("UTC"))
            .append_value(a.crawled_at_ms);
        self.rows += 1;
        self.bytes += a.source_url.len() + a.target_url.len() + a.text.len() + 64;
    }

    /// Rows added since the last [`AnchorRows::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The rows as a batch; the builder starts over empty.
    pub fn finish(&mut self) -> RecordBatch {
        let mut crawled_at = self
            .crawled_at
            .take()
            .unwrap_or_else(|| TimestampMillisecondBuilder::new().with_timezone("UTC"));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.source_url.finish()),
            Arc::new(self.target_url.finish()),
            Arc::new(self.fragment.finish()),
            Arc::new(self.text.finish()),
            Arc::new(self.from_alt.finish()),
            Arc::new(self.title.finish()),
            Arc::new(self.rel.finish()),
            Arc::new(self.nofollow.finish()),
            Arc::new(self.internal.finish()),
            Arc::new(self.source_domain.finish()),
            Arc::new(self.target_domain.finish()),
            Arc::new(self.position.finish()),
            Arc::new(crawled_at.finish()),
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(anchors_schema(), columns).expect("columns match the anchors schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_a_batch_of_the_schema() {
        let mut rows = AnchorRows::new();
        assert_eq!(rows.finish().num_rows(), 0);
        rows.push(&AnchorRow {
            source_url: "http://a.test/".into(),
            target_url: "http://b.test/x".into(),
            fragment: Some("top".into()),
            text: "B's page".into(),
            from_alt: false,
            title: None,
            rel: Some("nofollow".into()),
            nofollow: true,
            internal: false,
            source_domain: "a.test".into(),
            target_domain: "b.test".into(),
            position: 0,
            crawled_at_ms: 1,
        });
        let b = rows.finish();
        assert_eq!(b.num_rows(), 1);
        assert_eq!(b.schema(), anchors_schema());
    }
}
