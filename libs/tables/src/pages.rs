//! The `pages` table: one row per page record, with the Kafka partition and offset it came
//! from (so queries can deduplicate a replay).

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    StructBuilder, TimestampMillisecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use sluice_topics::Page;

/// Version of the `pages` schema, written into manifests.
pub const PAGES_SCHEMA_VERSION: u32 = 1;

fn redirect_fields() -> Fields {
    Fields::from(vec![
        Field::new("url", DataType::Utf8, false),
        Field::new("status", DataType::UInt16, false),
        Field::new("location", DataType::Utf8, false),
    ])
}

fn redirect_item() -> Arc<Field> {
    Arc::new(Field::new(
        "item",
        DataType::Struct(redirect_fields()),
        false,
    ))
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The `pages` schema.
pub fn pages_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("url", DataType::Utf8, false),
                Field::new("final_url", DataType::Utf8, false),
                Field::new("redirects", DataType::List(redirect_item()), false),
                Field::new("status", DataType::UInt16, true),
                Field::new("content_type", DataType::Utf8, true),
                Field::new("charset", DataType::Utf8, true),
                Field::new("fetched_at", timestamp(), false),
                Field::new("fetch_ms", DataType::UInt64, false),
                Field::new("etag", DataType::Utf8, true),
                Field::new("last_modified", DataType::Utf8, true),
                Field::new("content_language", DataType::Utf8, true),
                Field::new("body", DataType::Utf8, true),
                Field::new("body_bytes", DataType::UInt64, false),
                Field::new("truncated", DataType::Boolean, false),
                Field::new("error_code", DataType::Utf8, true),
                Field::new("error", DataType::Utf8, true),
                Field::new("depth", DataType::UInt32, false),
                Field::new("domain", DataType::Utf8, false),
                Field::new("source", DataType::Utf8, true),
                Field::new("links_out", DataType::UInt32, false),
                Field::new("kafka_partition", DataType::Int32, false),
                Field::new("kafka_offset", DataType::Int64, false),
            ]))
        })
        .clone()
}

/// Accumulates page rows into an Arrow batch.
pub struct PageRows {
    url: StringBuilder,
    final_url: StringBuilder,
    redirects: ListBuilder<StructBuilder>,
    status: UInt16Builder,
    content_type: StringBuilder,
    charset: StringBuilder,
    fetched_at: TimestampMillisecondBuilder,
    fetch_ms: UInt64Builder,
    etag: StringBuilder,
    last_modified: StringBuilder,
    content_language: StringBuilder,
    body: StringBuilder,
    body_bytes: UInt64Builder,
    truncated: BooleanBuilder,
    error_code: StringBuilder,
    error: StringBuilder,
    depth: UInt32Builder,
    domain: StringBuilder,
    source: StringBuilder,
    links_out: UInt32Builder,
    partition: Int32Builder,
    offset: Int64Builder,
    rows: usize,
    bytes: usize,
}

impl Default for PageRows {
    fn default() -> Self {
        Self::new()
    }
}

impl PageRows {
    /// An empty builder.
    pub fn new() -> Self {
        Self {
            url: StringBuilder::new(),
            final_url: StringBuilder::new(),
            redirects: ListBuilder::new(StructBuilder::from_fields(redirect_fields(), 0))
                .with_field(redirect_item()),
            status: UInt16Builder::new(),
            content_type: StringBuilder::new(),
            charset: StringBuilder::new(),
            fetched_at: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            fetch_ms: UInt64Builder::new(),
            etag: StringBuilder::new(),
            last_modified: StringBuilder::new(),
            content_language: StringBuilder::new(),
            body: StringBuilder::new(),
            body_bytes: UInt64Builder::new(),
            truncated: BooleanBuilder::new(),
            error_code: StringBuilder::new(),
            error: StringBuilder::new(),
            depth: UInt32Builder::new(),
            domain: StringBuilder::new(),
            source: StringBuilder::new(),
            links_out: UInt32Builder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            rows: 0,
            bytes: 0,
        }
    }

    /// Adds one page that came from `partition` at `offset`.
    pub fn push(&mut self, p: &Page, partition: i32, offset: i64) {
        self.url.append_value(&p.url);
        self.final_url.append_value(&p.final_url);
        let hops = self.redirects.values();
        for r in &p.redirects {
            hops.field_builder::<StringBuilder>(0)
                .expect("url")
                .append_value(&r.url);
            hops.field_builder::<UInt16Builder>(1)
                .expect("status")
                .append_value(r.status);
            hops.field_builder::<StringBuilder>(2)
                .expect("location")
                .append_value(&r.location);
            hops.append(true);
        }
        self.redirects.append(true);
        self.status.append_option(p.status);
        self.content_type.append_option(p.content_type.as_deref());
        self.charset.append_option(p.charset.as_deref());
        self.fetched_at.append_value(p.fetched_at_ms);
        self.fetch_ms.append_value(p.fetch_ms);
        self.etag.append_option(p.headers.get("etag"));
        self.last_modified
            .append_option(p.headers.get("last-modified"));
        self.content_language
            .append_option(p.headers.get("content-language"));
        self.body.append_option(p.body.as_deref());
        self.body_bytes.append_value(p.body_bytes);
        self.truncated.append_value(p.truncated);
        self.error_code
            .append_option(p.error.as_ref().map(|e| e.code.as_str()));
        self.error
            .append_option(p.error.as_ref().map(|e| e.message.as_str()));
        self.depth.append_value(p.depth);
        self.domain.append_value(&p.domain);
        self.source.append_option(p.source.as_deref());
        self.links_out.append_value(p.links_out);
        self.partition.append_value(partition);
        self.offset.append_value(offset);
        self.rows += 1;
        self.bytes += p.url.len()
            + p.final_url.len()
            + p.body.as_ref().map_or(0, |b| b.len())
            + p.redirects
                .iter()
                .map(|r| r.url.len() + r.location.len())
                .sum::<usize>()
            + 128;
    }

    /// Rows added since the last [`PageRows::finish`].
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
            Arc::new(self.url.finish()),
            Arc::new(self.final_url.finish()),
            Arc::new(self.redirects.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.content_type.finish()),
            Arc::new(self.charset.finish()),
            Arc::new(self.fetched_at.finish()),
            Arc::new(self.fetch_ms.finish()),
            Arc::new(self.etag.finish()),
            Arc::new(self.last_modified.finish()),
            Arc::new(self.content_language.finish()),
            Arc::new(self.body.finish()),
            Arc::new(self.body_bytes.finish()),
            Arc::new(self.truncated.finish()),
            Arc::new(self.error_code.finish()),
            Arc::new(self.error.finish()),
            Arc::new(self.depth.finish()),
            Arc::new(self.domain.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.links_out.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
        ];
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(pages_schema(), columns).expect("columns match the pages schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use sluice_topics::{FetchError, Redirect};

    fn page(i: u32) -> Page {
        Page {
            url: format!("http://a.test/{i}"),
            final_url: format!("http://a.test/{i}/"),
            redirects: vec![Redirect {
                url: format!("http://a.test/{i}"),
                status: 301,
                location: format!("http://a.test/{i}/"),
            }],
            status: Some(200),
            content_type: Some("text/html".into()),
            charset: Some("UTF-8".into()),
            fetched_at_ms: 1_700_000_000_000,
            fetch_ms: 12,
            headers: [("etag".to_string(), "\"e\"".to_string())].into(),
            body: Some("<p>hi</p>".into()),
            body_bytes: 9,
            truncated: false,
            error: (i == 1).then(|| FetchError {
                code: "http_status".into(),
                message: "HTTP 404".into(),
            }),
            depth: i,
            domain: "a.test".into(),
            source: None,
            links_out: 0,
        }
    }

    #[test]
    fn rows_become_a_batch_of_the_schema() {
        let mut rows = PageRows::new();
        rows.push(&page(0), 2, 10);
        rows.push(&page(1), 2, 11);
        assert_eq!(rows.rows(), 2);
        let batch = rows.finish();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), pages_schema());
        let err = batch
            .column_by_name("error_code")
            .unwrap()
            .as_string::<i32>();
        assert!(err.is_null(0));
        assert_eq!(err.value(1), "http_status");
        let redirects = batch.column_by_name("redirects").unwrap().as_list::<i32>();
        assert_eq!(redirects.value(0).len(), 1);
        assert_eq!(rows.rows(), 0);
        assert_eq!(rows.finish().num_rows(), 0);
    }
}
